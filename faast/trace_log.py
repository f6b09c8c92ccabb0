"""Runtime settings clients change over the protocol: request tracing and logging.

Tracing (TraceSetting): with trace_level TIMESTAMPS, every trace_rate-th request of a model (up to
trace_count, -1 for no limit) is written to the trace file as one JSON line with its timestamps.
Logging (LogSettings): switches the server's log levels and verbose level at run time.

As in Triton, file locations are chosen by whoever starts the server (`--trace-config
triton,file=PATH`), never through the protocol: a client that could name a file could make the
server create or append anything its user may write. Values are validated when they are set, so
a bad one is refused there instead of failing every later inference. Trace records are written by
one background thread: a slow or blocking file (a FIFO, a full disk) never holds up a request.
"""

import json
import logging
import queue
import re
import threading
import time
from typing import Any

from .contract.errors import InvalidArgument, Unimplemented

log = logging.getLogger("faast.trace_log")

TRACE_DEFAULTS = {
    "trace_file": [""],
    "trace_level": ["OFF"],
    "trace_rate": ["1000"],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_mode": ["triton"],
}
TRACE_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
# --trace-config keys (tritonserver's spelling) → TraceSetting keys.
TRACE_CONFIG_KEYS = {
    "file": "trace_file",
    "level": "trace_level",
    "rate": "trace_rate",
    "count": "trace_count",
    "log-frequency": "log_frequency",
    "mode": "trace_mode",
}
TRACE_FILE_FIXED = "trace file location can not be updated through network protocol"
LOG_FILE_FIXED = "log file location can not be updated through network protocol"
TRACE_QUEUE_LIMIT = 10_000  # records waiting for the writer; beyond it records are dropped, not queued


def _check_integer(key, text, low):
    """`text` must be a decimal integer in [low, INT32_MAX], as Triton parses trace settings."""
    if not (isinstance(text, str) and re.fullmatch(r"-?[0-9]+", text) and low <= int(text) <= 2**31 - 1):
        raise InvalidArgument(f"Unable to parse '{key}', got: {text}")


def _validate_trace(key, values):
    if key not in TRACE_DEFAULTS:
        raise InvalidArgument(f"unsupported trace setting '{key}'")
    if key == "trace_file":
        raise Unimplemented(TRACE_FILE_FIXED)
    if key == "trace_mode":
        raise InvalidArgument("trace_mode can not be updated through network protocol")
    if not values:
        return
    if key == "trace_level":
        unknown = [value for value in values if value not in TRACE_LEVELS]
        if unknown:
            raise InvalidArgument(f"Unable to parse 'trace_level', got: {unknown[0]}")
        return
    if len(values) != 1:
        raise InvalidArgument(f"expect only 1 value for '{key}'")
    _check_integer(key, values[0], low=-1 if key == "trace_count" else 0)


class TraceWriter:
    """Appends JSON lines to one file from its own thread, so writing never blocks a request."""

    def __init__(self, path):
        self.path = path
        self._records: queue.Queue[dict] = queue.Queue(TRACE_QUEUE_LIMIT)
        self._dropped = 0
        self._thread = threading.Thread(target=self._write_forever, name="trace-writer", daemon=True)
        self._thread.start()

    def put(self, record):
        try:
            self._records.put_nowait(record)
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("trace file %s does not keep up; dropping trace records", self.path)

    def _write_forever(self):
        while (record := self._records.get()) is not None:
            try:
                with open(self.path, "a") as trace:
                    trace.write(json.dumps(record) + "\n")
            except OSError as error:
                log.warning("cannot write trace record to %s: %s", self.path, error)
            finally:
                self._records.task_done()

    def flush(self, timeout=5.0):
        """Wait (up to `timeout` s) until every record queued so far is written."""
        deadline = time.monotonic() + timeout
        while self._records.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)


