"""FACILE end to end: the stock tritonclient against a real `faast serve` on the C-simulated kernel."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import facile_input, hls4ml_predict, infer
from tritonclient.utils import InferenceServerException

BATCHES = (1, 333, 1000, 16000, 40000)  # 40000 spans several kernel executions and CUs


OUTPUT = [grpcclient.InferRequestedOutput("output")]  # asked for by name, as the stock client's examples do


@pytest.mark.slow  # hls4ml compiles its C simulation
def test_outputs_equal_hls4ml_predict_bit_for_bit(server, model_repository, facile_inputs, tmp_path):
    features, energy = facile_inputs
    served = []
    start = 0
    for batch in BATCHES:
        rows = features[start : start + batch]
        start += batch
        out = infer(server.client, rows, outputs=OUTPUT)
        assert out.shape == (batch, 1) and out.dtype == np.float32
        served.append(out)
    served = np.concatenate(served)
    reference = hls4ml_predict(model_repository / "facile" / "1" / "hls4ml", features[:start], tmp_path)
    assert reference.shape == served.shape
    mismatches = np.flatnonzero(served.view(np.uint32) != reference.view(np.uint32))
    assert mismatches.size == 0, f"{mismatches.size} rows differ from hls4ml predict(), first {mismatches[:5]}"
    # The kernel reconstructs energies, not noise: its median response above 5 GeV is close to one.
    truth = energy[:start]
    response = served.ravel()[truth > 5] / truth[truth > 5]
    assert 0.9 < np.median(response) < 1.1


def test_server_and_model_metadata(server):
    client = server.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("facile") and not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata("facile", as_json=True)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "15"]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": ["-1", "1"]}]
    config = client.get_model_config("facile").config
    assert config.max_batch_size >= 16384
    assert config.parameters["device"].string_value == "auto"
    assert "model_configuration" in client.get_server_metadata().extensions


def _error(call):
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def test_errors_have_triton_codes_and_wording(server, facile_inputs):
    client = server.client
    rows = facile_inputs[0][:2]

    status, message = _error(lambda: infer(client, rows, "no_such_model", outputs=OUTPUT))
    assert status == "StatusCode.NOT_FOUND"
    assert message == "Request for unknown model: 'no_such_model' is not found"

    status, message = _error(lambda: infer(client, np.zeros((2, 16), np.float32), outputs=OUTPUT))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message.startswith(
        "[request id: <id_unknown>] unexpected shape for input 'input' for model 'facile'. "
        "Expected [-1,15], got [2,16]. NOTE: Setting a non-zero max_batch_size"
    )

    tensor = facile_input(rows.astype(np.float64), datatype="FP64")
    status, message = _error(lambda: client.infer("facile", [tensor]))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message == (
        "[request id: <id_unknown>] inference input 'input' data-type is 'FP64', but model 'facile' expects 'FP32'"
    )

    tensor = facile_input(rows)
    tensor._input.ClearField("shape")  # declare 3 rows but send the bytes of 2
    tensor._input.shape.extend([3, 15])
    status, message = _error(lambda: client.infer("facile", [tensor], request_id="r7"))
    assert status == "StatusCode.INVALID_ARGUMENT"
    assert message == (
        "[request id: r7] input byte size mismatch for input 'input' for model 'facile'. Expected 180, got 120"
    )

    # Nothing above hurt the server: a good request still gets the kernel's answer.
    assert infer(client, rows, outputs=OUTPUT).shape == (2, 1)
