"""What the store returns: typed rows. A delivery is a frozen dataclass (the worker's
input); the audit's rows are TypedDicts, keyed like their table's columns (a test checks
that they stay so), so that callers index them as before and mypy knows each field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from connector.events import Process, TicketEvent


@dataclass(frozen=True)
class Delivery:
    id: int
    host: str
    delivery_id: str
    ticket_id: str
    status: str
    attempts: int
    event: TicketEvent
    outcome: str | None = None
    error: str | None = None
    lease_token: str | None = None  # of the claim that returned it


def row_to_delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        host=row.host,
        delivery_id=row.delivery_id,
        ticket_id=row.ticket_id,
        status=row.status,
        attempts=row.attempts,
        event=TicketEvent.model_validate_json(row.event),
        outcome=row.outcome,
        error=row.error,
        lease_token=row.lease_token,
    )


class RoutingRow(TypedDict):
    """A row of bpsm_routings: one ticket's decision and what became of it."""

    id: int
    host: str
    ticket_id: str
    delivery: int
    process: Process
    service: str | None
    queue: str
    confidence: float
    low_confidence: int
    language: str | None
    mode: str
    outcome: str  # applying → applied | shadow | dry-run | override | failed
    decision: str  # RoutingDecision as JSON
    match: str  # ServiceMatch as JSON
    created_at: float
    applied_at: float | None
    apply_ms: float | None
    ticket_created_at: float | None
    moved_by_agent_at: float | None
    replied_at: float | None


class RoutingWithEvent(RoutingRow):
    """A routing with its delivery's event (TicketEvent as JSON; None if purged)."""

    event: str | None


class NewRouting(TypedDict):
    """What the worker decided, for a new routing row (the store adds host, ticket,
    delivery, outcome and time)."""

    process: Process
    service: str | None
    queue: str
    confidence: float
    low_confidence: int
    language: str
    mode: str
    decision: str
    match: str
    ticket_created_at: float | None


class CorrectionRow(TypedDict):
    """A row of bpsm_corrections: a person's (review page) or an agent's (queue move)
    choice of another process or service for a routed ticket."""

    id: int
    host: str
    ticket_id: str
    routing: int
    from_process: Process
    from_service: str | None
    from_queue: str
    to_process: Process
    to_service: str | None
    source: str  # review | agent
    actor: str
    status: str  # pending → applied | shadow | dry-run
    created_at: float
    applied_at: float | None


class CorrectionWithText(CorrectionRow):
    """A correction with its ticket's first event (TicketEvent as JSON)."""

    event: str


class DeadLetterRow(TypedDict):
    id: int
    delivery: int
    host: str
    ticket_id: str
    reason: str
    created_at: float
    replayed_at: float | None


class MaintenanceRow(TypedDict):
    id: int
    host: str
    item: str
    period: str
    status: str  # opening → opened | dry-run
    ticket_id: str | None
    claimed_at: float
    opened_at: float | None


class ImprovementRow(TypedDict):
    id: int
    host: str
    service: str
    open_key: str | None
    status: str  # opening → open | dry-run | closed; unsure
    reason: str
    tickets: str  # JSON list of linked ticket ids
    ticket_id: str | None
    claimed_at: float
    opened_at: float | None
    closed_at: float | None
