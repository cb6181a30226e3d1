"""Shared fixtures: real PostgreSQL and Redis on this machine (see scripts/ensure-services.sh),
a fresh database / Redis key space per test, and the example catalogue's index."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.catalogue import load_catalogue
from connector.classify import CatalogueIndex, build_index

ROOT = Path(__file__).resolve().parents[1]


def _pg_admin_url() -> str:
    """BPSM_TEST_PG_URL; else the role scripts/ensure-services.sh set up (its URL file); else
    the postgres user without a password (a cluster that trusts local TCP logins)."""
    if os.environ.get("BPSM_TEST_PG_URL"):
        return os.environ["BPSM_TEST_PG_URL"]
    saved = ROOT / ".cache" / "test-pg-url"
    if saved.is_file() and saved.read_text().strip():
        return saved.read_text().strip()
    return "postgresql+psycopg://postgres@127.0.0.1/test"


PG_ADMIN_URL = _pg_admin_url()
REDIS_URL = os.environ.get("BPSM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def _bpsm_environment_restored() -> Iterator[None]:
    """Each test starts from the session's BPSM_* environment: a command run in-process
    (`bpsm setup zammad --url …` through CliRunner) sets the host's variables as the real CLI
    does for its own process, and they must not leak into later tests (a later `bpsm serve`
    would then see a Zammad it was never given)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("BPSM_")}
    yield
    for key in [k for k in os.environ if k.startswith("BPSM_")]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(scope="session")
def example_index() -> CatalogueIndex:
    return build_index(load_catalogue(ROOT / "catalogue.yaml"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    name = f"bpsm_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL; the huey queue name is made unique per test by the caller's data dir."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield REDIS_URL
    for key in client.scan_iter("huey.*test*"):
        client.delete(key)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the browser tests left their screenshots of each page."""
    folder = ROOT / "build" / "screenshots"
    if folder.is_dir() and any(folder.glob("*.png")):
        terminalreporter.write_line(f"screenshots of the review page: {folder}")
