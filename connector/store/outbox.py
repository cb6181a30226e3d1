"""Deliveries in and out: a webhook's delivery recorded with one durable INSERT (the
webhooks of one moment share it: group commit), and handed to the job queue — new ones by
the dispatcher (the store is the outbox), forgotten ones by the sweep."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from connector.events import TicketEvent
from connector.groupwrite import GroupWriter
from connector.store import engine as store_engine
from connector.store.engine import StoreEngine
from connector.store.rows import Delivery, row_to_delivery
from connector.store.schema import deliveries

DELIVERY_COLUMNS = (
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
    values = "(" + ", ".join([marker] * len(DELIVERY_COLUMNS)) + ")"
    sql = (
        f"INSERT INTO {deliveries.name} ({', '.join(DELIVERY_COLUMNS)}) "
        f"VALUES {', '.join([values] * rows)} ON CONFLICT (host, delivery_id) DO NOTHING"
    )
    return sql if dialect.name == "sqlite" else sql + " RETURNING id, host, delivery_id"


NOT_ENQUEUED = 0.0  # enqueued_at of a delivery that no job queue has been told about yet
# The dispatcher's poll (every BPSM_DISPATCH_INTERVAL) and take, built once (see
# connector.store.leases).
_FRESH = (deliveries.c.status == "queued") & (deliveries.c.enqueued_at == NOT_ENQUEUED)
_NEW_IDS = (
    select(deliveries.c.id).where(_FRESH).order_by(deliveries.c.id).limit(bindparam("b_limit"))
)
_NEWEST_ID = select(func.max(deliveries.c.id))
_TAKE = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("b_ids", expanding=True)) & _FRESH)
    .values(enqueued_at=bindparam("b_now"))
    .returning(deliveries.c.id)
)


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


def new_delivery_row(event_: TicketEvent, now: float | None = None) -> tuple[Any, ...]:
    """The values of DELIVERY_COLUMNS for a new delivery."""
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


class Outbox(StoreEngine):
    def _init_outbox(self) -> None:
        self._insert_sql: dict[int, str] = {}
        # Concurrent webhooks of this process share one INSERT and one commit. On SQLite it
        # is also what lets one writer of this process at a time queue on a lock instead of
        # SQLite's sleep-and-retry busy handler (1, 2, 5, 10… ms).
        self._deliveries: GroupWriter[tuple[Any, ...], int] = GroupWriter(self._insert_deliveries)
        # PostgreSQL: the pooled connection (and its cursor) the webhooks' INSERT keeps
        # between batches, and when it was last used. Only the group writer uses it, and
        # never from two threads at once.
        self._writer: Any = None
        self._writer_cursor: Any = None
        self._writer_used = 0.0

    def record_delivery(self, event_: TicketEvent, now: float | None = None) -> int | None:
        """Store a new delivery; None when (host, delivery_id) was seen before. Returns once
        the row is committed."""
        return self._deliveries.write(new_delivery_row(event_, now))

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
            return self._insert_sqlite(rows)
        return self._insert_postgres(rows)

    def _insert_postgres(self, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        """One statement in autocommit: durable when it returns, in one round trip. It runs
        on a connection this writer keeps checked out, with its own cursor: a checkout and
        check-in, SQLAlchemy's Connection and its result objects cost more CPU than
        psycopg's execute itself (~270 → ~105 µs per webhook). psycopg prepares the
        statement on the server after a few uses. Errors are raised as SQLAlchemy's."""
        sql = self._sql_for(len(rows))
        params = tuple(value for row in rows for value in row)
        cursor = self._writer_cursor_now()
        dbapi = self.autocommit.dialect.loaded_dbapi
        try:
            cursor.execute(sql, params)
            found = cursor.fetchall()
        except BaseException as exc:
            # Whatever failed, the next batch checks a connection out anew: this one back to
            # the pool (whose reset ends anything left open), or closed if it is broken or
            # the failure came from outside the driver (a statement may still be running).
            connection = self._writer.dbapi_connection
            broken = connection is None or connection.closed or getattr(connection, "broken", 0)
            self._drop_writer(invalidate=broken or not isinstance(exc, dbapi.Error))
            if isinstance(exc, dbapi.Error):
                raise DBAPIError.instance(sql, params, exc, dbapi.Error) from exc
            raise
        self._writer_used = time.monotonic()
        written = {(host, delivery): pk for pk, host, delivery in found}
        # A delivery sent twice within one batch is written once, for its first copy.
        return [written.pop((row[0], row[1]), None) for row in rows]

    def _writer_cursor_now(self) -> Any:
        """The kept connection's cursor. A connection idle for a while is tested first, as
        the pool tests one it hands out after idling (a database restart or a firewall may
        have cut it): a dead one is replaced before the webhook sees it."""
        if self._writer is not None:
            idle = time.monotonic() - self._writer_used
            if idle >= store_engine.IDLE_PING_SECONDS:
                try:
                    self._writer_cursor.execute("SELECT 1")
                    self._writer_cursor.fetchall()
                except Exception:
                    self._drop_writer(invalidate=True)
        if self._writer is None:
            self._writer = self.autocommit.raw_connection()
            self._writer_cursor = self._writer.cursor()
            self._writer_used = time.monotonic()
        return self._writer_cursor

    def _drop_writer(self, invalidate: bool = False) -> None:
        writer, self._writer, self._writer_cursor = self._writer, None, None
        if writer is None:
            return
        if invalidate:
            writer.invalidate()  # closed, not handed out again
        else:
            writer.close()  # back to the pool

    def dispose(self) -> None:
        self._drop_writer()
        super().dispose()

    def _insert_sqlite(self, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        """One transaction, one commit (SQLite has no cost per round trip to save), on the
        pool's DB-API connection itself: SQLAlchemy's Connection and transaction objects
        around it cost a fifth of the write. Errors are raised as SQLAlchemy's, as on the
        Connection."""
        sql = self._sql_for(1)
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                keys: list[int | None] = []
                for row in rows:
                    cursor.execute(sql, row)
                    keys.append(cursor.lastrowid if cursor.rowcount == 1 else None)
                raw.commit()
                return keys
            except BaseException:
                raw.rollback()
                raise
            finally:
                cursor.close()
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(
                sql, None, exc, self.engine.dialect.loaded_dbapi.Error
            ) from exc
        finally:
            raw.close()  # back to the pool

    def _sql_for(self, rows: int) -> str:
        sql = self._insert_sql.get(rows)
        if sql is None:
            sql = self._insert_sql[rows] = _insert_deliveries_sql(rows, self.engine.dialect)
        return sql

    def take_new(self, limit: int = 500, now: float | None = None) -> list[int]:
        """Deliveries recorded but not yet handed to the job queue, oldest first. The store is
        the outbox: a webhook is answered after its one durable write, and the consumer's
        dispatcher moves new rows to the queue. Each id is returned to one caller only."""
        now = time.time() if now is None else now
        with self.autocommit.connect() as conn:  # the common answer, "nothing new", reads only
            ids = conn.execute(_NEW_IDS, {"b_limit": limit}).scalars().all()
        if not ids:
            return []
        with self.engine.begin() as conn:
            if self.engine.dialect.update_returning:
                taken = conn.execute(_TAKE, {"b_ids": list(ids), "b_now": now}).scalars().all()
            else:  # SQLite before 3.35 (e.g. RHEL 8): one conditional UPDATE per row
                taken = _take_each(conn, [(pk, NOT_ENQUEUED) for pk in ids], now, _FRESH)
        return sorted(int(pk) for pk in taken)

    def newest_delivery_id(self) -> int:
        """The id of the latest delivery recorded (0: none): ids are handed out in the order
        webhooks arrive, so its growth is their rate (connector.burst)."""
        with self.autocommit.connect() as conn:
            return int(conn.execute(_NEWEST_ID).scalar() or 0)

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
        with self.autocommit.connect() as conn:
            row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return row_to_delivery(row) if row else None

    def count_deliveries(self, status: str | None = None) -> int:
        query = select(func.count()).select_from(deliveries)
        if status:
            query = query.where(deliveries.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)
