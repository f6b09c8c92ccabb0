"""Serve float FACILE on a real NVIDIA Triton (tritonserver 2.51 inside nvidia-pytriton 0.7.0), as a
Python model: the comparison server of bench/run.py. Runs in its own venv (numpy<2).

Usage: triton_facile.py WEIGHTS.npz GRPC_PORT HTTP_PORT METRICS_PORT
"""

import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

weights_path, grpc_port, http_port, metrics_port = sys.argv[1], *map(int, sys.argv[2:])
weights = np.load(weights_path)
LAYERS = sorted({key.split("/")[0] for key in weights.files})


def forward(x):
    """FACILE in float: Dense → BatchNorm (inference) → ReLU, five times, then Dense(1)."""
    for i in range(1, 6):
        x = x @ weights[f"dense{i}/kernel"] + weights[f"dense{i}/bias"]
        scale = weights[f"bn{i}/gamma"] / np.sqrt(weights[f"bn{i}/moving_variance"] + 1e-3)
        x = (x - weights[f"bn{i}/moving_mean"]) * scale + weights[f"bn{i}/beta"]
        x = np.maximum(x, 0.0)
    return x @ weights["energy/kernel"] + weights["energy/bias"]


@batch
def infer(input):
    return {"output": forward(input.astype(np.float32)).astype(np.float32)}


config = TritonConfig(
    grpc_port=grpc_port,
    http_port=http_port,
    metrics_port=metrics_port,
    allow_http=True,
    allow_grpc=True,
    allow_metrics=True,
)
with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
    triton.bind(
        model_name="facile",
        infer_func=infer,
        inputs=[Tensor(name="input", dtype=np.float32, shape=(15,))],
        outputs=[Tensor(name="output", dtype=np.float32, shape=(1,))],
        config=ModelConfig(max_batch_size=65536, batcher=DynamicBatcher(max_queue_delay_microseconds=100)),
    )
    print("triton serving facile", flush=True)
    triton.serve()
