"""kernels/generated_cpp.py reads what only hls4ml's generated C++ says. These are hls4ml's internals:
this test fails on an hls4ml the reading was not checked against, and when the reading finds less in
the code the installed hls4ml writes (the session's FACILE build) than the graph says is there."""

import re
from importlib.metadata import version

from faast.contract.kernel import KernelDescription
from faast.kernels import generated_cpp


def test_the_installed_hls4ml_is_one_the_reading_was_checked_against():
    assert version("hls4ml") in generated_cpp.SUPPORTED_HLS4ML, (
        f"hls4ml {version('hls4ml')}: check kernels/generated_cpp.py against the C++ it writes, then list it"
    )


def test_every_layer_configuration_is_read(model_repository):
    """Each configuration struct in parameters.h: its name, and the templates every dense and batch
    normalization layer picks; kernel.json's layers carry what was read."""
    firmware = model_repository / "facile" / "1" / "hls4ml" / "firmware"
    structs = re.split(r"(?=\nstruct )", (firmware / "parameters.h").read_text())[1:]
    assert len(structs) >= 10
    for text in structs:
        config = generated_cpp.LayerConfig.of(text)
        assert config.struct is not None and text.lstrip().startswith(f"struct {config.struct}")
        if ": nnet::dense_config" in text:
            assert config.templates == {"kernel": "DenseLatency", "product": "mult"}
        if ": nnet::batchnorm_config" in text:
            assert config.templates["product"] == "mult"
    layers = KernelDescription.read(model_repository / "facile" / "1").layers
    assert layers is not None
    for layer in layers:
        if layer.class_name == "Dense":
            assert layer.templates == {"kernel": "DenseLatency", "product": "mult"}
        if layer.class_name == "BatchNormalization":
            assert layer.templates["product"] == "mult"


def test_the_top_functions_tensors_are_read_as_the_graph_describes_them(model_repository):
    folder = model_repository / "facile" / "1"
    description = KernelDescription.read(folder)
    config = {
        "ProjectName": description.project,
        "InputShapes": {t.name: list(t.shape) for t in description.inputs},
        "OutputShapes": {t.name: list(t.shape) for t in description.outputs},
    }
    inputs, outputs = generated_cpp.top_tensors(folder / "hls4ml" / "firmware", config)
    for read, described in zip([*inputs, *outputs], [*description.inputs, *description.outputs], strict=True):
        assert (read.name, read.shape, read.size, read.type_name) == (
            described.name,
            described.shape,
            described.size,
            described.type_name,
        )
        assert read.fixed == described.fixed
