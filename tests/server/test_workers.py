"""`faast serve --workers N`: a supervisor and N worker processes sharing the gRPC, HTTP and metrics
ports (SO_REUSEPORT), which must look like one server: every client gets its own answers whichever
worker its connection reached, control calls made on one worker hold on all of them, statistics and
/metrics are the sums over the workers, SIGTERM drains every worker, and a worker set that cannot
start ends the supervisor with tritonserver's wording.

Which worker serves a connection is read from the kernel: /proc/net/tcp names the server end of each
connection and /proc/<pid>/fd says which worker holds it. References are a lone faast's answers (the
session's `server`), bit for bit."""

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support import BIN, Server, bits, facile_input, facile_with_config, free_port, infer
from support.triton_metrics import families, sample_value, scrape
from tritonclient.utils import InferenceServerException

WORKERS = 2
CLIENTS = 64
BATCHES = (1, 17, 200, 600)  # the rows of each client's requests: 818 a client, 52352 in all
LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them
QUEUE_DELAY_S = 3  # the SIGTERM test's batching delay: its small requests stay this long in the server
EXIT_TIMEOUT_S = 10


# --- processes and sockets, from /proc ---------------------------------------------------------


def _stat(pid):
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _children(pid):
    """The pids of pid's living child processes."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(entry)
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) == pid and fields[0] != "Z":
                children.append(int(entry))
    return sorted(children)


def _alive(pid):
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _cpu_seconds(pid):
    """utime + stime of pid."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _faast_processes_on(port):
    """Pids of living faast processes whose command line names `port` (the ones these tests start do)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    args = cmdline.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any("faast" in arg for arg in args) and str(port) in args and _alive(entry):
                found.append(int(entry))
    return found


def _socket_inodes(pid):
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp():
    """(local port, remote port, state, inode) of every TCP socket of this network namespace."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
                rows.append((local, remote, fields[3], int(fields[9])))
    return rows


def _listening(pid, port):
    """Whether pid holds a socket listening on port."""
    return bool(_socket_inodes(pid) & {inode for local, _, state, inode in _tcp() if local == port and state == LISTEN})


def _connections_held(pids, ports):
    """{worker pid: how many established connections to `ports` it holds the server end of}."""
    server_ends = {inode for local, _, state, inode in _tcp() if local in ports and state == ESTABLISHED}
    return {pid: len(_socket_inodes(pid) & server_ends) for pid in pids}


def _own_client_ports(port):
    """The local ports of this test process's established connections to `port`."""
    mine = _socket_inodes(os.getpid())
    return {
        local for local, remote, state, inode in _tcp() if remote == port and state == ESTABLISHED and inode in mine
    }


def _holder(pids, port, client_port):
    """The worker holding the server end of the connection from client_port to port, if any does."""
    ends = {
        inode for local, remote, state, inode in _tcp() if (local, remote, state) == (port, client_port, ESTABLISHED)
    }
    return next((pid for pid in pids if _socket_inodes(pid) & ends), None)


# --- servers and clients -----------------------------------------------------------------------


def _start(repository, log_path, *options):
    """A real `faast serve --workers 2 ...` and its worker pids, once every worker listens on the
    three ports and answers ready."""
    server = Server(repository, log_path, "--workers", str(WORKERS), *options)
    deadline = time.monotonic() + 120
    ports = (server.port, server.http_port, server.metrics_port)
    try:
        while not (
            len(pids := _children(server.process.pid)) == WORKERS
            and all(_listening(pid, port) for pid in pids for port in ports)
        ):
            assert server.process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"workers {pids} never all listened on {ports}"
            time.sleep(0.1)
        clients = _fresh_clients(server, pids, count=WORKERS)
        try:
            for _, client, pid in clients:
                while not client.is_server_ready():
                    assert time.monotonic() < deadline, f"worker {pid} never became ready"
                    time.sleep(0.1)
        finally:
            _close(clients)
    except BaseException:
        _shut(server, _children(server.process.pid))
        raise
    return server, pids


