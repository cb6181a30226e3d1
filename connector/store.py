"""Durable state (SQLAlchemy Core): deliveries, routings (the audit log), dead letters, pollers.

The store, not the job queue, is the source of truth. A webhook is acknowledged only after
its delivery row is committed; the queue merely wakes workers. A worker *claims* a delivery
with a lease (one atomic UPDATE), so a worker killed with SIGKILL loses nothing: the lease
expires and the sweep enqueues the delivery again. One routing row per (host, ticket) makes
a ticket's decision unique however many events and workers race for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    and_,
    create_engine,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError

from connector.datadir import open_private, private_file
from connector.decisions import DecisionFilter
from connector.events import TicketEvent
from connector.groupwrite import GroupWriter

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


_DELIVERY_COLUMNS = (
    "host",
    "delivery_id",
    "ticket_id",
    "kind",
    "event",
    "status",
    "attempts",
    "received_at",
    "next_attempt_at",
    "enqueued_at",
)


def _insert_deliveries_sql(rows: int, dialect: Any) -> str:
    """One INSERT of `rows` deliveries that skips the ones already recorded (the unique key
    (host, delivery_id)); on PostgreSQL it returns the new rows' keys.

    Written in the driver's own SQL: this is the one statement a webhook runs, and handing
    it over as text skips SQLAlchemy's per-execution compile-cache lookup and parameter
    processing (a third of its cost). Only the connector's own column names go into it."""
    markers = {"qmark": "?", "format": "%s", "pyformat": "%s"}
    if dialect.paramstyle not in markers:
        raise RuntimeError(f"database driver {dialect.driver!r} is not supported; use psycopg")
    marker = markers[dialect.paramstyle]
    values = "(" + ", ".join([marker] * len(_DELIVERY_COLUMNS)) + ")"
    sql = (
        f"INSERT INTO {deliveries.name} ({', '.join(_DELIVERY_COLUMNS)}) "
        f"VALUES {', '.join([values] * rows)} ON CONFLICT (host, delivery_id) DO NOTHING"
    )
    return sql if dialect.name == "sqlite" else sql + " RETURNING id, host, delivery_id"


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


class TicketBusy(Exception):
    """Another delivery of the same ticket is being worked on: try this one a bit later."""


def _row_to_delivery(row: Any) -> Delivery:
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


def _sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database  # "sqlite://" and "sqlite:///:memory:" are in memory
    return path if path and path != ":memory:" else None


