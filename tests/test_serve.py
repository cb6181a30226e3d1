"""The real `bpsm serve` and `bpsm worker`, run as an operator runs them (a subprocess on a
free port, its data and temporary folders in tmp_path): metrics counted across every
process, no process outliving `bpsm serve` (SIGKILL, SIGTERM while starting), a taken port
and unreachable backends as one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from connector.metrics import package_version
from tests.e2e import ROOT

pytestmark = pytest.mark.timeout(180)

ZAMMAD_SECRET = "serve-test-secret"
PRINTER = ["printer jams on floor 2", "skriveren virker ikke", "the printer prints blank pages"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.add(pid)
    return living


class Bpsm:
    """One `bpsm serve` or `bpsm worker` process; its output goes to a file."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str], name: str):
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.log_path = tmp_path / f"{name}.log"
        environ = {
            **os.environ,
            "BPSM_DATA_DIR": str(tmp_path / "data"),
            "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml"),
            "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"),
            "BPSM_MAINTENANCE_INTERVAL": "0",
            "TMPDIR": str(self.tmp),  # where the metrics directory goes
            **env,
        }
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", *args],
            env=environ,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def started(self, timeout: float = 120) -> Bpsm:
        def up() -> bool:
            assert self.process.poll() is None, self.output
            return any(line.get("msg") == "service started" for line in self.lines())

        wait_until(up, timeout, "service started")
        return self

    def lines(self) -> list[dict[str, Any]]:
        parsed = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                parsed.append(json.loads(line))
        return parsed

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill_tree(self) -> None:
        """Last resort so that a failing test leaves nothing behind."""
        for pid in alive(descendants(self.process.pid)) | {self.process.pid}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def processes() -> Iterator[list[Bpsm]]:
    started: list[Bpsm] = []
    yield started
    for bpsm in started:
        if bpsm.process.poll() is None or alive(descendants(bpsm.process.pid)):
            bpsm.kill_tree()


def serve(
    processes: list[Bpsm], tmp_path: Path, port: int, name: str = "serve", **env: str
) -> Bpsm:
    args = ["serve", "--port", str(port), "--workers", "2"]
    bpsm = Bpsm(tmp_path, args, env, name)
    processes.append(bpsm)
    return bpsm


def post_demo(port: int, text: str) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{port}/hooks/demo",
        json={"ticket_id": hashlib.sha1(text.encode()).hexdigest()[:8], "body": text},
        timeout=10,
    )


def post_glpi(port: int, text: str, event: str = "new") -> requests.Response:
    """A GLPI ticket webhook for a GLPI the service has no URL for: verified (no secret set)
    and recorded in dry-run. The demo host is off once a real helpdesk is configured."""
    ticket_id = int(hashlib.sha1(f"{text}:{event}".encode()).hexdigest()[:7], 16)
    item = {"id": ticket_id, "name": "", "content": text, "team": []}
    return requests.post(
        f"http://127.0.0.1:{port}/hooks/glpi?itemtype=Ticket",
        json={"item": item, "event": event},
        timeout=10,
    )


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=10).text
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), names  # one family per name (OpenMetrics)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# ----- metrics -----------------------------------------------------------------------------


def zammad_webhook(port: int, signature_ok: bool, delivery: str) -> requests.Response:
    body = (
        ROOT / "connector" / "hosts" / "zammad" / "fixtures" / "ticket_created.json"
    ).read_bytes()
    secret = ZAMMAD_SECRET if signature_ok else "wrong"
    signature = "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return requests.post(
        f"http://127.0.0.1:{port}/hooks/zammad",
        data=body,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Zammad-Delivery": delivery,
            "X-Zammad-Trigger": "connector: ticket created",
            "X-Hub-Signature": signature,
        },
        timeout=10,
    )


