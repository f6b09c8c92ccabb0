"""A real tritonserver 2.51 with its metrics service on, and /metrics scrapes parsed into families,
for comparing faast's /metrics with Triton's (tests/server/test_metrics.py).

Triton is the one tests/reliability/triton_reference.py builds (its venv, its stand-in FACILE
Python-backend model); only the command line differs: metrics on a free loopback port, and any
`--metrics-config` options.
"""

import re
import urllib.request
from dataclasses import dataclass, field

from reliability.triton_reference import start_triton

from .server import free_port


def start_triton_with_metrics(workdir, *metrics_config, timeout=120):
    """tritonserver serving the stand-in FACILE from workdir/repository (explicit mode, facile
    loaded) with metrics on loopback and `--metrics-config OPTION` for each of metrics_config; returns
    once facile is ready: (process, http_url, metrics_url). Stop it with terminate() and wait()."""
    metrics_port = free_port()
    options = [arg for option in metrics_config for arg in ("--metrics-config", option)]
    process, _, http_url = start_triton(workdir, *options, metrics_port=metrics_port, timeout=timeout)
    return process, http_url, f"127.0.0.1:{metrics_port}"


def scrape(metrics_url):
    """The text of http://metrics_url/metrics."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=10) as answer:
        return answer.read().decode()


@dataclass
class Family:
    """One family as the exposition text writes it (no parser's renaming)."""

    name: str
    type: str = ""
    help: str = ""
    samples: list = field(default_factory=list)  # (sample name, {label: value}, value text)

    @property
    def label_names(self):
        """The label names of its samples, `quantile` included (summaries)."""
        return {label for _, labels, _ in self.samples for label in labels}


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def families(text):
    """{family name: Family} of an exposition: HELP and TYPE lines name a family; a sample belongs
    to the family of its name or, for `_count`/`_sum` of a summary or histogram and `_bucket` of a
    histogram, of its stem."""
    found = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, *rest = line.split(" ", 3)
            family = found.setdefault(name, Family(name))
            if kind == "HELP":
                family.help = rest[0] if rest else ""
            else:
                family.type = rest[0]
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            stem = re.sub(r"_(count|sum|bucket)$", "", name)
            owner = name if name in found else stem
            assert owner in found, f"sample {name} comes before its family's TYPE line"
            found[owner].samples.append((name, dict(_LABEL.findall(labels or "")), value))
    return found


def sample_value(family, **labels):
    """The value of the one sample of `family` (a Family) named as the family with `labels` among its labels."""
    values = [
        float(value)
        for name, have, value in family.samples
        if name == family.name and all(have.get(k) == v for k, v in labels.items())
    ]
    assert len(values) == 1, f"{family.name}{labels}: {len(values)} samples"
    return values[0]