def _enable_wal(cursor: Any, lock_path: Path | None) -> None:
    """Switch the file to WAL so readers work while a writer commits.

    WAL is stored in the file, so only the first connection ever needs to switch. The switch
    needs an exclusive lock that SQLite does not wait for (processes starting at once get
    "database is locked" at once), so processes take turns on a lock file to do it.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    if lock_path is None:  # in-memory: nothing shares it
        cursor.execute("PRAGMA journal_mode=WAL")
        return
    with _file_lock(lock_path):
        # A process that is only reading the journal mode can still hold a shared lock for
        # a moment; retry briefly rather than fail the start-up.
        for attempt in range(100):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
                time.sleep(0.05)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (flock on `path`, created 0600)."""
    with open(open_private(path), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


NOT_ENQUEUED = 0.0  # enqueued_at of a delivery that no job queue has been told about yet
IDLE_PING_SECONDS = 5.0


def _ping_after_idle(engine: Engine) -> None:
    """Test a pooled connection before use only when it sat idle for a while.

    pool_pre_ping would cost a round trip on every checkout — a third of a webhook's
    database time. A connection that was in use seconds ago is alive as far as anyone can
    know; one that idled may have been cut by a database restart or a firewall, and is then
    replaced before the caller sees it (DisconnectionError makes the pool reconnect)."""

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()  # end the implicit transaction the ping opened
        except Exception as exc:
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


def _take_each(
    conn: Connection, rows: list[tuple[int, float]], now: float, condition: Any = None
) -> list[int]:
    """Set enqueued_at to `now` on each (id, enqueued_at as read) row that is still as it was
    read: the rows this caller won. A sweep or dispatcher that read them too gets none."""
    return [
        pk
        for pk, seen in rows
        if conn.execute(
            update(deliveries)
            .where(
                (deliveries.c.id == pk)
                & (deliveries.c.enqueued_at == seen)
                & (true() if condition is None else condition)
            )
            .values(enqueued_at=now)
        ).rowcount
        == 1
    ]


class StoreUnavailable(Exception):
    """A command that only reads (or purges) was pointed at a store that is not there."""


def describe_store(url: str) -> str:
    """The store for people: an SQLite file's path, or the database URL without password."""
    path = _sqlite_file(url)
    if path:
        return str(Path(path).resolve())
    return make_url(url).render_as_string(hide_password=True)


# What retention purges: (table, the column holding when the row was written, which rows).
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


class Store:
    def __init__(self, url: str, create: bool = True):
        """`create=False`: open an existing store as it is (read-only commands and purge):
        never create, migrate or switch its journal; StoreUnavailable when it is not there."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = self._make_engine(url, create=create)
        # On PostgreSQL the webhooks' INSERT runs on an engine whose connections stay in
        # autocommit (one statement is its own transaction). `execution_options(isolation_
        # level=...)` would switch a pooled connection there and back on every checkout: two
        # extra statements per webhook. SQLite writes its batch in one transaction instead.
        self._autocommit = self._make_engine(url, isolation_level="AUTOCOMMIT")
        self._insert_sql: dict[int, str] = {}
        # Concurrent webhooks of this process share one INSERT and one commit. On SQLite it
        # is also what lets one writer of this process at a time queue on a lock instead of
        # SQLite's sleep-and-retry busy handler (1, 2, 5, 10… ms).
        self._deliveries: GroupWriter[tuple[Any, ...], int] = GroupWriter(self._insert_deliveries)
        if create:
            self.migrate()
        else:
            self._check_existing()

    @staticmethod
    def _make_engine(url: str, create: bool = True, **options: Any) -> Engine:
        if not url.startswith("sqlite"):
            engine = create_engine(url, pool_size=5, max_overflow=5, **options)
            _ping_after_idle(engine)
            return engine
        path = _sqlite_file(url)
        if path and not create and not Path(path).is_file():
            raise StoreUnavailable(f"store {describe_store(url)} does not exist")
        if path and create:
            # Ticket text: 0600 in a 0700 folder; SQLite gives -wal and -shm the same mode.
            private_file(Path(path))
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **options
        )
        wal_lock = Path(path + ".wal.lock") if path and create else None

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if create or not path:
                _enable_wal(cursor, wal_lock)
            cursor.close()

        return engine

    def _check_existing(self) -> None:
        """The store exists and has this connector's schema, or StoreUnavailable says why."""
        where = describe_store(self.url)
        try:
            with self.engine.connect() as conn:
                if not conn.dialect.has_table(conn, schema_version.name):
                    raise StoreUnavailable(f"{where} is not a bpsm-connector store (no tables)")
                current = conn.execute(select(func.max(schema_version.c.version))).scalar()
        except OperationalError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreUnavailable(f"cannot open store {where}: {first}") from exc
        if current != SCHEMA_VERSION:
            raise StoreUnavailable(
                f"store {where} has schema {current}, this connector reads {SCHEMA_VERSION}: "
                "start `bpsm serve` or `bpsm worker` once to upgrade it"
            )

    # ----- schema ---------------------------------------------------------------------------

    def _schema_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialise schema creation across processes starting at the same moment (SQLite: a
        lock file; PostgreSQL takes an advisory lock inside the transaction instead)."""
        path = _sqlite_file(self.url)
        return _file_lock(Path(path + ".migrate.lock")) if path else contextlib.nullcontext()

    def migrate(self) -> None:
        # The lock is held until the transaction has committed: released before, a second
        # process could read the schema before the first one's commit and create it again.
        with self._schema_lock(), self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))  # until commit
            metadata.create_all(conn, checkfirst=True)
            current = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if current is None:
                conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
                return
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database schema {current} is newer than this connector "
                    f"({SCHEMA_VERSION}); upgrade bpsm-connector"
                )
            # Versioned steps for databases created by an older connector.
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, ()):
                    if not _adds_existing_column(conn, statement):
                        conn.execute(text(statement))
            if current < SCHEMA_VERSION:
                conn.execute(update(schema_version).values(version=SCHEMA_VERSION))

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

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

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before a test drops the database)."""
        self.engine.dispose()
        self._autocommit.dispose()

    # ----- deliveries -----------------------------------------------------------------------

    def record_delivery(self, event_: TicketEvent, now: float | None = None) -> int | None:
        """Store a new delivery; None when (host, delivery_id) was seen before. Returns once
        the row is committed."""
        return self._deliveries.write(self._delivery_row(event_, now))

    @staticmethod
    def _delivery_row(event_: TicketEvent, now: float | None = None) -> tuple[Any, ...]:
        """The values of _DELIVERY_COLUMNS for a new delivery."""
        now = time.time() if now is None else now
        return (
            event_.host,
            event_.delivery_id,
            event_.ticket_id,
            event_.kind,
            event_.model_dump_json(),
            "queued",
            0,
            now,
            now,
            NOT_ENQUEUED,
        )

    def _insert_deliveries(
        self, rows: Sequence[tuple[Any, ...]]
    ) -> list[int | BaseException | None]:
        try:
            return list(self._insert_batch(rows))
        except DBAPIError as exc:
            if len(rows) == 1:
                return [exc]
        # One bad row must not fail the webhooks that happened to share its statement.
        return [self._insert_alone(row) for row in rows]

    def _insert_alone(self, row: tuple[Any, ...]) -> int | BaseException | None:
        try:
            return self._insert_batch([row])[0]
        except DBAPIError as exc:
            return exc

    def _insert_batch(self, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        if self.is_sqlite:
            # One transaction, one commit; SQLite has no cost per round trip to save.
            sql = self._sql_for(1)
            with self.engine.begin() as conn:
                inserted = [conn.exec_driver_sql(sql, row) for row in rows]
                return [r.lastrowid if r.rowcount == 1 else None for r in inserted]
        # One statement in autocommit: durable when it returns, in one round trip.
        params = tuple(value for row in rows for value in row)
        with self._autocommit.connect() as conn:
            written = {
                (host, delivery): pk
                for pk, host, delivery in conn.exec_driver_sql(self._sql_for(len(rows)), params)
            }
        # A delivery sent twice within one batch is written once, for its first copy.
        return [written.pop((row[0], row[1]), None) for row in rows]

    def _sql_for(self, rows: int) -> str:
        sql = self._insert_sql.get(rows)
        if sql is None:
            sql = self._insert_sql[rows] = _insert_deliveries_sql(rows, self.engine.dialect)
        return sql

    def claim(
        self, delivery_id: int, lease_seconds: float, now: float | None = None
    ) -> Delivery | None:
        """Take a delivery for processing with a new lease token; None if it is done or
        another worker holds it. Raises TicketBusy while another delivery of the same ticket
        holds a live lease: one ticket's jobs never run at the same time."""
        now = time.time() if now is None else now
        token = uuid.uuid4().hex
        claimable = or_(
            and_(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == "processing", deliveries.c.lease_until < now),
        )
        sibling = deliveries.alias("sibling")
        sibling_busy = (
            select(sibling.c.id)
            .where(
                (sibling.c.host == deliveries.c.host)
                & (sibling.c.ticket_id == deliveries.c.ticket_id)
                & (sibling.c.id != deliveries.c.id)
                & (sibling.c.status == "processing")
                & (sibling.c.lease_until >= now)
            )
            .exists()
        )
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Claims of one ticket's deliveries take turns (SQLite runs one writer at a
                # time anyway): without it, two could both see no sibling at work.
                conn.execute(
                    text(
                        "SELECT pg_advisory_xact_lock(727275, hashtext(host || ':' || ticket_id))"
                        " FROM bpsm_deliveries WHERE id = :id"
                    ),
                    {"id": delivery_id},
                )
            claim = (
                update(deliveries)
                .where((deliveries.c.id == delivery_id) & claimable & ~sibling_busy)
                .values(
                    status="processing",
                    lease_until=now + lease_seconds,
                    lease_token=token,
                    attempts=deliveries.c.attempts + 1,
                )
            )
            returning = self.engine.dialect.update_returning  # not SQLite < 3.35
            result = conn.execute(claim.returning(*deliveries.c) if returning else claim)
            row = result.first() if returning else None
            if row is None and (returning or result.rowcount != 1):
                if conn.execute(
                    select(deliveries.c.id).where((deliveries.c.id == delivery_id) & claimable)
                ).first():
                    raise TicketBusy(delivery_id)
                return None
            if row is None:
                row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()
        return _row_to_delivery(row)

    @staticmethod
    def _held(delivery_id: int, token: str | None) -> Any:
        """The rows a claim with `token` still holds: a consumer whose lease expired and
        was taken over matches none, so its updates change nothing."""
        return (
            (deliveries.c.id == delivery_id)
            & (deliveries.c.status == "processing")
            & (deliveries.c.lease_token == token)
        )

    def renew(self, delivery_id: int, token: str | None, lease_seconds: float) -> bool:
        """Extend a lease still held (the job's heartbeat); False once it is lost."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(self._held(delivery_id, token))
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
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(self._held(delivery_id, token))
                .values(
                    status=status,
                    outcome=outcome,
                    finished_at=time.time(),
                    error=error,
                    lease_until=None,
                )
            )
        return result.rowcount == 1

    def postpone(self, delivery_id: int, token: str | None, delay: float, error: str) -> bool:
        """Back to the queue for a later attempt; False (nothing changed) when the lease
        was lost."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(self._held(delivery_id, token))
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
                .where(self._held(delivery.id, delivery.lease_token))
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

    def take_new(self, limit: int = 500, now: float | None = None) -> list[int]:
        """Deliveries recorded but not yet handed to the job queue, oldest first. The store is
        the outbox: a webhook is answered after its one durable write, and the consumer's
        dispatcher moves new rows to the queue. Each id is returned to one caller only."""
        now = time.time() if now is None else now
        fresh = (deliveries.c.status == "queued") & (deliveries.c.enqueued_at == NOT_ENQUEUED)
        with self.engine.connect() as conn:  # the common answer, "nothing new", reads only
            ids = (
                conn.execute(
                    select(deliveries.c.id).where(fresh).order_by(deliveries.c.id).limit(limit)
                )
                .scalars()
                .all()
            )
        if not ids:
            return []
        with self.engine.begin() as conn:
            if self.engine.dialect.update_returning:
                taken = (
                    conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id.in_(ids) & fresh)
                        .values(enqueued_at=now)
                        .returning(deliveries.c.id)
                    )
                    .scalars()
                    .all()
                )
            else:  # SQLite before 3.35 (e.g. RHEL 8): one conditional UPDATE per row
                taken = _take_each(conn, [(pk, NOT_ENQUEUED) for pk in ids], now, fresh)
        return sorted(int(pk) for pk in taken)

    def due_for_enqueue(
        self, grace: float, now: float | None = None, limit: int = 500
    ) -> list[int]:
        """Deliveries a worker should pick up but nobody will: lost enqueue, dead worker.

        Each returned id has its enqueued_at bumped in the same statement, so two sweeps
        running at once do not both enqueue it.
        """
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.enqueued_at)
                .where(
                    or_(
                        and_(
                            deliveries.c.status == "queued",
                            deliveries.c.next_attempt_at <= now,
                            deliveries.c.enqueued_at <= now - grace,
                        ),
                        and_(
                            deliveries.c.status == "processing",
                            deliveries.c.lease_until < now,
                            deliveries.c.enqueued_at <= now - grace,
                        ),
                    )
                )
                .order_by(deliveries.c.id)
                .limit(limit)
            ).all()
            return _take_each(conn, [(int(row.id), row.enqueued_at) for row in rows], now)

    def delivery(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return _row_to_delivery(row) if row else None

    def count_deliveries(self, status: str | None = None) -> int:
        query = select(func.count()).select_from(deliveries)
        if status:
            query = query.where(deliveries.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    # ----- routings -------------------------------------------------------------------------

    def routing(self, host: str, ticket_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(routings).where(
                    and_(routings.c.host == host, routings.c.ticket_id == ticket_id)
                )
            ).first()
        return dict(row._mapping) if row else None

    def begin_routing(self, delivery: Delivery, record: dict[str, Any]) -> dict[str, Any]:
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
            with self.engine.begin() as conn:
                conn.execute(insert(routings).values(**values))
        except IntegrityError:
            pass
        existing = self.routing(delivery.host, delivery.ticket_id)
        assert existing is not None
        return existing

    def complete_routing(
        self, delivery: Delivery, outcome: str, apply_ms: float, fenced: bool = True
    ) -> bool:
        """Record the routing's outcome; with `fenced`, only while the delivery's claim
        still holds its lease (False: nothing changed)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(routings)
                .where(self._routing_of(delivery, fenced))
                .values(outcome=outcome, applied_at=time.time(), apply_ms=apply_ms)
            )
        return result.rowcount == 1

    def mark_replied(self, delivery: Delivery) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(routings)
                .where(self._routing_of(delivery, fenced=True))
                .values(replied_at=time.time())
            )
        return result.rowcount == 1

    def _routing_of(self, delivery: Delivery, fenced: bool) -> Any:
        ticket = (routings.c.host == delivery.host) & (routings.c.ticket_id == delivery.ticket_id)
        if not fenced:
            return ticket
        held = select(deliveries.c.id).where(self._held(delivery.id, delivery.lease_token))
        return ticket & held.exists()

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
        self, routing: dict[str, Any], to_process: str, to_service: str | None, actor: str
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

    def corrections_with_text(self, since: float | None = None) -> list[dict[str, Any]]:
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
            return [dict(r._mapping) for r in conn.execute(query)]

    def all_routings(self, since: float | None = None) -> list[dict[str, Any]]:
        query = select(routings).order_by(routings.c.id)
        if since is not None:
            query = query.where(routings.c.created_at >= since)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def decision_rows(self, wanted: DecisionFilter) -> list[dict[str, Any]]:
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
            return [dict(r._mapping) for r in conn.execute(query)]

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
            values = dict(zip(_DELIVERY_COLUMNS, self._delivery_row(event_, now), strict=True))
            conn.execute(insert(deliveries).values(**values))
        return correction_id

    def correction(self, correction_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(corrections).where(corrections.c.id == correction_id)).first()
        return dict(row._mapping) if row else None

    def corrections_since(self, since: float | None = None) -> list[dict[str, Any]]:
        query = select(corrections).order_by(corrections.c.id)
        if since is not None:
            query = query.where(corrections.c.created_at >= since)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

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

    # ----- dead letters ---------------------------------------------------------------------

    def list_dead_letters(self, include_replayed: bool = False) -> list[dict[str, Any]]:
        query = select(dead_letters).order_by(dead_letters.c.id)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

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

    # ----- pollers --------------------------------------------------------------------------

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


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class ProcessStore:
    """Claims for the proactive and improvement processes (see the tables' comments)."""

    def __init__(self, store: Store):
        self.engine = store.engine

    # ----- maintenance ----------------------------------------------------------------------

    def claim_maintenance(
        self, host: str, item: str, period: str, lease: float, retake_dry_run: bool
    ) -> tuple[int | None, dict[str, Any] | None]:
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
            return None, dict(row._mapping)

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

    def last_improvement_at(self, host: str, service: str) -> float | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(improvements.c.claimed_at)).where(
                    and_(improvements.c.host == host, improvements.c.service == service)
                )
            ).scalar()
        return float(value) if value is not None else None

    def reactive_tickets(self, host: str, service: str, since: float) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(routings.c.ticket_id)
                .where(
                    and_(
                        routings.c.host == host,
                        routings.c.service == service,
                        routings.c.process == "reactive",
                        routings.c.created_at >= since,
                        routings.c.outcome.in_(["applied", "shadow", "dry-run", "override"]),
                    )
                )
                .order_by(routings.c.id)
            ).all()
        return [str(r.ticket_id) for r in rows]

    def open_improvement(self, host: str, service: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(improvements).where(improvements.c.open_key == f"{host}:{service}")
            ).first()
        return dict(row._mapping) if row else None

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
