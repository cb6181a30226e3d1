"""scripts/ensure-services.sh sets up the tests' database on a cluster as Debian installs it.

A fresh Debian cluster lets the postgres user in over the Unix socket (peer) and wants a
password for every TCP login (scram-sha-256). The test starts such a cluster of its own —
in a temporary folder, on a free port, as the postgres user, since initdb refuses root —
and runs the script's database part against it; the machine's own cluster is not touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e import ROOT

SCRIPT = ROOT / "scripts" / "ensure-services.sh"


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"{name} is missing: scripts/ensure-services.sh installs PostgreSQL"
    return found[-1]


def as_postgres(*command: str) -> subprocess.CompletedProcess[str]:
    prefix = (
        ["runuser", "-u", "postgres", "--"]
        if os.geteuid() == 0
        else ["sudo", "-n", "-u", "postgres", "--"]
    )
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120, cwd="/")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def debian_like_cluster() -> Iterator[tuple[int, Path]]:
    """A throwaway cluster: peer over the socket, scram-sha-256 over TCP. (port, socket dir)"""
    folder = Path(tempfile.mkdtemp(prefix="bpsm-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    data, sockets = folder / "data", folder / "run"
    port = free_port()
    made = as_postgres(
        postgres_bin("initdb"),
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--username=postgres",
        "-D",
        str(data),
    )
    assert made.returncode == 0, made.stderr
    as_postgres("mkdir", str(sockets))
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    started = as_postgres(
        postgres_bin("pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(folder / "log"),
        "-w",
        "start",
    )
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield port, sockets
    finally:
        as_postgres(postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def run_script(port: int, sockets: Path, url_file: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "BPSM_TEST_PG_URL"},
        "BPSM_PG_PORT": str(port),
        "BPSM_PG_SOCKET_DIR": str(sockets),
        "BPSM_TEST_PG_URL_FILE": str(url_file),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), "postgres-role"], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_script_sets_up_a_role_the_tests_can_use_on_a_fresh_cluster(
    debian_like_cluster: tuple[int, Path], tmp_path: Path
) -> None:
    port, sockets = debian_like_cluster
    # As on a fresh Debian: the old assumption, postgres without a password over TCP, fails.
    old = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    with pytest.raises(sa.exc.OperationalError, match="password"):
        old.connect()
    old.dispose()

    url_file = tmp_path / "test-pg-url"
    result = run_script(port, sockets, url_file)
    assert result.returncode == 0, result.stderr
    assert oct(url_file.stat().st_mode & 0o777) == "0o600"
    url = url_file.read_text().strip()
    assert url.startswith("postgresql+psycopg://bpsm_test:") and url.endswith(f":{port}/test")

    # What tests/conftest.py does with it: create a database, use it, drop it.
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text('CREATE DATABASE "bpsm_probe"'))
        conn.execute(sa.text('DROP DATABASE "bpsm_probe"'))
    admin.dispose()

    # Running it again keeps the working URL (other checkouts may hold it).
    again = run_script(port, sockets, url_file)
    assert again.returncode == 0, again.stderr
    assert url_file.read_text().strip() == url


def test_a_bad_test_url_is_an_error_not_ready(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BPSM_TEST_PG_URL": "postgresql+psycopg://nobody:wrong@127.0.0.1:1/test",
        "BPSM_TEST_PG_URL_FILE": str(tmp_path / "unused"),
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), "postgres-role"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0
    assert "BPSM_TEST_PG_URL does not let me log in" in result.stderr
