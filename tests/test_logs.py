"""Log fields: any name is safe, and every logging call of the package goes through the one
helper that makes it so (a plain `extra={"name": …}` raised KeyError in the middle of a job)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from connector.logs import JsonFormatter, log_extra, record_fields

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