def _shut(server, pids):
    """Stop a server these tests started; a worker left over (a failed test) is killed by its pid."""
    try:
        if server.process.poll() is None:
            server.stop()
    finally:
        server.client.close()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _client(module, server):
    """A client on a TCP connection of its own: gRPC Python shares one connection among the
    channels of a process unless each has its own subchannel pool."""
    if module is grpcclient:
        return grpcclient.InferenceServerClient(server.url, channel_args=[("grpc.use_local_subchannel_pool", 1)])
    return httpclient.InferenceServerClient(server.http_url)


def _fresh_clients(server, pids, count=8, limit=64, modules=(grpcclient, httpclient)):
    """At least `count` clients on new connections, of `modules` in turn (gRPC and HTTP), opened
    until every worker holds the server end of at least one: [(module, client, worker pid)]. An HTTP
    client serves the thread that made it only (geventhttpclient)."""
    clients = []
    try:
        while len(clients) < count or {pid for _, _, pid in clients} != set(pids):
            assert len(clients) < limit, f"{limit} connections never reached every worker: {clients}"
            module = modules[len(clients) % len(modules)]
            port = server.port if module is grpcclient else server.http_port
            before = _own_client_ports(port)
            client = _client(module, server)
            clients.append((module, client, None))
            assert client.is_server_live()
            (new,) = _own_client_ports(port) - before
            clients[-1] = (module, client, _holder(pids, port, new))
            assert clients[-1][2] in pids, f"no worker holds the connection from port {new}"
    except BaseException:
        _close(clients)
        raise
    return clients


def _close(clients):
    for _, client, _ in clients:
        client.close()


def _capture(function, *args):
    """function(*args), or the exception it raised (for the test's own thread to assert on)."""
    try:
        return function(*args)
    except Exception as error:
        return error


def _statistics(module, client):
    """(inference_count, execution_count, success count) of facile version 1, as a client reads them."""
    if module is grpcclient:
        (stats,) = client.get_inference_statistics("facile").model_stats
        return stats.inference_count, stats.execution_count, stats.inference_stats.success.count
    (stats,) = client.get_inference_statistics("facile")["model_stats"]
    success = stats["inference_stats"]["success"].get("count", 0)
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0)), int(success)


def _index(module, client):
    """RepositoryIndex as (name, version, state, reason) rows."""
    models = (
        client.get_model_repository_index(as_json=True).get("models", [])
        if module is grpcclient
        else client.get_model_repository_index()
    )
    return [(m["name"], m.get("version", ""), m.get("state", ""), m.get("reason", "")) for m in models]


def _shm_regions(module, client):
    """The names of the system shared-memory regions a client sees registered."""
    if module is grpcclient:
        return set(client.get_system_shared_memory_status(as_json=True).get("regions", {}))
    return {region["name"] for region in client.get_system_shared_memory_status()}


@pytest.fixture(scope="module")
def workers(model_repository, tmp_path_factory):
    """A `faast serve --workers 2` shared by the tests that leave it as they found it: (server, pids)."""
    server, pids = _start(model_repository, tmp_path_factory.mktemp("workers") / "serve.log")
    yield server, pids
    _shut(server, pids)


# --- the tests ---------------------------------------------------------------------------------


