"""Pollers of helpdesks without webhooks: one active poller per host across all workers
(a lease row), and each host's high-water mark."""

from __future__ import annotations

import contextlib
import time

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from connector.store.engine import StoreEngine
from connector.store.schema import pollers


class Pollers(StoreEngine):
    def acquire_poller(self, host: str, owner: str, lease: float) -> bool:
        """One active poller per host across all workers: a lease row in the database."""
        now = time.time()
        with self.engine.begin() as conn:
            with contextlib.suppress(IntegrityError), conn.begin_nested():
                conn.execute(
                    insert(pollers).values(
                        host=host, lease_owner=None, lease_until=0.0, updated_at=now
                    )
                )
            result = conn.execute(
                update(pollers)
                .where(
                    and_(
                        pollers.c.host == host,
                        or_(
                            pollers.c.lease_owner == owner,
                            pollers.c.lease_until < now,
                            pollers.c.lease_owner.is_(None),
                        ),
                    )
                )
                .values(lease_owner=owner, lease_until=now + lease, updated_at=now)
            )
            return result.rowcount == 1

    def high_water(self, host: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(pollers.c.high_water).where(pollers.c.host == host)
            ).scalar()
        return str(value) if value is not None else None

    def set_high_water(self, host: str, value: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(pollers)
                .where(pollers.c.host == host)
                .values(high_water=value, updated_at=time.time())
            )
