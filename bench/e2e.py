"""End-to-end benchmark against REAL helpdesks: ticket created → ticket routed.

    .venv/bin/python bench/e2e.py                       # both helpdesks, about 3½ minutes
    .venv/bin/python bench/e2e.py --hosts rt --rate 1 --seconds 10 --ramp 1,2,4
    .venv/bin/python bench/e2e.py --save run.json       # the table, and the data as JSON
    .venv/bin/python bench/e2e.py --report run.json     # the table of a saved run again

Needs what `make test` installs for tests/realhosts: Debian's request-tracker5 and
rt5-db-sqlite, and the django-helpdesk venv (.cache/django_helpdesk-venv, built on first use).

For each helpdesk in --hosts:

* ``rt``: a real Request Tracker 5 (tests/realhosts/rt_server.py) with the shipped
  mappings/rt.yaml (watch queue General, BPSM queues, "BPSM Service" field) and the
  connector's least-privilege user ``bpsm-connector`` (Timezone UTC, exactly the rights of
  connector/hosts/rt.py). The connector POLLS it every --rt-poll-interval seconds
  (BPSM_RT_POLL_INTERVAL, default 1).
* ``django-helpdesk``: a real django-helpdesk 2.6 (tests/realhosts/django_helpdesk_server.py) whose
  own new-ticket and follow-up webhooks post to the connector (URL with token), as in
  tests/realhosts/test_django_helpdesk_e2e.py.

The connector is tests/e2e.py's ConnectorService in this process (real Flask app on a free
loopback port, --consumer-threads job consumers as `bpsm serve --threads`, default 2, and the
pollers; its logs go to stderr at --log-level WARNING). Tickets are created through the
helpdesk's own REST API (RT: ``POST /REST/2.0/ticket`` as root; django-helpdesk:
``POST /api/tickets/`` as admin) from a pool of threads on an open-loop schedule, with
subject and body taken round-robin from tests/data/tickets.csv.

Measured per ticket: latency = the routing row's ``applied_at`` (bpsm_routings) − the moment
the create call returned; split into "seen" (the delivery's ``received_at`` in bpsm_deliveries
− create returned: the polling wait for RT, negative for webhooks, which the helpdesk posts
before it answers the create call), "queue+classify" (received → the routing row's
``created_at``) and "apply" (the routing's ``apply_ms``: the connector's write-back calls).
For RT the deliveries of one poll are recorded together, which gives the poll cycle.

Phases per helpdesk: (1) steady load, --rate tickets/s for --seconds; (2) a ramp, each rate of
--ramp for --step-seconds, draining between steps, to find where the helpdesk itself stops
keeping up: created/s (the helpdesk accepting tickets) falls below the offered rate. A step
lasts at least --min-step-tickets tickets. Rates are completion rates: the offered rate ÷ the
least-squares slope of completion time over scheduled time, so a constant latency does not
count against them, a growing backlog does, and polling jitter averages out. A rate is
behind when it is below 0.9 × offered by more than two standard errors of that slope
("unclear" when below but within them). Verdicts: "helpdesk saturated" (created/s behind, or
create errors), "routing behind" (routed/s behind or tickets not routed within
--drain-timeout), "keeps up". The ramp stops at the first saturated step (--full-ramp: not).
Every phase reads one routed ticket back from the helpdesk (its queue) as a spot check.

Baseline, same run: the helpdesk's own API round trip, median of --rtt-samples sequential
``GET`` one-ticket calls on a keep-alive session as the connector's user (RT:
``/REST/2.0/ticket/N?fields[Queue]=Name`` with its auth token; django-helpdesk:
``/api/tickets/N/``), measured idle before the load (and again after, for reference).
Latencies are printed in ms and as × RTT, throughputs in tickets/s and as tickets per RTT.
CPU: the helpdesk's process group, this process (connector + load generator) and the whole
machine per step, in % of all cores, since everything shares one machine.

Everything listens on 127.0.0.1; helpdesk and connector data live in temporary directories
that are removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
import yaml
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from stats import pct  # noqa: E402 - bench/ is on sys.path above

from connector.evaluate import read_labelled  # noqa: E402
from connector.hosts.rt.sansio import FIELD_RIGHTS, TARGET_RIGHTS, WATCHED_RIGHTS  # noqa: E402
from connector.store import deliveries, routings  # noqa: E402
from tests.e2e import ConnectorService, wait_for  # noqa: E402
from tests.realhosts import django_helpdesk_server  # noqa: E402
from tests.realhosts.django_helpdesk_server import (  # noqa: E402
    CONNECTOR_USER,
    DjangoHelpdeskServer,
    ensure_helpdesk_venv,
)
from tests.realhosts.rt_server import RTServer, TokenAuth, ensure_rt_installed  # noqa: E402

HOSTS = ("rt", "django-helpdesk")
TICKETS_CSV = ROOT / "tests" / "data" / "tickets.csv"
RT_MAPPING = ROOT / "mappings" / "rt.yaml"
DH_MAPPING = ROOT / "mappings" / "django-helpdesk.yaml"
DH_SECRET = "bench-e2e-webhook-secret"
FINAL = ("applied", "shadow", "dry-run", "override", "failed")
KEEPS_UP = 0.9  # a rate at least this share of the offered one "keeps up"
WARMUP_TICKETS = 2
CPU_BOUND = 0.7  # the helpdesk's processes using this share of all cores or more
DISTURBED = 0.1  # other processes using this share of the machine during a phase


# ----- small helpers ------------------------------------------------------------------------


def fit_slope(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of completed over scheduled stamps, and its standard error.

    Slope 1: completions keep pace with the schedule; > 1: a backlog grows. The rate is the
    offered rate ÷ slope."""
    if len(pairs) < 3:
        return math.nan, math.nan
    xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return math.nan, math.nan
    slope = sum((x - mx) * (y - my) for x, y in pairs) / sxx
    residuals = sum((y - my - slope * (x - mx)) ** 2 for x, y in pairs)
    return slope, math.sqrt(residuals / (len(pairs) - 2) / sxx)


