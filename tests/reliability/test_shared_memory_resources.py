"""Shared memory regions are bounded by memory, not by file descriptors (issue 33): a region holds no
descriptor once registered, as in Triton, so a server under a 1024-descriptor limit registers a
thousand regions and still answers new clients. Also: a name or key registered twice is refused as
Triton refuses it, output windows are checked with the request, and the copies in and out of a
region survive its object being truncated or unlinked."""

import http.client
import os
import resource
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import Server, facile_input
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from faast.contract.errors import AlreadyExists, Internal, InvalidArgument
from faast.shared_memory import SharedMemoryManager

REGIONS = 1000
FD_LIMIT = 1024
ROW = np.linspace(-3, 40, 15, dtype=np.float32).reshape(1, 15)


def _descriptors(pid="self"):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _mapped(path):
    with open("/proc/self/maps") as maps:
        return sum(path in line for line in maps)


@pytest.fixture
def shm_files():
    """Make /dev/shm objects by name (4096 zero bytes unless told), removed afterwards."""
    made = []

    def make(name, size=4096):
        path = f"/dev/shm/{name}"
        with open(path, "wb") as f:
            f.truncate(size)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.path.exists(path):
            os.unlink(path)


@pytest.fixture
def limited(model_repository, tmp_path):
    """A `faast serve` of its own whose soft descriptor limit is 1024 (as a default ulimit -n)."""
    running = Server(model_repository, tmp_path / "serve.log")
    hard = resource.prlimit(running.process.pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(running.process.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, hard))
    yield running
    running.stop()


def test_a_thousand_regions_under_a_1024_descriptor_limit_leave_new_clients_answered(limited, shm_files):
    pid = limited.process.pid
    keys = [f"/faast_fd_{pid}_{i}" for i in range(REGIONS)]
    for key in keys:
        shm_files(key[1:])
    before = _descriptors(pid)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(limited.url))
    for i, key in enumerate(keys):
        request = service_pb2.SystemSharedMemoryRegisterRequest(name=f"r{i}", key=key, byte_size=4096)
        stub.SystemSharedMemoryRegister(request, timeout=30)
    assert len(limited.client.get_system_shared_memory_status().regions) == REGIONS
    assert _descriptors(pid) - before < 10, "a registered region holds a file descriptor"

    # Five new HTTP and five new gRPC clients, all connected at once, are all answered.
    http_connections = [http.client.HTTPConnection(limited.http_url, timeout=30) for _ in range(5)]
    grpc_clients = [grpcclient.InferenceServerClient(limited.url) for _ in range(5)]
    try:
        for connection in http_connections:
            connection.request("GET", "/v2/health/live")
        for connection in http_connections:
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        for client in grpc_clients:
            assert client.is_server_live()
            assert client.get_system_shared_memory_status(region_name="r999").regions["r999"].key == keys[-1]
    finally:
        for connection in http_connections:
            connection.close()
        for client in grpc_clients:
            client.close()

    # The last region still carries tensors both ways.
    with open(f"/dev/shm{keys[-1]}", "r+b") as f:
        f.write(ROW.tobytes())
    tensor = grpcclient.InferInput("input", [1, 15], "FP32")
    tensor.set_shared_memory(f"r{REGIONS - 1}", ROW.nbytes)
    output = grpcclient.InferRequestedOutput("output")
    output.set_shared_memory(f"r{REGIONS - 1}", 4, offset=1024)
    answer = limited.client.infer("facile", [tensor], outputs=[output])
    assert answer.get_output("output").shape == [1, 1]
    expected = limited.client.infer("facile", [facile_input(ROW)]).as_numpy("output")
    with open(f"/dev/shm{keys[-1]}", "rb") as f:
        assert f.read()[1024:1028] == expected.tobytes()

    limited.client.unregister_system_shared_memory()
    assert limited.client.get_system_shared_memory_status().regions == {}
    assert limited.process.poll() is None


def test_a_name_is_registered_once_and_a_key_under_one_name(shm_files):
    shm_files("faast_twice")
    shm_files("faast_other")
    manager = SharedMemoryManager()
    manager.register("one", "/faast_twice", 0, 4096)
    with pytest.raises(AlreadyExists, match="^shared memory region 'one' already in manager$"):
        manager.register("one", "/faast_other", 0, 4096)
    with pytest.raises(Internal, match="^Invalid shared memory region: '/faast_twice'$"):
        manager.register("two", "/faast_twice", 0, 16)
    manager.register("two", "/faast_other", 0, 4096)
    manager.unregister("one")
    manager.register("three", "/faast_twice", 0, 4096)  # free again once its region is gone
    assert sorted(region.name for region in manager.status()) == ["three", "two"]
    manager.unregister()
    assert AlreadyExists.grpc_code == "ALREADY_EXISTS" and AlreadyExists.http_status == 400


