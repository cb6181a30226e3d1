"""The audit log: one routing row per ticket (the first decision wins), and the
corrections of it — a person's in the review page, an agent's queue move."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from connector.decisions import DecisionFilter
from connector.events import TicketEvent
from connector.store.engine import StoreEngine
from connector.store.leases import HELD
from connector.store.outbox import DELIVERY_COLUMNS, new_delivery_row
from connector.store.rows import (
    CorrectionRow,
    CorrectionWithText,
    Delivery,
    NewRouting,
    RoutingRow,
    RoutingWithEvent,
)
from connector.store.schema import corrections, deliveries, routings

# The job path's statements, built once (see connector.store.leases).
_OF_TICKET = (routings.c.host == bindparam("b_host")) & (
    routings.c.ticket_id == bindparam("b_ticket")
)
_ROUTING = select(routings).where(_OF_TICKET)
_INSERT_ROUTING = insert(routings)
_INSERT_ROUTING_RETURNING = insert(routings).returning(*routings.c)
_COMPLETE_VALUES: dict[str, Any] = {
    "outcome": bindparam("b_outcome"),
    "applied_at": bindparam("b_applied"),
    "apply_ms": bindparam("b_apply_ms"),
}
# Fenced: the ticket's routing, only while the delivery's claim still holds its lease.
_FENCED = _OF_TICKET & select(deliveries.c.id).where(HELD).exists()
_COMPLETE = {
    True: update(routings).where(_FENCED).values(**_COMPLETE_VALUES),
    False: update(routings).where(_OF_TICKET).values(**_COMPLETE_VALUES),
}
_MARK_REPLIED = update(routings).where(_FENCED).values(replied_at=bindparam("b_replied"))


def _fenced(delivery: Delivery) -> dict[str, Any]:
    """The bound parameters of _FENCED for the delivery's claim."""
    return {
        "b_host": delivery.host,
        "b_ticket": delivery.ticket_id,
        "b_id": delivery.id,
        "b_token": delivery.lease_token,
    }


