"""Job retries back off with jitter: many tickets failing in the same outage come back spread
out, not in lockstep, and each within bounds (half to all of the exponential delay)."""

from __future__ import annotations

import pytest

from connector import worker
from connector.config import load_settings
from connector.events import TicketEvent
from connector.hosts import settings_models
from connector.hosts.base import HostError
from connector.runtime import Runtime
from connector.worker import backoff, process_delivery
from tests.e2e import ROOT, example_index


@pytest.mark.parametrize("attempt", [1, 2, 5, 8])
def test_delays_for_one_attempt_differ_across_jobs_and_stay_within_bounds(attempt):
    plain = min(600.0, 5.0 * 2 ** (attempt - 1))
    delays = [backoff(attempt, 5.0, 600.0) for _ in range(200)]
    assert all(plain / 2 <= delay <= plain for delay in delays)
    assert len({round(delay, 6) for delay in delays}) > 190  # not in lockstep
    assert max(delays) - min(delays) > plain / 4  # spread over the range, not clustered


def test_a_retry_after_is_a_floor_and_the_cap_holds():
    assert all(backoff(1, 5.0, 600.0, retry_after=30.0) == 30.0 for _ in range(50))
    assert all(300.0 <= backoff(20, 5.0, 600.0) <= 600.0 for _ in range(50))


def test_the_worker_plans_jittered_retries(tmp_path, monkeypatch):
    settings = load_settings(
        {"BPSM_DATA_DIR": str(tmp_path), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")},
        hosts=settings_models(),
    )
    rt = Runtime(settings, example_index())

    def helpdesk_down(_context: object, _delivery: object) -> str:
        raise HostError("demo: cannot connect (ConnectionRefusedError)")

    monkeypatch.setattr(worker, "route_delivery", helpdesk_down)
    planned: list[float | None] = []
    for n in range(40):
        pk = rt.store.record_delivery(
            TicketEvent(host="demo", delivery_id=f"d{n}", ticket_id=str(n), body="printer")
        )
        handled = process_delivery(rt.context, pk)
        assert handled.outcome == "retry"
        planned.append(handled.retry_in)
    base = settings.retry_base_delay
    assert all(delay is not None and base / 2 <= delay <= base for delay in planned)
    assert len(set(planned)) == 40
    # The job queue schedules the retry the worker asked for.
    pk = rt.store.record_delivery(TicketEvent(host="demo", delivery_id="q", ticket_id="q"))
    assert rt.queue.run(pk) == "retry"
    [job] = rt.queue.huey.pending()
    assert job.args == (pk,) and job.eta is not None
    rt.close()
