"""Working on a delivery: a claim takes it with a lease and a new token; the token fences
every later update (renew, finish, postpone, dead letter), so a consumer whose lease was
taken over changes nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, text, update

from connector.store.engine import StoreEngine
from connector.store.rows import Delivery, row_to_delivery
from connector.store.schema import dead_letters, deliveries


class TicketBusy(Exception):
    """Another delivery of the same ticket is being worked on: try this one a bit later."""


def held(delivery_id: Any, token: Any) -> Any:
    """The rows a claim with `token` still holds: a consumer whose lease expired and
    was taken over matches none, so its updates change nothing. (Values, or bindparams
    of a statement built once.)"""
    return (
        (deliveries.c.id == delivery_id)
        & (deliveries.c.status == "processing")
        & (deliveries.c.lease_token == token)
    )


# The job path's statements are built once, with bound parameters: building and keying
# SQLAlchemy's expression objects per call cost more CPU than running the statements (the
# claim's alone ~0.8 ms of a job's ~5). Parameter names start with b_: an UPDATE reserves
# its columns' own names.
_NOW: Any = bindparam("b_now")
_CLAIMABLE = or_(
    and_(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= _NOW),
    and_(deliveries.c.status == "processing", deliveries.c.lease_until < _NOW),
)
_SIBLING = deliveries.alias("sibling")
_SIBLING_BUSY = (
    select(_SIBLING.c.id)
    .where(
        (_SIBLING.c.host == deliveries.c.host)
        & (_SIBLING.c.ticket_id == deliveries.c.ticket_id)
        & (_SIBLING.c.id != deliveries.c.id)
        & (_SIBLING.c.status == "processing")
        & (_SIBLING.c.lease_until >= _NOW)
    )
    .exists()
)
_CLAIM = (
    update(deliveries)
    .where((deliveries.c.id == bindparam("b_id")) & _CLAIMABLE & ~_SIBLING_BUSY)
    .values(
        status="processing",
        lease_until=bindparam("b_until"),
        lease_token=bindparam("b_token"),
        attempts=deliveries.c.attempts + 1,
    )
)
_CLAIM_RETURNING = _CLAIM.returning(*deliveries.c)
_STILL_CLAIMABLE = select(deliveries.c.id).where(
    (deliveries.c.id == bindparam("b_id")) & _CLAIMABLE
)
_DELIVERY = select(deliveries).where(deliveries.c.id == bindparam("b_id"))
# Claims of one ticket's deliveries take turns on PostgreSQL (SQLite runs one writer at a
# time anyway): without it, two could both see no sibling at work.
_TICKET_LOCK = text(
    "SELECT pg_advisory_xact_lock(727275, hashtext(host || ':' || ticket_id))"
    " FROM bpsm_deliveries WHERE id = :id"
)
HELD = held(bindparam("b_id"), bindparam("b_token"))
_FINISH = (
    update(deliveries)
    .where(HELD)
    .values(
        status=bindparam("b_status"),
        outcome=bindparam("b_outcome"),
        finished_at=bindparam("b_finished"),
        error=bindparam("b_error"),
        lease_until=None,
    )
)


class Leases(StoreEngine):
    def claim(
        self, delivery_id: int, lease_seconds: float, now: float | None = None
    ) -> Delivery | None:
        """Take a delivery for processing with a new lease token; None if it is done or
        another worker holds it. Raises TicketBusy while another delivery of the same ticket
        holds a live lease: one ticket's jobs never run at the same time."""
        now = time.time() if now is None else now
        token = uuid.uuid4().hex
        values = {"b_id": delivery_id, "b_now": now, "b_until": now + lease_seconds}
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(_TICKET_LOCK, {"id": delivery_id})
            returning = self.engine.dialect.update_returning  # not SQLite < 3.35
            result = conn.execute(
                _CLAIM_RETURNING if returning else _CLAIM, {**values, "b_token": token}
            )
            row = result.first() if returning else None
            if row is None and (returning or result.rowcount != 1):
                if conn.execute(_STILL_CLAIMABLE, {"b_id": delivery_id, "b_now": now}).first():
                    raise TicketBusy(delivery_id)
                return None
            if row is None:
                row = conn.execute(_DELIVERY, {"b_id": delivery_id}).one()
        return row_to_delivery(row)

    def renew(self, delivery_id: int, token: str | None, lease_seconds: float) -> bool:
        """Extend a lease still held (the job's heartbeat); False once it is lost."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(held(delivery_id, token))
                .values(lease_until=time.time() + lease_seconds)
            )
        return result.rowcount == 1

    def finish(
        self,
        delivery_id: int,
        outcome: str,
        token: str | None,
        status: str = "done",
        error: str | None = None,
    ) -> bool:
        """Close a delivery; False (nothing changed) when the lease was lost."""
        with self.autocommit.connect() as conn:
            result = conn.execute(
                _FINISH,
                {
                    "b_id": delivery_id,
                    "b_token": token,
                    "b_status": status,
                    "b_outcome": outcome,
                    "b_finished": time.time(),
                    "b_error": error,
                },
            )
        return result.rowcount == 1

    def postpone(self, delivery_id: int, token: str | None, delay: float, error: str) -> bool:
        """Back to the queue for a later attempt; False (nothing changed) when the lease
        was lost."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(held(delivery_id, token))
                .values(
                    status="queued",
                    next_attempt_at=now + delay,
                    enqueued_at=now + delay,
                    lease_until=None,
                    error=error,
                )
            )
        return result.rowcount == 1

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Give up on a delivery; False (nothing changed, no dead letter) when the lease
        was lost."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(held(delivery.id, delivery.lease_token))
                .values(
                    status="dead",
                    outcome="dead-letter",
                    finished_at=now,
                    error=reason,
                    lease_until=None,
                )
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                insert(dead_letters).values(
                    delivery=delivery.id,
                    host=delivery.host,
                    ticket_id=delivery.ticket_id,
                    reason=reason,
                    created_at=now,
                )
            )
        return True
