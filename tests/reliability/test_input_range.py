"""Input values the kernel's fixed-point input type cannot hold (NaN, ±Inf, beyond its range): served as
the C++ assignment answers them by default, refused before they are queued when the model's
config.pbtxt says `parameters { key: "input_range" value { string_value: "refuse" } }` — over gRPC
and HTTP, from the request's bytes or a client's shared memory. FACILE's input is ap_fixed<16,9,TRN,WRAP>:
[-256, 255.9921875], and a wrapping type takes NaN and ±Inf as 0."""

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support import Server, bits, facile_input, facile_with_config, infer
from tritonclient.utils import InferenceServerException

REFUSE = 'parameters { key: "input_range" value { string_value: "refuse" } }\nbackend: "faast"'
HIGHEST = 255.9921875  # ap_fixed<16,9>'s largest value


@pytest.fixture(scope="module")
def refusing(model_repository, tmp_path_factory):
    folder = tmp_path_factory.mktemp("input_range")
    running = Server(facile_with_config(model_repository, folder, 'backend: "faast"', REFUSE), folder / "serve.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(33).uniform(-10, 10, (4, 15)).astype(np.float32)


def _with(rows, row, element, value):
    changed = rows.copy()
    changed[row, element] = value
    return changed


def test_served_by_default_as_the_type_assigns_them(server, rows):
    """NaN and ±Inf wrap to 0 in FACILE's wrapping type: the answer is the one for 0 there."""
    client = grpcclient.InferenceServerClient(server.url)
    try:
        zero = infer(client, _with(rows, 2, 3, 0.0))
        for value in (np.nan, np.inf, -np.inf):
            assert (bits(infer(client, _with(rows, 2, 3, value))) == bits(zero)).all(), value
    finally:
        client.close()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 300.0, -256.5])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_refused_naming_input_and_row(refusing, rows, value, protocol):
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(refusing.url if protocol == "grpc" else refusing.http_url)
    try:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("facile", [facile_input(_with(rows, 2, 3, value), module)])
    finally:
        client.close()
    assert raised.value.status() == ("StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "400")
    message = raised.value.message()
    assert "input 'input' for model 'facile'" in message
    assert f"holds {np.float32(value)} in row 2 (element 3)" in message
    assert "range [-256.0, 255.9921875]" in message


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_values_within_range_still_served(server, refusing, rows, protocol):
    module = grpcclient if protocol == "grpc" else httpclient
    good = _with(_with(rows, 0, 0, HIGHEST), 1, 1, -256.0)  # the type's ends are in range
    clients = [module.InferenceServerClient(s.url if protocol == "grpc" else s.http_url) for s in (server, refusing)]
    try:
        default, checked = (infer(client, good) for client in clients)
    finally:
        for client in clients:
            client.close()
    assert (bits(checked) == bits(default)).all()


def test_shared_memory_input_checked_too(refusing, rows):
    """A shared-memory input is copied (under the guard) and checked, never packed in place."""
    client = grpcclient.InferenceServerClient(refusing.url)
    region = shm.create_shared_memory_region("range_in", "/faast_input_range_in", rows.nbytes)
    try:
        client.register_system_shared_memory("range_in", "/faast_input_range_in", rows.nbytes)
        for values, refused in ((rows, False), (_with(rows, 3, 14, np.nan), True)):
            shm.set_shared_memory_region(region, [values])
            tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
            tensor.set_shared_memory("range_in", rows.nbytes)
            if refused:
                with pytest.raises(InferenceServerException, match=r"holds nan in row 3 \(element 14\)"):
                    client.infer("facile", [tensor])
            else:
                assert client.infer("facile", [tensor]).as_numpy("output").shape == (4, 1)
    finally:
        client.unregister_system_shared_memory()
        client.close()
        shm.destroy_shared_memory_region(region)


def test_unknown_choice_fails_the_load(model_repository, tmp_path):
    bad = REFUSE.replace('"refuse"', '"clip"')
    repository = facile_with_config(model_repository, tmp_path, 'backend: "faast"', bad)
    running = Server(repository, tmp_path / "serve.log", expect_ready=False)
    expected = "parameter 'input_range' of 'facile' must be one of accept, refuse, not 'clip'"
    try:
        deadline = time.monotonic() + 60
        while expected not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert expected in (tmp_path / "serve.log").read_text()
        assert not running.client.is_model_ready("facile")
    finally:
        running.stop()
