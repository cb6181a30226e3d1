"""Retention (BPSM_RETENTION): what is deleted once it is older, and what never is."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Column, Table, true

from connector.store.engine import StoreEngine
from connector.store.schema import corrections, dead_letters, deliveries, improvements, routings

# Unfinished deliveries are work still to do and an open improvement still holds its slot;
# they are never purged. (Maintenance rows keep no ticket text and must outlive their
# period, so that a yearly entry is not opened twice.)
RETAINED: tuple[tuple[Table, Column[Any], Any], ...] = (
    (routings, routings.c.created_at, true()),
    (dead_letters, dead_letters.c.created_at, true()),
    (deliveries, deliveries.c.received_at, deliveries.c.status.in_(["done", "dead"])),
    (improvements, improvements.c.claimed_at, improvements.c.open_key.is_(None)),
    # A correction waiting for its job is kept, like its unfinished delivery.
    (corrections, corrections.c.created_at, corrections.c.status != "pending"),
)


class Retention(StoreEngine):
    def purge(self, older_than: float, now: float | None = None) -> dict[str, int]:
        """Delete what is older than `older_than` seconds (see RETAINED); rows per table."""
        cutoff = (time.time() if now is None else now) - older_than
        counts: dict[str, int] = {}
        with self.engine.begin() as conn:
            if self.is_sqlite:
                # Overwrite deleted ticket text in the file instead of leaving it in free pages.
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            for table, written_at, which in RETAINED:
                result = conn.execute(table.delete().where((written_at < cutoff) & which))
                counts[table.name.removeprefix("bpsm_")] = max(result.rowcount, 0)
            if self.is_sqlite:
                conn.exec_driver_sql("PRAGMA secure_delete=OFF")
        return counts