def test_a_region_holds_no_descriptor_and_its_mapping_goes_with_its_last_view(shm_files):
    path = shm_files("faast_mapping", 8192)
    manager = SharedMemoryManager()
    before = _descriptors()
    manager.register("m", "/faast_mapping", 4096, 4096)
    assert _descriptors() == before
    assert _mapped(path) == 1
    held = manager.read("m", 0, 64, in_place=True)  # a request's in-place view
    manager.unregister("m")
    assert _mapped(path) == 1, "unmapped under a view still in use"
    del held
    assert _mapped(path) == 0


def test_copies_survive_an_object_truncated_or_unlinked(shm_files):
    path = shm_files("faast_shrinks", 3 * 4096)
    with open(path, "r+b") as f:
        f.write(bytes(range(256)) * 48)
    manager = SharedMemoryManager()
    manager.register("s", "/faast_shrinks", 0, 3 * 4096)
    assert bytes(manager.read("s", 4096, 4)) == bytes(range(4))
    manager.write("s", 8, 8, np.array([1.5, -2.0], np.float32))
    with open(path, "rb") as f:
        assert f.read(16)[8:] == np.array([1.5, -2.0], np.float32).tobytes()

    os.truncate(path, 100)  # seen by the size check, while the path names the object
    with pytest.raises(InvalidArgument, match="was truncated"):
        manager.read("s", 8192, 16)

    with open(path, "r+b") as f:  # unlinked, then shrunk through a descriptor the client kept:
        os.unlink(path)  # only the guarded copies can tell
        assert bytes(manager.read("s", 8, 8)) == np.array([1.5, -2.0], np.float32).tobytes()
        with pytest.raises(InvalidArgument, match="'s' was truncated while it was read"):
            manager.read("s", 8192, 16)
        with pytest.raises(InvalidArgument, match="'s' was truncated while it was written"):
            manager.write("s", 8192, 8, np.zeros(2, np.float32))
        os.truncate(f.fileno(), 0)
        with pytest.raises(InvalidArgument, match="truncated while it was read"):
            manager.read("s", 0, 16)

    with open(path, "wb") as f:  # another object under the same name: not the one mapped
        f.truncate(16)
    with pytest.raises(InvalidArgument, match="truncated while it was read"):
        manager.read("s", 4096, 16)
    manager.unregister()


def test_concurrent_copies_while_a_region_is_unregistered(shm_files):
    shm_files("faast_busy", 1 << 20)
    manager = SharedMemoryManager()
    failures = []

    def copy():
        for _ in range(200):
            try:
                manager.read("busy", 0, 1 << 20)
            except Exception as error:  # NotFound once unregistered; anything else is a fault
                if "Unable to find" not in str(error):
                    failures.append(error)

    manager.register("busy", "/faast_busy", 0, 1 << 20)
    threads = [threading.Thread(target=copy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(20):
        manager.unregister("busy")
        manager.register("busy", "/faast_busy", 0, 1 << 20)
    for thread in threads:
        thread.join()
    manager.unregister()
    assert failures == []


def test_output_windows_are_checked_with_the_request(server, shm_files):
    shm_files("faast_out_window")
    client = server.client
    client.register_system_shared_memory("window", "/faast_out_window", 4096)
    try:
        cases = [
            (4092, 8, "INVALID_ARGUMENT", "Invalid offset + byte size for shared memory region: 'window'"),
            (4096, 4, "INVALID_ARGUMENT", "Invalid offset for shared memory region: 'window'"),
            (
                0,
                2,
                "INTERNAL",
                "shared memory size specified with the request for output 'output' (2 bytes) should be at "
                "least 4 bytes to hold the results",
            ),
        ]
        for offset, byte_size, code, message in cases:
            output = grpcclient.InferRequestedOutput("output")
            output.set_shared_memory("window", byte_size, offset=offset)
            with pytest.raises(InferenceServerException) as caught:
                client.infer("facile", [facile_input(ROW)], outputs=[output])
            assert (caught.value.status(), caught.value.message()) == (f"StatusCode.{code}", message)

        http = httpclient.InferenceServerClient(server.http_url)
        try:
            output = httpclient.InferRequestedOutput("output")
            output.set_shared_memory("window", 8, offset=4092)
            tensor = httpclient.InferInput("input", [1, 15], "FP32")
            tensor.set_data_from_numpy(ROW)
            with pytest.raises(InferenceServerException) as caught:
                http.infer("facile", [tensor], outputs=[output])
            assert caught.value.status() == "400"
        finally:
            http.close()
    finally:
        client.unregister_system_shared_memory("window")
