"""SONIC's fallback path run on faast. CMSSW's TritonService starts a local fallback server with
cmsTriton (HeterogeneousCore/SonicTriton/scripts/cmsTriton), which runs a Triton image either with
Docker (`-d`; DOCKER names the command) or with Apptainer, and with `-I N` rewrites each model's
config.pbtxt for N CPU instances. SONIC's retry change (cms-sw/cmssw#51643) makes the client load a
model on the fallback server on demand (RepositoryModelLoad) when a remote server fails.

Apptainer is not packaged for Debian 12 (neither apptainer nor singularity-container), so its form is
not run here; the Docker form is run by podman. What cmsTriton does is restated here from its
source, as facts (the script itself is CMSSW's and is not vendored)."""

import json
import resource
import shutil
import socket
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import Server, infer
from support.podman import PODMAN, RUN_OPTIONS

STARTED = "Started GRPCInferenceService"  # the line cmsTriton greps the server's log for
VERBOSE = ["--log-verbose=1", "--log-error=1", "--log-warning=1", "--log-info=1"]  # cmsTriton -v


def cmstriton_edit_model(model, local_repository, instances):
    """cmsTriton -I N, for a model that is no ensemble: `cp -r` of the model folder into its local
    repository, and an instance_group of N KIND_CPU instances appended to the copy's config.pbtxt
    (a config that names no onnx or tensorflow platform gets no thread parameters)."""
    subprocess.run(["cp", "-r", model, local_repository], check=True)
    config = local_repository / model.name / "config.pbtxt"
    with config.open("a") as appended:
        appended.write(f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}\n]\n\n")


def cmstriton_docker_run(docker, name, repositories, base_port, image):
    """cmsTriton's `$DOCKER run` line for a CPU server started with -v: ports base, base+1 and
    base+2 for HTTP, gRPC and metrics, each repository mounted at its own path."""
    http, grpc, metrics = base_port, base_port + 1, base_port + 2
    return [
        *docker,
        "run",
        "-d",
        "--name",
        name,
        "--shm-size=1g",
        "--ulimit",
        "memlock=-1",
        "--ulimit",
        "stack=67108864",
        "--ipc=host",
        "--cap-add=IPC_OWNER",
        f"-p{http}:{http}",
        f"-p{grpc}:{grpc}",
        f"-p{metrics}:{metrics}",
        *(f"-v{repository}:{repository}" for repository in repositories),
        image,
        "tritonserver",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        *(f"--model-repository={repository}" for repository in repositories),
        *VERBOSE,
    ]


def on_this_machine(command):
    """cmsTriton's line as podman can run it here, changed only where podman or this machine refuse
    it: podman refuses --shm-size beside --ipc=host (Docker ignores it: the host's /dev/shm is
    shared), this VM cannot raise RLIMIT_MEMLOCK past its hard limit, and podman here needs
    support.podman's ulimits and the host network (which shares the -p ports as they are)."""
    changed = list(command)
    changed.remove("--shm-size=1g")
    hard_memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if hard_memlock != resource.RLIM_INFINITY:
        changed[changed.index("memlock=-1")] = f"memlock={hard_memlock}"
    at = changed.index("run") + 1
    return changed[:at] + RUN_OPTIONS + changed[at:]


def _free_port_range(count=3):
    """A base port whose next `count` ports are all free (cmsTriton's -P BASE)."""
    while True:
        sockets = [socket.socket()]
        sockets[0].bind(("0.0.0.0", 0))
        base = sockets[0].getsockname()[1]
        try:
            for port in range(base + 1, base + count):
                sockets.append(socket.socket())
                sockets[-1].bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for each in sockets:
                each.close()


