"""Store details that need no helpdesk: which URLs are files, in-memory databases."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from connector.events import TicketEvent
from connector.store import SCHEMA_VERSION, Store
from connector.store.engine import _sqlite_file
from connector.store.outbox import new_delivery_row


@pytest.mark.parametrize(
    "url,expected",
    [
        ("sqlite:////var/lib/bpsm/bpsm.db", "/var/lib/bpsm/bpsm.db"),
        ("sqlite:///data/bpsm.db", "data/bpsm.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://bpsm@db/bpsm", None),
    ],
)
def test_sqlite_file_of_a_url(url, expected):
    assert _sqlite_file(url) == expected


def test_an_in_memory_store_needs_no_lock_files():
    store = Store("sqlite://")  # used to try a lock file named "sqlite:/.migrate.lock"
    assert store.count_deliveries() == 0


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'bpsm.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = Store(url)
    yield store
    store.dispose()


def _event(delivery: str, ticket: str = "1") -> TicketEvent:
    return TicketEvent(host="demo", delivery_id=delivery, ticket_id=ticket, body="printer")


def test_concurrent_webhooks_each_get_their_own_row_and_duplicates_none(any_store):
    # 8 threads send 40 deliveries each; threads t and t+4 send the same ones at the same
    # time, so group commit puts rows of several threads, often both copies, in one INSERT.
    deliveries = [f"d-{i}" for i in range(160)]
    plan = [deliveries[(t % 4) * 40 : (t % 4) * 40 + 40] for t in range(8)]
    results: list[tuple[str, int | None]] = []
    start = threading.Barrier(8)

    def send(ids: list[str]) -> None:
        start.wait()
        for delivery in ids:
            results.append((delivery, any_store.record_delivery(_event(delivery))))

    threads = [threading.Thread(target=send, args=(ids,)) for ids in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 320
    keys = [key for _, key in results if key is not None]
    assert len(keys) == len(set(keys)) == 160  # one new row per delivery, distinct keys
    assert {d for d, key in results if key is not None} == set(deliveries)
    assert any_store.count_deliveries() == 160
    for delivery, key in results:
        if key is not None:
            assert any_store.delivery(key).delivery_id == delivery


def test_a_row_postgresql_refuses_fails_alone_not_the_rows_sharing_its_insert(pg_url):
    store = Store(pg_url)
    try:
        # model_construct skips the event's own checks, as a future bug might.
        bad = TicketEvent.model_construct(
            host="demo", delivery_id="bad", ticket_id="9" * 150, kind="created", body="x"
        )
        rows = [new_delivery_row(e, 1.0) for e in (_event("a"), bad, _event("b"))]
        first, refused, second = store._insert_deliveries(rows)
        assert isinstance(refused, DBAPIError)  # what that webhook's caller will raise
        assert isinstance(first, int) and isinstance(second, int)
        assert store.count_deliveries() == 2  # a and b written, one at a time
    finally:
        store.dispose()


def test_a_version_2_database_gets_the_routings_index(any_store):
    # As an older connector left it: schema 2, no index for the improvement check.
    with any_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_bpsm_routings_service_created")
        conn.exec_driver_sql("UPDATE bpsm_schema SET version = 2")
    upgraded = Store(any_store.url)
    try:
        indexes = {i["name"] for i in sa.inspect(upgraded.engine).get_indexes("bpsm_routings")}
        assert "ix_bpsm_routings_service_created" in indexes
        with upgraded.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version FROM bpsm_schema").scalar()
            assert version == SCHEMA_VERSION
    finally:
        upgraded.dispose()


def test_each_typed_row_names_exactly_its_tables_columns():
    """The rows are TypedDicts over `dict(row)`: a column added to a table without its field
    (or a field without its column) would be a key mypy does not know or one never there."""
    from connector.store import rows, schema

    expected = {
        rows.RoutingRow: schema.routings,
        rows.CorrectionRow: schema.corrections,
        rows.DeadLetterRow: schema.dead_letters,
        rows.MaintenanceRow: schema.maintenance,
        rows.ImprovementRow: schema.improvements,
    }
    for row, table in expected.items():
        assert set(row.__annotations__) == set(table.c.keys()), row.__name__
    assert set(rows.RoutingWithEvent.__annotations__) == {*schema.routings.c.keys(), "event"}
    assert set(rows.CorrectionWithText.__annotations__) == {*schema.corrections.c.keys(), "event"}
    new_routing = set(rows.NewRouting.__annotations__)
    assert new_routing < set(schema.routings.c.keys())
    assert new_routing | {"id", "host", "ticket_id", "delivery", "outcome", "created_at"} | {
        "applied_at",
        "apply_ms",
        "moved_by_agent_at",
        "replied_at",
    } == set(schema.routings.c.keys())


def test_an_sqlite_delivery_write_that_fails_raises_sqlalchemys_error_and_keeps_the_pool(
    tmp_path,
):
    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    try:
        with store.engine.begin() as conn:  # a store whose file was damaged under us
            conn.exec_driver_sql("ALTER TABLE bpsm_deliveries RENAME TO gone")
        with pytest.raises(DBAPIError):
            store.record_delivery(_event("lost"))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE gone RENAME TO bpsm_deliveries")
        assert isinstance(store.record_delivery(_event("kept")), int)  # the pool still works
        assert store.count_deliveries() == 1
    finally:
        store.dispose()


def _cut_connections(url: str) -> int:
    """Terminate every server connection to the database of `url` (a restart, a firewall)."""
    from tests.conftest import PG_ADMIN_URL

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": url.rsplit("/", 1)[1]},
                ).scalar()
                or 0
            )
    finally:
        admin.dispose()


def test_a_postgresql_delivery_is_committed_when_record_delivery_returns(pg_url):
    # The INSERT runs on a connection the store keeps between webhooks: it must not hold an
    # open transaction, or a 202 would answer for a row nobody else can see (or ever will).
    store = Store(pg_url)
    other = sa.create_engine(pg_url)
    try:
        for n in range(3):
            key = store.record_delivery(_event(f"c-{n}", str(n)))
            with other.connect() as conn:
                seen = conn.execute(
                    sa.text("SELECT delivery_id FROM bpsm_deliveries WHERE id = :k"), {"k": key}
                ).scalar()
            assert seen == f"c-{n}"
    finally:
        other.dispose()
        store.dispose()


def test_a_postgresql_delivery_connection_cut_in_use_fails_one_write_then_reconnects(pg_url):
    store = Store(pg_url)
    try:
        assert store.record_delivery(_event("before")) is not None
        assert _cut_connections(pg_url) >= 1  # not idle: no test before the next write
        with pytest.raises(DBAPIError):
            store.record_delivery(_event("cut"))  # that webhook is answered 500, retried
        assert store.record_delivery(_event("after")) is not None
        assert store.record_delivery(_event("cut")) is not None  # its retry is stored
        store.engine.dispose()  # the reading pool's connection was cut as well
        assert store.count_deliveries() == 3
    finally:
        store.dispose()


def test_reactive_tickets_up_to_a_limit_are_the_oldest_and_without_one_all(tmp_path):
    from connector.store import ProcessStore, improvements, routings

    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    try:
        with store.engine.begin() as conn:
            for n in range(8):
                conn.execute(
                    routings.insert().values(
                        host="demo",
                        ticket_id=str(100 - n),  # ids and ticket numbers in opposite orders
                        delivery=n,
                        process="reactive" if n != 3 else "relation",
                        service="vpn",
                        queue="Q",
                        confidence=0.9,
                        mode="route",
                        outcome="applied" if n != 5 else "failed",
                        decision="{}",
                        match="{}",
                        created_at=1000.0 + n,
                    )
                )
        processes = ProcessStore(store)
        everything = processes.reactive_tickets("demo", "vpn", since=1001.0)
        assert everything == ["99", "98", "96", "94", "93"]  # not 3 (relation), 5 (failed)
        assert processes.reactive_tickets("demo", "vpn", since=1001.0, limit=3) == everything[:3]
        assert processes.reactive_tickets("demo", "vpn", since=1001.0, limit=9) == everything
        # An improvement claimed at 1004.5 counted the tickets before it: they are not
        # counted again (another service's improvement changes nothing).
        with store.engine.begin() as conn:
            for service in ("vpn", "email"):
                conn.execute(
                    improvements.insert().values(
                        host="demo",
                        service=service,
                        status="closed",
                        reason="threshold",
                        tickets="[]",
                        claimed_at=1004.5,
                    )
                )
        assert processes.reactive_tickets("demo", "vpn", since=1001.0) == ["94", "93"]
        assert processes.reactive_tickets("demo", "email", since=0.0) == []
    finally:
        store.dispose()


def test_begin_routing_first_delivery_wins_and_the_row_is_committed_at_once(any_store):
    record = {
        "process": "reactive",
        "service": "vpn",
        "queue": "Q",
        "confidence": 0.9,
        "low_confidence": 0,
        "language": "en",
        "mode": "route",
        "decision": "{}",
        "match": "{}",
        "ticket_created_at": None,
    }
    first = any_store.delivery(any_store.record_delivery(_event("r-1", ticket="77")))
    second = any_store.delivery(any_store.record_delivery(_event("r-2", ticket="77")))
    mine = any_store.begin_routing(first, record)
    assert mine["delivery"] == first.id and mine["outcome"] == "applying"
    theirs = any_store.begin_routing(second, {**record, "service": "printer"})
    assert theirs["delivery"] == first.id and theirs["service"] == "vpn"  # the first one's
    other = sa.create_engine(any_store.url)  # another process sees it without any commit
    try:
        with other.connect() as conn:
            rows = conn.execute(sa.text("SELECT delivery FROM bpsm_routings")).all()
        assert [tuple(r) for r in rows] == [(first.id,)]
    finally:
        other.dispose()
