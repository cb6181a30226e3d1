"""Safe to run: retention (BPSM_RETENTION, `bpsm purge`), private file modes, commands that
only read the store, configuration errors with their own exit status."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from connector.cli import main
from connector.config import ConfigError, load_settings
from connector.events import TicketEvent
from connector.exitcodes import CONFIG, NO_STORE
from connector.hosts import settings_models
from connector.jobqueue import BackgroundWorker
from connector.runtime import Runtime
from connector.store import (
    SCHEMA_VERSION,
    Store,
    StoreUnavailable,
    corrections,
    dead_letters,
    deliveries,
    describe_store,
    improvements,
    maintenance,
    routings,
    schema_version,
)
from tests.e2e import ROOT

DAY = 86400.0
NOW = time.time()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bpsm.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _routing(store: Store, ticket: str, delivery: int, created_at: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(routings).values(
                host="demo",
                ticket_id=ticket,
                delivery=delivery,
                process="reactive",
                service="printing",
                queue="BPSM Reactive",
                confidence=0.8,
                mode="dry-run",
                outcome="dry-run",
                decision='{"note": "the ticket text lives here too"}',
                match="{}",
                created_at=created_at,
            )
        )


def seed(store: Store) -> None:
    """Tickets 1-3 are 400 days old, 4 is 10 days old; 3 is still queued (work to do)."""
    for ticket, age, status in (("1", 400, "done"), ("2", 400, "dead"), ("3", 400, "queued")):
        pk = store.record_delivery(
            TicketEvent(host="demo", delivery_id=f"d{ticket}", ticket_id=ticket, body="secret"),
            now=NOW - age * DAY,
        )
        assert pk is not None
        with store.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == pk).values(status=status))
        if status != "queued":
            _routing(store, ticket, pk, NOW - age * DAY)
    recent = store.record_delivery(
        TicketEvent(host="demo", delivery_id="d4", ticket_id="4", body="printer"),
        now=NOW - 10 * DAY,
    )
    assert recent is not None
    with store.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == recent).values(status="done"))
        conn.execute(
            insert(dead_letters).values(
                delivery=2, host="demo", ticket_id="2", reason="gone", created_at=NOW - 400 * DAY
            )
        )
        for service, open_key in (("email", None), ("printing", "demo:printing")):
            conn.execute(
                insert(improvements).values(
                    host="demo",
                    service=service,
                    open_key=open_key,
                    status="closed" if open_key is None else "open",
                    reason="five disruptions",
                    tickets="[]",
                    claimed_at=NOW - 400 * DAY,
                )
            )
        # A review-page correction applied long ago is history; one still waiting for its
        # job is work.
        for status in ("applied", "pending"):
            conn.execute(
                insert(corrections).values(
                    host="demo",
                    ticket_id="1",
                    routing=1,
                    from_process="relation",
                    from_queue="BPSM Relation",
                    to_process="reactive",
                    to_service="printing",
                    source="review",
                    actor="lead",
                    status=status,
                    created_at=NOW - 400 * DAY,
                )
            )
        conn.execute(
            insert(maintenance).values(
                host="demo",
                item="quota",
                period="2025",
                status="opened",
                claimed_at=NOW - 400 * DAY,
            )
        )
    _routing(store, "4", recent, NOW - 10 * DAY)


def remaining(store: Store) -> dict[str, list[Any]]:
    with store.engine.connect() as conn:
        return {
            "deliveries": sorted(conn.execute(select(deliveries.c.ticket_id)).scalars()),
            "routings": sorted(conn.execute(select(routings.c.ticket_id)).scalars()),
            "dead_letters": list(conn.execute(select(dead_letters.c.id)).scalars()),
            "improvements": list(conn.execute(select(improvements.c.service)).scalars()),
            "maintenance": list(conn.execute(select(maintenance.c.item)).scalars()),
            "corrections": list(conn.execute(select(corrections.c.status)).scalars()),
        }


def test_purge_deletes_what_is_older_and_keeps_unfinished_work(store_url: str) -> None:
    store = Store(store_url)
    try:
        seed(store)
        counts = store.purge(90 * DAY, now=NOW)
        assert counts == {
            "routings": 2,
            "dead_letters": 1,
            "deliveries": 2,
            "improvements": 1,
            "corrections": 1,
        }
        assert remaining(store) == {
            "deliveries": ["3", "4"],  # 3 is still queued: work, not history
            "routings": ["4"],
            "dead_letters": [],
            "improvements": ["printing"],  # still open: it holds the service's slot
            "maintenance": ["quota"],  # no ticket text; must outlive its period
            "corrections": ["pending"],
        }
        assert store.purge(90 * DAY, now=NOW) == dict.fromkeys(counts, 0)
    finally:
        store.dispose()


def test_purged_sqlite_text_is_not_left_in_the_file(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    store.record_delivery(
        TicketEvent(host="demo", delivery_id="x", ticket_id="1", body="Kari Nordmann 12345678901"),
        now=NOW - 400 * DAY,
    )
    with store.engine.begin() as conn:
        conn.execute(update(deliveries).values(status="done"))
    store.purge(90 * DAY)
    store.dispose()  # checkpoints the WAL into the file
    data = b"".join(p.read_bytes() for p in tmp_path.glob("bpsm.db*") if p.is_file())
    assert b"12345678901" not in data


def test_the_running_service_purges_by_itself(tmp_path: Path, example_index: Any) -> None:
    env = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_RETENTION": "90d"}
    settings = load_settings(env, hosts=settings_models())
    rt = Runtime(settings, index=example_index)
    seed(rt.store)
    worker = BackgroundWorker(rt.queue, workers=1, sweep_interval=0.05)
    worker.start()
    try:
        # Ticket 3 was still queued: the worker routes it now. 1 and 2 are past retention.
        deadline = time.monotonic() + 20
        while remaining(rt.store)["routings"] != ["3", "4"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert remaining(rt.store)["routings"] == ["3", "4"]
        assert remaining(rt.store)["deliveries"] == ["3", "4"]
    finally:
        worker.stop()
        rt.close()


@pytest.mark.parametrize(
    "raw,seconds", [("365d", 365 * DAY), ("12w", 84 * DAY), ("0", 0.0), ("36h", 36 * 3600.0)]
)
def test_retention_setting(raw: str, seconds: float) -> None:
    assert load_settings({"BPSM_RETENTION": raw}).retention == seconds


def test_retention_default_and_bad_value() -> None:
    assert load_settings({}).retention == 365 * DAY
    with pytest.raises(ConfigError, match="BPSM_RETENTION: '1 year' is not a duration"):
        load_settings({"BPSM_RETENTION": "1 year"})


# ----- the command line --------------------------------------------------------------------


def bpsm(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Any:
    for name in list(os.environ):
        if name.startswith("BPSM_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(main, list(args))


def test_bpsm_purge_older_than(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    seed(store)
    store.dispose()
    env = {"BPSM_DATA_DIR": str(tmp_path)}
    result = bpsm(monkeypatch, env, "purge", "--older-than", "500d")
    assert result.exit_code == 0, result.output
    assert "0 routings, 0 dead_letters, 0 deliveries, 0 improvements" in result.stdout
    result = bpsm(monkeypatch, env, "purge", "--older-than", "90d")
    assert result.exit_code == 0, result.output
    assert "2 routings, 1 dead_letters, 2 deliveries, 1 improvements" in result.stdout
    assert f"store: {tmp_path / 'bpsm.db'}" in result.stderr


def test_bpsm_purge_uses_the_retention_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bpsm.db'}")
    seed(store)
    store.dispose()
    forever = bpsm(monkeypatch, {"BPSM_DATA_DIR": str(tmp_path), "BPSM_RETENTION": "0"}, "purge")
    assert forever.exit_code == 0 and "nothing to purge" in forever.stdout
    year = bpsm(monkeypatch, {"BPSM_DATA_DIR": str(tmp_path)}, "purge")
    assert year.exit_code == 0 and "2 routings" in year.stdout  # default 365d: 400 days go
    bad = bpsm(monkeypatch, {"BPSM_DATA_DIR": str(tmp_path)}, "purge", "--older-than", "soon")
    assert bad.exit_code == 2 and "--older-than" in bad.output


@pytest.mark.parametrize("command", [["decisions"], ["report"], ["replay", "--list"], ["purge"]])
def test_reading_commands_never_create_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    typo = tmp_path / "typo"
    env = {"BPSM_DATA_DIR": str(typo), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")}
    result = bpsm(monkeypatch, env, *command)
    assert result.exit_code == NO_STORE, result.output
    assert f"store {typo / 'bpsm.db'} does not exist" in result.stderr
    assert f"BPSM_DATA_DIR is {typo}" in result.stderr
    assert not typo.exists()


def test_reading_commands_name_the_store_they_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(f"sqlite:///{tmp_path / 'bpsm.db'}").dispose()
    env = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")}
    result = bpsm(monkeypatch, env, "decisions")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"store: {tmp_path / 'bpsm.db'}\n")
    assert "no decisions yet" in result.stdout
    assert not (tmp_path / "queue.db").exists()  # the embedded queue is not created either


def test_report_says_when_the_period_is_longer_than_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(f"sqlite:///{tmp_path / 'bpsm.db'}").dispose()
    env = {
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml"),
        "BPSM_RETENTION": "90d",
    }
    within = bpsm(monkeypatch, env, "report", "--since", "30d")
    assert within.exit_code == 0 and "BPSM_RETENTION" not in within.stderr
    beyond = bpsm(monkeypatch, env, "report", "--since", "26w")
    assert beyond.exit_code == 0
    assert "note: only the last 90 days are kept (BPSM_RETENTION)" in beyond.stderr


def test_a_reading_command_does_not_migrate_an_old_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bpsm.db'}"
    Store(url).dispose()
    old = Store(url)
    with old.engine.begin() as conn:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION - 1))
    old.dispose()
    expected = f"has schema {SCHEMA_VERSION - 1}, this connector reads {SCHEMA_VERSION}: start"
    with pytest.raises(StoreUnavailable, match=expected):
        Store(url, create=False)
    check = Store(url)  # a service does migrate it
    with check.engine.connect() as conn:
        assert conn.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION
    check.dispose()


def test_an_empty_postgresql_database_is_not_a_store(pg_url: str) -> None:
    with pytest.raises(StoreUnavailable, match="is not a bpsm-connector store"):
        Store(pg_url, create=False)


def test_configuration_errors_have_their_own_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")}
    bad_mode = bpsm(monkeypatch, {**env, "BPSM_MODE": "yolo"}, "worker")
    assert bad_mode.exit_code == CONFIG and "configuration error: BPSM_MODE" in bad_mode.stderr
    broken = tmp_path / "catalogue.yaml"
    broken.write_text("version: 1\nservices:\n  - id: x\n    nmae: X\n")
    bad_catalogue = bpsm(monkeypatch, {**env, "BPSM_CATALOGUE": str(broken)}, "worker")
    assert bad_catalogue.exit_code == CONFIG
    assert f"{broken}:4: services[0].nmae" in bad_catalogue.stderr
    # `bpsm check` exists to find mistakes: it keeps exit 1 (DESIGN.md).
    assert bpsm(monkeypatch, env, "check", str(broken)).exit_code == 1


def test_bpsm_serve_with_a_bad_catalogue_exits_78_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "catalogue.yaml"
    broken.write_text("version: 1\nservices:\n  - id: x\n    sla: {<<: 3}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPSM_")}
    env |= {"BPSM_DATA_DIR": str(tmp_path / "data"), "BPSM_CATALOGUE": str(broken)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == CONFIG, result.stderr
    assert f"{broken}:4: services[0].sla: a merge key (<<) must name a mapping" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60


def test_the_store_is_named_without_its_password() -> None:
    assert (
        describe_store("postgresql+psycopg://bpsm:s3cr3t@db.example/bpsm")
        == "postgresql+psycopg://bpsm:***@db.example/bpsm"
    )


def test_a_missing_catalogue_names_the_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = bpsm(monkeypatch, {"BPSM_DATA_DIR": str(tmp_path)}, "classify", "printer broken")
    assert result.exit_code == 1
    for way_out in ("--catalogue", "BPSM_CATALOGUE", "bpsm init"):
        assert way_out in result.stderr
    assert bpsm(monkeypatch, {"BPSM_DATA_DIR": str(tmp_path)}, "worker").exit_code == CONFIG


# ----- file modes --------------------------------------------------------------------------


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}


def test_the_data_folder_is_0700_and_every_file_in_it_0600(
    tmp_path: Path, example_index: Any
) -> None:
    data = tmp_path / "data"
    old_umask = os.umask(0o022)
    try:
        settings = load_settings({"BPSM_DATA_DIR": str(data)}, hosts=settings_models())
        rt = Runtime(settings, index=example_index)
        rt.store.record_delivery(TicketEvent(host="demo", delivery_id="1", ticket_id="1"))
        rt.queue.enqueue(1)
        found = modes(data)
        rt.close()
    finally:
        os.umask(old_umask)
    assert {"bpsm.db", "bpsm.db-wal", "bpsm.db-shm", "queue.db"} <= set(found)
    assert found == {"data": 0o700, **{name: 0o600 for name in found if name != "data"}}


def test_an_older_open_data_folder_is_tightened_at_start(
    tmp_path: Path, example_index: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    Store(f"sqlite:///{data / 'bpsm.db'}").dispose()
    secret = data / "zammad-webhook-secret"
    secret.write_text("s3cr3t\n")
    for path in data.iterdir():
        os.chmod(path, 0o644)
    settings = load_settings({"BPSM_DATA_DIR": str(data)}, hosts=settings_models())
    Runtime(settings, index=example_index).close()
    found = modes(data)
    assert found == {"data": 0o700, **{name: 0o600 for name in found if name != "data"}}


def test_url_settings_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql+psycopg://bpsm:pw@db/bpsm\n")
    (tmp_path / "redis").write_text("redis://:pw@cache:6379/0\n")
    settings = load_settings(
        {
            "BPSM_DATABASE_URL_FILE": str(tmp_path / "db"),
            "BPSM_REDIS_URL_FILE": str(tmp_path / "redis"),
        }
    )
    assert settings.database_url == "postgresql+psycopg://bpsm:pw@db/bpsm"
    assert settings.redis_url == "redis://:pw@cache:6379/0"
    with pytest.raises(ConfigError, match="BPSM_DATABASE_URL_FILE: cannot read"):
        load_settings({"BPSM_DATABASE_URL_FILE": str(tmp_path / "missing")})


def test_a_store_of_a_newer_connector_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """An older connector must not touch a store a newer one wrote, and a restart cannot fix
    that: exit CONFIG (systemd's RestartPreventExitStatus) with one line saying to upgrade;
    reading commands exit NO_STORE with the same reason."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'bpsm.db'}"
    Store(url).dispose()
    newer = Store(url)
    with newer.engine.begin() as conn:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))
    newer.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPSM_")}
    env |= {"BPSM_DATA_DIR": str(data), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")}
    expected = f"has schema {SCHEMA_VERSION + 1}, newer than this connector's {SCHEMA_VERSION}"
    for command in (["worker"], ["decisions"]):
        result = subprocess.run(
            [sys.executable, "-m", "connector.cli", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == (CONFIG if command == ["worker"] else NO_STORE), result.stderr
        assert expected in result.stderr and "upgrade this one" in result.stderr
        assert "Traceback" not in result.stderr
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:  # untouched
        assert conn.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION + 1
    engine.dispose()
