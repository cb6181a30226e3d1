"""The audit log as an admin reads it: one `DecisionRow` per routed ticket, filtered.

Pure: rows from the store (plain dicts) and an optional catalogue (for service names) in,
typed rows and text out. `bpsm decisions` and the review page both use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from pydantic import BaseModel, ConfigDict

from connector.catalogue import Catalogue, pick_text
from connector.events import RoutingDecision, TicketEvent


class DecisionFilter(BaseModel):
    """What `bpsm decisions` and the review page may filter on; None means any."""

    model_config = ConfigDict(frozen=True)

    since: float | None = None  # epoch seconds
    service: str | None = None
    process: str | None = None
    low_confidence: bool = False  # only low-confidence decisions
    overridden: bool = False  # only decisions an agent overrode
    routing_id: int | None = None  # one decision
    limit: int = 20


class DecisionRow(BaseModel):
    """One routing decision, with what an admin needs to judge it at a glance."""

    model_config = ConfigDict(frozen=True)

    id: int
    time: datetime
    host: str
    ticket: str
    subject: str
    service: str | None
    service_name: str | None
    process: str
    queue: str
    confidence: float
    outcome: str
    mode: str
    low_confidence: bool
    overridden: bool
    dry_run: bool
    corrected: bool = False  # a person chose the service/process in the review page

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, on in (
                ("low-confidence", self.low_confidence),
                ("overridden", self.overridden),
                ("dry-run", self.dry_run),
                ("corrected", self.corrected),
            )
            if on
        )


def is_overridden(row: Mapping[str, Any]) -> bool:
    """An agent moved the ticket after the connector did, or had placed it before."""
    return row.get("moved_by_agent_at") is not None or row.get("outcome") == "override"


def decision_row(
    row: Mapping[str, Any], catalogue: Catalogue | None = None, zone: tzinfo | None = None
) -> DecisionRow:
    service = row.get("service")
    name = None
    if service and catalogue is not None:
        try:
            name = pick_text(catalogue.service(service).name, _language(row, catalogue))
        except KeyError:  # a service since removed from the catalogue: its id is all we have
            name = None
    return DecisionRow(
        id=int(row["id"]),
        time=datetime.fromtimestamp(float(row["created_at"]), UTC).astimezone(zone),
        host=str(row["host"]),
        ticket=str(row["ticket_id"]),
        subject=_subject(row.get("event")),
        service=service,
        service_name=name,
        process=str(row["process"]),
        queue=str(row["queue"]),
        confidence=float(row["confidence"]),
        outcome=str(row["outcome"]),
        mode=str(row["mode"]),
        low_confidence=bool(row["low_confidence"]),
        overridden=is_overridden(row),
        dry_run=row["mode"] == "dry-run",
        corrected=_corrected(row.get("decision")),
    )


def _corrected(decision_json: Any) -> bool:
    if not isinstance(decision_json, str):
        return False
    try:
        return "corrected" in RoutingDecision.model_validate_json(decision_json).reasons
    except ValueError:
        return False


def _language(row: Mapping[str, Any], catalogue: Catalogue) -> str:
    language = row.get("language")
    if isinstance(language, str) and language:
        return language
    return catalogue.languages[0] if catalogue.languages else "en"


def _subject(event_json: Any) -> str:
    """The ticket's subject from its stored event; "" when the event was purged or is bad."""
    if not isinstance(event_json, str):
        return ""
    try:
        return TicketEvent.model_validate_json(event_json).subject
    except ValueError:
        return ""


def as_json(rows: list[DecisionRow]) -> str:
    """Objects with ISO times and booleans: what a script can read without a second parse."""
    return json.dumps(
        [row.model_dump(mode="json") | {"flags": list(row.flags)} for row in rows],
        ensure_ascii=False,
        indent=1,
    )


COLUMNS = ("time", "host", "ticket", "subject", "service", "process", "conf", "flags")


def as_table(rows: list[DecisionRow]) -> str:
    """A header and one aligned line per decision, subjects cut to fit a terminal."""
    lines = [
        (
            row.time.isoformat(timespec="minutes"),
            row.host,
            row.ticket,
            _cut(row.subject, 40),
            _cut(row.service_name or row.service or "-", 28),
            row.process,
            f"{row.confidence:.2f}",
            ",".join(row.flags) or "-",
        )
        for row in rows
    ]
    widths = [max([len(c)] + [len(line[i]) for line in lines]) for i, c in enumerate(COLUMNS)]
    out = []
    for line in [COLUMNS, *lines]:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return "\n".join(text.rstrip() for text in out)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
