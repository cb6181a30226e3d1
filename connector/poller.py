"""Polling for helpdesks without webhooks (Request Tracker, GLPI ≤ 10).

Each poll asks the host for tickets changed since the persisted high-water mark (the host
module subtracts an overlap, so clock skew and crashes lose nothing), records each as a
delivery (the delivery id names ticket and change time, so re-seen tickets are duplicates
and dropped), enqueues them, and only then advances the mark. One poller per host is active
at a time across all workers: a lease row in the store.
"""

from __future__ import annotations

import logging
import threading

from connector.hosts.base import HostError
from connector.logs import log_extra
from connector.runtime import Runtime

log = logging.getLogger("bpsm.poller")


def poll_once(runtime: Runtime, host: str) -> tuple[int, int]:
    """One poll of one host: (events seen, new deliveries). Raises HostError on failure."""
    client = runtime.client(host)
    events, mark = client.poll(runtime.store.high_water(host))
    new = 0
    for event in events:
        if runtime.store.record_delivery(event) is not None:
            new += 1  # the dispatcher hands it to the job queue
    if mark is not None:
        runtime.store.set_high_water(host, mark)
    return len(events), new


class PollerThreads:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.hosts = [
            name
            for name in sorted(runtime.settings.hosts)
            if runtime.settings.hosts[name].configured and runtime.host(name).polling
        ]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(h,), daemon=True, name=f"bpsm-poll-{h}")
            for h in self.hosts
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _loop(self, host: str) -> None:
        interval = self.runtime.settings.host(host).poll_interval or 30.0
        while not self._stop.is_set():
            try:
                if self.runtime.store.acquire_poller(
                    host, self.runtime.worker_id, lease=interval * 3
                ):
                    seen, new = poll_once(self.runtime, host)
                    if new:
                        log.info(
                            "polled", extra=log_extra({"host": host, "seen": seen, "new": new})
                        )
            except HostError as exc:
                log.warning(
                    "poll failed; retrying next interval",
                    extra=log_extra({"host": host, "error": str(exc)}),
                )
            except Exception as exc:  # keep polling whatever one poll did
                log.error("poll crashed", extra=log_extra({"host": host, "error": repr(exc)}))
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