def test_64_concurrent_clients_each_get_their_own_answers(workers, server, facile_inputs):
    """64 clients at once, each on its own connection (gRPC and HTTP in turn), each sending distinct
    rows in batches of several sizes: every answer is bit for bit a lone faast's for those rows, the
    connections are spread over both workers, and both workers spent CPU time serving them."""
    served, pids = workers
    features = facile_inputs[0]
    order = np.random.default_rng(2).permutation(len(features))[: CLIENTS * sum(BATCHES)]
    reference = infer(server.client, np.ascontiguousarray(features[order]))  # one request, lone faast
    held = {}
    spread = threading.Barrier(
        CLIENTS, action=lambda: held.update(_connections_held(pids, {served.port, served.http_port}))
    )

    def session(index):
        """This client's requests: [(positions in `order`, answer)]."""
        rng = np.random.default_rng(100 + index)
        module = (grpcclient, httpclient)[index % 2]
        client = _client(module, served)
        try:
            answers, start = [], index * sum(BATCHES)
            for size in rng.permutation(BATCHES):
                positions = np.arange(start, start + size)
                start += size
                answers.append((positions, infer(client, np.ascontiguousarray(features[order[positions]]))))
                if len(answers) == 1:
                    spread.wait(timeout=120)  # every client holds its connection open here
            return answers
        except BaseException:
            spread.abort()  # the others need not wait for this one
            raise
        finally:
            client.close()

    cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
    threads, results = [], {}
    for index in range(CLIENTS):
        threads.append(threading.Thread(target=lambda i=index: results.setdefault(i, _capture(session, i))))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=300)
    cpu_used = {pid: _cpu_seconds(pid) - cpu_before[pid] for pid in pids}

    failed = {index: result for index, result in results.items() if isinstance(result, Exception)}
    assert len(results) == CLIENTS and not failed, failed
    wrong = []
    for index, answers in results.items():
        assert sorted(len(positions) for positions, _ in answers) == sorted(BATCHES)
        for positions, answer in answers:
            assert answer.shape == (len(positions), 1)
            if not np.array_equal(bits(answer), bits(reference[positions])):
                wrong.append((index, len(positions)))
    assert not wrong, f"(client, rows) answered with rows not their own: {wrong}"
    assert sum(held.values()) >= CLIENTS and all(held.values()), f"connections held by each worker: {held}"
    busiest = max(cpu_used.values())
    assert all(used > 0.1 * busiest for used in cpu_used.values()), f"CPU seconds each worker used: {cpu_used}"


def test_statistics_and_metrics_are_the_sums_over_workers(model_repository, server, facile_inputs, tmp_path):
    """Clients on both workers send known requests; ModelStatistics over gRPC and HTTP through every
    connection, and /metrics on every scrape, give the totals sent, not one worker's share."""
    served, pids = _start(model_repository, tmp_path / "serve.log")
    clients = []
    try:
        clients = _fresh_clients(served, pids, count=16)
        rows = np.ascontiguousarray(facile_inputs[0][: sum(BATCHES)])
        reference = infer(server.client, rows)

        # One request at a time, round the clients (an HTTP client serves the thread that made it only).
        for start, stop in zip(np.cumsum((0, *BATCHES[:-1])), np.cumsum(BATCHES), strict=True):
            for _, client, pid in clients:
                answer = infer(client, rows[start:stop])
                assert np.array_equal(bits(answer), bits(reference[start:stop])), f"worker {pid}"
        requests, inferences = len(clients) * len(BATCHES), len(clients) * sum(BATCHES)

        answers = {
            (module.__name__, n, pid): _statistics(module, client) for n, (module, client, pid) in enumerate(clients)
        }
        (executions,) = {executions for _, executions, _ in answers.values()}  # the same through every connection
        assert set(answers.values()) == {(inferences, executions, requests)}, answers
        assert 1 <= executions <= requests
        for _ in range(8):  # each scrape a new connection, to whichever worker the kernel picks
            found = families(scrape(f"127.0.0.1:{served.metrics_port}"))
            assert sample_value(found["nv_inference_request_success"], model="facile", version="1") == requests
            assert sample_value(found["nv_inference_count"], model="facile", version="1") == inferences
    finally:
        _close(clients)
        _shut(served, pids)


