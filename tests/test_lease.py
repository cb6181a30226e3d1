"""Job leases: renewed while a job runs, fencing every update, one job per ticket at a time.

The race the issue describes is staged for real: a slow helpdesk (each API call 1.5 s)
makes one job outlive its lease, and a second consumer keeps trying to take the job over,
as the sweep of another process would. The fake Zammad's state is the judge."""

from __future__ import annotations

import threading
import time

import pytest
import responses

from connector.config import load_settings
from connector.events import TicketEvent
from connector.hosts import settings_models
from connector.hosts.base import HostError
from connector.hosts.http import HttpTransport
from connector.lease import LeaseGuard, LeaseLost, guarding
from connector.runtime import Runtime
from connector.store import Store, TicketBusy
from connector.worker import Handled, process_delivery
from tests.e2e import ROOT, example_index, wait_for
from tests.test_durability import (  # noqa: F401 - zammad is a fixture
    assert_each_applied_once,
    connector_env,
    queue_webhooks,
    zammad,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture(params=["sqlite", "sqlite-without-returning", "postgresql"])
def any_store(tmp_path, request):
    url = (
        request.getfixturevalue("pg_url")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'bpsm.db'}"
    )
    store = Store(url)
    if request.param == "sqlite-without-returning":  # as with SQLite < 3.35 (RHEL 8)
        store.engine.dialect.update_returning = False
    yield store
    store.dispose()


def _event(delivery: str, ticket: str = "7") -> TicketEvent:
    return TicketEvent(host="demo", delivery_id=delivery, ticket_id=ticket, body="printer")


# ----- the store: tokens and per-ticket claims ------------------------------------------------


def test_updates_of_a_consumer_that_lost_its_lease_change_nothing(any_store):
    pk = any_store.record_delivery(_event("d1"))
    first = any_store.claim(pk, 10.0)
    assert first is not None
    # Its lease ran out; another consumer takes the job over.
    second = any_store.claim(pk, 10.0, now=time.time() + 11.0)
    assert second is not None and second.lease_token != first.lease_token
    assert any_store.renew(pk, first.lease_token, 10.0) is False
    assert any_store.finish(pk, "applied", first.lease_token) is False
    assert any_store.postpone(pk, first.lease_token, 5.0, "timeout") is False
    assert any_store.dead_letter(first, "gave up") is False
    row = any_store.delivery(pk)
    assert (row.status, row.lease_token, row.outcome) == ("processing", second.lease_token, None)
    assert any_store.list_dead_letters() == []
    # The holder's own updates go through.
    assert any_store.renew(pk, second.lease_token, 10.0) is True
    assert any_store.finish(pk, "applied", second.lease_token) is True
    assert any_store.delivery(pk).status == "done"
    assert any_store.finish(pk, "applied", second.lease_token) is False  # done already


def test_a_live_lease_keeps_the_job_from_being_taken_over(any_store):
    pk = any_store.record_delivery(_event("d1"))
    # Leases of 1.5 s, renewed every 0.5 s: a pause of the test process itself (a full
    # garbage collection late in the suite) must not outlast a lease between the renewal
    # and the claim that follows it (with 0.5 s leases one did, once, in CI).
    holder = any_store.claim(pk, 1.5)
    assert holder is not None
    for _ in range(4):  # renewed (as the heartbeat does) past the first lease's end
        time.sleep(0.5)
        assert any_store.renew(pk, holder.lease_token, 1.5)
        assert any_store.claim(pk, 1.5) is None
    time.sleep(1.6)  # not renewed: the holder is presumed dead, the job is free again
    assert any_store.claim(pk, 1.5) is not None


