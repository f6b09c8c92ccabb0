"""Serve float ResNet-50s on a real NVIDIA Triton (tritonserver 2.51 inside nvidia-pytriton 0.7.0), each
a TensorFlow SavedModel run from a Python model: the comparison server of bench/resnet50.py. Runs in
its own venv (numpy<2, tensorflow-cpu).

Usage: triton_resnet50.py MODELS_DIR GRPC_PORT HTTP_PORT METRICS_PORT
MODELS_DIR holds, per model, NAME/ (the SavedModel) and NAME.json ({"shape": [...], "max_batch_size": n}).
"""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

models_dir, grpc_port, http_port, metrics_port = Path(sys.argv[1]), *map(int, sys.argv[2:])


def inference(saved_model):
    model = tf.saved_model.load(str(saved_model))  # kept referenced: `serve` reads its variables

    @batch
    def infer(input):
        return {"output": model.serve(tf.constant(input, tf.float32)).numpy()}

    return infer


config = TritonConfig(
    grpc_port=grpc_port,
    http_port=http_port,
    metrics_port=metrics_port,
    allow_http=True,
    allow_grpc=True,
    allow_metrics=True,
)
with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
    for meta in sorted(models_dir.glob("*.json")):
        settings = json.loads(meta.read_text())
        triton.bind(
            model_name=meta.stem,
            infer_func=inference(models_dir / meta.stem),
            inputs=[Tensor(name="input", dtype=np.float32, shape=tuple(settings["shape"]))],
            outputs=[Tensor(name="output", dtype=np.float32, shape=(2,))],
            config=ModelConfig(
                max_batch_size=settings["max_batch_size"], batcher=DynamicBatcher(max_queue_delay_microseconds=100)
            ),
        )
    print("triton serving", flush=True)
    triton.serve()