def test_model_unload_and_load_hold_on_every_worker(model_repository, server, facile_inputs, tmp_path):
    """In explicit model control, an unload made through a connection to one worker leaves facile
    unready everywhere, with Triton's error for an inference, before the call returns; a load made
    through a connection to the other worker serves it everywhere again, with the right answers."""
    served, pids = _start(
        model_repository, tmp_path / "serve.log", "--model-control-mode", "explicit", "--load-model", "facile"
    )
    rows = np.ascontiguousarray(facile_inputs[0][:300])
    reference = infer(server.client, rows)
    clients, unloaded, loaded = [], [], []
    try:
        clients = _fresh_clients(served, pids)
        unloader = next(c for c in clients if c[2] == pids[0])
        loader = next(c for c in clients if c[2] == pids[1])
        unloader[1].unload_model("facile")

        unloaded, messages = _fresh_clients(served, pids), set()
        for module, client, pid in unloaded:
            assert not client.is_model_ready("facile"), f"{module.__name__} client on worker {pid}"
            with pytest.raises(InferenceServerException) as caught:
                infer(client, rows)
            messages.add(caught.value.message())
            if module is grpcclient:
                assert caught.value.status() == "StatusCode.NOT_FOUND"
            assert _index(module, client) == [("facile", "", "UNAVAILABLE", "unloaded")]
        (message,) = messages  # the same through every connection, and Triton's
        assert message.startswith("Request for unknown model: 'facile' has no available versions"), message

        loader[1].load_model("facile")
        loaded = _fresh_clients(served, pids)
        for module, client, pid in [*loaded, *unloaded]:
            assert client.is_model_ready("facile"), f"{module.__name__} client on worker {pid}"
            assert np.array_equal(bits(infer(client, rows)), bits(reference))
            assert _index(module, client) == [("facile", "1", "READY", "")]
    finally:
        _close([*clients, *unloaded, *loaded])
        _shut(served, pids)


def test_shared_memory_registration_holds_on_every_worker(workers, server, facile_inputs):
    """A system shared-memory region registered through one connection is listed and used for input
    and output through connections to every worker; unregistered through another, it is gone from all."""
    served, pids = workers
    rows = np.ascontiguousarray(facile_inputs[0][:500])
    reference = infer(server.client, rows)
    tag = os.getpid()
    input_region = shm.create_shared_memory_region("workers_in", f"/faast_workers_in_{tag}", rows.nbytes)
    output_region = shm.create_shared_memory_region("workers_out", f"/faast_workers_out_{tag}", reference.nbytes)
    clients = []
    try:
        shm.set_shared_memory_region(input_region, [rows])
        clients = _fresh_clients(served, pids)
        registrar = next(c for c in clients if c[2] == pids[0])[1]
        registrar.register_system_shared_memory("workers_in", f"/faast_workers_in_{tag}", rows.nbytes)
        registrar.register_system_shared_memory("workers_out", f"/faast_workers_out_{tag}", reference.nbytes)

        fresh = _fresh_clients(served, pids)
        clients += fresh
        for module, client, pid in fresh:
            assert _shm_regions(module, client) == {"workers_in", "workers_out"}, f"worker {pid}"
            shm.set_shared_memory_region(output_region, [np.zeros_like(reference)])
            tensor = module.InferInput("input", list(rows.shape), "FP32")
            tensor.set_shared_memory("workers_in", rows.nbytes)
            output = (
                grpcclient.InferRequestedOutput("output")
                if module is grpcclient
                else httpclient.InferRequestedOutput("output", binary_data=True)
            )
            output.set_shared_memory("workers_out", reference.nbytes)
            client.infer("facile", [tensor], outputs=[output])
            answer = shm.get_contents_as_numpy(output_region, np.float32, list(reference.shape))
            assert np.array_equal(bits(answer), bits(reference)), f"{module.__name__} client on worker {pid}"

        next(c for c in clients if c[2] == pids[1])[1].unregister_system_shared_memory()
        after = _fresh_clients(served, pids)
        clients += after
        for module, client, pid in after:
            assert _shm_regions(module, client) == set(), f"worker {pid}"
    finally:
        if clients:
            clients[0][1].unregister_system_shared_memory()
        _close(clients)
        shm.destroy_shared_memory_region(input_region)
        shm.destroy_shared_memory_region(output_region)


