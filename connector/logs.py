"""Structured JSON logs. Fields passed with `extra=log_extra({...})` (host, delivery, ticket…)
become keys of the JSON line.

Every `extra=` goes through `log_extra`: it puts the fields under one attribute of the
LogRecord, so a field may be called anything — `name`, `msg`, `args` included — without
logging raising `KeyError: "Attempt to overwrite 'name' in LogRecord"` in the middle of a job.
A test keeps every logging call of the package on it.

Ticket bodies are never logged at INFO; secrets never reach a log line because settings keep
them in SecretStr and host errors are built from status codes and the host's error text.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

FIELDS_ATTRIBUTE = "bpsm_fields"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", FIELDS_ATTRIBUTE}
# The keys every JSON line has; a field of the same name is written as `field_<name>`.
_OWN_KEYS = frozenset({"ts", "level", "logger", "msg", "exc"})


def log_extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The `extra=` of a logging call: `log.warning("…", extra=log_extra({"name": name}))`."""
    return {FIELDS_ATTRIBUTE: dict(fields)}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a logging call passed through `log_extra` (empty when none)."""
    return dict(getattr(record, FIELDS_ATTRIBUTE, {}))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Other libraries' plain `extra=` attributes, then ours.
        loose = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        fields: Mapping[str, Any] = getattr(record, FIELDS_ATTRIBUTE, {})
        for key, value in [*loose.items(), *fields.items()]:
            entry[f"field_{key}" if key in _OWN_KEYS else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class QueueOutageFilter(logging.Filter):
    """During a queue outage (Redis down) huey logs a full traceback on every failed poll,
    several a second per consumer thread. Keep one line per `every` seconds that names the
    queue and the error, without the traceback; the consumer retries with backoff anyway."""

    PREFIXES = ("Error reading from queue", "Error reading schedule", "Error enqueueing")

    def __init__(self, queue: str, every: float = 60.0):
        super().__init__()
        self.queue = queue
        self.every = every
        self._last = -math.inf
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("huey") or not record.exc_info:
            return True
        if not str(record.msg).startswith(self.PREFIXES):
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.every:
                return False
            self._last = now
        error = record.exc_info[1]
        lines = str(error).strip().splitlines() or [type(error).__name__]
        record.msg = (
            f"cannot reach {self.queue}: {lines[0].strip().rstrip('.')}; the consumer retries with "
            f"backoff (said at most every {self.every:g} s)"
        )
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def quiet_queue_outages(queue: str, every: float = 60.0) -> QueueOutageFilter:
    """Install QueueOutageFilter on the root's handlers (where huey's records end up)."""
    outage = QueueOutageFilter(queue, every)
    for handler in logging.getLogger().handlers:
        handler.addFilter(outage)
    return outage


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level.upper())
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