class TraceSettings:
    def __init__(self, startup=None):
        """`startup`: TraceSetting keys → values from the command line (the only way to set trace_file)."""
        self.global_settings = {key: list(value) for key, value in TRACE_DEFAULTS.items()}
        for key, value in (startup or {}).items():
            if key != "trace_file":
                _validate_trace(key, [value])
            self.global_settings[key] = [value]
        self.model_settings = {}  # model name -> overrides
        self._counts = {}
        self._traced = {}
        self._lock = threading.Lock()
        path = self.global_settings["trace_file"][0]
        self.writer = TraceWriter(path) if path else None

    def update(self, model_name, updates):
        """Apply `updates` ({key: [values]}; an empty list clears a model override) and return the
        settings now in force for `model_name` (or globally). Nothing changes unless all are valid."""
        for key, values in updates.items():
            _validate_trace(key, values)
        with self._lock:
            target = self.model_settings.setdefault(model_name, {}) if model_name else self.global_settings
            for key, values in updates.items():
                if values:
                    target[key] = list(values)
                elif model_name:
                    target.pop(key, None)
                else:
                    target[key] = list(TRACE_DEFAULTS[key])
            return self.settings(model_name)

    def settings(self, model_name=""):
        merged = dict(self.global_settings)
        merged.update(self.model_settings.get(model_name, {}))
        return merged

    def should_trace(self, model_name):
        settings = self.settings(model_name)
        if self.writer is None or "TIMESTAMPS" not in settings["trace_level"]:
            return False
        with self._lock:
            count = self._counts[model_name] = self._counts.get(model_name, 0) + 1
            limit = int(settings["trace_count"][0])
            if count % max(int(settings["trace_rate"][0]), 1) != 0:
                return False
            if limit >= 0 and self._traced.get(model_name, 0) >= limit:
                return False
            self._traced[model_name] = self._traced.get(model_name, 0) + 1
            return True

    def write(self, model_name, model_version, request_id, timestamps):
        """Queue one request's trace record for the writer thread (only after should_trace said so)."""
        assert self.writer is not None, "should_trace is false without a trace file"
        self.writer.put(
            {
                "model_name": model_name,
                "model_version": model_version,
                "request_id": request_id,
                "timestamps": [{"name": name, "ns": ns} for name, ns in timestamps],
            }
        )


def parse_trace_config(options):
    """tritonserver's `--trace-config [MODE,]KEY=VALUE` options → TraceSetting keys and values."""
    settings = {}
    for option in options:
        mode, _, setting = option.rpartition(",")
        key, separator, value = setting.partition("=")
        if not separator or key not in TRACE_CONFIG_KEYS or mode not in ("", "triton"):
            raise ValueError(
                f"unsupported --trace-config '{option}'; use [triton,]KEY=VALUE with KEY one of "
                f"{', '.join(TRACE_CONFIG_KEYS)}"
            )
        settings[TRACE_CONFIG_KEYS[key]] = value.upper() if key == "level" else value
    return settings


def wall_ns():
    return time.time_ns()


class LogSettings:
    KEYS: dict[str, Any] = {
        "log_file": str,
        "log_info": bool,
        "log_warning": bool,
        "log_error": bool,
        "log_verbose_level": int,
        "log_format": str,
    }
    FORMATS = ("default", "ISO8601")

    def __init__(self, verbose=0):
        self.values = {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": verbose,
            "log_format": "default",
        }

    def update(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Apply `updates` ({key: value}) once every one is valid; returns the settings now in force."""
        for key, value in updates.items():
            if key == "log_file":
                raise Unimplemented(LOG_FILE_FIXED)
            if key not in self.KEYS:
                raise InvalidArgument(f"unsupported log setting '{key}'")
            expected = self.KEYS[key]
            if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
                kind = {bool: "boolean", int: "unsigned integer", str: "string"}[expected]
                raise InvalidArgument(f"expect {kind} for '{key}'")
            if key == "log_verbose_level" and not 0 <= value <= 2**32 - 1:
                raise InvalidArgument(f"expect unsigned integer for '{key}'")
            if key == "log_format" and value not in self.FORMATS:
                raise InvalidArgument(f"invalid argument for log_format, got: {value}")
        self.values.update(updates)
        root = logging.getLogger()
        if self.values["log_verbose_level"] > 0:
            root.setLevel(logging.DEBUG)
        elif self.values["log_info"]:
            root.setLevel(logging.INFO)
        elif self.values["log_warning"]:
            root.setLevel(logging.WARNING)
        else:
            root.setLevel(logging.ERROR if self.values["log_error"] else logging.CRITICAL + 1)
        return dict(self.values)