def _trace_rate_and_verbosity(module, client):
    """The global trace_rate and log_verbose_level a client reads."""
    if module is grpcclient:
        trace = client.get_trace_settings(as_json=True)["settings"]["trace_rate"]["value"][0]
        return trace, client.get_log_settings(as_json=True)["settings"]["log_verbose_level"]["uint32_param"]
    return client.get_trace_settings()["trace_rate"], client.get_log_settings()["log_verbose_level"]


def test_trace_and_log_settings_hold_on_every_worker(workers):
    """Trace and log settings changed through a connection to one worker are the settings every
    worker reports; changed back through the other worker, they are back everywhere."""
    served, pids = workers
    clients = _fresh_clients(served, pids)
    try:
        first = next(c for c in clients if c[2] == pids[0])
        second = next(c for c in clients if c[2] == pids[1])
        rate, verbosity = _trace_rate_and_verbosity(*first[:2])
        assert rate != "7" and verbosity != 1
        for trace_rate, verbose, (_, via, _) in (("7", 1, first), (rate, verbosity, second)):
            via.update_trace_settings(settings={"trace_rate": trace_rate})
            via.update_log_settings({"log_verbose_level": verbose})
            fresh = _fresh_clients(served, pids)
            try:
                for module, client, pid in fresh:
                    assert _trace_rate_and_verbosity(module, client) == (trace_rate, verbose), (
                        f"{module.__name__} client on worker {pid}"
                    )
            finally:
                _close(fresh)
    finally:
        _close(clients)


def _pending(served):
    text = scrape(f"127.0.0.1:{served.metrics_port}")
    return sample_value(families(text)["nv_inference_pending_request_count"], model="facile", version="1")


def _answered(served):
    """facile's successful requests, as ModelStatistics counts them."""
    return _statistics(grpcclient, served.client)[2]


def _refusal(served):
    """How a new gRPC and a new HTTP request fare: (gRPC status, HTTP status or error), None for OK."""
    rows = np.zeros((2, 15), np.float32)
    try:
        with grpcclient.InferenceServerClient(served.url, channel_args=[("grpc.use_local_subchannel_pool", 1)]) as c:
            c.infer("facile", [facile_input(rows)], client_timeout=5)
        grpc_answer = None
    except InferenceServerException as error:
        grpc_answer = error.status().removeprefix("StatusCode.")
    except grpc.RpcError as error:
        grpc_answer = error.code().name
    request = urllib.request.Request(
        f"http://{served.http_url}/v2/models/facile/infer",
        data=b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,15],"data":[' + b",".join([b"0"] * 15) + b"]}]}",
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=5).close()
        http_answer = None
    except urllib.error.HTTPError as error:
        http_answer = error.code
    except urllib.error.URLError as error:
        http_answer = type(error.reason).__name__
    return grpc_answer, http_answer


