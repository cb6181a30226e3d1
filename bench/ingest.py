"""Ingest benchmark: webhook throughput under gunicorn, and webhook → applied-decision latency.

    .venv/bin/python bench/ingest.py                     # everything, about 2½ minutes
    .venv/bin/python bench/ingest.py --skip-e2e --duration 5
    .venv/bin/python bench/ingest.py --skip-throughput --e2e-stores sqlite --e2e-seconds 10
    .venv/bin/python bench/ingest.py --skip-e2e --consumer-nice 0,10    # priorities side by side
    .venv/bin/python bench/ingest.py --skip-e2e --burst-rate 0,200  # ingest first, off and on
    .venv/bin/python bench/ingest.py --skip-throughput --e2e-stores postgres --consumers 2 \
        --e2e-threads 4

1. Throughput: ``POST /hooks/demo`` (a demo-host JSON ticket taken from tests/data/tickets.csv,
   unique ``X-Delivery-Id`` and ticket id per request) against ``bpsm serve --workers 2`` itself
   (``--server serve``, the default: gunicorn 2 workers × 4 threads *and* its job consumers,
   deciding the tickets while the load runs), for (a) the SQLite store + SqliteHuey and (b) a
   fresh PostgreSQL database (created and dropped here) + RedisHuey on a unique queue name.
   After each round the bench waits until every delivery of that server is decided (the queue
   may grow during a burst and must drain afterwards) and checks each has exactly one
   decision. ``--server gunicorn``: only the web layer under gunicorn, no consumer (the ingest
   path alone; also an SQLite + Redis row). Baseline, same run, same gunicorn settings:
   ``bench/bare_app.py``, a Flask endpoint that reads the body and answers 202.
   Load: ``wrk`` with a Lua script when installed (``apt-get install wrk``), else a threaded
   ``http.client`` client; bounded by --duration and --max-requests. By default every request
   opens a new connection (``Connection: close``), as Zammad, GLPI and django-helpdesk send
   their webhooks; ``--connection keep-alive`` reuses them.

2. End-to-end latency at a steady --e2e-rate events/s for --e2e-seconds: the fake Zammad of
   tests/fakes/zammad.py (in this process) fires its real signed trigger webhooks at
   ``bpsm serve`` (a subprocess: gunicorn 2 workers + job consumer), whose worker classifies
   and applies through the fake's REST API. Latency per ticket =
   ``bpsm_routings.applied_at − bpsm_deliveries.received_at``, read from the store.
   Baseline, same run: the fake's own API round trip (``GET /api/v1/tickets/<id>?expand=true``
   with requests, as the connector calls it), sampled every 100 ms during the load.

Everything listens on 127.0.0.1; data lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stats import pct  # noqa: E402 - bench/ is on sys.path above

PG_ADMIN_URL = os.environ.get("BPSM_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("BPSM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = "bench-zammad-token"
SECRET = "bench-webhook-secret"
TARGET_RATIO = 0.5
WRK_HINT = "wrk not found; install it with `apt-get install wrk` (Debian) for a C load generator"


# ----- helpers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_tickets(limit: int = 64) -> list[tuple[str, str]]:
    from connector.evaluate import read_labelled

    tickets = read_labelled(ROOT / "tests" / "data" / "tickets.csv")
    return [(t.subject, t.body) for t in tickets[:limit]]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without BPSM_*/gunicorn settings of the caller, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BPSM_") and k not in ("GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(extra)
    return env


def burst_env(burst: str | None) -> dict[str, str]:
    """`bpsm serve`'s BPSM_BURST_RATE for a --burst-rate value (None: the service's own)."""
    return {"BPSM_BURST_RATE": burst} if burst is not None else {}


class Proc:
    """A server subprocess in its own process group; stop() ends that group only."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, url: str, timeout: float = 90.0, consecutive: int = 5) -> None:
        """Until ``url`` answers 200 several times in a row (both gunicorn workers up)."""
        import requests

        deadline = time.monotonic() + timeout
        ok = 0
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(f"{self.name} exited with {code}:\n{self.tail()}")
            try:
                ok = ok + 1 if requests.get(url, timeout=2).status_code == 200 else 0
            except requests.RequestException:
                ok = 0
            if ok >= consecutive:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        pgid = self.popen.pid
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.popen.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # gunicorn workers leave after their master
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pgid, signal.SIGKILL)
        self._log.close()


