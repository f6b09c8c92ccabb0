#!/opt/faast/bin/python3
"""The image's HEALTHCHECK: ready as Kubernetes' readiness probe sees it, on the HTTP port the server
was started with (tritonserver's --http-port, default 8000), without curl in the image."""

import sys
import urllib.request

PORT = 8000
arguments = open("/proc/1/cmdline", "rb").read().decode().split("\0")
for number, argument in enumerate(arguments):
    if argument.startswith("--http-port="):
        PORT = int(argument.split("=", 1)[1])
    elif argument == "--http-port" and number + 1 < len(arguments):
        PORT = int(arguments[number + 1])
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError:
    sys.exit(1)
