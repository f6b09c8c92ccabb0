"""Runtime settings clients change over the protocol: request tracing and logging.

Tracing (TraceSetting): with trace_level TIMESTAMPS, every trace_rate-th request of a model (up to
trace_count, -1 for no limit) is written to trace_file as one JSON line with its timestamps.
Logging (LogSettings): switches the server's log levels and verbose level at run time.
"""

import json
import logging
import threading
import time

from .errors import InvalidArgument

TRACE_DEFAULTS = {"trace_file": [""], "trace_level": ["OFF"], "trace_rate": ["1000"], "trace_count": ["-1"],
                  "log_frequency": ["0"], "trace_mode": ["triton"]}


class TraceSettings:
    def __init__(self):
        self.global_settings = {key: list(value) for key, value in TRACE_DEFAULTS.items()}
        self.model_settings = {}  # model name -> overrides
        self._counts = {}
        self._traced = {}
        self._lock = threading.Lock()

    def update(self, model_name, updates):
        """Apply `updates` ({key: [values]}; an empty list clears a model override) and return the
        settings now in force for `model_name` (or globally)."""
        for key, values in updates.items():
            if key not in TRACE_DEFAULTS:
                raise InvalidArgument(f"unsupported trace setting '{key}'")
            if key == "trace_level" and not set(values) <= {"OFF", "TIMESTAMPS", "TENSORS"}:
                raise InvalidArgument(f"invalid trace level {values}")
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
        if "TIMESTAMPS" not in settings["trace_level"] or not settings["trace_file"][0]:
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
        settings = self.settings(model_name)
        record = {"model_name": model_name, "model_version": model_version, "request_id": request_id,
                  "timestamps": [{"name": name, "ns": ns} for name, ns in timestamps]}
        with self._lock, open(settings["trace_file"][0], "a") as trace:
            trace.write(json.dumps(record) + "\n")


def wall_ns():
    return time.time_ns()


class LogSettings:
    KEYS = {"log_file": str, "log_info": bool, "log_warning": bool, "log_error": bool, "log_verbose_level": int,
            "log_format": str}

    def __init__(self, verbose=0):
        self.values = {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                       "log_verbose_level": verbose, "log_format": "default"}

    def update(self, updates):
        for key, value in updates.items():
            if key not in self.KEYS or not isinstance(value, self.KEYS[key]):
                raise InvalidArgument(f"invalid log setting '{key}'")
            self.values[key] = value
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
