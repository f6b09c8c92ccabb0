"""A real Prometheus (Debian's package) for the deployment tests: started on a scrape configuration,
queried through its HTTP API, stopped after."""

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request

from .server import free_port


@contextlib.contextmanager
def running_prometheus(folder, scrape_configs, interval_seconds):
    """Prometheus scraping `scrape_configs` (a list of scrape jobs) every `interval_seconds`, with its
    configuration, data and log in `folder`; yields its address (host:port)."""
    binary = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/sbin")
    assert binary, "prometheus is not installed: apt-get install prometheus (the README's test command does)"
    config = {
        "global": {"scrape_interval": f"{interval_seconds}s", "evaluation_interval": f"{interval_seconds}s"},
        "scrape_configs": scrape_configs,
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    address = f"127.0.0.1:{free_port()}"
    with open(folder / "prometheus.log", "w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(address, expr):
    """The result of the instant query `expr` (a list of series), asserting Prometheus answered it."""
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as answer:
        reply = json.load(answer)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]
