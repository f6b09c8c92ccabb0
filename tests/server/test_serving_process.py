"""Properties of the serving process itself."""

from pathlib import Path

from support import infer


def test_serving_process_never_imports_tensorflow(server, facile_inputs):
    infer(server.client, facile_inputs[0][:4])  # after a real request, with every lazy import done
    mapped = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "_multiarray_umath" in mapped  # the check sees the server's own libraries (numpy)...
    assert "tensorflow" not in mapped.lower()  # ...and no TensorFlow library
