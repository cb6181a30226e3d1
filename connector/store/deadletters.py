"""Dead letters: deliveries given up on, listed and put back in the queue (`bpsm replay`)."""

from __future__ import annotations

import time
from typing import cast

from sqlalchemy import and_, select, update

from connector.store.engine import StoreEngine
from connector.store.outbox import NOT_ENQUEUED
from connector.store.rows import DeadLetterRow
from connector.store.schema import dead_letters, deliveries, routings


class DeadLetters(StoreEngine):
    def list_dead_letters(self, include_replayed: bool = False) -> list[DeadLetterRow]:
        query = select(dead_letters).order_by(dead_letters.c.id)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        with self.engine.connect() as conn:
            return [cast(DeadLetterRow, dict(r._mapping)) for r in conn.execute(query)]

    def replay(self, dead_letter_id: int | None = None) -> list[int]:
        """Put dead-lettered deliveries back in the queue; returns their delivery ids."""
        now = time.time()
        with self.engine.begin() as conn:
            query = select(dead_letters).where(dead_letters.c.replayed_at.is_(None))
            if dead_letter_id is not None:
                query = query.where(dead_letters.c.id == dead_letter_id)
            rows = conn.execute(query).all()
            for row in rows:
                conn.execute(
                    update(dead_letters).where(dead_letters.c.id == row.id).values(replayed_at=now)
                )
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == row.delivery)
                    .values(
                        status="queued",
                        attempts=0,
                        next_attempt_at=now,
                        enqueued_at=NOT_ENQUEUED,  # the running service's dispatcher takes it
                        error=None,
                        outcome=None,
                    )
                )
                # A failed routing must be allowed to run again.
                conn.execute(
                    update(routings)
                    .where(
                        and_(
                            routings.c.host == row.host,
                            routings.c.ticket_id == row.ticket_id,
                            routings.c.outcome.in_(["failed", "applying"]),
                        )
                    )
                    .values(outcome="applying")
                )
        return [int(r.delivery) for r in rows]
