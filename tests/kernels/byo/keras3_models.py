"""Child process of tests/kernels/test_bring_your_own_model.py: an HGQ2 (Keras 3) model and a QONNX model a
user brings, and hls4ml's own answers for them. It runs with real Keras 3 (no tf_keras aliasing), as HGQ2
and hls4ml's keras-v3 frontend need.

Usage (run with the tests' interpreter, -P, TF_USE_LEGACY_KERAS unset):
  keras3_models.py models FOLDER
      writes into FOLDER:
        hgq2.keras    an HGQ2 MLP (hits -> hgq_scores), saved by Keras 3
        qonnx.onnx    a QONNX MLP (pixels -> logits): Quant nodes on its input, weights and activations,
                      as an exporter writes it (not cleaned up)
  keras3_models.py predict FOLDER INPUTS.npz REFERENCES.npz
      hls4ml compile() + predict(), in projects written beside REFERENCES.npz: "hgq2" (hgq2.keras with
      config_from_keras_model(granularity="name")) and "qonnx" (qonnx.onnx after the clean-up hls4ml's
      documentation asks for, with config_from_onnx_model(granularity="name")). INPUTS.npz and
      REFERENCES.npz are keyed as in qkeras_models.py.
"""

import sys
from pathlib import Path

import hls4ml
import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The settings `faast build` gives a model when no --hls4ml-config says otherwise.
BACKEND, IO_TYPE, PART, CLOCK_PERIOD = "Vitis", "io_parallel", "xcu250-figd2104-2L-e", 4
QONNX_DOMAIN = "qonnx.custom_op.general"


def hgq2_model():
    from hgq.config import QuantizerConfigScope
    from hgq.layers import QDense

    keras.utils.set_random_seed(4)
    # Weights with trained-looking bit widths (kbi, symmetric saturation), activations kif that wrap.
    with (
        QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"),
        QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"),
    ):
        hits = keras.Input((12,), name="hits")
        h = QDense(10, activation="relu", name="hgq_dense1")(hits)
        scores = QDense(3, name="hgq_scores")(h)
        model = keras.Model(hits, scores, name="hgq2_mlp")
    rng = np.random.default_rng(4)
    model.predict(rng.normal(0, 4, (256, 12)).astype(np.float32), verbose=0)  # calibrates the quantizers
    return model


def qonnx_model():
    rng = np.random.default_rng(5)

    def constant(name, value):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    def quant(source, scale, bits, target, signed, narrow=0):
        return helper.make_node(
            "Quant",
            [source, scale, "zero", bits],
            [target],
            domain=QONNX_DOMAIN,
            signed=signed,
            narrow=narrow,
            rounding_mode="ROUND",
        )

    initializers = [
        constant("w1", rng.normal(0, 0.5, (6, 8))),
        constant("b1", rng.normal(0, 0.3, 8)),
        constant("w2", rng.normal(0, 0.5, (8, 3))),
        constant("b2", rng.normal(0, 0.3, 3)),
        constant("input_scale", 2.0**-4),
        constant("weight_scale", 2.0**-5),
        constant("activation_scale", 2.0**-3),
        constant("zero", 0.0),
        constant("eight_bits", 8.0),
        constant("six_bits", 6.0),
    ]
    nodes = [
        quant("pixels", "input_scale", "eight_bits", "pixels_q", signed=1),
        quant("w1", "weight_scale", "six_bits", "w1_q", signed=1, narrow=1),
        helper.make_node("MatMul", ["pixels_q", "w1_q"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        quant("h2", "activation_scale", "six_bits", "h2_q", signed=0),
        quant("w2", "weight_scale", "six_bits", "w2_q", signed=1, narrow=1),
        helper.make_node("MatMul", ["h2_q", "w2_q"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qonnx_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets)


def write_models(folder):
    folder.mkdir(parents=True, exist_ok=True)
    hgq2_model().save(folder / "hgq2.keras")
    onnx.save(qonnx_model(), folder / "qonnx.onnx")


def cleaned_qonnx(path):
    """The clean-up hls4ml's QONNX documentation asks for before conversion."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(ModelWrapper(str(path)))
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    return cleanup_model(model)


def predict(folder, inputs_path, references_path):
    inputs = dict(np.load(inputs_path))
    scratch = Path(references_path).resolve().parent / "keras3_projects"
    settings = {"backend": BACKEND, "io_type": IO_TYPE, "part": PART, "clock_period": CLOCK_PERIOD}
    import hgq  # noqa: F401  (registers HGQ2's layers, which the saved model names)

    model = keras.models.load_model(folder / "hgq2.keras")
    config = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=BACKEND)
    hgq2 = hls4ml.converters.convert_from_keras_model(
        model, hls_config=config, output_dir=str(scratch / "hgq2"), **settings
    )
    model = cleaned_qonnx(folder / "qonnx.onnx")
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend=BACKEND)
    qonnx = hls4ml.converters.convert_from_onnx_model(
        model, hls_config=config, output_dir=str(scratch / "qonnx"), **settings
    )
    references = {}
    for key, graph, input_name, output_name in (
        (("hgq2", hgq2, "hits", "hgq_scores")),
        ("qonnx", qonnx, "pixels", "logits"),
    ):
        graph.compile()
        for dtype, suffix in ((np.float32, ""), (np.float64, "/double")):
            x = np.ascontiguousarray(inputs[f"{key}/{input_name}"], dtype=dtype)
            references[f"{key}/{output_name}{suffix}"] = np.asarray(graph.predict(x), dtype=dtype).reshape(len(x), -1)
        references[f"{key}/{output_name}/type"] = np.array(str(graph.get_output_variables()[0].type.precision))
    np.savez(references_path, **references)


if __name__ == "__main__":
    command, folder, *paths = sys.argv[1:]
    if command == "models":
        write_models(Path(folder))
    else:
        predict(Path(folder).resolve(), *paths)