def group_cpu_seconds(pgid: int) -> dict[int, float]:
    """user+system CPU seconds of each live process in a process group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            found[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cpu_by_role(pgid: int) -> dict[str, float]:
    """CPU seconds of a `bpsm serve` process group: its gunicorn processes ("web") and the
    rest — `bpsm serve` itself and its `bpsm consume` children ("consumer")."""
    roles = {"web": 0.0, "consumer": 0.0}
    for pid, seconds in group_cpu_seconds(pgid).items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        roles["web" if b"gunicorn" in command else "consumer"] += seconds
    return roles


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gunicorn(name: str, app: str, port: int, workdir: Path, env: dict[str, str]) -> Proc:
    """The connector's own gunicorn settings (`bpsm serve` runs exactly this command)."""
    metrics = workdir / f"{name}-metrics"
    metrics.mkdir(exist_ok=True)
    env = {
        **env,
        "BPSM_BIND": f"127.0.0.1:{port}",
        "BPSM_WEB_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "python:connector.gunicorn_conf", app]
    return Proc(name, command, env, workdir)


def bpsm_serve(
    name: str,
    port: int,
    workdir: Path,
    env: dict[str, str],
    consumers: int,
    nice: int | str | None,
    threads: int | None = None,
) -> Proc:
    """`bpsm serve --workers 2` with its job consumers (`threads` each, else the default),
    as an operator starts it."""
    command = [
        sys.executable,
        "-m",
        "connector.cli",
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--consumers",
        str(consumers),
        "--catalogue",
        str(ROOT / "catalogue.yaml"),
    ]
    if nice is not None:
        command += ["--consumer-nice", str(nice)]
    if threads is not None:
        command += ["--threads", str(threads)]
    return Proc(name, command, env, workdir)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); yields its SQLAlchemy URL."""
    import sqlalchemy as sa

    name = f"bpsm_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
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


@contextmanager
def redis_queue() -> Iterator[str]:
    """A unique huey queue name on the local Redis; its keys are deleted afterwards."""
    import redis

    name = f"bpsm-bench-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    try:
        yield name
    finally:
        clean = re.sub("[^A-Za-z0-9_]", "", name)  # huey's own key cleaning
        for key in client.scan_iter(f"huey.*{clean}*"):
            client.delete(key)
        client.close()


def services_up() -> bool:
    """PostgreSQL and Redis answer (scripts/ensure-services.sh starts them); else say so."""
    import redis
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:  # any failure means: skip the PostgreSQL + Redis runs
        print(
            f"skipping PostgreSQL + Redis ({type(exc).__name__}); start them with "
            "`bash scripts/ensure-services.sh`",
            file=sys.stderr,
        )
        return False
    return True


# ----- load generators ------------------------------------------------------------------------


@dataclass
class LoadResult:
    client: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _json_tail(subject: str, body: str) -> str:
    """The demo ticket JSON after its ticket_id: `"subject": …, "body": …}`."""
    return json.dumps({"subject": subject, "body": body}, ensure_ascii=False)[1:]


_LUA = """
local bodies = {%(bodies)s}
local counter = 0
local responses = 0
local nonce = "run"
local max_requests = 0
tid = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  nonce = args[1] or nonce
  max_requests = tonumber(args[2] or "0")
  close = args[3] == "close"