def pace(slope: float, stderr: float) -> str:
    """ "kept" (rate ≥ KEEPS_UP × offered), "behind" (below, by more than two standard errors
    of the slope) or "unclear" (below, but a few tickets with polling jitter prove nothing)."""
    if math.isnan(slope) or slope <= 1 / KEEPS_UP:
        return "kept"
    return "behind" if slope - 1 > 2 * stderr else "unclear"


def group_cpu_seconds(pgid: int) -> float:
    """user+system CPU seconds of a process group's live processes and of the children they
    reaped (from /proc; RT's Starlet replaces workers now and then)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; then utime, stime, cutime, cstime at 11..14
            total += sum(int(v) for v in fields[11:15]) / ticks
    return total


def machine_cpu() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of all CPUs since boot (/proc/stat). Steal: time the
    hypervisor gave this VM's CPUs to someone else."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq, steal, sum(values[:8])


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def poll_batches(stamps: list[float], gap: float = 0.25) -> list[list[float]]:
    """Delivery stamps grouped by poll: a new group after a pause longer than `gap`."""
    batches: list[list[float]] = []
    for stamp in sorted(stamps):
        if batches and stamp - batches[-1][-1] <= gap:
            batches[-1].append(stamp)
        else:
            batches.append([stamp])
    return batches


def load_texts() -> list[tuple[str, str]]:
    return [(t.subject, t.body) for t in read_labelled(TICKETS_CSV)]


# ----- the helpdesks ------------------------------------------------------------------------


class Desk(Protocol):
    """What the load generator needs from one helpdesk (all calls through its own API)."""

    host: str  # the connector's host name
    pgid: int  # the helpdesk's process group, for CPU accounting
    server: str  # how it is served, for the report

    def session(self) -> requests.Session: ...

    def create(self, session: requests.Session, subject: str, body: str) -> str: ...

    def get(self, session: requests.Session, ticket_id: str) -> None: ...

    def queue_of(self, ticket_id: str) -> str: ...


class RTDesk:
    host = "rt"

    def __init__(self, rt: RTServer, token: str, pgid: int):
        self.rt = rt
        self.token = token
        self.pgid = pgid
        self.server = f"rt-server (Starlet, {rt.workers} workers), SQLite"

    def session(self) -> requests.Session:
        return requests.Session()

    def create(self, session: requests.Session, subject: str, body: str) -> str:
        answer = session.post(
            f"{self.rt.rest_url}/ticket",
            auth=self.rt.root_auth,
            json={
                "Queue": "General",
                "Subject": subject,
                "Requestor": "user@example.com",
                "Content": body,
                "ContentType": "text/plain",
            },
            timeout=60,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"RT create answered {answer.status_code}: {answer.text[:300]}")
        return str(answer.json()["id"])

    def get(self, session: requests.Session, ticket_id: str) -> None:
        answer = session.get(
            f"{self.rt.rest_url}/ticket/{ticket_id}",
            params={"fields[Queue]": "Name"},
            auth=TokenAuth(self.token),
            timeout=30,
        )
        answer.raise_for_status()

    def queue_of(self, ticket_id: str) -> str:
        ticket = self.rt.get_json(f"ticket/{ticket_id}", params={"fields[Queue]": "Name"})
        return str(ticket["Queue"]["Name"])


class DjangoDesk:
    host = "django-helpdesk"

    def __init__(self, hd: DjangoHelpdeskServer, ids: dict[str, int], pgid: int):
        self.hd = hd
        self.ids = ids
        self.pgid = pgid
        self.server = "manage.py runserver (one process, threaded), SQLite"

    def session(self) -> requests.Session:
        return requests.Session()

    def create(self, session: requests.Session, subject: str, body: str) -> str:
        answer = session.post(
            f"{self.hd.api_url}/tickets/",
            auth=self.hd.admin_auth,
            json={
                "queue": self.ids["general"],
                "title": subject,
                "description": body,
                "submitter_email": "user@example.com",
                "priority": 3,
            },
            timeout=60,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"create answered {answer.status_code}: {answer.text[:300]}")
        return str(answer.json()["id"])

    def get(self, session: requests.Session, ticket_id: str) -> None:
        answer = session.get(
            f"{self.hd.api_url}/tickets/{ticket_id}/", auth=CONNECTOR_USER, timeout=30
        )
        answer.raise_for_status()

    def queue_of(self, ticket_id: str) -> str:
        queue_id = self.hd.get_ticket(int(ticket_id))["queue"]
        return next((slug for slug, pk in self.ids.items() if pk == queue_id), str(queue_id))


@contextmanager
def rt_stack(
    workdir: Path, poll_interval: float, connector: dict[str, Any]
) -> Iterator[tuple[Desk, ConnectorService]]:
    """RT with the shipped mapping's queues and field, and the connector polling it."""
    ensure_rt_installed()
    mapping = yaml.safe_load(RT_MAPPING.read_text(encoding="utf-8"))
    user = str(mapping["connector_user"])
    watched = list(mapping["options"]["watch_queues"])
    targets = [*mapping["processes"].values(), mapping["fallback"]]
    field_name = str(mapping["options"]["service_field"])
    with RTServer() as rt:
        for queue in targets:
            rt.create_queue(queue)
        field_id = rt.create_ticket_custom_field(field_name, targets)
        rt.create_user(user, "bench-password-1", timezone="UTC")
        grant = {"op": "grant", "user": user}
        token = str(
            rt.rt_admin(
                [
                    {**grant, "queues": watched, "rights": list(WATCHED_RIGHTS)},
                    {**grant, "queues": targets, "rights": list(TARGET_RIGHTS)},
                    {**grant, "custom_fields": [field_id], "rights": list(FIELD_RIGHTS)},
                    {"op": "auth_token", "user": user, "description": "bpsm bench"},
                ]
            )[-1]["token"]
        )
        env = {
            "BPSM_RT_URL": rt.url,
            "BPSM_RT_TOKEN": token,
            "BPSM_RT_POLL_INTERVAL": f"{poll_interval:g}",
            "BPSM_RT_MAPPING": str(RT_MAPPING),
            **connector["env"],
        }
        assert rt._proc is not None
        with ConnectorService(
            workdir / "rt-connector", env, consumer_threads=connector["threads"]
        ) as service:
            # The first poll sets the mark; tickets created from now on are new.
            wait_for(lambda: service.rt.store.high_water("rt"), message="the first RT poll")
            yield RTDesk(rt, token, rt._proc.pid), service


