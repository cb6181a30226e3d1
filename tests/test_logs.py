"""Log fields: any name is safe, and every logging call of the package goes through the one
helper that makes it so (a plain `extra={"name": …}` raised KeyError in the middle of a job)."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

from connector.logs import JsonFormatter, QueueOutageFilter, log_extra, record_fields

ROOT = Path(__file__).resolve().parents[1]
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def test_reserved_logrecord_names_are_safe_fields_and_reach_the_json_line():
    logger = logging.getLogger("bpsm.test.logs")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning(
            "category %s missing",
            "Printer",
            extra=log_extra({"name": "Printer", "args": [1], "msg": "m", "host": "glpi"}),
        )
    finally:
        logger.removeHandler(handler)
    (record,) = records
    assert record.name == "bpsm.test.logs" and record.getMessage() == "category Printer missing"
    assert record_fields(record)["name"] == "Printer"
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "bpsm.test.logs"
    assert line["msg"] == "category Printer missing"
    assert (line["name"], line["args"], line["host"]) == ("Printer", [1], "glpi")
    assert line["field_msg"] == "m"  # the line's own key wins; the field keeps its value


def _python_files() -> list[Path]:
    return [ROOT / "webhook_app.py", *sorted((ROOT / "connector").rglob("*.py"))]


def plain_extras(source: str) -> list[int]:
    """Lines of logging calls whose `extra=` is not `log_extra(...)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in LOG_METHODS:
            continue
        for keyword in node.keywords:
            value = keyword.value
            helper = isinstance(value, ast.Call) and getattr(value.func, "id", "") == "log_extra"
            if keyword.arg == "extra" and not helper:
                found.append(node.lineno)
    return found


def test_every_logging_call_passes_its_fields_through_log_extra():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files()
        for line in plain_extras(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_check_tells_a_plain_extra_from_the_helper():
    source = (
        "log.warning('x', extra={'name': n})\n"
        "log.info('y', extra=log_extra({'name': n}))\n"
        "ConfigDict(extra='forbid')\n"
    )
    assert plain_extras(source) == [1]


def _huey_error(message: str) -> logging.LogRecord:
    try:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
    except ConnectionError:
        return logging.LogRecord(
            "huey.consumer.Worker", logging.ERROR, __file__, 1, message, (), sys.exc_info()
        )


def test_queue_outage_is_one_line_without_traceback_per_interval():
    outage = QueueOutageFilter("Redis at BPSM_REDIS_URL=redis://127.0.0.1:6399/0", every=60)
    first = _huey_error("Error reading from queue")
    assert outage.filter(first)
    line = json.loads(JsonFormatter().format(first))
    assert line["msg"] == (
        "cannot reach Redis at BPSM_REDIS_URL=redis://127.0.0.1:6399/0: Error 111 connecting "
        "to 127.0.0.1:6399. Connection refused; the consumer retries with backoff (said at "
        "most every 60 s)"
    )
    assert "exc" not in line
    assert not outage.filter(_huey_error("Error reading from queue"))  # within the minute
    assert not outage.filter(_huey_error("Error reading schedule."))
    task_error = _huey_error("Unhandled error during execution of task %s.")
    assert outage.filter(task_error) and task_error.exc_info  # not an outage: untouched