end
function request()
  counter = counter + 1
  local id = nonce .. "-" .. tostring(tid) .. "-" .. tostring(counter)
  local body = '{"ticket_id":"' .. id .. '",' .. bodies[(counter %% #bodies) + 1]
  local headers = {["Content-Type"] = "application/json", ["X-Delivery-Id"] = id}
  if close then headers["Connection"] = "close" end
  return wrk.format("POST", "/hooks/demo", headers, body)
end
function response(status, headers, body)
  responses = responses + 1
  if max_requests > 0 and responses >= max_requests then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def write_lua(path: Path, tickets: list[tuple[str, str]]) -> None:
    parts = []
    for subject, body in tickets:
        tail = _json_tail(subject, body)
        level = "=" * 4
        while f"]{level}]" in tail:
            level += "="
        parts.append(f"[{level}[{tail}]{level}]")
    path.write_text(_LUA % {"bodies": ",\n".join(parts)}, encoding="utf-8")


def wrk_load(
    port: int,
    script: Path,
    connections: int,
    seconds: float,
    max_requests: int,
    nonce: str,
    connection: str,
) -> LoadResult:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/hooks/demo",
        "--",
        nonce,
        str(max_requests),
        connection,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((s for s in done.stdout.splitlines() if s.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("WRKJSON "))
    errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
    return LoadResult(
        "wrk",
        int(data["requests"]),
        data["duration_us"] / 1e6,
        errors,
        data["p50_us"] / 1000,
        data["p99_us"] / 1000,
    )


def python_load(
    port: int,
    tickets: list[tuple[str, str]],
    connections: int,
    seconds: float,
    max_requests: int,
    nonce: str,
    connection: str,
) -> LoadResult:
    """Threaded http.client; one connection per thread, or a new one per request ("close")."""
    tails = [_json_tail(s, b).encode() for s, b in tickets]
    numbers = itertools.count()
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    statuses: list[Counter[int]] = [Counter() for _ in range(connections)]

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop_at:
            n = next(numbers)
            if n >= max_requests:
                break
            delivery = f"{nonce}-{n}"
            body = b'{"ticket_id":"' + delivery.encode() + b'",' + tails[n % len(tails)]
            headers = {"Content-Type": "application/json", "X-Delivery-Id": delivery}
            if connection == "close":
                headers["Connection"] = "close"
            started = time.perf_counter()
            try:
                conn.request("POST", "/hooks/demo", body, headers)
                response = conn.getresponse()
                response.read()
                statuses[slot][response.status] += 1
                if connection == "close":
                    conn.close()
            except (OSError, http.client.HTTPException):
                statuses[slot][0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            latencies[slot].append((time.perf_counter() - started) * 1000)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total: Counter[int] = sum(statuses, Counter())
    all_latencies = [v for lat in latencies for v in lat]
    errors = sum(c for s, c in total.items() if not 200 <= s < 300)
    return LoadResult(
        "python",
        sum(total.values()),
        elapsed,
        errors,
        pct(all_latencies, 0.5),
        pct(all_latencies, 0.99),
    )


# ----- 1. throughput --------------------------------------------------------------------------


def throughput(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """All servers up at once, then measured in rounds (bare, sqlite, postgres, bare, …) so
    that load from other processes on the machine hits the baseline and the connector alike."""
    tickets = sample_tickets()
    script = workdir / "demo.lua"
    write_lua(script, tickets)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit(WRK_HINT)
    if not use_wrk:
        print(WRK_HINT + "; using the Python client", file=sys.stderr)

    def load(port: int, seconds: float, nonce: str) -> LoadResult:
        if use_wrk:
            return wrk_load(
                port,
                script,
                args.connections,
                seconds,
                args.max_requests,
                nonce,
                args.connection,
            )
        return python_load(
            port, tickets, args.connections, seconds, args.max_requests, nonce, args.connection
        )

    def counter(url: str) -> Callable[[], int]:
        def count() -> int:
            from connector.store import Store

            store = Store(url)
            try:
                return store.count_deliveries()
            finally:
                store.dispose()

        return count

    base_env = clean_env(
        BPSM_CATALOGUE=str(ROOT / "catalogue.yaml"),
        BPSM_MAPPINGS_DIR=str(ROOT / "mappings"),
        BPSM_LOG_LEVEL="INFO",
    )
    serve_mode = args.server == "serve"
    # `bpsm serve --consumer-nice` and `--burst-rate` values to compare side by side (one
    # server each, own store): every combination of the two lists.
    nices: list[int | None] = (
        [int(n) for n in args.consumer_nice.split(",")]
        if serve_mode and args.consumer_nice
        else [None]
    )
    bursts: list[str | None] = (
        args.burst_rate.split(",") if serve_mode and args.burst_rate else [None]
    )
    variants = [(nice, burst) for nice in nices for burst in bursts]

    def label(store: str, nice: int | None, burst: str | None) -> str:
        return (
            store
            + (f" nice {nice}" if len(nices) > 1 else "")
            + (f" burst {burst}" if len(bursts) > 1 else "")
        )

    # name, WSGI app, environment, store URL (None: bare Flask), consumer nice
    configs: list[tuple[str, str, dict[str, str], str | None, int | None]] = [
        ("bare-flask", "bare_app:app", {**base_env, "PYTHONPATH": str(ROOT / "bench")}, None, None)
    ]
    for nice, burst in variants:
        data = workdir / f"ingest-sqlite-{nice}-{burst}"
        env = {**base_env, **burst_env(burst), "BPSM_DATA_DIR": str(data)}
        url = f"sqlite:///{data / 'bpsm.db'}"
        name = label("sqlite+sqlitehuey", nice, burst)
        configs.append((name, "webhook_app:create_app()", env, url, nice))
    with ExitStack() as stack:
        if services_up():
            if not serve_mode:
                # The SQLite store with the Redis queue: the web layer writes only the store,
                # so this row should match sqlite+sqlitehuey; a gap would mean the queue
                # leaked back into the request path.
                redis_data = workdir / "ingest-sqlite-redis"
                redis_env = {
                    **base_env,
                    "BPSM_DATA_DIR": str(redis_data),
                    "BPSM_REDIS_URL": REDIS_URL,
                    "BPSM_QUEUE_NAME": stack.enter_context(redis_queue()),
                }
                url = f"sqlite:///{redis_data / 'bpsm.db'}"
                configs.append(("sqlite+redis", "webhook_app:create_app()", redis_env, url, None))
            for nice, burst in variants:
                pg_url = stack.enter_context(postgres_database())
                pg_env = {
                    **base_env,
                    **burst_env(burst),
                    "BPSM_DATA_DIR": str(workdir / f"ingest-pg-{nice}-{burst}"),
                    "BPSM_DATABASE_URL": pg_url,
                    "BPSM_REDIS_URL": REDIS_URL,
                    "BPSM_QUEUE_NAME": stack.enter_context(redis_queue()),
                }
                name = label("postgres+redis", nice, burst)
                configs.append((name, "webhook_app:create_app()", pg_env, pg_url, nice))
        urls = {name: url for name, _, _, url, _ in configs if url is not None}
        servers: list[tuple[str, int]] = []
        procs: dict[str, Proc] = {}
        for name, app, env, url, nice in configs:
            port = free_port()
            if serve_mode and url is not None:
                proc = bpsm_serve(name, port, workdir, env, args.consumers, nice)
            else:
                proc = gunicorn(name, app, port, workdir, env)
            stack.callback(proc.stop)  # stopped before the database is dropped
            servers.append((name, port))
            procs[name] = proc
            proc.wait_ready(f"http://127.0.0.1:{port}/healthz")
        accepted: Counter[str] = Counter()
        runs: dict[str, list[LoadResult]] = {name: [] for name, _ in servers}
        drains: dict[str, list[float]] = {name: [] for name in urls}
        cpu: dict[str, Counter[str]] = {name: Counter() for name, _ in servers}

        def settle(name: str) -> None:
            """`bpsm serve`: until its consumers have decided every delivery (so the next
            server's round does not share the cores with this one's backlog)."""
            if serve_mode and name in urls:
                drains[name].append(drain(urls[name], args.drain_timeout))

        for name, port in servers:
            warm = load(port, args.warmup, f"warm-{name}-{uuid.uuid4().hex[:6]}")
            accepted[name] += warm.requests - warm.errors
            settle(name)
            drains.get(name, []).clear()
        for _ in range(args.rounds):
            for name, port in servers:
                before = cpu_by_role(procs[name].popen.pid)
                result = load(port, args.duration / args.rounds, f"{name}-{uuid.uuid4().hex[:8]}")
                cpu[name].update(
                    {
                        role: used - before[role]
                        for role, used in cpu_by_role(procs[name].popen.pid).items()
                    }
                )
                runs[name].append(result)
                accepted[name] += result.requests - result.errors
                settle(name)
        rows = []
        bare = runs[servers[0][0]]
        for name, _, _, url, _ in configs:
            results = runs[name]
            requests = sum(r.requests for r in results)
            seconds = sum(r.seconds for r in results)
            ratios = [r.rps / b.rps for r, b in zip(results, bare, strict=True)]
            row: dict[str, Any] = {
                "name": name,
                "client": results[0].client,
                "requests": requests,
                "seconds": round(seconds, 2),
                "rps": requests / seconds,
                "round_rps": [round(r.rps, 1) for r in results],
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "errors": sum(r.errors for r in results),
                "p50_ms": statistics.median(r.p50_ms for r in results),
                "p99_ms": statistics.median(r.p99_ms for r in results),
                # CPU during the load only (not the drain), per answered request
                "cpu_ms_web": 1000 * cpu[name]["web"] / max(1, requests),
                "cpu_ms_consumer": 1000 * cpu[name]["consumer"] / max(1, requests),
            }
            if drains.get(name):
                row["drain_s_max"] = max(drains[name])
                row.update(decided_once(urls[name]))
            if url is not None:
                stored = counter(url)()
                row["stored"] = stored
                # Every answered 202 is stored; requests still in flight when the client
                # stopped may be stored uncounted (at most one per connection and run).
                slack = args.connections * (args.rounds + 1)
                row["stored_ok"] = accepted[name] <= stored <= accepted[name] + slack
            print(f"  {name}: {row['rps']:.0f} req/s ({requests} requests)", file=sys.stderr)
            rows.append(row)
    return rows


def backlog(url: str) -> int:
    """Deliveries not decided yet (queued or being worked on)."""
    from connector.store import Store

    store = Store(url)
    try:
        return store.count_deliveries("queued") + store.count_deliveries("processing")
    finally:
        store.dispose()


def drain(url: str, timeout: float) -> float:
    """Seconds until the store has no delivery left to decide; an error after `timeout`."""
    started = time.monotonic()
    while (left := backlog(url)) > 0:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{left} deliveries still undecided after {timeout:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def decided_once(url: str) -> dict[str, Any]:
    """Every delivery done with exactly one decision (routing row), none twice."""
    from sqlalchemy import func, select

    from connector.store import Store, deliveries, routings

    store = Store(url)
    try:
        with store.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(deliveries)).scalar() or 0
            done = conn.execute(
                select(func.count()).select_from(deliveries).where(deliveries.c.status == "done")
            ).scalar()
            decisions = conn.execute(select(func.count()).select_from(routings)).scalar() or 0
            decided = conn.execute(select(func.count(routings.c.delivery.distinct()))).scalar()
    finally:
        store.dispose()
    return {
        "deliveries": total,
        "decided": decided,
        "decided_once": total == done == decided == decisions,
    }


# ----- 2. end-to-end latency ------------------------------------------------------------------


def e2e(args: argparse.Namespace, workdir: Path, store: str) -> dict[str, Any]:
    import requests
    from sqlalchemy import select

    from connector.mapping import load_mapping
    from connector.store import Store, deliveries, routings
    from tests.fakes.zammad import FakeZammad

    tickets = sample_tickets(limit=500)
    fake = FakeZammad(token=TOKEN)
    fake.start()
    for group in load_mapping(ROOT / "mappings" / "zammad.yaml").all_queues():
        fake.add_group(group)
    env = clean_env(
        BPSM_DATA_DIR=str(workdir / f"e2e-{store}"),
        BPSM_MAPPINGS_DIR=str(ROOT / "mappings"),
        BPSM_ZAMMAD_URL=fake.base_url,
        BPSM_ZAMMAD_TOKEN=TOKEN,
        BPSM_ZAMMAD_WEBHOOK_SECRET=SECRET,
        BPSM_LOG_LEVEL="INFO",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / f"e2e-{store}-metrics"),
    )
    env.update(burst_env(args.burst_rate.split(",")[0] if args.burst_rate else None))
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.callback(fake.stop)
        if store == "postgres":
            env["BPSM_DATABASE_URL"] = stack.enter_context(postgres_database())
            env["BPSM_REDIS_URL"] = REDIS_URL
            env["BPSM_QUEUE_NAME"] = stack.enter_context(redis_queue())
            url = env["BPSM_DATABASE_URL"]
        else:
            url = f"sqlite:///{workdir / f'e2e-{store}' / 'bpsm.db'}"
        port = free_port()
        proc = bpsm_serve(
            f"serve-{store}",
            port,
            workdir,
            env,
            args.consumers,
            args.consumer_nice or None,
            threads=args.e2e_threads,
        )
        stack.callback(proc.stop)
        proc.wait_ready(f"http://127.0.0.1:{port}/healthz")
        # Extra job consumers beside `bpsm serve`, as a deployment adds them (same store and
        # queue); their CPU counts as consumer CPU.
        workers = []
        for n in range(args.e2e_workers):
            extra = Proc(
                f"worker-{store}-{n}",
                [
                    sys.executable,
                    "-m",
                    "connector.cli",
                    "worker",
                    "--threads",
                    str(args.e2e_threads),
                    "--catalogue",
                    str(ROOT / "catalogue.yaml"),
                ],
                env,
                workdir,
            )
            stack.callback(extra.stop)
            workers.append(extra)
        fake.configure_webhook(f"http://127.0.0.1:{port}/hooks/zammad", signature_token=SECRET)
        db = Store(url)
        stack.callback(db.dispose)

        def applied() -> int:
            with db.engine.connect() as conn:
                rows = conn.execute(
                    select(routings.c.id).where(routings.c.applied_at.is_not(None))
                ).all()
            return len(rows)

        def drain(expected: int, timeout: float) -> int:
            deadline = time.monotonic() + timeout
            while (done := applied()) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            return done

        # Warm-up: connections, caches and both workers, not measured.
        warm = [fake.create_ticket_as_customer(s or "Help", b) for s, b in tickets[:20]]
        drain(len(warm), 60)

        session = requests.Session()
        session.headers["Authorization"] = f"Token token={TOKEN}"

        def round_trip() -> float:
            started = time.perf_counter()
            answer = session.get(
                f"{fake.base_url}/api/v1/tickets/{warm[0]}", params={"expand": "true"}, timeout=10
            )
            answer.raise_for_status()
            return (time.perf_counter() - started) * 1000

        idle_rtt = [round_trip() for _ in range(50)]
        calls_before = len(fake.api_calls)
        loaded_rtt: list[float] = []
        stop_probe = threading.Event()

        def probe() -> None:
            while not stop_probe.wait(0.1):
                loaded_rtt.append(round_trip())

        total = int(args.e2e_rate * args.e2e_seconds)
        measured: list[int] = []
        prober = threading.Thread(target=probe, daemon=True)

        def consumer_cpu() -> float:
            return sum(sum(group_cpu_seconds(w.popen.pid).values()) for w in workers)

        cpu_before = cpu_by_role(proc.popen.pid)
        cpu_workers = consumer_cpu()
        cpu_bench = self_cpu_seconds()
        prober.start()
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / args.e2e_rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            subject, body = tickets[(20 + i) % len(tickets)]
            measured.append(fake.create_ticket_as_customer(subject or "Help", body))
        sent_seconds = time.perf_counter() - started
        done = drain(len(warm) + total, 120)
        drained_seconds = time.perf_counter() - started
        stop_probe.set()
        prober.join()
        cpu_after = cpu_by_role(proc.popen.pid)
        cpu_workers = consumer_cpu() - cpu_workers
        cpu_bench = self_cpu_seconds() - cpu_bench
        # `bpsm serve` itself and its `bpsm consume` children run the job consumers; its
        # gunicorn processes serve the web.
        cpu_web = cpu_after["web"] - cpu_before["web"]
        cpu_consumer = cpu_after["consumer"] - cpu_before["consumer"] + cpu_workers
        cpu_connector = cpu_consumer + cpu_web
        api_calls = len(fake.api_calls) - calls_before - len(loaded_rtt)

        wanted = {str(t) for t in measured}
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    routings.c.ticket_id,
                    routings.c.outcome,
                    routings.c.created_at,
                    routings.c.applied_at,
                    routings.c.apply_ms,
                    routings.c.ticket_created_at,
                    deliveries.c.received_at,
                ).join(deliveries, deliveries.c.id == routings.c.delivery)
            ).all()
        rows = [r for r in rows if r.ticket_id in wanted and r.applied_at is not None]
        latency = [(r.applied_at - r.received_at) * 1000 for r in rows]
        queued = [(r.created_at - r.received_at) * 1000 for r in rows]
        apply_ms = [r.apply_ms for r in rows if r.apply_ms is not None]
        from_host = [
            (r.applied_at - r.ticket_created_at) * 1000 for r in rows if r.ticket_created_at
        ]
        outcomes = Counter(r.outcome for r in rows)
        rtt_p50 = pct(loaded_rtt, 0.5)
        return {
            "store": store,
            "events": total,
            "rate_sent": total / sent_seconds,
            "applied": len(rows),
            "all_applied": done >= len(warm) + total,
            "drain_s": drained_seconds - sent_seconds,
            "applied_per_s": total / drained_seconds,
            "outcomes": dict(outcomes),
            "p50_ms": pct(latency, 0.5),
            "p95_ms": pct(latency, 0.95),
            "p99_ms": pct(latency, 0.99),
            "max_ms": max(latency) if latency else math.nan,
            "queue_classify_p50_ms": pct(queued, 0.5),
            "apply_p50_ms": pct(apply_ms, 0.5),
            "host_created_p50_ms": pct(from_host, 0.5),
            "host_created_p95_ms": pct(from_host, 0.95),
            "rtt_idle_p50_ms": pct(idle_rtt, 0.5),
            "rtt_p50_ms": rtt_p50,
            "rtt_p95_ms": pct(loaded_rtt, 0.95),
            "rtt_samples": len(loaded_rtt),
            "api_calls_per_ticket": api_calls / max(1, len(rows)),
            "cpu_ms_connector_per_ticket": 1000 * cpu_connector / max(1, total),
            "cpu_ms_consumer_per_ticket": 1000 * cpu_consumer / max(1, total),
            "cpu_ms_web_per_ticket": 1000 * cpu_web / max(1, total),
            "cpu_ms_fake_per_ticket": 1000 * cpu_bench / max(1, total),
            "cpu_busy_share": (cpu_connector + cpu_bench)
            / (drained_seconds * (os.cpu_count() or 1)),
            "p50_x_rtt": pct(latency, 0.5) / rtt_p50,
            "p95_x_rtt": pct(latency, 0.95) / pct(loaded_rtt, 0.95),
        }


# ----- report ---------------------------------------------------------------------------------


def report(through: list[dict[str, Any]], ends: list[dict[str, Any]], args: Any) -> str:
    lines = []
    if through:
        base = through[0]
        lines += [
            "Webhook ingest, POST /hooks/demo, "
            + (
                f"`bpsm serve --workers 2 --consumers {args.consumers}` with its consumers "
                f"running (nice {args.consumer_nice or 10})"
                if args.server == "serve"
                else "web layer only"
            )
            + f", gunicorn 2 workers × 4 threads, client "
            f"{base['client']} ({args.connections} connections, {args.connection}, "
            f"{args.duration:g} s per server "
            f"in {args.rounds} interleaved rounds; × bare = median of the per-round ratios)",
            f"{'server':<26} {'req/s':>8} {'× bare':>7} {'(rounds)':>11} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'requests':>9} {'errors':>6} {'stored':>8} "
            f"{'CPU ms/req web+consumer':>23} {'drained':>8}",
        ]
        for row in through:
            stored = "" if "stored" not in row else ("ok" if row["stored_ok"] else "MISMATCH")
            spread = f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}"
            lines.append(
                f"{row['name']:<26} {row['rps']:>8.0f} {row['ratio_median']:>7.2f} "
                f"{spread:>11} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                f"{row['requests']:>9} {row['errors']:>6} {stored:>8} "
                f"{row['cpu_ms_web']:>11.2f} + {row['cpu_ms_consumer']:<9.2f}"
                + (
                    f" ≤{row['drain_s_max']:.1f} s, "
                    + ("each decided once" if row["decided_once"] else "DECISIONS MISMATCH")
                    + f" ({row['decided']}/{row['deliveries']})"
                    if "drain_s_max" in row
                    else ""
                )
            )
        verdict = [
            f"{r['name']} {r['ratio_median']:.2f} "
            + ("meets" if r["ratio_median"] >= TARGET_RATIO else "MISSES")
            for r in through[1:]
        ]
        lines.append(f"Target ≥ {TARGET_RATIO} × bare Flask: " + "; ".join(verdict))
    if ends:
        lines += [
            "",
            f"Webhook → applied decision, fake Zammad firing {args.e2e_rate:g} tickets/s for "
            f"{args.e2e_seconds:g} s at `bpsm serve` (2 web workers, {args.consumers} consumer "
            f"process(es) × {args.e2e_threads} threads, nice "
            f"{args.consumer_nice or 10})"
            + (f" + {args.e2e_workers} `bpsm worker` process(es)" if args.e2e_workers else ""),
            f"{'store':<9} {'sent/s':>6} {'applied':>8} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'p99 ms':>7} {'RTT p50':>7} {'RTT p95':>7} {'p50×RTT':>7} {'p95×RTT':>7} "
            f"{'calls/t':>7} {'queue+cls p50':>13} {'apply p50':>9} {'host→applied p50':>16}",
        ]
        for r in ends:
            lines.append(
                f"{r['store']:<9} {r['rate_sent']:>6.1f} {r['applied']:>4}/{r['events']:<3} "
                f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                f"{r['rtt_p50_ms']:>7.2f} {r['rtt_p95_ms']:>7.2f} {r['p50_x_rtt']:>7.1f} "
                f"{r['p95_x_rtt']:>7.1f} {r['api_calls_per_ticket']:>7.1f} "
                f"{r['queue_classify_p50_ms']:>13.1f} {r['apply_p50_ms']:>9.1f} "
                f"{r['host_created_p50_ms']:>16.1f}"
            )
            lines.append(
                f"          outcomes {r['outcomes']}, drained {r['drain_s']:.1f} s after the last "
                f"event ({r['applied_per_s']:.1f} applied/s overall), idle RTT p50 "
                f"{r['rtt_idle_p50_ms']:.2f} ms; CPU per ticket: consumer "
                f"{r['cpu_ms_consumer_per_ticket']:.1f} ms, web "
                f"{r['cpu_ms_web_per_ticket']:.1f} ms, fake Zammad + driver "
                f"{r['cpu_ms_fake_per_ticket']:.1f} ms; CPUs busy {r['cpu_busy_share']:.0%}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=9.0, help="measured seconds per server (all rounds)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load")
    parser.add_argument("--max-requests", type=int, default=60_000, help="cap per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--connection",
        choices=("close", "keep-alive"),
        default="close",
        help="close: a new connection per webhook, as helpdesks send them (default); "
        "keep-alive: reuse connections (each sticks to one gunicorn worker, so rounds vary "
        "with how the kernel spread them)",
    )
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--server",
        choices=("serve", "gunicorn"),
        default="serve",
        help="serve: `bpsm serve` with its consumers running (default); gunicorn: the web "
        "layer alone, no consumer",
    )
    parser.add_argument(
        "--consumers", type=int, default=1, help="`bpsm serve --consumers` (both parts)"
    )
    parser.add_argument(
        "--consumer-nice",
        default=None,
        help="`bpsm serve --consumer-nice` (default: its own, 10); for the throughput part a "
        "comma-separated list compares them in one run, e.g. 0,10",
    )
    parser.add_argument(
        "--burst-rate",
        default=None,
        help="BPSM_BURST_RATE of `bpsm serve` (default: its own, 200 webhooks/s; 0: the "
        "consumers never step aside during a burst); for the throughput part a comma-separated "
        "list compares them in one run, e.g. 0,200 (the end-to-end part takes the first)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds a backlog may take to drain"
    )
    parser.add_argument("--e2e-rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--e2e-seconds", type=float, default=20.0)
    parser.add_argument("--e2e-threads", type=int, default=2, help="consumer threads")
    parser.add_argument(
        "--e2e-workers",
        type=int,
        default=0,
        help="extra `bpsm worker` processes beside `bpsm serve` (each with --e2e-threads)",
    )
    parser.add_argument(
        "--e2e-stores", default="sqlite", help="sqlite (as `bpsm serve` by default), postgres"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bpsm-bench-ingest-"))
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    through: list[dict[str, Any]] = []
    ends: list[dict[str, Any]] = []
    try:
        if not args.skip_throughput:
            print("throughput …", file=sys.stderr)
            through = throughput(args, workdir)
        if not args.skip_e2e:
            for store in [s.strip() for s in args.e2e_stores.split(",") if s.strip()]:
                if store == "postgres" and not services_up():
                    continue
                print(f"end to end ({store}) …", file=sys.stderr)
                ends.append(e2e(args, workdir, store))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "cpus": os.cpu_count(),
                    "load": [load_before, os.getloadavg()[0]],
                    "throughput": through,
                    "e2e": ends,
                }
            )
        )
        return
    print(
        f"bench/ingest.py  {time.strftime('%Y-%m-%d %H:%M')}  cpus={os.cpu_count()}  "
        f"load {load_before:.1f}→{os.getloadavg()[0]:.1f}  python={sys.version.split()[0]}  "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print(report(through, ends, args))


if __name__ == "__main__":
    main()