@contextmanager
def django_stack(
    workdir: Path, connector: dict[str, Any]
) -> Iterator[tuple[Desk, ConnectorService]]:
    """django-helpdesk firing its webhooks at the connector (no polling)."""
    venv_dir = ensure_helpdesk_venv()
    # Each side must know the other's URL before it starts (see the e2e test's fixture).
    hd_port = django_helpdesk_server.free_loopback_port()
    mapping_path = workdir / "django-helpdesk.yaml"  # written once the queue ids are known
    env = {
        "BPSM_DJANGO_HELPDESK_URL": f"http://127.0.0.1:{hd_port}",
        "BPSM_DJANGO_HELPDESK_USER": CONNECTOR_USER[0],
        "BPSM_DJANGO_HELPDESK_PASSWORD": CONNECTOR_USER[1],
        "BPSM_DJANGO_HELPDESK_MAPPING": str(mapping_path),
        "BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET": DH_SECRET,
        **connector["env"],
    }
    service = ConnectorService(
        workdir / "dh-connector", env, consumer_threads=connector["threads"], poll=False
    )
    hook = f"{service.hook_url('django-helpdesk')}?token={DH_SECRET}"
    hd = DjangoHelpdeskServer([hook], [hook], venv_dir=venv_dir)
    started = False
    original = django_helpdesk_server.free_loopback_port
    try:
        django_helpdesk_server.free_loopback_port = lambda: hd_port
        try:
            hd.start()
        finally:
            django_helpdesk_server.free_loopback_port = original
        data = yaml.safe_load(DH_MAPPING.read_text(encoding="utf-8"))
        ids = hd.queues(data["options"]["queue_titles"])
        data["options"]["queue_ids"] = ids
        mapping_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        service.start()
        started = True
        assert hd._proc is not None
        yield DjangoDesk(hd, ids, hd._proc.pid), service
    finally:
        if started:
            service.stop()
        else:  # never served: stop() would wait for a serve loop that never ran
            service.server.server_close()
            service.rt.close()
        hd.stop()


# ----- load and measurement ------------------------------------------------------------------


@dataclass
class Created:
    ticket_id: str | None
    scheduled: float  # wall clock (time.time(), as the store's stamps)
    sent: float
    returned: float
    error: str | None = None


@dataclass
class Routed:
    outcome: str
    received_at: float
    created_at: float
    applied_at: float | None
    apply_ms: float | None


class Load:
    """Creates tickets through the helpdesk's API on an open-loop schedule."""

    def __init__(self, desk: Desk, texts: list[tuple[str, str]], pool: int):
        self.desk = desk
        self.texts = itertools.cycle(texts)
        self.pool = pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self.desk.session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _one(self, scheduled: float) -> Created:
        with self._lock:
            subject, body = next(self.texts)
        sent = time.time()
        try:
            ticket_id = self.desk.create(self._session(), subject, body)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the load goes on
            return Created(None, scheduled, sent, time.time(), repr(exc)[:200])
        return Created(ticket_id, scheduled, sent, time.time())

    def offer(self, rate: float, seconds: float) -> tuple[float, list[Created]]:
        """round(rate × seconds) creations at 1/rate intervals; (start wall clock, results)."""
        count = max(1, round(rate * seconds))
        start_mono, start_wall = time.monotonic(), time.time()
        futures = []
        with ThreadPoolExecutor(max_workers=min(self.pool, count)) as pool:
            for i in range(count):
                delay = start_mono + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self._one, start_wall + i / rate))
            results = [f.result() for f in futures]
        with self._lock:  # the pool's threads are gone, and with them their sessions
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        return start_wall, results


def routed_rows(service: ConnectorService, host: str) -> dict[str, Routed]:
    query = (
        select(
            routings.c.ticket_id,
            routings.c.outcome,
            routings.c.created_at,
            routings.c.applied_at,
            routings.c.apply_ms,
            deliveries.c.received_at,
        )
        .select_from(routings.join(deliveries, routings.c.delivery == deliveries.c.id))
        .where(routings.c.host == host)
    )
    with service.rt.store.engine.connect() as conn:
        return {
            str(r.ticket_id): Routed(
                r.outcome, r.received_at, r.created_at, r.applied_at, r.apply_ms
            )
            for r in conn.execute(query)
        }


