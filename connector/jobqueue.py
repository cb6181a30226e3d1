"""The job queue: huey, the outbox dispatcher, the sweep and the background consumer.

The store is the durable record; the queue only wakes consumers. A webhook's delivery row is
handed to huey by the dispatcher (the store is the outbox), a delivery nobody works on is
handed again by the sweep, and a job's retry is planned here from what the worker returns.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey

from connector.burst import IngestGate
from connector.config import Settings
from connector.context import Context
from connector.datadir import private_file
from connector.logs import log_extra
from connector.metrics import BURST_WAIT, BURSTS
from connector.processes import run_maintenance
from connector.worker import process_delivery

log = logging.getLogger("bpsm.queue")
TASK_NAME = "bpsm.process_delivery"  # in Redis across versions: never renamed


def make_huey(settings: Settings, read_only: bool = False) -> Huey:
    """The queue of BPSM_REDIS_URL, else an SQLite file in the data folder; in memory for
    commands that only read (they create nothing in the data folder)."""
    if read_only:
        return MemoryHuey(settings.queue_name)
    if settings.redis_url:
        return RedisHuey(settings.queue_name, url=settings.redis_url, results=False)
    # Created 0600 before huey opens it: the queue holds delivery ids only, but its -wal and
    # -shm files take the database file's mode, and nothing in the data folder is readable
    # by others.
    private_file(settings.data_dir / "queue.db")
    # fsync off: the queue only wakes workers; a lost entry is re-enqueued by the sweep
    # from the store, which is the durable record (each fsync cost ~1.4 ms per webhook).
    return SqliteHuey(
        settings.queue_name,
        filename=str(settings.data_dir / "queue.db"),
        results=False,
        fsync=False,
    )


class JobQueue:
    """Deliveries in, jobs out: one per process, built by the Runtime."""

    def __init__(self, huey: Huey, context: Context):
        self.huey = huey
        self.context = context
        self._task = huey.task(name=TASK_NAME)(self.run)
        settings = context.settings
        self.gate = IngestGate(settings.burst_rate, settings.burst_yield, on_change=report_burst)
        self.stopping = threading.Event()  # a job waiting out a burst stops waiting

    def run(self, delivery_pk: int) -> str:
        """One job: the worker handles the delivery (after a burst of webhooks, see
        connector.burst); a retry it asks for is planned here."""
        waited = self.gate.wait(self.stopping)
        if waited:
            BURST_WAIT.inc(waited)
        handled = process_delivery(self.context, delivery_pk)
        if handled.retry_in is not None:
            self.enqueue(delivery_pk, handled.retry_in)
        return handled.outcome

    def enqueue(self, delivery_pk: int, delay: float | None = None) -> None:
        if delay:
            self._task.schedule((delivery_pk,), delay=delay)
        else:
            self._task(delivery_pk)

    def dispatch(self) -> int:
        """Hand newly recorded deliveries to the job queue; returns how many. A delivery whose
        enqueue fails (queue down) is picked up by the sweep once the queue is back. During
        a burst of webhooks (connector.burst) nothing is handed: the deliveries wait in the
        store, and the dispatcher only watches the rate until the burst is over."""
        if self.gate.hold():
            self.gate.observe(self.context.store.newest_delivery_id())
            return 0
        ids = self.context.store.take_new()
        self.gate.observe(ids[-1] if ids else None)  # ids ascending: the newest last
        for pk in ids:
            self.enqueue(pk)
        return len(ids)

    def sweep(self, grace: float | None = None) -> int:
        """Re-enqueue deliveries nobody is working on (lost enqueue, killed worker); not
        during a burst, when the dispatcher holds new deliveries back on purpose."""
        if self.gate.busy:
            return 0
        grace = self.context.settings.lease_seconds if grace is None else grace
        ids = self.context.store.due_for_enqueue(grace)
        for pk in ids:
            self.enqueue(pk)
        if ids:
            log.info("sweep re-enqueued deliveries", extra=log_extra({"count": len(ids)}))
        return len(ids)

    def pending_count(self) -> int:
        """Jobs waiting in the queue; raises when the queue cannot be reached."""
        return int(self.huey.pending_count())


def report_burst(burst: bool, rate: float) -> None:
    """The gate's on_change: a burst's start and end in the log, and its count in /metrics."""
    if burst:
        BURSTS.inc()
        log.info(
            "webhook burst: routing waits until it is over",
            extra=log_extra({"webhooks_per_s": round(rate)}),
        )
    else:
        log.info("webhook burst over: routing again", extra=log_extra({}))


class BackgroundWorker:
    """The in-process job consumer of `bpsm serve` (and the body of `bpsm worker`):
    huey's consumer threads, a dispatcher thread that moves new deliveries from the store to
    the queue, and a sweep thread that recovers abandoned deliveries and runs the periodic
    work (the proactive process, retention)."""

    def __init__(self, queue: JobQueue, workers: int = 2, sweep_interval: float | None = None):
        self.queue = queue
        self.settings = queue.context.settings
        self.consumer: Any = queue.huey.create_consumer(
            workers=workers,
            worker_type="thread",
            periodic=False,
            check_worker_health=False,
            initial_delay=0.05,
            max_delay=0.5,
            backoff=1.2,
        )
        self.sweep_interval = sweep_interval or self.settings.sweep_interval
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="bpsm-sweep", daemon=True)
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="bpsm-dispatch", daemon=True
        )

    def quiet_signals(self) -> None:
        """huey's consumer installs its own SIGTERM/SIGINT handlers in start(); they only set
        flags for a run loop we do not use, so a signal would be lost. Ours stay in place."""
        self.consumer._set_signal_handlers = lambda: None

    def start(self) -> None:
        self.queue.context.index()  # build it now, not on the first ticket
        # huey installs signal handlers in start(); only the main thread may do that.
        if threading.current_thread() is not threading.main_thread():
            self.quiet_signals()
        self.consumer.start()
        self._sweeper.start()
        self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                handed = self.queue.dispatch()
                failing = False
            except Exception as exc:  # store or queue briefly unavailable: say so once
                if not failing:
                    log.warning("dispatch failed; retrying", extra=log_extra({"error": repr(exc)}))
                failing, handed = True, 0
            if not handed:
                self._stop.wait(self.settings.dispatch_interval)

    def _sweep_loop(self) -> None:
        # At start-up everything not finished is fair game: the previous process is gone.
        first = True
        next_maintenance = next_purge = 0.0
        while not self._stop.is_set():
            try:
                self.queue.sweep(grace=0.0 if first else None)
                first = False
            except Exception as exc:  # the database may be briefly unavailable
                log.warning("sweep failed", extra=log_extra({"error": repr(exc)}))
            interval = self.settings.maintenance_interval
            if interval > 0 and time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + interval
                self._maintenance()
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.settings.purge_interval
                self._purge()
            self._stop.wait(self.sweep_interval)

    def _purge(self) -> None:
        """Retention (BPSM_RETENTION): delete what is older; any number of workers may."""
        retention = self.settings.retention
        if retention <= 0:
            return
        try:
            counts = self.queue.context.store.purge(retention)
        except Exception as exc:  # the database may be briefly unavailable; next time
            log.warning("purge failed", extra=log_extra({"error": repr(exc)}))
            return
        if any(counts.values()):
            log.info("purged old data", extra=log_extra({"rows": counts, "retention_s": retention}))

    def _maintenance(self) -> None:
        """The proactive process as a periodic task: safe with any number of workers, since
        each entry and period is claimed once in the store."""
        try:
            run_maintenance(self.queue.context)
        except Exception as exc:  # a helpdesk outage must not stop the sweep
            log.warning("maintenance run failed", extra=log_extra({"error": repr(exc)}))

    def stop(self, graceful: bool = True) -> None:
        self._stop.set()
        self.queue.stopping.set()
        self.consumer.stop(graceful=graceful)
        self._sweeper.join(timeout=5)
        self._dispatcher.join(timeout=5)