class Audit(StoreEngine):
    def routing(self, host: str, ticket_id: str) -> RoutingRow | None:
        with self.autocommit.connect() as conn:
            row = conn.execute(_ROUTING, {"b_host": host, "b_ticket": ticket_id}).first()
        return cast(RoutingRow, dict(row._mapping)) if row else None

    def begin_routing(self, delivery: Delivery, record: NewRouting) -> RoutingRow:
        """Create the ticket's routing row, or return the one that exists (first one wins)."""
        values = {
            "host": delivery.host,
            "ticket_id": delivery.ticket_id,
            "delivery": delivery.id,
            "outcome": "applying",
            "created_at": time.time(),
            **record,
        }
        try:
            with self.autocommit.connect() as conn:
                if conn.dialect.insert_returning:  # not SQLite < 3.35
                    row = conn.execute(_INSERT_ROUTING_RETURNING, values).first()
                    if row is not None:
                        return cast(RoutingRow, dict(row._mapping))
                else:
                    conn.execute(_INSERT_ROUTING, values)
        except IntegrityError:
            pass  # another event of the ticket was first: its row is the routing
        existing = self.routing(delivery.host, delivery.ticket_id)
        assert existing is not None
        return existing

    def complete_routing(
        self, delivery: Delivery, outcome: str, apply_ms: float, fenced: bool = True
    ) -> bool:
        """Record the routing's outcome; with `fenced`, only while the delivery's claim
        still holds its lease (False: nothing changed)."""
        values: dict[str, Any] = {
            **_fenced(delivery),
            "b_outcome": outcome,
            "b_applied": time.time(),
            "b_apply_ms": apply_ms,
        }
        if not fenced:
            del values["b_id"], values["b_token"]
        with self.autocommit.connect() as conn:
            result = conn.execute(_COMPLETE[fenced], values)
        return result.rowcount == 1

    def mark_replied(self, delivery: Delivery) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(_MARK_REPLIED, {**_fenced(delivery), "b_replied": time.time()})
        return result.rowcount == 1

    def mark_moved_by_agent(self, host: str, ticket_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(routings)
                .where(
                    and_(
                        routings.c.host == host,
                        routings.c.ticket_id == ticket_id,
                        routings.c.moved_by_agent_at.is_(None),
                    )
                )
                .values(moved_by_agent_at=time.time())
            )

    def record_agent_move(
        self, routing: RoutingRow, to_process: str, to_service: str | None, actor: str
    ) -> bool:
        """Record that an agent moved a routed ticket to another BPSM queue (issue 19): a
        correction of source "agent", already applied (the agent did it). False when this
        move of the ticket is known already."""
        now = time.time()
        with self.engine.begin() as conn:
            known = conn.execute(
                select(corrections.c.id).where(
                    and_(
                        corrections.c.routing == routing["id"],
                        corrections.c.source == "agent",
                        corrections.c.to_process == to_process,
                        corrections.c.to_service.is_(None)
                        if to_service is None
                        else corrections.c.to_service == to_service,
                    )
                )
            ).first()
            if known is not None:
                return False
            conn.execute(
                insert(corrections).values(
                    host=routing["host"],
                    ticket_id=routing["ticket_id"],
                    routing=routing["id"],
                    from_process=routing["process"],
                    from_service=routing["service"],
                    from_queue=routing["queue"],
                    to_process=to_process,
                    to_service=to_service,
                    source="agent",
                    actor=actor[:100],
                    status="applied",
                    created_at=now,
                    applied_at=now,
                )
            )
        return True

    def corrections_with_text(self, since: float | None = None) -> list[CorrectionWithText]:
        """Every correction (review page and agents' moves), oldest first, each with the
        ticket's first event (its text) as JSON: what `bpsm learn --from-audit` reads."""
        query = (
            select(corrections, deliveries.c.event)
            .join(routings, routings.c.id == corrections.c.routing)
            .join(deliveries, deliveries.c.id == routings.c.delivery)
            .order_by(corrections.c.id)
        )
        if since is not None:
            query = query.where(corrections.c.created_at >= since)
        with self.engine.connect() as conn:
            return [cast(CorrectionWithText, dict(r._mapping)) for r in conn.execute(query)]

    def all_routings(self, since: float | None = None) -> list[RoutingRow]:
        query = select(routings).order_by(routings.c.id)
        if since is not None:
            query = query.where(routings.c.created_at >= since)
        with self.engine.connect() as conn:
            return [cast(RoutingRow, dict(r._mapping)) for r in conn.execute(query)]

    def decision_rows(self, wanted: DecisionFilter) -> list[RoutingWithEvent]:
        """The newest routings that pass the filter, each with its delivery's event (for the
        subject), newest first."""
        query = (
            select(routings, deliveries.c.event)
            .select_from(routings.outerjoin(deliveries, deliveries.c.id == routings.c.delivery))
            .order_by(routings.c.created_at.desc(), routings.c.id.desc())
            .limit(max(wanted.limit, 0))
        )
        if wanted.since is not None:
            query = query.where(routings.c.created_at >= wanted.since)
        if wanted.service is not None:
            query = query.where(routings.c.service == wanted.service)
        if wanted.process is not None:
            query = query.where(routings.c.process == wanted.process)
        if wanted.routing_id is not None:
            query = query.where(routings.c.id == wanted.routing_id)
        if wanted.low_confidence:
            # Once a person corrected it, it is no longer waiting for review.
            corrected = select(corrections.c.id).where(corrections.c.routing == routings.c.id)
            query = query.where(routings.c.low_confidence != 0, ~corrected.exists())
        if wanted.overridden:
            query = query.where(
                or_(routings.c.moved_by_agent_at.is_not(None), routings.c.outcome == "override")
            )
        with self.engine.connect() as conn:
            return [cast(RoutingWithEvent, dict(r._mapping)) for r in conn.execute(query)]

    # ----- corrections ----------------------------------------------------------------------

    def record_correction(
        self, routing_id: int, to_service: str | None, to_process: str, actor: str
    ) -> int:
        """Record a person's correction of one decision and queue its delivery, in one
        transaction: the correction is never recorded without the job that applies it."""
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(routings, deliveries.c.event)
                .select_from(routings.join(deliveries, deliveries.c.id == routings.c.delivery))
                .where(routings.c.id == routing_id)
            ).first()
            if row is None:
                raise KeyError(routing_id)
            routing = row._mapping
            inserted = conn.execute(
                insert(corrections).values(
                    host=routing["host"],
                    ticket_id=routing["ticket_id"],
                    routing=routing_id,
                    from_process=routing["process"],
                    from_service=routing["service"],
                    from_queue=routing["queue"],
                    to_process=to_process,
                    to_service=to_service,
                    source="review",
                    actor=actor,
                    status="pending",
                    created_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            correction_id = int(inserted[0])
            original = TicketEvent.model_validate_json(routing["event"])
            # Where the ticket is now, as far as the connector knows: the host's "moved by an
            # agent meanwhile?" check compares the ticket's group with it.
            now_in = routing["queue"] if routing["outcome"] == "applied" else original.queue
            event_ = original.model_copy(
                update={
                    "kind": "correction",
                    "delivery_id": f"correction:{correction_id}",
                    "queue": now_in,
                }
            )
            values = dict(zip(DELIVERY_COLUMNS, new_delivery_row(event_, now), strict=True))
            conn.execute(insert(deliveries).values(**values))
        return correction_id

    def correction(self, correction_id: int) -> CorrectionRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(corrections).where(corrections.c.id == correction_id)).first()
        return cast(CorrectionRow, dict(row._mapping)) if row else None

    def corrections_since(self, since: float | None = None) -> list[CorrectionRow]:
        query = select(corrections).order_by(corrections.c.id)
        if since is not None:
            query = query.where(corrections.c.created_at >= since)
        with self.engine.connect() as conn:
            return [cast(CorrectionRow, dict(r._mapping)) for r in conn.execute(query)]

    def finish_correction(self, correction_id: int, status: str, decision: dict[str, Any]) -> None:
        """Mark the correction done and make the routing row say what the ticket now is."""
        with self.engine.begin() as conn:
            row = conn.execute(select(corrections).where(corrections.c.id == correction_id)).first()
            if row is None:
                raise KeyError(correction_id)
            conn.execute(
                update(corrections)
                .where(corrections.c.id == correction_id)
                .values(status=status, applied_at=time.time())
            )
            conn.execute(update(routings).where(routings.c.id == row.routing).values(**decision))
