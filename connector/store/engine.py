"""Connecting to the store: SQLAlchemy engines for SQLite (WAL, file locks between
processes) and PostgreSQL (pooled, tested after idling), and creating or checking the
schema at start."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError

from connector.datadir import open_private, private_file
from connector.store.schema import (
    SCHEMA_VERSION,
    StoreTooNew,
    create_or_upgrade,
    schema_version,
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


class StoreUnavailable(Exception):
    """A command that only reads (or purges) was pointed at a store that is not there."""


def describe_store(url: str) -> str:
    """The store for people: an SQLite file's path, or the database URL without password."""
    path = _sqlite_file(url)
    if path:
        return str(Path(path).resolve())
    return make_url(url).render_as_string(hide_password=True)


# What retention purges: (table, the column holding when the row was written, which rows).


class StoreEngine:
    """The store's connections. Each part of the Store (see connector.store) runs its
    statements on `engine`."""

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
        self.autocommit = self._make_engine(url, create=create, isolation_level="AUTOCOMMIT")
        # Single statements of the job path run there too, each committed as it runs: reads
        # (a ticket's routing, the dispatcher's poll, the improvement check) and one-statement
        # writes (the routing row, its outcome, a delivery's finish). On `engine` each is
        # BEGIN, the statement and COMMIT or the pool's ROLLBACK: three round trips on
        # PostgreSQL where one does (a read ~290 → ~140 µs, CPU ~170 → ~100 µs). One
        # statement is atomic and sees one snapshot either way.
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
        if current is not None and current > SCHEMA_VERSION:
            raise StoreUnavailable(f"store {where}: {StoreTooNew(current)}")
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
            create_or_upgrade(conn, self.is_sqlite)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before a test drops the database)."""
        self.engine.dispose()
        self.autocommit.dispose()
