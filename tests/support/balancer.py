"""faast replicas behind a real HAProxy (Debian's) configured by deploy/haproxy/haproxy.cfg, all on
loopback: replicas keep their ports across a restart, so the balancer sees the same server come back."""

import csv
import io
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import tritonclient.grpc as grpcclient

from .paths import BIN, ROOT
from .server import free_port

HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


class Replica:
    """One `faast serve` on fixed loopback ports; start() again after kill() reuses them."""

    def __init__(self, repository, log_dir, name):
        self.repository, self.name = repository, name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"127.0.0.1:{self.metrics_port}"
        self.process = None

    def start(self, timeout=60):
        self.process = subprocess.Popen(
            [
                BIN / "faast",
                "serve",
                "--model-repository",
                self.repository,
                "--host",
                "127.0.0.1",
                "--grpc-port",
                str(self.grpc_port),
                "--http-port",
                str(self.http_port),
                "--metrics-port",
                str(self.metrics_port),
                "--id",
                self.name,
            ],
            stdout=open(self.log_path, "a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(self.url) as client:
            while True:
                assert self.process.poll() is None, f"{self.name} exited: {self.log_path.read_text()[-3000:]}"
                try:
                    if client.is_server_ready():
                        return self
                except Exception:
                    assert time.monotonic() < deadline, f"{self.name} not ready after {timeout} s"
                time.sleep(0.2)

    def successes(self, model="facile"):
        """The model's successful requests as this replica's own statistics count them."""
        with grpcclient.InferenceServerClient(self.url) as client:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    def kill(self):
        """SIGKILL: the abrupt loss of a replica (a node gone), not a graceful drain."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class HAProxy:
    """haproxy -f deploy/haproxy/haproxy.cfg with the replicas given as fixed servers."""

    def __init__(self, replicas, log_dir):
        assert 1 <= len(replicas) <= 4, "the shipped config has four fixed-server slots"
        self.grpc_port, self.http_port, self.stats_port = free_port(), free_port(), free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.http_url = f"127.0.0.1:{self.http_port}"
        self.stats_url = f"127.0.0.1:{self.stats_port}"
        environment = {
            "FAAST_LB_GRPC_BIND": self.url,
            "FAAST_LB_HTTP_BIND": self.http_url,
            "FAAST_LB_STATS_BIND": self.stats_url,
        }
        for number, replica in enumerate(replicas, start=1):
            environment |= {
                f"FAAST_REPLICA_{number}_HOST": "127.0.0.1",
                f"FAAST_REPLICA_{number}_GRPC_PORT": str(replica.grpc_port),
                f"FAAST_REPLICA_{number}_HTTP_PORT": str(replica.http_port),
            }
        self.log_path = Path(log_dir) / "haproxy.log"
        self.process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", HAPROXY_CONFIG],
            env=os.environ | environment,
            stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT,
        )

    def server_states(self, backend):
        """{server name: status} of a backend, from HAProxy's CSV statistics ("UP", "DOWN", ...)."""
        with urllib.request.urlopen(f"http://{self.stats_url}/stats;csv", timeout=5) as answer:
            rows = csv.DictReader(io.StringIO(answer.read().decode().lstrip("# ")))
            return {row["svname"]: row["status"] for row in rows if row["pxname"] == backend}

    def wait_until(self, backend, server, status, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if self.server_states(backend).get(server, "").startswith(status):
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{backend}/{server} not {status}: {self.server_states(backend)}"
            time.sleep(0.1)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def haproxy_binary():
    """Debian's haproxy (the README's test command installs it); /usr/sbin is not on every PATH."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    assert found, "haproxy is not installed: apt-get install haproxy (the README's test command does)"
    return found
