"""`bpsm decisions`: the audit log with a header, filters and clean JSON, without a catalogue."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.events import TicketEvent
from connector.mapping import Mapping
from connector.route import decide
from connector.store import Store
from connector.worker import routing_record
from tests.e2e import ROOT

TICKETS = [
    # ticket, subject, body, age in hours
    (
        "1",
        "Printer",
        "The printer on the 2nd floor does not print: paper jam, and the toner is low.",
        1,
    ),
    ("2", "asdf", "qwerty", 2),
    ("3", "Skriveren", "Skriveren i andre etasje skriver ikke ut noe som helst.", 50),
    ("4", "VPN", "I cannot connect to the VPN from home since this morning.", 3),
]


@pytest.fixture
def audit(tmp_path, monkeypatch, example_index):
    """A data folder whose store holds real decisions of the example catalogue, one of them
    later moved by an agent."""
    monkeypatch.setenv("BPSM_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    now = time.time()
    for ticket, subject, body, age in TICKETS:
        event = TicketEvent(
            host="demo", delivery_id=f"d{ticket}", ticket_id=ticket, subject=subject, body=body
        )
        received = now - age * 3600
        store.record_delivery(event, now=received)
        delivery = next(d for d in _deliveries(store) if d.ticket_id == ticket)
        match = example_index.classify(body, subject)
        decision = decide(event, match, example_index.catalogue, Mapping())
        mode = "dry-run" if ticket != "4" else "route"
        record = routing_record(event, match, decision, mode) | {"created_at": received}
        store.begin_routing(delivery, record)
        outcome = "applied" if ticket == "4" else "dry-run"
        store.complete_routing(delivery, outcome, 1.0, fenced=False)
    store.mark_moved_by_agent("demo", "4")
    store.dispose()
    return tmp_path


def _deliveries(store: Store):
    return [store.delivery(i) for i in range(1, 20) if store.delivery(i) is not None]


def run(*args: str) -> list[dict]:
    catalogue = str(ROOT / "catalogue.yaml")
    result = CliRunner().invoke(main, ["decisions", *args, "--json", "--catalogue", catalogue])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_rows_are_objects_with_iso_times_and_booleans(audit):
    rows = run()
    assert [r["ticket"] for r in rows] == ["1", "2", "4", "3"]  # newest first
    first = rows[0]
    assert isinstance(first["low_confidence"], bool) and isinstance(first["dry_run"], bool)
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert first["subject"] == "Printer" and first["service"] == "printing"
    assert first["service_name"] == "Printing and scanning" and first["flags"] == ["dry-run"]
    moved = next(r for r in rows if r["ticket"] == "4")
    assert moved["overridden"] and moved["flags"] == ["overridden"]


@pytest.mark.parametrize(
    "args,tickets",
    [
        (["--since", "24h"], ["1", "2", "4"]),
        (["--service", "printing"], ["1", "3"]),
        (["--process", "relation"], ["2"]),
        (["--low-confidence"], ["2"]),
        (["--overridden"], ["4"]),
        (["--limit", "2"], ["1", "2"]),
        (["--service", "printing", "--since", "24h"], ["1"]),
    ],
)
def test_filters(audit, args, tickets):
    assert [r["ticket"] for r in run(*args)] == tickets


def test_table_has_a_header_and_the_flags(audit):
    result = CliRunner().invoke(main, ["decisions"])
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "time",
        "host",
        "ticket",
        "subject",
        "service",
        "process",
        "conf",
        "flags",
    ]
    vague = next(line for line in lines if " asdf " in line)
    assert "low-confidence,dry-run" in vague and "relation" in vague


def test_works_without_a_catalogue(audit):
    result = CliRunner().invoke(
        main, ["decisions", "--json", "--catalogue", str(audit / "missing.yaml")]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["service"] == "printing" and rows[0]["service_name"] is None


def test_bad_since_is_a_usage_error(audit):
    result = CliRunner().invoke(main, ["decisions", "--since", "soon"])
    assert result.exit_code == 2 and "--since" in result.output
