"""A job's lease while it runs: renewed by a heartbeat, checked before every helpdesk write.

A claim gives a delivery a lease (`lease_seconds`) and a token. A slow helpdesk can make one
job outlive any fixed lease, so a heartbeat thread renews it while the job runs. Should the
lease be lost all the same (the process stalled, the database was unreachable for longer
than the lease), another consumer may take the job over: from then on this job must write
nothing. `LeaseGuard.check` says so, and the HTTP transport calls it before each write through
`current_guard` (a context variable the worker sets around the job), so a host client
needs no knowledge of leases.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from connector.logs import log_extra

log = logging.getLogger("bpsm.lease")


class LeaseLost(Exception):
    """This job's lease expired or was taken over: it must not write anything more."""


# The lease counts as lost a little before the database would let another consumer take
# it: clocks of two machines and the time a renewal spends in flight differ slightly.
SAFETY = 0.9


class LeaseGuard:
    """Renews a lease every `seconds / 3` through `renew` (True: still held) until stopped.

    The lease counts as lost when a renewal says so, or when no renewal succeeded for
    `seconds` (the database may be down: another consumer may then have taken the job)."""

    def __init__(self, renew: Callable[[], bool], seconds: float, what: str = "job"):
        self._renew = renew
        self.seconds = seconds
        self.what = what
        self._valid_until = time.monotonic() + seconds * SAFETY
        self._lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="bpsm-lease", daemon=True)

    def __enter__(self) -> LeaseGuard:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds)

    @property
    def lost(self) -> bool:
        return self._lost or time.monotonic() >= self._valid_until

    def check(self) -> None:
        """Raise LeaseLost when the job may no longer write."""
        if self.lost:
            raise LeaseLost(f"{self.what}: lease lost; another consumer may have taken it over")

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            started = time.monotonic()
            try:
                held = self._renew()
            except Exception as exc:  # the database briefly away: try again next beat
                log.warning(
                    "lease renewal failed", extra=log_extra({"job": self.what, "error": repr(exc)})
                )
                continue
            if not held:
                self._lost = True
                log.warning("lease taken over", extra=log_extra({"job": self.what}))
                return
            self._valid_until = started + self.seconds * SAFETY


current_guard: ContextVar[LeaseGuard | None] = ContextVar("bpsm_lease_guard", default=None)


@contextlib.contextmanager
def guarding(guard: LeaseGuard) -> Iterator[LeaseGuard]:
    """Run the block with `guard` renewing the lease and checked before every write."""
    token = current_guard.set(guard)
    try:
        with guard:
            yield guard
    finally:
        current_guard.reset(token)


def check_current_lease() -> None:
    """Before a write: raise LeaseLost if the running job lost its lease (no job: no-op)."""
    guard = current_guard.get()
    if guard is not None:
        guard.check()