def test_metrics_are_counted_across_web_workers_and_the_consumer(tmp_path, processes):
    port = free_port()
    bpsm = serve(
        processes,
        tmp_path,
        port,
        # A Zammad nobody answers for: its ticket is retried once, then dead-lettered.
        BPSM_ZAMMAD_URL=f"http://127.0.0.1:{free_port()}",
        BPSM_ZAMMAD_TOKEN="token",
        BPSM_ZAMMAD_WEBHOOK_SECRET=ZAMMAD_SECRET,
        BPSM_RETRY_BUDGET="2",
        BPSM_RETRY_BASE_DELAY="0.1",
        BPSM_HTTP_TIMEOUT="1",
    ).started()
    for text in PRINTER:
        assert post_glpi(port, text).status_code == 202
    assert zammad_webhook(port, signature_ok=True, delivery="d-1").status_code == 202
    assert zammad_webhook(port, signature_ok=False, delivery="d-2").status_code == 401
    for n in range(8):  # updates: ignored (spread over both web workers, new connections)
        assert post_glpi(port, f"update {n}", event="update").status_code == 200
    url = f"http://127.0.0.1:{port}/metrics"

    def settled() -> dict[Any, float] | None:
        samples = scrape(url)
        done = value(samples, "bpsm_dead_letters_total", host="zammad") == 1.0
        return samples if done and value(samples, "bpsm_queue_depth") == 0 else None

    samples = wait_until(settled, 60, "the demo tickets decided and the Zammad one dead")
    for _ in range(5):  # whichever web worker answers, the same totals
        again = scrape(url)
        assert (
            value(
                again,
                "bpsm_events_total",
                host="glpi",
                result="ignored",
                reason="not-new",
            )
            == 8.0
        )  # noqa: E501
    queued = value(samples, "bpsm_events_total", host="glpi", result="queued", reason="")
    assert queued == 3.0
    assert value(samples, "bpsm_events_total", host="zammad", result="queued", reason="") == 1.0
    rejected = value(
        samples, "bpsm_events_total", host="zammad", result="rejected", reason="signature"
    )
    assert rejected == 1.0
    decided = value(
        samples, "bpsm_decisions_total", host="glpi", process="reactive", outcome="dry-run"
    )
    assert decided == 3.0
    assert value(samples, "bpsm_apply_seconds_count", host="glpi") == 3.0
    assert value(samples, "bpsm_retries_total", host="zammad") == 1.0
    assert value(samples, "bpsm_dead_letters_total", host="zammad") == 1.0
    assert value(samples, "bpsm_dead_letters_pending") == 1.0
    build = {"version": package_version(), "python": platform.python_version()}
    assert value(samples, "bpsm_build_info", **build) == 1.0
    metrics_dirs = list(bpsm.tmp.glob("bpsm-metrics-*"))
    assert len(metrics_dirs) == 1
    assert bpsm.stop() == 0
    assert list(bpsm.tmp.glob("bpsm-metrics-*")) == []  # removed at exit


def test_worker_serves_its_own_metrics(tmp_path, processes):
    from connector.config import load_settings
    from connector.hosts import settings_models
    from webhook_app import create_app

    env = {
        "BPSM_DATA_DIR": str(tmp_path / "data"),
        "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml"),
        "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"),
    }
    web = create_app(load_settings(env, hosts=settings_models())).test_client()
    for text in PRINTER[:2]:
        body = {"ticket_id": text[:6], "body": text}
        assert web.post("/hooks/demo", json=body).status_code == 202
    port = free_port()
    worker = Bpsm(tmp_path, ["worker", "--metrics-port", str(port)], {}, "worker")
    processes.append(worker)
    url = f"http://127.0.0.1:{port}/metrics"

    def decided() -> dict[Any, float] | None:
        assert worker.process.poll() is None, worker.output
        if not listening(port):
            return None
        samples = scrape(url)
        count = value(
            samples, "bpsm_decisions_total", host="demo", process="reactive", outcome="dry-run"
        )  # noqa: E501
        return samples if count == 2.0 else None

    samples = wait_until(decided, 120, "the worker's two decisions on its /metrics")
    assert value(samples, "bpsm_apply_seconds_count", host="demo") == 2.0
    assert value(samples, "bpsm_queue_depth") == 0.0
    assert (
        value(
            samples, "bpsm_build_info", version=package_version(), python=platform.python_version()
        )
        == 1.0
    )  # noqa: E501
    assert worker.stop() == 0
    assert not listening(port)


