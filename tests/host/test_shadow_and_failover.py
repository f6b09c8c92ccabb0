"""A card guarded by the bit-exact engine, in a real server on the recording stand-in of pyxrt (no
hardware; the stand-in card runs the kernel's C simulation and can be told to flip a bit of its
outputs, or to vanish): shadow validation re-runs the card's executions on the engine, counts and
logs the rows that differ and takes a card that keeps disagreeing out of readiness; failover answers
on the engine, bit-exactly, while no compute unit is in rotation, and goes back to the card."""

import json
import re
import shutil
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from support import ROOT, Server
from support.cards import U250_SHELL, facile_rows, fake_xclbin

from faast.contract.kernel import KernelDescription
from faast.host.csim import CsimDevice

CUS = [f"facile_top_{i}" for i in range(1, 5)]  # fake_xclbin's compute units


def _guarded_card(model_repository, tmp_path, monkeypatch, cards, **parameters):
    """A FACILE repository on the stand-in card `cards` (JSON-able list), with `parameters` added to
    its config.pbtxt; returns the cards file (rewrite it to change the cards in the running server)."""
    repository = tmp_path / "repository"
    shutil.copytree(model_repository / "facile", repository / "facile")
    fake_xclbin(repository / "facile" / "1")
    config = repository / "facile" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in parameters.items())
    )
    cards_file = tmp_path / "cards.json"
    cards_file.write_text(json.dumps(cards))
    monkeypatch.setenv("FAAST_STANDIN_CARDS", str(cards_file))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests" / "support" / "standin_site"))
    return repository, cards_file


def _metric(server, family):
    """facile's sample of `family` on /metrics, None when the family has no sample for it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    found = re.search(rf'^{family}{{model="facile",version="1"}} (\S+)$', text, re.M)
    return None if found is None else float(found.group(1))


def _until(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _infer(client, rows):
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return client.infer("facile", [tensor]).as_numpy("output")


def test_shadow_validation_counts_logs_and_unreadies_a_card_that_computes_wrong(
    model_repository, tmp_path, monkeypatch
):
    repository, _ = _guarded_card(
        model_repository, tmp_path, monkeypatch, [{"name": U250_SHELL, "corrupt": CUS}], shadow_validation="1"
    )
    server = Server(repository, tmp_path / "serve.log")
    requests = [facile_rows(40 + i, seed=i) for i in range(6)]
    try:
        replies = [_infer(server.client, rows) for rows in requests]
        # Each execution's first output word has a flipped bit: exactly its row 0 differs from the engine.
        _until(
            lambda: (
                _metric(server, "faast_shadow_mismatched_rows")
                == _metric(server, "faast_kernel_executions") - _metric(server, "faast_shadow_skipped_executions")
            ),
            "the shadow check never caught up with the executions",
        )
        assert _metric(server, "faast_shadow_mismatched_rows") > 0
        if _metric(server, "faast_shadow_skipped_executions") == 0:  # every execution, warm-up included
            assert _metric(server, "faast_shadow_validated_rows") >= sum(len(rows) for rows in requests)
        _until(lambda: not server.client.is_model_ready("facile"), "a disagreeing card stayed ready")
        index = {m.name: m for m in server.client.get_model_repository_index().models}
        assert index["facile"].state == "UNAVAILABLE"
        assert (
            "shadow validation: " in index["facile"].reason
            and "differ from the bit-exact engine" in index["facile"].reason
        )
    finally:
        server.stop()
    csim = CsimDevice(KernelDescription.read(repository / "facile" / "1"))
    try:
        card_rows_differ = [
            not np.array_equal(reply, csim.run(rows)) for rows, reply in zip(requests, replies, strict=True)
        ]
    finally:
        csim.close()
    assert all(card_rows_differ)  # the answers are the card's own: shadow validation never alters them
    logged = re.findall(
        r"rows from card0/facile_top_\d differ from the bit-exact engine; row 0: inputs (\[.*?\])",
        (tmp_path / "serve.log").read_text(),
    )
    assert logged and all(len(json.loads(inputs)) == 15 for inputs in logged)


@pytest.mark.slow  # a second server on the stand-in card, pulled out and put back
def test_failover_answers_on_the_engine_while_the_card_is_gone_and_returns_to_it(
    model_repository, tmp_path, monkeypatch
):
    repository, cards = _guarded_card(
        model_repository, tmp_path, monkeypatch, [{"name": U250_SHELL}], failover="engine", shadow_validation="0.5"
    )
    server = Server(repository, tmp_path / "serve.log")
    rows = facile_rows(300, seed=5)
    csim = CsimDevice(KernelDescription.read(repository / "facile" / "1"))
    expected = csim.run(rows)
    csim.close()
    try:
        assert np.array_equal(_infer(server.client, rows).view(np.uint32), expected.view(np.uint32))
        assert _metric(server, "faast_failover_active") == 0 and _metric(server, "faast_failover_rows") == 0
        cards.write_text(json.dumps([{"name": U250_SHELL, "present": False}]))
        time.sleep(0.5)  # the stand-in follows the file
        for _ in range(4):  # no request fails: faulted executions go to the next unit, then the engine
            assert np.array_equal(_infer(server.client, rows).view(np.uint32), expected.view(np.uint32))
        assert _metric(server, "faast_failover_active") == 1
        assert _metric(server, "faast_failover_rows") >= len(rows)
        assert server.client.is_model_ready("facile") and server.client.is_server_ready()

        cards.write_text(json.dumps([{"name": U250_SHELL, "present": True}]))
        _until(lambda: _metric(server, "faast_failover_active") == 0, "failover never ended")
        on_engine = _metric(server, "faast_failover_rows")
        executions = _metric(server, "faast_kernel_executions")
        assert np.array_equal(_infer(server.client, rows).view(np.uint32), expected.view(np.uint32))
        assert _metric(server, "faast_failover_rows") == on_engine  # back on the card
        assert _metric(server, "faast_kernel_executions") > executions
        assert _metric(server, "faast_shadow_mismatched_rows") == 0  # a correct card agrees with the engine
        assert _metric(server, "faast_shadow_validated_rows") > 0
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "its executions run on the bit-exact engine (failover)" in log
    assert "failover to the engine ended" in log


def test_a_bad_guard_parameter_fails_the_load_with_the_reason(model_repository, tmp_path):
    bad = {
        "too_often": ('"shadow_validation" value { string_value: "2" }', "must be a fraction of executions"),
        "not_a_fraction": ('"shadow_validation" value { string_value: "often" }', "from 0 to 1, not 'often'"),
        "no_such_failover": ('"failover" value { string_value: "csim" }', "must be one of none, engine, not 'csim'"),
    }
    for name, (parameter, _) in bad.items():
        shutil.copytree(model_repository / "facile", tmp_path / "repository" / name)
        config = tmp_path / "repository" / name / "config.pbtxt"
        text = config.read_text().replace('name: "facile"', f'name: "{name}"')
        config.write_text(text + f"parameters {{ key: {parameter} }}\n")
    server = Server(tmp_path / "repository", tmp_path / "serve.log", expect_ready=False)
    try:
        index = {m.name: m for m in server.client.get_model_repository_index().models}
    finally:
        server.stop()
    for name, (_, message) in bad.items():
        assert index[name].state == "UNAVAILABLE" and f"of '{name}' " in index[name].reason, index[name]
        assert message in index[name].reason, index[name].reason
