"""The tables of the store, and the steps that bring a database made by an older
connector up to date (SCHEMA_VERSION)."""

from __future__ import annotations

import re

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 4  # 2: maintenance and improvement tables; 3: routings by service; 4: lease token
metadata = MetaData()

schema_version = Table("bpsm_schema", metadata, Column("version", Integer, nullable=False))

deliveries = Table(
    "bpsm_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(40), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("ticket_id", String(100), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("event", Text, nullable=False),  # TicketEvent as JSON
    # queued → processing → done | dead ; processing with an expired lease is retaken
    Column("status", String(20), nullable=False, index=True),
    Column("outcome", String(40)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("received_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("enqueued_at", Float, nullable=False),
    Column("lease_until", Float),
    # Set anew by every claim: the holder's updates name it, so a consumer whose lease
    # was taken over changes nothing (fencing token).
    Column("lease_token", String(40)),
    Column("finished_at", Float),
    Column("error", Text),
    UniqueConstraint("host", "delivery_id", name="uq_delivery"),
)

routings = Table(
    "bpsm_routings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(40), nullable=False),
    Column("ticket_id", String(100), nullable=False),
    Column("delivery", Integer, nullable=False),
    Column("process", String(20), nullable=False),
    Column("service", String(100)),
    Column("queue", String(200), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("low_confidence", Integer, nullable=False, default=0),
    Column("language", String(10)),
    Column("mode", String(10), nullable=False),
    # applying → applied | shadow | dry-run | override | failed
    Column("outcome", String(20), nullable=False),
    Column("decision", Text, nullable=False),
    Column("match", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("applied_at", Float),
    Column("apply_ms", Float),
    Column("ticket_created_at", Float),
    Column("moved_by_agent_at", Float),
    Column("replied_at", Float),
    UniqueConstraint("host", "ticket_id", name="uq_routing"),
    # The improvement check reads a service's recent routings after every reactive ticket;
    # without this it scanned the whole audit log (45-55 ms at 200,000 routings, 1-2 with).
    Index("ix_bpsm_routings_service_created", "service", "created_at"),
)

# One row per maintenance entry and period: the unique key makes "exactly once per period"
# hold across workers, restarts and two `bpsm maintenance` runs at the same moment.
maintenance = Table(
    "bpsm_maintenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(40), nullable=False),
    Column("item", String(200), nullable=False),
    Column("period", String(20), nullable=False),
    Column("status", String(20), nullable=False),  # opening → opened | dry-run
    Column("ticket_id", String(100)),
    Column("claimed_at", Float, nullable=False),
    Column("opened_at", Float),
    UniqueConstraint("host", "item", "period", name="uq_maintenance"),
)

# open_key is "host:service" while the improvement ticket is open, NULL once closed, so a
# unique index allows one open improvement per service (NULLs never collide).
improvements = Table(
    "bpsm_improvements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(40), nullable=False),
    Column("service", String(100), nullable=False),
    Column("open_key", String(150), unique=True),
    # opening → open | dry-run | closed; unsure: a try may have opened it (retaken, looked for)
    Column("status", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("tickets", Text, nullable=False),  # JSON list of linked ticket ids
    Column("ticket_id", String(100)),
    Column("claimed_at", Float, nullable=False),
    Column("opened_at", Float),
    Column("closed_at", Float),
)

dead_letters = Table(
    "bpsm_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery", Integer, nullable=False, index=True),
    Column("host", String(40), nullable=False),
    Column("ticket_id", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("replayed_at", Float),
)

pollers = Table(
    "bpsm_pollers",
    metadata,
    Column("host", String(40), primary_key=True),
    Column("high_water", String(64)),
    Column("lease_owner", String(100)),
    Column("lease_until", Float),
    Column("updated_at", Float),
)


# One row per correction a person made in the review page (source "review"). The worker
# applies it through the delivery "correction:<id>" and marks it applied; the routing row then
# holds the corrected process, service and queue, so the override detection does not count
# the ticket's new queue as an agent's move a second time.
corrections = Table(
    "bpsm_corrections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(40), nullable=False),
    Column("ticket_id", String(100), nullable=False),
    Column("routing", Integer, nullable=False),
    Column("from_process", String(20), nullable=False),
    Column("from_service", String(100)),
    Column("from_queue", String(200), nullable=False),
    Column("to_process", String(20), nullable=False),
    Column("to_service", String(100)),
    Column("source", String(20), nullable=False),  # review
    Column("actor", String(100), nullable=False),
    Column("status", String(20), nullable=False),  # pending → applied | shadow | dry-run
    Column("created_at", Float, nullable=False, index=True),
    Column("applied_at", Float),
)


# Steps for databases created by an older version (new tables come from create_all).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE bpsm_routings ADD COLUMN replied_at FLOAT",),
    3: (
        "CREATE INDEX IF NOT EXISTS ix_bpsm_routings_service_created"
        " ON bpsm_routings (service, created_at)",
    ),
    4: ("ALTER TABLE bpsm_deliveries ADD COLUMN lease_token VARCHAR(40)",),
}


def _adds_existing_column(conn: Connection, statement: str) -> bool:
    """True for an ADD COLUMN step whose column is there already (SQLite has no ADD COLUMN
    IF NOT EXISTS; a database may have been created by create_all at a newer version)."""
    found = re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", statement)
    if found is None:
        return False
    table, column = found.groups()
    return column in {c["name"] for c in inspect(conn).get_columns(table)}


class StoreTooNew(Exception):
    """The store was written by a newer connector: this one must not touch it. Restarting
    cannot fix that, upgrading this connector does (docs/upgrading.md)."""

    def __init__(self, found: int):
        self.found = found
        super().__init__(
            f"the store has schema {found}, newer than this connector's {SCHEMA_VERSION}: "
            "a newer bpsm-connector has used it; upgrade this one (see docs/upgrading.md)"
        )


def create_or_upgrade(conn: Connection, is_sqlite: bool) -> None:
    """Create the tables of a new store, or upgrade an older one to SCHEMA_VERSION, in the
    caller's transaction (which holds the schema lock: see StoreEngine.migrate)."""
    if not is_sqlite:
        conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))  # until commit
    metadata.create_all(conn, checkfirst=True)
    current = conn.execute(select(func.max(schema_version.c.version))).scalar()
    if current is None:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
        return
    if current > SCHEMA_VERSION:
        raise StoreTooNew(current)
    # Versioned steps for databases created by an older connector.
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS.get(version, ()):
            if not _adds_existing_column(conn, statement):
                conn.execute(text(statement))
    if current < SCHEMA_VERSION:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