# ----- no process outlives `bpsm serve` --------------------------------------------------


def test_sigkill_of_serve_leaves_nothing_listening_and_a_restart_binds(tmp_path, processes):
    port = free_port()
    first = serve(processes, tmp_path, port, BPSM_CONSUMERS="2").started()
    children = descendants(first.process.pid)
    assert len(children) >= 4  # gunicorn's master and its two workers, a second consumer
    (killed_metrics,) = first.tmp.glob("bpsm-metrics-*")
    first.stop(signal.SIGKILL)
    wait_until(lambda: not alive(children), 30, "gunicorn to die with bpsm serve")
    assert not listening(port)
    second = serve(processes, tmp_path, port, name="restart").started()
    assert post_demo(port, PRINTER[0]).status_code == 202
    assert not killed_metrics.exists()  # the killed one's folder is cleaned at start
    assert second.stop() == 0
    assert not listening(port)


def test_second_serve_on_a_taken_port_exits_at_once_with_one_clear_line(tmp_path, processes):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bpsm = serve(processes, tmp_path, port)
        started = time.monotonic()
        code = bpsm.process.wait(timeout=60)
        elapsed = time.monotonic() - started
        children = descendants(bpsm.process.pid)
    assert code != 0
    output = bpsm.output.strip().splitlines()
    assert output == [
        f"bpsm: cannot start: port {port} on 127.0.0.1 is already in use (another `bpsm "
        "serve`?): stop it or choose another with --port"
    ]
    assert "service started" not in bpsm.output
    assert not children
    assert not (tmp_path / "data" / "bpsm.db").exists()  # nothing else was started
    assert list(bpsm.tmp.glob("bpsm-metrics-*")) == []
    print(f"taken port: exit {code} after {elapsed:.1f} s")


def test_sigterm_while_starting_leaves_nothing_holding_the_port(tmp_path, processes):
    port = free_port()
    bpsm = serve(processes, tmp_path, port)

    def healthy() -> bool:
        assert bpsm.process.poll() is None, bpsm.output
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(healthy, 120, "/healthz")
    children = descendants(bpsm.process.pid)
    assert "service started" not in bpsm.output  # still building the catalogue index
    assert bpsm.stop(signal.SIGTERM) == 0
    wait_until(lambda: not alive(children), 30, "gunicorn to stop with bpsm serve")
    assert not listening(port)
    assert "service started" not in bpsm.output
    assert list(bpsm.tmp.glob("bpsm-metrics-*")) == []


# ----- unreachable backends --------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "url", "shown"),
    [
        (
            "BPSM_DATABASE_URL",
            "postgresql://nobody:pw@127.0.0.1:1/x",
            "postgresql://nobody:***@127.0.0.1:1/x",
        ),  # noqa: E501
        ("BPSM_REDIS_URL", "redis://:pw@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ],
)
def test_unreachable_backend_at_start_is_retried_then_one_clear_line(
    tmp_path, processes, setting, url, shown
):
    port = free_port()
    bpsm = serve(processes, tmp_path, port, BPSM_START_TIMEOUT="2", **{setting: url})
    code = bpsm.process.wait(timeout=90)
    output = bpsm.output
    assert code == 1, output
    assert "Traceback" not in output and "pw@" not in output
    lines = output.strip().splitlines()
    retries = [line for line in bpsm.lines() if "retrying in" in line["msg"]]
    assert len(retries) >= 2 and len(lines) == len(retries) + 1, output
    assert [line["retry_in"] for line in retries[:2]] == [0.5, 1.0]  # backing off
    assert lines[-1].startswith("bpsm: cannot start: cannot reach ")
    assert f"{setting}={shown}" in lines[-1] and "BPSM_START_TIMEOUT" in lines[-1]
    assert "service started" not in output
    assert not listening(port)
    assert not descendants(bpsm.process.pid)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
    )
    wait_until(lambda: listening(port), 20, "redis-server")
    return redis