def wait_all_routed(
    service: ConnectorService, host: str, ids: list[str], timeout: float
) -> dict[str, Routed]:
    """Poll the connector's store until every ticket has a final outcome (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = routed_rows(service, host)
        done = {i: rows[i] for i in ids if i in rows and rows[i].outcome in FINAL}
        if len(done) == len(ids) or time.monotonic() > deadline:
            return done
        time.sleep(0.05)


def api_rtt(desk: Desk, ticket_id: str, samples: int) -> dict[str, float]:
    """Sequential GET-ticket calls on one keep-alive session: median and p95 in ms."""
    session = desk.session()
    for _ in range(3):
        desk.get(session, ticket_id)
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        desk.get(session, ticket_id)
        times.append((time.perf_counter() - t0) * 1000)
    session.close()
    return {"p50_ms": statistics.median(times), "p95_ms": pct(times, 0.95), "n": samples}


@dataclass
class Phase:
    name: str
    offered_rate: float
    seconds: float
    offered: int = 0
    created: int = 0
    errors: int = 0
    routed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    created_rate: float = math.nan
    routed_rate: float = math.nan
    created_pace: str = "kept"  # see pace()
    routed_pace: str = "kept"
    start_lag_p95_ms: float = math.nan
    create_p50_ms: float = math.nan
    create_p95_ms: float = math.nan
    latency_p50_ms: float = math.nan
    latency_p95_ms: float = math.nan
    latency_max_ms: float = math.nan
    seen_p50_ms: float = math.nan
    after_seen_p50_ms: float = math.nan
    queue_p50_ms: float = math.nan  # seen → routing row: waiting for a consumer, classifying
    apply_p50_ms: float = math.nan
    drain_s: float = math.nan
    cpu_helpdesk: float = math.nan  # share of all cores during the phase (load + drain)
    cpu_self: float = math.nan
    cpu_machine: float = math.nan  # everything on the machine, other processes included
    cpu_steal: float = math.nan  # taken by the hypervisor
    poll_cycle_p50_s: float = math.nan  # RT: between polls that found new tickets
    per_poll_p50: float = math.nan  # RT: new tickets per such poll
    first_error: str | None = None
    spot_check: str | None = None


def run_phase(
    name: str,
    load: Load,
    desk: Desk,
    service: ConnectorService,
    rate: float,
    seconds: float,
    drain_timeout: float,
) -> Phase:
    cpu_hd, cpu_me, wall = group_cpu_seconds(desk.pgid), self_cpu_seconds(), time.monotonic()
    busy0, steal0, total0 = machine_cpu()
    _, created = load.offer(rate, seconds)
    ok = [c for c in created if c.ticket_id is not None]
    ids = [str(c.ticket_id) for c in ok]
    rows = wait_all_routed(service, desk.host, ids, drain_timeout)
    cores = (time.monotonic() - wall) * (os.cpu_count() or 1)
    phase = Phase(name, rate, seconds, offered=len(created), created=len(ok))
    phase.cpu_helpdesk = (group_cpu_seconds(desk.pgid) - cpu_hd) / cores
    phase.cpu_self = (self_cpu_seconds() - cpu_me) / cores
    busy1, steal1, total1 = machine_cpu()
    phase.cpu_machine = (busy1 - busy0) / max(1, total1 - total0)
    phase.cpu_steal = (steal1 - steal0) / max(1, total1 - total0)
    phase.errors = len(created) - len(ok)
    phase.first_error = next((c.error for c in created if c.error), None)
    phase.routed = len(rows)
    phase.outcomes = dict(Counter(r.outcome for r in rows.values()))
    slope, stderr = fit_slope([(c.scheduled, c.returned) for c in ok])
    phase.created_rate = rate / slope if slope > 0 else math.nan
    phase.created_pace = pace(slope, stderr)
    phase.start_lag_p95_ms = pct([(c.sent - c.scheduled) * 1000 for c in created], 0.95)
    phase.create_p50_ms = pct([(c.returned - c.sent) * 1000 for c in ok], 0.5)
    phase.create_p95_ms = pct([(c.returned - c.sent) * 1000 for c in ok], 0.95)
    pairs = [(c, rows[str(c.ticket_id)]) for c in ok if str(c.ticket_id) in rows]
    applied = [(c, r) for c, r in pairs if r.applied_at is not None]
    latency = [((r.applied_at or 0) - c.returned) * 1000 for c, r in applied]
    phase.latency_p50_ms = pct(latency, 0.5)
    phase.latency_p95_ms = pct(latency, 0.95)
    phase.latency_max_ms = max(latency) if latency else math.nan
    phase.seen_p50_ms = pct([(r.received_at - c.returned) * 1000 for c, r in applied], 0.5)
    phase.after_seen_p50_ms = pct(
        [((r.applied_at or 0) - r.received_at) * 1000 for c, r in applied], 0.5
    )
    phase.queue_p50_ms = pct([(r.created_at - r.received_at) * 1000 for _, r in applied], 0.5)
    phase.apply_p50_ms = pct([r.apply_ms for _, r in applied if r.apply_ms is not None], 0.5)
    slope, stderr = fit_slope([(c.scheduled, r.applied_at or 0) for c, r in applied])
    phase.routed_rate = rate / slope if slope > 0 else math.nan
    phase.routed_pace = pace(slope, stderr)
    if desk.host == "rt":  # deliveries of one poll are recorded together, after it
        batches = poll_batches([r.received_at for r in rows.values()])
        starts = [b[0] for b in batches]
        phase.poll_cycle_p50_s = pct([b - a for a, b in itertools.pairwise(starts)], 0.5)
        phase.per_poll_p50 = pct([float(len(b)) for b in batches], 0.5)
    if applied:
        phase.drain_s = max(r.applied_at or 0 for _, r in applied) - max(c.returned for c in ok)
        # One ticket read back from the helpdesk: the benchmark measures real routing.
        last_id = str(applied[-1][0].ticket_id)
        phase.spot_check = f"#{last_id} {applied[-1][1].outcome}, now in {desk.queue_of(last_id)}"
    return phase


def verdict(phase: Phase) -> str:
    """keeps up | helpdesk saturated (it does not even accept the offered rate) | routing
    behind, with the helpdesk CPU-bound or not | unclear."""
    if phase.created_pace == "behind" or phase.errors:
        return "helpdesk saturated"
    if phase.routed < phase.created or phase.routed_pace == "behind":
        if phase.cpu_helpdesk >= CPU_BOUND:
            return "routing behind, helpdesk CPU-bound"
        return "routing behind"
    if "unclear" in (phase.created_pace, phase.routed_pace):
        return "unclear: too few tickets for the jitter, use longer steps"
    return "keeps up"


def bench_host(
    host: str, args: argparse.Namespace, texts: list[tuple[str, str]], workdir: Path
) -> dict[str, Any]:
    print(f"[{host}] starting the helpdesk and the connector …", file=sys.stderr)
    t0 = time.monotonic()
    connector = {"env": {"BPSM_LOG_LEVEL": args.log_level}, "threads": args.consumer_threads}
    stack: Callable[[], Any] = (
        (lambda: rt_stack(workdir, args.rt_poll_interval, connector))
        if host == "rt"
        else (lambda: django_stack(workdir, connector))
    )
    with stack() as (desk, service):
        startup_s = time.monotonic() - t0
        load = Load(desk, texts, args.pool)
        _, warm = load.offer(2.0, WARMUP_TICKETS / 2.0)
        warm_ids = [str(c.ticket_id) for c in warm if c.ticket_id]
        if len(wait_all_routed(service, host, warm_ids, 30.0)) < WARMUP_TICKETS:
            raise RuntimeError(f"{host}: warm-up tickets were not routed: {warm}")
        print(f"[{host}] up in {startup_s:.1f} s; measuring the API round trip …", file=sys.stderr)
        rtt = api_rtt(desk, warm_ids[0], args.rtt_samples)
        print(
            f"[{host}] RTT p50 {rtt['p50_ms']:.1f} ms; steady {args.rate:g}/s × "
            f"{args.seconds:g} s …",
            file=sys.stderr,
        )
        steady = run_phase(
            "steady", load, desk, service, args.rate, args.seconds, args.drain_timeout
        )
        ramp: list[Phase] = []
        for rate in args.ramp:
            seconds = max(args.step_seconds, args.min_step_tickets / rate)
            print(f"[{host}] ramp {rate:g}/s × {seconds:g} s …", file=sys.stderr)
            step = run_phase(
                f"ramp {rate:g}/s", load, desk, service, rate, seconds, args.drain_timeout
            )
            ramp.append(step)
            if verdict(step) == "helpdesk saturated" and not args.full_ramp:
                break  # found it; higher rates would only pile up more
        rtt_after = api_rtt(desk, warm_ids[0], args.rtt_samples)
        server = desk.server
    return {
        "host": host,
        "server": server,
        "startup_s": startup_s,
        "rtt": rtt,
        "rtt_after": rtt_after,
        "steady": {**asdict(steady), "verdict": verdict(steady)},
        "ramp": [{**asdict(p), "verdict": verdict(p)} for p in ramp],
        "poll_interval_s": args.rt_poll_interval if host == "rt" else None,
        "consumer_threads": args.consumer_threads,
    }


# ----- report ---------------------------------------------------------------------------------


def _x(ms: float, rtt_ms: float) -> str:
    """A duration as a multiple of the RTT."""
    return "-" if math.isnan(ms) else f"{ms / rtt_ms:.1f}×"


def _ms(ms: float) -> str:
    return "-" if math.isnan(ms) else f"{ms:.0f}"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share:.0%}"


def _load(args: argparse.Namespace, name: str) -> str:
    """The 1-minute load average stored in args (a list in files of older versions)."""
    value = getattr(args, name, None)
    value = value[0] if isinstance(value, list) else value
    return "?" if value is None else f"{value:.2f}"


def _other_cpu(phase: dict[str, Any]) -> float:
    """CPU share of everything on the machine but the helpdesk and this process."""
    return max(0.0, float(phase["cpu_machine"] - phase["cpu_helpdesk"] - phase["cpu_self"]))


def _share(part_ms: float, whole_ms: float) -> str:
    """part ÷ whole; "-" when the part is negative (webhooks arrive before create returns)."""
    if math.isnan(part_ms) or math.isnan(whole_ms) or part_ms < 0:
        return "-"
    return f"{part_ms / whole_ms:.0%}"


def _cell(ms: float, rtt_ms: float) -> str:
    """A duration in ms and as a multiple of the RTT."""
    return "-" if math.isnan(ms) else f"{ms:.0f} ms {ms / rtt_ms:.1f}×"


def bottleneck_line(result: dict[str, Any]) -> str:
    """Where the helpdesk stops accepting the offered rate, and where routing falls behind."""
    ramp, host = result["ramp"], result["host"]
    rtt_ms, threads = result["rtt"]["p50_ms"], result["consumer_threads"]
    if not ramp:
        return f"{host}: no ramp run"
    saturated = next((p for p in ramp if p["verdict"] == "helpdesk saturated"), None)
    if saturated:
        text = (
            f"{host}: the HELPDESK is the bottleneck from {saturated['offered_rate']:g}/s "
            f"offered: it accepted only {_rate(saturated['created_rate'])} tickets/s "
            f"({_rate(saturated['created_rate'] * rtt_ms / 1000)} per RTT; create call p50 "
            f"{_x(saturated['create_p50_ms'], rtt_ms)} RTT; its processes used "
            f"{_pct(saturated['cpu_helpdesk'])} of all cores, this process "
            f"{_pct(saturated['cpu_self'])})"
        )
    else:
        top = ramp[-1]
        text = (
            f"{host}: the helpdesk itself was not saturated: it accepted "
            f"{_rate(top['created_rate'])} tickets/s at {top['offered_rate']:g}/s offered "
            f"(create call p50 {_x(top['create_p50_ms'], rtt_ms)} RTT); raise --ramp to find "
            "its limit"
        )
    behind = next((p for p in ramp if p["verdict"].startswith("routing behind")), None)
    kept = [p for p in ramp if p["verdict"] == "keeps up"]
    if behind:
        ceiling = threads / (behind["apply_p50_ms"] / 1000)
        text += (
            f". Routing fell behind first, from {behind['offered_rate']:g}/s (routed "
            f"{_rate(behind['routed_rate'])}/s): each ticket holds one of the {threads} consumer "
            f"threads for its write-back calls, apply p50 {_ms(behind['apply_p50_ms'])} ms = "
            f"{_x(behind['apply_p50_ms'], rtt_ms)} RTT at that load, a ceiling of ≈ "
            f"{ceiling:.1f}/s before queueing and classifying; helpdesk CPU "
            f"{_pct(behind['cpu_helpdesk'])} of all cores"
        )
    elif saturated:
        text += f"; routed {_rate(saturated['routed_rate'])}/s there"
    if kept:
        text += (
            f". Highest rate fully kept up: {kept[-1]['offered_rate']:g}/s (routed "
            f"{_rate(kept[-1]['routed_rate'])}/s, latency p50 "
            f"{_x(kept[-1]['latency_p50_ms'], rtt_ms)} RTT)"
        )
    return text + "."


def _label(phase: dict[str, Any]) -> str:
    """ "ramp 2/s" or "steady 2/s"."""
    name = str(phase["name"])
    return name if name.startswith("ramp") else f"{name} {phase['offered_rate']:g}/s"


def _largest_part(phase: dict[str, Any]) -> str:
    parts = {
        "the polling wait": phase["seen_p50_ms"],
        "queue+classify": phase["queue_p50_ms"],
        "the write-back to RT": phase["apply_p50_ms"],
    }
    return max(parts, key=lambda k: -math.inf if math.isnan(parts[k]) else parts[k])


def rt_polling_line(result: dict[str, Any]) -> str:
    """How much of RT's latency is the polling wait, from the measurements: the headline
    says "dominates" only where the wait is the largest of the three parts."""
    interval = result["poll_interval_s"]
    phases = [result["steady"], *result["ramp"]]
    measured = [p for p in phases if not math.isnan(p["latency_p50_ms"])]
    if not measured:
        return "rt: nothing routed"
    kept = sorted(
        (p for p in measured if p["verdict"] == "keeps up"), key=lambda p: p["offered_rate"]
    )
    looked_at = kept or [min(measured, key=lambda p: p["offered_rate"])]
    polling = [p for p in looked_at if _largest_part(p) == "the polling wait"]
    others = [p for p in looked_at if _largest_part(p) != "the polling wait"]
    where = " where routing keeps up" if kept else ""
    if not others:
        head = f"RT POLLING DOMINATES RT's latency: the polling wait is its largest part{where}"
    elif polling:
        head = (
            "RT polling is the largest part of RT's latency at "
            f"{', '.join(_label(p) for p in polling)}, but not at "
            + ", ".join(f"{_label(p)} ({_largest_part(p)} is)" for p in others)
            + "; polling wait and write-back are close"
        )
    else:
        head = "RT polling does NOT dominate RT's latency here: " + ", ".join(
            f"at {_label(p)} {_largest_part(p)} is the largest part" for p in others
        )
    shares = "; ".join(
        f"{_label(p)}: wait {_ms(p['seen_p50_ms'])} of {_ms(p['latency_p50_ms'])} ms "
        f"({_share(p['seen_p50_ms'], p['latency_p50_ms'])}), queue+classify "
        f"{_ms(p['queue_p50_ms'])}, write-back {_ms(p['apply_p50_ms'])}"
        for p in looked_at
    )
    cycles = ", ".join(
        f"{p['offered_rate']:g}/s {p['poll_cycle_p50_s']:.1f} s"
        for p in result["ramp"]
        if not math.isnan(p["poll_cycle_p50_s"])
    )
    text = (
        f"rt: {head}. p50s — {shares}. The poller sleeps BPSM_RT_POLL_INTERVAL={interval:g} s "
        "after each poll, so a ticket waits about half a cycle plus the poll's own calls; poll "
        f"cycle p50 by rate: {cycles}. (Not measured here: at the documented default of 30 s "
        "that wait alone averages ≈ 15 s.)"
    )
    s = result["steady"]
    if s["verdict"] != "keeps up" and not math.isnan(s["latency_p50_ms"]):
        text += (
            f" At the steady {s['offered_rate']:g}/s routing fell behind (routed "
            f"{_rate(s['routed_rate'])}/s), so there the backlog dominates: wait "
            f"{_ms(s['seen_p50_ms'])} ms ({_share(s['seen_p50_ms'], s['latency_p50_ms'])}), "
            f"queue {_ms(s['queue_p50_ms'])} ms."
        )
    return text


def report(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    elapsed: float,
    date: str | None = None,
) -> str:
    lines = [
        f"bench/e2e.py  {date or time.strftime('%Y-%m-%d %H:%M')}  "
        f"cpus={getattr(args, 'cpus', os.cpu_count())}  "
        f"python={sys.version.split()[0]}  total {elapsed:.0f} s (start-ups included)  "
        f"load {_load(args, 'load_before')}→{_load(args, 'load_after')}",
        f"Baseline RTT: the helpdesk's own API round trip, median of {args.rtt_samples} "
        "sequential GET-ticket calls, idle, this run. ×RTT = multiple of it.",
        f"Connector: tests/e2e.py ConnectorService in this process, "
        f"{args.consumer_threads} consumer threads; helpdesk, connector and load generator "
        "share this machine.",
        "",
        f"{'helpdesk':<16} {'start-up':>8} {'RTT p50':>9} {'RTT p95':>9} {'p50 after':>10}  "
        "server; the connector learns of new tickets by",
    ]
    for r in results:
        how = (
            f"polling every {r['poll_interval_s']:g} s (BPSM_RT_POLL_INTERVAL)"
            if r["host"] == "rt"
            else "the helpdesk's own webhooks"
        )
        lines.append(
            f"{r['host']:<16} {r['startup_s']:>6.1f} s {r['rtt']['p50_ms']:>6.1f} ms "
            f"{r['rtt']['p95_ms']:>6.1f} ms {r['rtt_after']['p50_ms']:>7.1f} ms  "
            f"{r['server']}; {how}"
        )
    lines += [
        "",
        f"Steady load: {args.rate:g} tickets/s for {args.seconds:g} s; latency = create call "
        "returned → routing applied (bpsm_routings.applied_at)",
        f"{'helpdesk':<16} {'routed':>7} {'routed/s':>8} {'create call p50':>16} "
        f"{'latency p50':>16} {'latency p95':>16} {'max':>9}  verdict",
    ]
    for r in results:
        s, rtt_ms = r["steady"], r["rtt"]["p50_ms"]
        lines.append(
            f"{r['host']:<16} {s['routed']:>3}/{s['offered']:<3} {_rate(s['routed_rate']):>8} "
            f"{_cell(s['create_p50_ms'], rtt_ms):>16} {_cell(s['latency_p50_ms'], rtt_ms):>16} "
            f"{_cell(s['latency_p95_ms'], rtt_ms):>16} {_ms(s['latency_max_ms']):>6} ms  "
            f"{s['verdict']}"
        )
    lines += [
        "Where the steady latency goes (median of each part):",
        f"{'helpdesk':<16} {'seen':>16} {'share':>6} {'queue+classify':>16} "
        f"{'apply (writes)':>16}  outcomes",
    ]
    for r in results:
        s, rtt_ms = r["steady"], r["rtt"]["p50_ms"]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
        lines.append(
            f"{r['host']:<16} {_cell(s['seen_p50_ms'], rtt_ms):>16} "
            f"{_share(s['seen_p50_ms'], s['latency_p50_ms']):>6} "
            f"{_cell(s['queue_p50_ms'], rtt_ms):>16} {_cell(s['apply_p50_ms'], rtt_ms):>16}  "
            f"{outcomes}"
        )
    for r in results:
        if r["steady"]["verdict"] != "keeps up":
            lines.append(
                f"  ! {r['host']}: routing did not keep up with {args.rate:g}/s, so its steady "
                "latency is a backlog that grows with --seconds, not a steady-state figure"
            )
    lines += [
        "  (seen = create returned → the connector recorded the delivery: the polling wait for "
        "RT; for webhooks negative, the helpdesk posts them before it answers the create call. "
        "queue+classify = → routing row; apply = the connector's calls that move, fill and "
        "comment the ticket)",
        "",
        f"Ramp: each rate for {args.step_seconds:g} s (≥ {args.min_step_tickets} tickets), "
        "drained in between; stops once the helpdesk saturates. Rates: offered ÷ slope of "
        "completion over schedule;",
        "routed ×RTT = tickets routed per API round trip; seen share = seen p50 ÷ latency p50. "
        "CPU = share of all cores: desk = the helpdesk's processes, conn = this process, "
        "other = the rest of the machine (should be ≈ 0).",
        f"{'helpdesk':<16} {'offered':>7} {'created':>7} {'routed':>7} {'routed':>7} "
        f"{'routed':>6} {'create':>6} {'apply':>6} {'latency':>7} {'latency':>7} "
        f"{'seen':>5} {'drain':>6} {'CPU':>5} {'CPU':>5} {'CPU':>5}  verdict",
        f"{'':<16} {'/s':>7} {'/s':>7} {'/s':>7} {'/offer':>7} {'×RTT':>6} {'p50':>6} "
        f"{'p50':>6} {'p50':>7} {'p95':>7} {'share':>5} {'s':>6} {'desk':>5} {'conn':>5} "
        f"{'other':>5}",
    ]
    for r in results:
        rtt_ms = r["rtt"]["p50_ms"]
        for p in r["ramp"]:
            extra = f", {p['errors']} create errors" if p["errors"] else ""
            if p["routed"] < p["created"]:
                extra += f", {p['created'] - p['routed']} not routed in time"
            lines.append(
                f"{r['host']:<16} {p['offered_rate']:>7g} {_rate(p['created_rate']):>7} "
                f"{_rate(p['routed_rate']):>7} {_rate(p['routed_rate'] / p['offered_rate']):>7} "
                f"{_rate(p['routed_rate'] * rtt_ms / 1000):>6} "
                f"{_x(p['create_p50_ms'], rtt_ms):>6} {_x(p['apply_p50_ms'], rtt_ms):>6} "
                f"{_x(p['latency_p50_ms'], rtt_ms):>7} {_x(p['latency_p95_ms'], rtt_ms):>7} "
                f"{_share(p['seen_p50_ms'], p['latency_p50_ms']):>5} "
                f"{p['drain_s']:>6.1f} {_pct(p['cpu_helpdesk']):>5} {_pct(p['cpu_self']):>5} "
                f"{_pct(_other_cpu(p)):>5}  "
                f"{p['verdict']}{extra}"
            )
    lines += ["", "Findings:"]
    for r in results:
        for p in [r["steady"], *r["ramp"]]:
            other, steal = _other_cpu(p), p.get("cpu_steal", math.nan)
            if other > DISTURBED or steal > DISTURBED:
                lines.append(
                    f"* ! {r['host']} {_label(p)}: other processes used {_pct(other)} of the "
                    f"machine, the hypervisor took {_pct(steal)} (steal): its figures are "
                    "disturbed"
                )
    for r in results:
        lines.append("* " + bottleneck_line(r))
        errors = [p for p in [r["steady"], *r["ramp"]] if p["first_error"]]
        if errors:
            lines.append(f"  first create error: {errors[0]['first_error']}")
    for r in results:
        s, rtt_ms = r["steady"], r["rtt"]["p50_ms"]
        if math.isnan(s["latency_p50_ms"]):
            continue
        if r["host"] == "rt":
            lines.append("* " + rt_polling_line(r))
        else:
            lines.append(
                f"* {r['host']}: webhooks: the delivery arrives inside the create call, so "
                f"the latency p50 {_ms(s['latency_p50_ms'])} ms "
                f"({_x(s['latency_p50_ms'], rtt_ms)} RTT) is the connector's queue, classify "
                "and write-back through the helpdesk's API; no polling wait."
            )
    for r in results:
        checks = [p["spot_check"] for p in [r["steady"], *r["ramp"]] if p["spot_check"]]
        if checks:
            lines.append(f"* {r['host']}: read back from the helpdesk: {'; '.join(checks[:2])}")
    return "\n".join(lines)


def _no_nan(value: Any) -> Any:
    """NaN → None, so that --json prints standard JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _nan_back(value: Any) -> Any:
    """None → NaN (the inverse of _no_nan, for --report)."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {
            k: v if k in ("first_error", "spot_check") else _nan_back(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_nan_back(v) for v in value]
    return value


def _rates(text: str) -> list[float]:
    rates = [float(v) for v in text.split(",") if v.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("need positive rates, e.g. 1,2,4,8")
    return rates


def _hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    unknown = [h for h in hosts if h not in HOSTS]
    if unknown or not hosts:
        raise argparse.ArgumentTypeError(f"hosts are {', '.join(HOSTS)}; got {text!r}")
    return hosts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--hosts", type=_hosts, default=",".join(HOSTS), help="comma-separated")
    parser.add_argument("--rate", type=float, default=2.0, help="steady tickets/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady load duration")
    parser.add_argument("--ramp", type=_rates, default="1,2,4,8,16", help="tickets/s")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="per ramp rate")
    parser.add_argument("--min-step-tickets", type=int, default=10, help="per ramp rate")
    parser.add_argument(
        "--full-ramp", action="store_true", help="go on after the helpdesk saturated"
    )
    parser.add_argument("--rtt-samples", type=int, default=50)
    parser.add_argument("--rt-poll-interval", type=float, default=1.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="s after each phase")
    parser.add_argument("--pool", type=int, default=32, help="max concurrent create calls")
    parser.add_argument("--consumer-threads", type=int, default=2, help="as `bpsm serve --threads`")
    parser.add_argument("--log-level", default="WARNING", help="the connector's (stderr)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--save", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--report", type=Path, help="print the table of a --save file; no run")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.step_seconds <= 0:
        parser.error("--rate, --seconds and --step-seconds must be positive")
    if max(args.rate * args.seconds, max(args.ramp) * args.step_seconds) > 1000 or not (
        0 < args.min_step_tickets <= 1000
    ):
        parser.error("bounded: at most 1000 tickets per phase")

    if args.report:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        saved_args = argparse.Namespace(**saved["args"], cpus=saved["cpus"])
        print(report(_nan_back(saved["results"]), saved_args, saved["seconds"], saved["date"]))
        return
    texts = load_texts()
    args.load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="bpsm-bench-e2e-") as tmp:
        for host in args.hosts:
            workdir = Path(tmp) / host
            workdir.mkdir()
            results.append(bench_host(host, args, texts, workdir))
    elapsed = time.monotonic() - started
    args.load_after = os.getloadavg()[0]
    date = time.strftime("%Y-%m-%d %H:%M")
    document = json.dumps(
        {
            "date": date,
            "cpus": os.cpu_count(),
            "seconds": elapsed,
            "args": {k: v for k, v in vars(args).items() if k not in ("save",)},
            "results": _no_nan(results),
        }
    )
    if args.save:
        args.save.write_text(document + "\n", encoding="utf-8")
    print(document if args.json else report(results, args, elapsed, date))


if __name__ == "__main__":
    main()
