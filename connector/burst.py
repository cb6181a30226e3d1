"""Ingest first: while webhooks arrive in a burst, the job consumers of the machine wait.

A webhook is answered after one durable write, and deciding it costs several times that
(classification, the helpdesk's API, the audit rows). On a machine where the web workers
and the consumers share the cores, a burst of webhooks (a bulk import, a mass update in the
helpdesk) is acknowledged faster when the consumers step aside: the helpdesk's webhook
sender stops waiting and retrying, and the deliveries, stored already, are decided when the
burst is over. Routing goes on, slowly, under an overload that never ends (see `hold`).

The rate is read from the deliveries' ids, which the store hands out in the order webhooks
arrive: the dispatcher sees the newest id it takes, and the ids that appeared within the last
second are the webhooks of that second, whichever process took them. While a burst lasts,
the dispatcher holds new deliveries in the store (`hold`), letting one batch through every
`longest` seconds, and the sweep waits too; a job already queued waits (`wait`) at most
`longest` seconds. Pure: the caller gives the clock and the ids.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW = 1.0  # seconds of arrivals the rate is measured over
MIN_SPAN = 0.25  # a rate needs at least this much of the window (a start is no burst)
STEP = 0.05  # how often a waiting job looks again
# A burst ends when the rate falls below this share of the rate that began it: a rate
# near the threshold does not flap between the two.
ENDS_AT = 0.5


class IngestGate:
    """`observe(newest_id)` from the dispatcher; `wait()` before each job. A `rate` of 0
    turns the gate off."""

    def __init__(
        self,
        rate: float,
        longest: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool, float], None] | None = None,
    ):
        self.rate = rate
        self.longest = longest
        self._clock = clock
        self._on_change = on_change
        self._samples: deque[tuple[float, int]] = deque()
        self._newest = 0
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._last_let_through = 0.0

    @property
    def busy(self) -> bool:
        return not self._open.is_set()

    def observe(self, newest_id: int | None = None) -> float:
        """Note the newest delivery id seen now (None: nothing new since the last call);
        returns the arrival rate over the last WINDOW seconds."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            if newest_id is not None and newest_id > self._newest:
                self._newest = newest_id
            samples = self._samples
            samples.append((now, self._newest))
            while len(samples) > 1 and samples[1][0] <= now - WINDOW:
                samples.popleft()
            first_time, first_id = samples[0]
            span = now - first_time
            rate = (self._newest - first_id) / span if span >= MIN_SPAN else 0.0
            was_open = self._open.is_set()
            burst = rate >= (self.rate if was_open else self.rate * ENDS_AT)
            changed = burst == was_open
            if burst:
                if was_open:
                    self._last_let_through = now  # the burst's first batch went already
                self._open.clear()
            else:
                self._open.set()
        if changed and self._on_change is not None:
            self._on_change(burst, rate)
        return rate

    def hold(self) -> bool:
        """Whether new deliveries should stay in the store now: while a burst lasts, except
        once every `longest` seconds (then one batch goes through, so that routing never
        stops for good)."""
        if self._open.is_set():
            return False
        now = self._clock()
        if now - self._last_let_through >= self.longest:
            self._last_let_through = now
            return False
        return True

    def wait(self, stop: threading.Event | None = None) -> float:
        """Before a job: wait while a burst lasts, at most `longest` seconds (or until
        `stop` is set); returns the seconds waited."""
        if self._open.is_set():
            return 0.0
        start = self._clock()
        deadline = start + self.longest
        while not self._open.wait(STEP):
            if (stop is not None and stop.is_set()) or self._clock() >= deadline:
                break
        return self._clock() - start