def test_sigterm_finishes_in_flight_requests_on_every_worker(model_repository, server, tmp_path):
    """Requests on gRPC connections to both workers (three on each) and on HTTP connections are all
    still in the server when the supervisor gets SIGTERM: every one is answered right, new requests
    are refused meanwhile (as by a lone faast), the supervisor exits 0 and no worker is left.

    The requests are held in the server by the dynamic batcher's delay, as in the lone-faast test
    (tests/reliability/test_client_faults.py): the emulator answers even facile's largest batch
    (65536 rows) in tens of milliseconds, too soon to signal while it runs. Together they stay below
    one execution's 16384 rows, so nothing sends them on before the delay."""
    repository = facile_with_config(
        model_repository,
        tmp_path,
        "max_queue_delay_microseconds: 100\n",
        f"max_queue_delay_microseconds: {int(QUEUE_DELAY_S * 1e6)}\n",
    )
    served, pids = _start(repository, tmp_path / "serve.log", "--exit-timeout-secs", str(EXIT_TIMEOUT_S))
    clients = []
    try:
        clients = _fresh_clients(served, pids, count=6, modules=(grpcclient,))
        size = 12000 // (3 * len(clients))  # rows of each gRPC request; the HTTP ones take 100
        data = np.random.default_rng(4).uniform(-3, 80, (3 * size * len(clients) + 400, 15)).astype(np.float32)
        reference = infer(server.client, data)  # one request to a lone faast
        plan = [
            (
                grpcclient,
                client,
                [(f"grpc{n}.{i}", slice(size * (3 * n + i), size * (3 * n + i + 1))) for i in range(3)],
            )
            for n, (_, client, _) in enumerate(clients)
        ]
        http_rows = 3 * size * len(clients)
        plan += [  # HTTP clients are made in the threads that use them
            (httpclient, None, [(f"http{n}", slice(http_rows + 100 * n, http_rows + 100 * (n + 1)))]) for n in range(4)
        ]
        expected = {name: reference[rows] for _, _, batches in plan for name, rows in batches}
        outcomes = {}

        def send(module, client, batches):
            if module is httpclient:
                ((name, rows),) = batches
                client = _client(httpclient, served)
                try:
                    outcomes[name] = _capture(infer, client, np.ascontiguousarray(data[rows]))
                finally:
                    client.close()
                return
            done = threading.Semaphore(0)
            for name, rows in batches:

                def record(result, error, name=name):
                    outcomes[name] = error if error is not None else result.as_numpy("output")
                    done.release()

                tensor = facile_input(np.ascontiguousarray(data[rows]), module)
                client.async_infer("facile", [tensor], callback=record, client_timeout=60)
            for _ in batches:
                done.acquire(timeout=60)

        threads = [threading.Thread(target=send, args=step) for step in plan]
        answered_before = _answered(served)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + QUEUE_DELAY_S / 2
        while (accepted := _answered(served) - answered_before + _pending(served)) < len(expected):
            assert time.monotonic() < deadline, f"only {accepted} of {len(expected)} requests reached the server"
            time.sleep(0.02)
        assert _pending(served) == len(expected), "requests were answered before SIGTERM"
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        while served.log_path.read_text().count("shutting down") < WORKERS and time.monotonic() < signalled + 5:
            time.sleep(0.02)
        during_drain = _refusal(served)
        exit_status = served.process.wait(timeout=EXIT_TIMEOUT_S + 20)
        exited_after = time.monotonic() - signalled
        for thread in threads:
            thread.join(timeout=30)
        wrong = {
            name: outcomes.get(name, "no answer")
            for name in expected
            if not isinstance(outcomes.get(name), np.ndarray)
            or not np.array_equal(bits(outcomes[name]), bits(expected[name]))
        }
        assert not wrong, wrong
        assert during_drain[0] == "UNAVAILABLE" and during_drain[1] in (503, "ConnectionRefusedError"), during_drain
        assert exit_status == 0 and exited_after < EXIT_TIMEOUT_S + 5, (exit_status, exited_after)
        assert [pid for pid in pids if _alive(pid)] == [] and _faast_processes_on(served.port) == []
        for port in (served.port, served.http_port, served.metrics_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        _close(clients)
        _shut(served, pids)


def test_a_worker_set_that_cannot_start_ends_the_supervisor(model_repository):
    """The gRPC port held by a socket that does not share it: the workers cannot bind it, and the
    supervisor exits non-zero with tritonserver's "failed to start GRPC service" and no worker left."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        done = subprocess.run(
            [
                BIN / "faast", "serve", "--model-repository", model_repository, "--host", "127.0.0.1",
                "--grpc-port", str(port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
                "--workers", str(WORKERS),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip
        left = _faast_processes_on(port)
    assert done.returncode != 0, done.stderr
    assert '"failed to start GRPC service: ' in done.stderr, done.stderr
    assert left == []
