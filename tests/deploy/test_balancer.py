"""Three real faast replicas on loopback behind a real HAProxy running the shipped
deploy/haproxy/haproxy.cfg: tritonclient (gRPC and HTTP) and perf_analyzer through it, requests
spread over the replicas (each replica's own statistics), one replica killed mid-run (only its
in-flight calls may fail, every other call is answered, correctly) and back in rotation once
restarted."""

import json
import os
import re
import subprocess
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support import BIN, infer
from support.balancer import HAProxy, Replica

# slow: four real servers, a kill and a restart, perf_analyzer
pytestmark = pytest.mark.slow

ROWS = 64  # channels per request


@pytest.fixture(scope="module")
def cluster(model_repository, tmp_path_factory):
    logs = tmp_path_factory.mktemp("balancer")
    replicas = [Replica(model_repository, logs, f"replica{n}") for n in (1, 2, 3)]
    balancer = None
    try:
        for replica in replicas:
            replica.start()
        balancer = HAProxy(replicas, logs)
        for backend in ("faast_grpc", "faast_http"):
            for n in (1, 2, 3):
                balancer.wait_until(backend, f"replica{n}", "UP")
        yield balancer, replicas
    finally:
        if balancer:
            balancer.stop()
        for replica in replicas:
            replica.stop()


@pytest.fixture(scope="module")
def channels(facile_inputs, cluster):
    """Rows and the answer a replica gives for them directly (the kernel is deterministic)."""
    features = facile_inputs[0][:ROWS].astype(np.float32)
    _, replicas = cluster
    with grpcclient.InferenceServerClient(replicas[0].url) as client:
        expected = infer(client, features, outputs=[grpcclient.InferRequestedOutput("output")])
    return features, expected


def _successes(replicas):
    return [replica.successes() for replica in replicas]


def test_tritonclient_grpc_and_http_requests_spread_over_every_replica(cluster, channels):
    balancer, replicas = cluster
    features, expected = channels
    before = _successes(replicas)
    answered = 0
    with grpcclient.InferenceServerClient(balancer.url) as client:
        assert client.is_server_ready() and client.get_model_metadata("facile").name == "facile"
        for _ in range(60):  # one client, one HTTP/2 connection: only an L7 balancer spreads it
            np.testing.assert_array_equal(
                infer(client, features, outputs=[grpcclient.InferRequestedOutput("output")]), expected
            )
            answered += 1
    client = httpclient.InferenceServerClient(balancer.http_url)
    try:
        assert client.is_server_ready()
        for _ in range(30):
            np.testing.assert_array_equal(
                infer(client, features, outputs=[httpclient.InferRequestedOutput("output")]), expected
            )
            answered += 1
    finally:
        client.close()
    served = [after - old for after, old in zip(_successes(replicas), before, strict=True)]
    assert sum(served) == answered, served  # every answer came from exactly one replica
    assert all(count >= answered // 10 for count in served), served  # and every replica took its share


def test_a_killed_replica_loses_only_its_in_flight_calls_and_rejoins_when_restarted(cluster, channels):
    balancer, replicas = cluster
    features, expected = channels
    clients, outcomes, lock, stop = 6, [], threading.Lock(), threading.Event()

    def call_back_to_back():
        with grpcclient.InferenceServerClient(balancer.url) as client:
            while not stop.is_set():
                try:
                    answer = infer(client, features, outputs=[grpcclient.InferRequestedOutput("output")])
                    outcome = "right" if np.array_equal(answer, expected) else "wrong"
                except Exception as error:  # counted: only the killed replica's in-flight calls may fail
                    outcome = f"failed: {error}"
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=call_back_to_back) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    with lock:
        before_kill = len(outcomes)
    replicas[1].kill()
    balancer.wait_until("faast_grpc", "replica2", "DOWN")
    time.sleep(2)  # traffic on the two left
    with lock:
        while_down = len(outcomes)
    replicas[1].start()
    balancer.wait_until("faast_grpc", "replica2", "UP")
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    failed = [outcome for outcome in outcomes if outcome.startswith("failed")]
    assert before_kill > 20 and while_down > before_kill + 20, (before_kill, while_down)
    assert "wrong" not in outcomes
    assert len(failed) <= clients, failed  # at most one in-flight call per client was on the killed replica
    assert outcomes.count("right") == len(outcomes) - len(failed)
    assert replicas[1].successes() > 0  # back in rotation: a fresh process counts only calls routed after restart
    assert not any(thread.is_alive() for thread in threads)


def test_perf_analyzer_through_the_balancer_reaches_every_replica(cluster, perf_analyzer):
    balancer, replicas = cluster
    for n in (1, 2, 3):
        balancer.wait_until("faast_grpc", f"replica{n}", "UP")
    before = _successes(replicas)
    run = subprocess.run(
        [
            perf_analyzer / "bin" / "perf_analyzer",
            "-m",
            "facile",
            "-x",
            "1",  # the version whose statistics to compare: each statistics call may reach another replica
            "-u",
            balancer.url,
            "-i",
            "grpc",
            "-b",
            str(ROWS),
            "--concurrency-range",
            "4",
            "--measurement-mode",
            "count_windows",
            "--measurement-request-count",
            "200",
            "--stability-percentage",
            "100",
            "--max-trials",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"LD_LIBRARY_PATH": str(perf_analyzer / "lib")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert float(re.search(r"Throughput: ([\d.e+]+) infer/sec", run.stdout).group(1)) > 0
    served = [after - old for after, old in zip(_successes(replicas), before, strict=True)]
    assert all(count >= 20 for count in served), served


def test_faast_bench_and_plan_through_the_balancer_count_every_replica(cluster, tmp_path):
    balancer, replicas = cluster
    for n in (1, 2, 3):
        balancer.wait_until("faast_grpc", f"replica{n}", "UP")
    urls = ",".join(replica.url for replica in replicas)
    bench = subprocess.run(
        [BIN / "faast", "bench", balancer.url, "--replicas", urls, "--model", "facile", "--batch", str(ROWS)]
        + ["--concurrency", "3", "--duration", "2", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    (level,) = json.loads((tmp_path / "bench.json").read_text())["levels"]
    assert level["errors"] == 0 and level["requests"] > 0
    assert list(level["replica_requests"]) == [replica.url for replica in replicas]
    assert all(count > 0 for count in level["replica_requests"].values()), level["replica_requests"]
    plan = subprocess.run(
        [BIN / "faast", "plan", "--t-cpu", "0.5", "--p", "0.15", "--url", balancer.url, "--replicas", urls],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    assert f"measured at 3 replicas behind {balancer.url}" in plan.stdout
    per_accelerator = float(re.search(r"one accelerator feeds ([\d.]+) client processes", plan.stdout).group(1))
    fed = int(re.search(r"3 feed (\d+)", plan.stdout).group(1))  # N_acc = the replicas named
    assert abs(fed - per_accelerator * 3) <= 1, plan.stdout
