"""Claims for the proactive and improvement processes: a maintenance entry opened once
per period, one open improvement per service (see the tables' comments in schema.py)."""

from __future__ import annotations

import json
import time
from typing import Any, cast

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from connector.store.engine import StoreEngine
from connector.store.rows import ImprovementRow, MaintenanceRow
from connector.store.schema import improvements, maintenance, routings

# The improvement check runs after every reactive routing: its statement is built once
# (see connector.store.leases), and counts from the service's last improvement in the same
# round trip (a closed improvement does not reopen on the same tickets).
_LAST_IMPROVEMENT = (
    select(func.coalesce(func.max(improvements.c.claimed_at), 0.0))
    .where(
        (improvements.c.host == bindparam("b_host"))
        & (improvements.c.service == bindparam("b_service"))
    )
    .scalar_subquery()
)
_REACTIVE_TICKETS = (
    select(routings.c.ticket_id)
    .where(
        and_(
            routings.c.host == bindparam("b_host"),
            routings.c.service == bindparam("b_service"),
            routings.c.process == "reactive",
            routings.c.created_at >= bindparam("b_since"),
            routings.c.created_at >= _LAST_IMPROVEMENT,
            routings.c.outcome.in_(["applied", "shadow", "dry-run", "override"]),
        )
    )
    .order_by(routings.c.id)
)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class ProcessStore:
    """Claims for the proactive and improvement processes (see the tables' comments)."""

    def __init__(self, store: StoreEngine):
        self.engine = store.engine
        self.autocommit = store.autocommit

    # ----- maintenance ----------------------------------------------------------------------

    def claim_maintenance(
        self, host: str, item: str, period: str, lease: float, retake_dry_run: bool
    ) -> tuple[int | None, MaintenanceRow | None]:
        """(row id, None) when this caller must open the ticket; (None, row) when another
        run already did or is doing it. A claim older than `lease` that never finished
        (process killed) is taken over; so is a dry-run record once the mode is `route`."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    insert(maintenance).values(
                        host=host, item=item, period=period, status="opening", claimed_at=now
                    )
                )
                key = result.inserted_primary_key
                return (int(key[0]) if key else None), None
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(
                select(maintenance).where(
                    and_(
                        maintenance.c.host == host,
                        maintenance.c.item == item,
                        maintenance.c.period == period,
                    )
                )
            ).one()
            stale = row.status == "opening" and row.claimed_at < now - lease
            if stale or (retake_dry_run and row.status == "dry-run"):
                taken = conn.execute(
                    update(maintenance)
                    .where(
                        and_(maintenance.c.id == row.id, maintenance.c.claimed_at == row.claimed_at)
                    )
                    .values(status="opening", claimed_at=now)
                )
                if taken.rowcount == 1:
                    return int(row.id), None
            return None, cast(MaintenanceRow, dict(row._mapping))

    def finish_maintenance(self, row_id: int, status: str, ticket_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(maintenance)
                .where(maintenance.c.id == row_id)
                .values(status=status, ticket_id=ticket_id, opened_at=time.time())
            )

    def release_maintenance(self, row_id: int) -> None:
        """The ticket could not be opened: forget the claim so the next run tries again."""
        with self.engine.begin() as conn:
            conn.execute(
                maintenance.delete().where(
                    and_(maintenance.c.id == row_id, maintenance.c.status == "opening")
                )
            )

    # ----- improvement ----------------------------------------------------------------------

    def reactive_tickets(
        self, host: str, service: str, since: float, limit: int | None = None
    ) -> list[str]:
        """The service's reactive tickets routed since `since` and since its last
        improvement was claimed, oldest first; with `limit`, only the first `limit` of them
        (enough to tell whether a threshold is reached)."""
        query = _REACTIVE_TICKETS if limit is None else _REACTIVE_TICKETS.limit(limit)
        with self.autocommit.connect() as conn:
            rows = conn.execute(
                query, {"b_host": host, "b_service": service, "b_since": since}
            ).all()
        return [str(r.ticket_id) for r in rows]

    def open_improvement(self, host: str, service: str) -> ImprovementRow | None:
        with self.autocommit.connect() as conn:
            row = conn.execute(
                select(improvements).where(improvements.c.open_key == f"{host}:{service}")
            ).first()
        return cast(ImprovementRow, dict(row._mapping)) if row else None

    def claim_improvement(
        self, host: str, service: str, reason: str, tickets: list[str], lease: float = 600.0
    ) -> int | None:
        """The row holding the service's open slot for this caller to open the ticket: a new
        one, or one whose earlier try may have opened it (status `unsure`, or `opening` for
        longer than `lease`: its process died), keeping its id, reason and tickets, so its
        ticket's title and reference stay the same and the retry finds it. None if the
        slot is taken."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    insert(improvements).values(
                        host=host,
                        service=service,
                        open_key=f"{host}:{service}",
                        status="opening",
                        reason=reason,
                        tickets=dumps(tickets),
                        claimed_at=now,
                    )
                )
                key = result.inserted_primary_key
                return int(key[0]) if key else None
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(
                select(improvements.c.id, improvements.c.claimed_at).where(
                    (improvements.c.open_key == f"{host}:{service}")
                    & (
                        (improvements.c.status == "unsure")
                        | (
                            (improvements.c.status == "opening")
                            & (improvements.c.claimed_at < now - lease)
                        )
                    )
                )
            ).first()
            if row is None:
                return None
            taken = conn.execute(
                update(improvements)
                .where(
                    (improvements.c.id == row.id) & (improvements.c.claimed_at == row.claimed_at)
                )
                .values(status="opening", claimed_at=now)
            )
            return int(row.id) if taken.rowcount == 1 else None

    def unsure_improvement(self, row_id: int) -> None:
        """Opening the ticket failed in a way that may have opened it (a timeout, a lost
        answer): keep the slot, so the next try reuses this row and looks first."""
        with self.engine.begin() as conn:
            conn.execute(
                update(improvements)
                .where((improvements.c.id == row_id) & (improvements.c.status == "opening"))
                .values(status="unsure")
            )

    def finish_improvement(self, row_id: int, status: str, ticket_id: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(improvements)
                .where(improvements.c.id == row_id)
                .values(status=status, ticket_id=ticket_id, opened_at=time.time())
            )

    def close_improvement(self, row_id: int, status: str = "closed") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(improvements)
                .where(improvements.c.id == row_id)
                .values(status=status, open_key=None, closed_at=time.time())
            )

    def release_improvement(self, row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                improvements.delete().where(
                    and_(improvements.c.id == row_id, improvements.c.status == "opening")
                )
            )