def test_one_delivery_of_a_ticket_is_claimed_at_a_time(any_store):
    first = any_store.record_delivery(_event("created", ticket="7"))
    twin = any_store.record_delivery(_event("reply", ticket="7"))
    other = any_store.record_delivery(_event("other", ticket="8"))
    held = any_store.claim(first, 10.0)
    assert held is not None
    with pytest.raises(TicketBusy):
        any_store.claim(twin, 10.0)
    assert any_store.delivery(twin).status == "queued"  # untouched, attempts not spent
    assert any_store.delivery(twin).attempts == 0
    assert any_store.claim(other, 10.0) is not None  # other tickets are not held up
    assert any_store.finish(first, "applied", held.lease_token)
    assert any_store.claim(twin, 10.0) is not None


def test_a_dead_holder_does_not_block_its_ticket(any_store):
    first = any_store.record_delivery(_event("created"))
    twin = any_store.record_delivery(_event("reply"))
    assert any_store.claim(first, 0.2) is not None
    time.sleep(0.3)  # its holder never renewed the lease: presumed dead
    assert any_store.claim(twin, 10.0) is not None


def test_claims_of_one_tickets_deliveries_at_the_same_moment_let_one_through(any_store):
    pks = [any_store.record_delivery(_event(f"d{n}")) for n in range(8)]
    other = Store(any_store.url)  # as a second consumer process would have
    start = threading.Barrier(len(pks))
    won: list[int] = []
    busy: list[int] = []

    def claim(store: Store, pk: int) -> None:
        start.wait()
        try:
            if store.claim(pk, 30.0) is not None:
                won.append(pk)
        except TicketBusy:
            busy.append(pk)

    threads = [
        threading.Thread(target=claim, args=(any_store if n % 2 else other, pk))
        for n, pk in enumerate(pks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.dispose()
    assert len(won) == 1, (won, busy)
    assert sorted(won + busy) == sorted(pks)


# ----- the heartbeat and the write check --------------------------------------------------


def test_the_heartbeat_renews_until_a_renewal_fails():
    answers = iter([True, True, False])
    calls: list[float] = []

    def renew() -> bool:
        calls.append(time.monotonic())
        return next(answers)

    with LeaseGuard(renew, 0.3) as guard:
        time.sleep(0.25)  # one renewal so far, well before the 0.3 s lease would end
        guard.check()
        time.sleep(0.5)  # the third renewal said the lease is gone
        with pytest.raises(LeaseLost):
            guard.check()
    assert len(calls) == 3


def test_a_lease_not_renewed_in_time_counts_as_lost():
    def renew() -> bool:
        raise OSError("database unreachable")

    with LeaseGuard(renew, 0.3) as guard:
        guard.check()
        time.sleep(0.4)
        with pytest.raises(LeaseLost):
            guard.check()


@responses.activate
def test_no_helpdesk_write_goes_out_once_the_lease_is_lost():
    responses.add("GET", "http://helpdesk.example/api/ticket/1", json={"id": 1})
    responses.add("POST", "http://helpdesk.example/api/note", json={}, status=201)
    http = HttpTransport("http://helpdesk.example", "demo")
    held = [True]
    with guarding(LeaseGuard(lambda: held[0], 0.3)) as guard:
        http.request("POST", "/api/note")
        held[0] = False
        time.sleep(0.35)
        assert guard.lost
        assert http.request("GET", "/api/ticket/1").json() == {"id": 1}  # reading is fine
        with pytest.raises(LeaseLost):
            http.request("POST", "/api/note")
    assert [c.request.method for c in responses.calls] == ["POST", "GET"]


# ----- two consumers, one slow job, real helpdesk state --------------------------------------


def test_two_consumers_racing_one_slow_job_apply_it_once(zammad, tmp_path, backend, request):  # noqa: F811
    extra = {"BPSM_LEASE_SECONDS": "1"}
    if backend == "postgresql":
        extra["BPSM_DATABASE_URL"] = request.getfixturevalue("pg_url")
    env = connector_env(zammad, tmp_path, **extra)
    ids = queue_webhooks(zammad, env, 1)
    settings = load_settings(env, hosts=settings_models())
    first, second = Runtime(settings, example_index()), Runtime(settings, example_index())
    # Each API call takes 1.5 s: the job (five calls or more) outlives its 1 s lease many
    # times over, and a takeover after 1 s would read "no note yet" before the first
    # consumer's note lands.
    zammad.set_latency(1.5)
    outcome: list[str] = []
    job = threading.Thread(
        target=lambda: outcome.append(process_delivery(first.context, 1).outcome)
    )
    job.start()
    wait_for(lambda: first.store.delivery(1).status == "processing", message="the first claim")
    tries: list[str] = []
    while job.is_alive():  # the other consumer tries to take the job over all along
        tries.append(process_delivery(second.context, 1).outcome)
        time.sleep(0.05)
    job.join()
    zammad.set_latency(0.0)
    notes = [a for a in zammad.articles(ids[0]) if "[bpsm-connector]" in str(a["body"])]
    assert len(notes) == 1
    assert outcome == ["applied"]
    assert tries and set(tries) == {"not-claimed"}, tries
    assert_each_applied_once(zammad, first.store, ids)
    delivery = first.store.delivery(1)
    assert (delivery.status, delivery.attempts, delivery.outcome) == ("done", 1, "applied")
    first.close()
    second.close()


def test_a_consumer_that_lost_its_lease_mid_job_writes_nothing_more(zammad, tmp_path):  # noqa: F811
    env = connector_env(zammad, tmp_path, BPSM_LEASE_SECONDS="1")
    ids = queue_webhooks(zammad, env, 1)
    rt = Runtime(load_settings(env, hosts=settings_models()), example_index())
    before = len(zammad.api_calls)
    original = rt.store.renew

    def stalled_then_taken_over(pk: int, token: str | None, seconds: float) -> bool:
        # As if this process had stalled past its lease and another consumer took over.
        rt.store.claim(pk, 60.0, now=time.time() + 5.0)
        return original(pk, token, seconds)

    rt.store.renew = stalled_then_taken_over  # type: ignore[method-assign]
    zammad.set_latency(0.6)  # two reads outlast the first renewal (at 1/3 of the lease)
    assert process_delivery(rt.context, 1).outcome == "lease-lost"
    zammad.set_latency(0.0)
    writes = [c for c in zammad.api_calls[before:] if c.method != "GET"]
    assert writes == []
    assert not [a for a in zammad.articles(ids[0]) if "[bpsm-connector]" in str(a["body"])]
    assert rt.store.delivery(1).status == "processing"  # the new holder's, untouched
    rt.close()


def test_a_delivery_whose_ticket_is_busy_is_tried_again_soon(tmp_path):
    settings = load_settings(
        {"BPSM_DATA_DIR": str(tmp_path), "BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")},
        hosts=settings_models(),
    )
    rt = Runtime(settings, example_index())
    first = rt.store.record_delivery(_event("created"))
    twin = rt.store.record_delivery(_event("reply"))
    assert rt.store.claim(first, 60.0) is not None
    assert process_delivery(rt.context, twin) == Handled("ticket-busy", retry_in=2.0)
    assert rt.store.delivery(twin).attempts == 0
    # The job queue plans the next try the worker asked for.
    assert rt.queue.huey.pending() == []
    assert rt.queue.run(twin) == "ticket-busy"
    [job] = rt.queue.huey.pending()
    assert job.args == (twin,) and job.eta is not None
    rt.close()


def test_http_errors_still_surface_as_host_errors_under_a_lease():
    with responses.RequestsMock() as rsps, guarding(LeaseGuard(lambda: True, 5.0)):
        rsps.add("POST", "http://helpdesk.example/x", status=504)
        with pytest.raises(HostError):
            HttpTransport("http://helpdesk.example", "demo").request("POST", "/x")
        assert len(rsps.calls) == 1  # a POST goes out once