def _logs(name):
    """`$DOCKER logs NAME |&`: the server's stdout and stderr together, as cmsTriton reads them."""
    return subprocess.run([*PODMAN, "logs", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout


@pytest.mark.slow
def test_cmstriton_docker_line_serves_a_repository_rewritten_for_n_instances(
    image, model_repository, server, facile_inputs, tmp_path
):
    """cmsTriton -d -I 2 -v -m MODEL start, with podman as DOCKER: the model copied and rewritten into
    TMPDIR/local_model_repo, the image run with cmsTriton's flags, mounts and command (changed only
    where podman or this machine refuse it), readiness told by the log line cmsTriton waits for, the
    rewritten instance_group served, answers as this checkout's faast gives, and a clean stop."""
    shipped = tmp_path / "cvmfs" / "facile"  # the model as CMSSW ships it: world-readable
    shutil.copytree(model_repository / "facile", shipped, ignore=shutil.ignore_patterns("hls4ml"))
    subprocess.run(["chmod", "-R", "a+rX", tmp_path / "cvmfs"], check=True)
    name = f"faast_sonic_{uuid.uuid4().hex[:8]}"  # cmsTriton -n: its container and its TMPDIR
    local_repository = tmp_path / f".{name}" / "local_model_repo"
    local_repository.mkdir(parents=True)
    cmstriton_edit_model(shipped, local_repository, instances=2)
    base_port = _free_port_range()
    command = cmstriton_docker_run(PODMAN, name, [local_repository], base_port, image)

    refused = subprocess.run(command, capture_output=True, text=True)  # the line unchanged: podman's own rule
    assert refused.returncode != 0 and "cannot set shmsize" in refused.stderr, refused.stderr
    runnable = on_this_machine(command)
    assert runnable[runnable.index(image) :] == command[command.index(image) :]  # the server's command line as is
    run = subprocess.run(runnable, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 120
        while STARTED not in _logs(name):
            state = json.loads(subprocess.run([*PODMAN, "inspect", name], capture_output=True).stdout)[0]["State"]
            assert state["Running"] and time.monotonic() < deadline, _logs(name)
            time.sleep(1)
        rows = facile_inputs[0][:64]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{base_port + 1}") as client:
            assert client.is_model_ready("facile")
            (group,) = client.get_model_config("facile").config.instance_group
            assert (group.count, group.kind) == (2, group.KIND_CPU)
            answer = infer(client, rows)
        np.testing.assert_array_equal(answer, infer(server.client, rows))
    finally:
        stopped = subprocess.run([*PODMAN, "stop", name], capture_output=True, text=True)  # cmsTriton stop
        state = json.loads(subprocess.run([*PODMAN, "inspect", name], capture_output=True).stdout)[0]["State"]
        removed = subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, text=True)
    assert stopped.returncode == 0 and removed.returncode == 0, stopped.stderr + removed.stderr
    assert state["ExitCode"] == 0, _logs(name)


def _second_model(model_repository, repository, name):
    """FACILE again in `repository`, under another name."""
    shutil.copytree(model_repository / "facile", repository / name, ignore=shutil.ignore_patterns("hls4ml"))
    config = repository / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "facile"', f'name: "{name}"'))


def test_explicit_mode_loads_a_model_on_demand_while_another_serves_traffic(model_repository, facile_inputs, tmp_path):
    """A fallback server in explicit mode serves one model under steady traffic from several
    clients; a model is then loaded on demand with RepositoryModelLoad (as SONIC's retry does) and
    serves at once, and no request on the busy model fails or changes its answer meanwhile."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile", ignore=shutil.ignore_patterns("hls4ml"))
    _second_model(model_repository, repository, "ondemand")
    server = Server(repository, tmp_path / "serve.log", "--model-control-mode=explicit", "--load-model=facile")
    rows = facile_inputs[0][:32]
    expected = infer(server.client, rows)
    stop, answered, failures = threading.Event(), [], []

    def traffic():
        with grpcclient.InferenceServerClient(server.url) as client:
            while not stop.is_set():
                try:
                    answered.append(np.array_equal(infer(client, rows), expected))
                except Exception as error:  # every failure is the test's finding
                    failures.append(error)

    clients = [threading.Thread(target=traffic) for _ in range(3)]
    try:
        assert not server.client.is_model_ready("ondemand")
        for client in clients:
            client.start()
        while len(answered) < 20:  # the traffic is flowing
            assert not failures, failures
            time.sleep(0.01)
        before_load = len(answered)
        server.client.load_model("ondemand")
        during_load = len(answered) - before_load
        assert server.client.is_model_ready("ondemand")
        np.testing.assert_array_equal(infer(server.client, rows, "ondemand"), expected)
        time.sleep(0.2)  # traffic goes on after the load too
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
        server.stop()
    assert not failures, failures[:3]
    assert during_load > 0, "no request was served while the model loaded"
    assert all(answered), f"{answered.count(False)} of {len(answered)} answers changed"