def test_redis_outage_while_running_is_a_line_a_minute_not_a_traceback_flood(tmp_path, processes):
    redis_port = free_port()
    redis = start_redis(redis_port, tmp_path)
    try:
        port = free_port()
        bpsm = serve(
            processes, tmp_path, port, BPSM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0"
        ).started()
        before = len(bpsm.output.splitlines())
        redis.terminate()
        redis.wait(timeout=20)
        time.sleep(4)  # huey polls its queue several times a second per thread
        during = bpsm.output.splitlines()[before:]
        assert "Traceback" not in "\n".join(during)
        outage = [line for line in during if "cannot reach Redis" in line]
        assert len(outage) == 1, during
        assert f"BPSM_REDIS_URL=redis://127.0.0.1:{redis_port}/0" in outage[0]
        redis = start_redis(redis_port, tmp_path)  # back: the ticket is routed after all
        assert post_demo(port, PRINTER[1]).status_code == 202
        wait_until(
            lambda: any(line.get("msg") == "routed" for line in bpsm.lines()),
            60,
            "the ticket routed once Redis is back",
        )
        assert bpsm.stop() == 0
    finally:
        redis.terminate()
        redis.wait(timeout=20)


def test_abandoned_metrics_folders_are_removed_and_live_ones_kept(tmp_path):
    from connector.service import remove_abandoned_metrics_dirs

    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"bpsm-metrics-{gone.pid}-abc"
    live = tmp_path / f"bpsm-metrics-{os.getpid()}-def"
    other = tmp_path / "bpsm-metrics-unknown"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"x")
    assert remove_abandoned_metrics_dirs(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


# ----- several consumer processes ----------------------------------------------------------


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_consumers_2_drain_a_burst_each_delivery_decided_once_and_sigterm_stops_all(
    tmp_path, processes
):
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from connector.store import Store, routings

    port = free_port()
    args = ["serve", "--port", str(port), "--workers", "2", "--consumers", "2"]
    bpsm = Bpsm(tmp_path, args, {}, "serve")
    processes.append(bpsm)
    bpsm.started()
    wait_until(
        lambda: any(line.get("msg") == "consumer started" for line in bpsm.lines()),
        120,
        "the second consumer process",
    )
    children = descendants(bpsm.process.pid)
    (consumer,) = [pid for pid in children if " consume " in command_of(pid)]
    web = [pid for pid in children if "gunicorn" in command_of(pid)]
    assert len(web) == 3  # gunicorn's master and two workers
    own = nice_of(os.getpid())
    assert nice_of(consumer) == own + 10  # yields to the web workers under a burst
    assert {nice_of(pid) for pid in web} == {own}

    texts = [f"{PRINTER[n % 3]} (burst {n})" for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: post_demo(port, text).status_code, texts))
    assert answers == [202] * 200
    url = f"http://127.0.0.1:{port}/metrics"

    def drained() -> dict[Any, float] | None:
        samples = scrape(url)
        decided = value(
            samples, "bpsm_decisions_total", host="demo", process="reactive", outcome="dry-run"
        )
        return samples if decided == 200.0 and value(samples, "bpsm_queue_depth") == 0 else None

    wait_until(drained, 120, "the burst decided")
    store = Store(f"sqlite:///{tmp_path / 'data' / 'bpsm.db'}")
    try:
        with store.engine.connect() as conn:
            decisions = conn.execute(select(func.count()).select_from(routings)).scalar()
            decided = conn.execute(select(func.count(routings.c.delivery.distinct()))).scalar()
    finally:
        store.dispose()
    assert decisions == decided == 200  # each delivery decided, none twice
    (metrics_dir,) = bpsm.tmp.glob("bpsm-metrics-*")
    assert (metrics_dir / f"counter_{consumer}.db").exists()  # the child decided some

    assert bpsm.stop(signal.SIGTERM) == 0
    assert not alive(children)
    assert not listening(port)
    assert list(bpsm.tmp.glob("bpsm-metrics-*")) == []


def test_default_consumers_one_per_core_beside_the_web_workers():
    from connector.service import default_consumers

    assert default_consumers(2, cores=2) == 1
    assert default_consumers(2, cores=1) == 1
    assert default_consumers(2, cores=8) == 6
