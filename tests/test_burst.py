"""Ingest first (connector/burst.py): during a burst of webhooks the consumers wait and the
dispatcher holds the deliveries in the store; afterwards every one is decided."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import REGISTRY

from connector.burst import WINDOW, IngestGate
from connector.config import load_settings
from connector.events import TicketEvent
from connector.hosts import settings_models
from connector.jobqueue import report_burst
from connector.runtime import Runtime
from tests.e2e import ROOT, example_index, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_above_the_threshold_closes_the_gate_and_half_of_it_opens_it():
    clock = Clock()
    changes: list[tuple[bool, float]] = []
    gate = IngestGate(100.0, 5.0, clock, on_change=lambda busy, rate: changes.append((busy, rate)))
    newest = 0
    for _ in range(10):  # 80 webhooks a second: no burst
        clock.now += 0.1
        newest += 8
        gate.observe(newest)
    assert not gate.busy
    for _ in range(10):  # 150 a second
        clock.now += 0.1
        newest += 15
        gate.observe(newest)
    assert gate.busy
    assert changes == [(True, pytest.approx(changes[0][1]))] and changes[0][1] >= 100
    for _ in range(12):  # 60 a second: above half the threshold, the burst goes on
        clock.now += 0.1
        newest += 6
        gate.observe(newest)
    assert gate.busy
    for _ in range(12):  # 30 a second: over
        clock.now += 0.1
        newest += 3
        gate.observe(newest)
    assert not gate.busy
    assert [busy for busy, _ in changes] == [True, False]


def test_nothing_new_for_a_window_ends_a_burst():
    clock = Clock()
    gate = IngestGate(100.0, 5.0, clock)
    gate.observe(0)
    clock.now += 0.5
    gate.observe(500)
    assert gate.busy
    while clock.now < 100.5 + WINDOW + 0.1:
        clock.now += 0.05
        gate.observe(None)  # the dispatcher found nothing new
    assert not gate.busy


def test_a_first_look_at_a_backlog_is_no_burst():
    """At start-up the first ids seen may be thousands apart (deliveries stored while no
    consumer ran): a rate needs a quarter of a second of watching."""
    clock = Clock()
    gate = IngestGate(100.0, 5.0, clock)
    gate.observe(5_000)
    clock.now += 0.05
    assert gate.observe(5_001) == 0.0
    assert not gate.busy


def test_a_rate_of_zero_turns_the_gate_off():
    clock = Clock()
    gate = IngestGate(0.0, 5.0, clock)
    for n in range(20):
        clock.now += 0.05
        gate.observe(n * 1_000)
    assert not gate.busy
    assert gate.wait() == 0.0


def test_a_waiting_job_goes_on_when_the_burst_ends_or_its_longest_wait_is_over():
    gate = IngestGate(100.0, 0.3)
    gate.observe(0)
    time.sleep(0.3)
    gate.observe(1_000)
    assert gate.busy
    started = time.monotonic()
    assert gate.wait() == pytest.approx(0.3, abs=0.15)  # the burst outlasts it: goes on
    assert time.monotonic() - started < 1.0

    gate = IngestGate(100.0, 30.0)
    gate.observe(0)
    time.sleep(0.3)
    gate.observe(1_000)
    waited: list[float] = []
    job = threading.Thread(target=lambda: waited.append(gate.wait()))
    job.start()
    time.sleep(0.2)
    assert job.is_alive()
    deadline = time.monotonic() + 3 * WINDOW
    while gate.busy and time.monotonic() < deadline:  # nothing new arrives
        gate.observe(None)
        time.sleep(0.05)
    job.join(timeout=2.0)
    assert not job.is_alive() and 0.2 < waited[0] < 3 * WINDOW

    gate = IngestGate(100.0, 30.0)
    gate.observe(0)
    time.sleep(0.3)
    gate.observe(1_000)
    stop = threading.Event()
    job = threading.Thread(target=lambda: waited.append(gate.wait(stop)))
    job.start()
    stop.set()  # the consumer stops: no job waits out a burst
    job.join(timeout=1.0)
    assert not job.is_alive()


def _runtime(tmp_path, **env: str) -> Runtime:
    settings = load_settings(
        {"BPSM_DATA_DIR": str(tmp_path), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml"), **env},
        hosts=settings_models(),
    )
    return Runtime(settings, example_index())


def _record(rt: Runtime, first: int, count: int) -> None:
    for n in range(first, first + count):
        event = TicketEvent(
            host="demo", delivery_id=f"d{n}", ticket_id=str(n), subject="Printer", body="jam"
        )
        assert rt.store.record_delivery(event) is not None


def test_the_dispatcher_holds_deliveries_in_the_store_during_a_burst(tmp_path):
    rt = _runtime(tmp_path, BPSM_BURST_RATE="100")
    clock = Clock()
    rt.queue.gate = IngestGate(100.0, 5.0, clock)
    _record(rt, 0, 10)
    assert rt.queue.dispatch() == 10  # a trickle: handed at once
    clock.now += 0.5
    _record(rt, 10, 100)  # 200 a second
    assert rt.queue.dispatch() == 100
    assert rt.queue.gate.busy
    _record(rt, 110, 50)
    clock.now += 0.1
    assert rt.queue.dispatch() == 0  # held: they wait in the store, not in the queue
    assert rt.queue.pending_count() == 110
    assert rt.store.count_deliveries("queued") == 160
    handed = 0
    while handed == 0 and clock.now < 105:  # nothing more arrives
        clock.now += 0.05
        handed = rt.queue.dispatch()
    assert handed == 50 and not rt.queue.gate.busy
    assert clock.now - 100.6 < 2 * WINDOW
    assert rt.queue.pending_count() == 160
    rt.close()


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_job_waits_while_the_burst_lasts_then_decides_its_delivery(tmp_path):
    rt = _runtime(tmp_path)
    rt.queue.gate = IngestGate(100.0, 30.0, on_change=report_burst)
    bursts, waited = _counter("bpsm_bursts_total"), _counter("bpsm_burst_wait_seconds_total")
    _record(rt, 0, 1)
    rt.queue.gate.observe(0)
    time.sleep(0.3)
    rt.queue.gate.observe(1_000)
    assert _counter("bpsm_bursts_total") == bursts + 1
    outcome: list[str] = []
    job = threading.Thread(target=lambda: outcome.append(rt.queue.run(1)))
    job.start()
    time.sleep(0.3)
    assert rt.store.delivery(1).status == "queued"  # not taken while the burst lasts
    wait_for(lambda: (rt.queue.gate.observe(None), not rt.queue.gate.busy)[1], timeout=5.0)
    job.join(timeout=10.0)
    assert outcome and rt.store.delivery(1).status == "done"
    assert _counter("bpsm_burst_wait_seconds_total") - waited >= 0.3  # counted in /metrics
    rt.close()


def test_the_burst_settings_come_from_the_environment(tmp_path):
    rt = _runtime(tmp_path, BPSM_BURST_RATE="0", BPSM_BURST_YIELD="2.5")
    assert rt.queue.gate.rate == 0.0 and rt.queue.gate.longest == 2.5
    rt.close()
    rt = _runtime(tmp_path)
    assert rt.queue.gate.rate == 200.0 and rt.queue.gate.longest == 5.0
    rt.close()


def test_an_overload_that_never_ends_still_lets_a_batch_through_now_and_then(tmp_path):
    rt = _runtime(tmp_path)
    clock = Clock()
    rt.queue.gate = IngestGate(100.0, 5.0, clock)
    newest = 0
    handed = []
    for step in range(400):  # 20 s at 300 webhooks a second
        clock.now += 0.05
        _record(rt, newest, 15)
        newest += 15
        handed.append(rt.queue.dispatch())
        assert step < 20 or rt.queue.gate.busy
    let_through = [n for n in handed[20:] if n]
    assert 3 <= len(let_through) <= 4  # one batch every 5 s
    assert rt.queue.sweep(grace=0.0) == 0  # nor does the sweep hand over what is held
    rt.close()
