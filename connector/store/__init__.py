"""Durable state (SQLAlchemy Core, SQLite or PostgreSQL): deliveries, the audit log of
routings and corrections, dead letters, pollers, and the processes' claims.

The store, not the job queue, is the source of truth. A webhook is acknowledged only after
its delivery row is committed; the queue merely wakes workers. A worker *claims* a delivery
with a lease (one atomic UPDATE), so a worker killed with SIGKILL loses nothing: the lease
expires and the sweep enqueues the delivery again. One routing row per (host, ticket) makes
a ticket's decision unique however many events and workers race for it.

Where each part lives:

    schema.py       the tables, SCHEMA_VERSION and the migrations of older stores
    engine.py       connecting: SQLite (WAL, file locks) and PostgreSQL; schema at start
    rows.py         what the store returns: Delivery and the typed audit rows
    outbox.py       deliveries recorded (group commit) and handed to the job queue
    leases.py       a delivery claimed with a fenced lease, then finished, postponed or
                    dead-lettered
    audit.py        routings (one per ticket) and their corrections
    deadletters.py  dead letters listed and replayed
    pollers.py      one poller per host (a lease row) and its high-water mark
    retention.py    what BPSM_RETENTION deletes
    processes.py    ProcessStore: the proactive and improvement processes' claims
"""

from __future__ import annotations

from connector.store.audit import Audit
from connector.store.deadletters import DeadLetters
from connector.store.engine import StoreEngine, StoreUnavailable, describe_store
from connector.store.leases import Leases, TicketBusy
from connector.store.outbox import Outbox
from connector.store.pollers import Pollers
from connector.store.processes import ProcessStore
from connector.store.retention import Retention
from connector.store.rows import (
    CorrectionRow,
    CorrectionWithText,
    DeadLetterRow,
    Delivery,
    ImprovementRow,
    MaintenanceRow,
    NewRouting,
    RoutingRow,
    RoutingWithEvent,
)
from connector.store.schema import (
    SCHEMA_VERSION,
    StoreTooNew,
    corrections,
    dead_letters,
    deliveries,
    improvements,
    maintenance,
    metadata,
    pollers,
    routings,
    schema_version,
)

__all__ = [
    "SCHEMA_VERSION",
    "CorrectionRow",
    "CorrectionWithText",
    "DeadLetterRow",
    "Delivery",
    "ImprovementRow",
    "MaintenanceRow",
    "NewRouting",
    "ProcessStore",
    "RoutingRow",
    "RoutingWithEvent",
    "Store",
    "StoreTooNew",
    "StoreUnavailable",
    "TicketBusy",
    "corrections",
    "dead_letters",
    "deliveries",
    "describe_store",
    "improvements",
    "maintenance",
    "metadata",
    "pollers",
    "routings",
    "schema_version",
]


class Store(Outbox, Leases, Audit, DeadLetters, Pollers, Retention, StoreEngine):
    """The one store of a process: its parts (see above) share the engines."""

    def __init__(self, url: str, create: bool = True):
        """`create=False`: open an existing store as it is (read-only commands and purge):
        never create, migrate or switch its journal; StoreUnavailable when it is not there."""
        super().__init__(url, create)
        self._init_outbox()
