"""End to end with Zammad: the fake Zammad fires real, signed trigger webhooks at the running
connector, whose worker routes through Zammad's REST API; assertions read the fake's state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector.notes import NOTE_MARKER
from tests.e2e import ConnectorService, wait_for, zammad_connector, zammad_with_bpsm_groups
from tests.fakes.zammad import FakeZammad

SECRET = "s3cr3t-t0k3n-of-24-bytes"
ARTICLE_TRIGGER = {"article.action": {"operator": "is", "value": "create"}}


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with zammad_with_bpsm_groups() as fake:
        yield fake


@pytest.fixture
def connector(tmp_path, zammad) -> Iterator[ConnectorService]:
    with zammad_connector(tmp_path, zammad, SECRET) as service:
        yield service


def own_notes(zammad: FakeZammad, ticket_id: int) -> list[dict]:
    return [a for a in zammad.articles(ticket_id) if NOTE_MARKER in str(a.get("body"))]


@pytest.mark.parametrize(
    "title,body,process,service",
    [
        (
            "Printer jams",
            "The printer on the 2nd floor keeps jamming and prints blank pages.",
            "reactive",
            "printing",
        ),
        (
            "Mac?",
            "Does IT support Macs? I would like to use my own MacBook with macOS at work.",
            "relation",
            "mac-computers",
        ),
        (
            "Integration",
            "We would like a new integration between Visma and the archive for the "
            "whole department, the budget is approved.",
            "change",
            "erp",
        ),
    ],
)
def test_ticket_is_moved_tagged_and_annotated(zammad, connector, title, body, process, service):
    ticket_id = zammad.create_ticket_as_customer(title, body)
    routing = connector.wait_routed("zammad", ticket_id)
    assert routing["outcome"] == "applied"
    assert (routing["process"], routing["service"]) == (process, service)
    ticket = zammad.ticket(ticket_id)
    assert ticket["group"] == f"BPSM {process.capitalize()}"
    assert {"bpsm", process, service} <= set(zammad.tags(ticket_id))
    notes = own_notes(zammad, ticket_id)
    assert len(notes) == 1
    assert notes[0]["internal"] is True and notes[0]["type"] == "note"
    if process == "relation":
        assert "Why:" in notes[0]["body"] and "Alternative:" in notes[0]["body"]
    if process == "reactive":
        assert "SLA: first response by" in notes[0]["body"]


def test_norwegian_ticket_gets_a_norwegian_note(zammad, connector):
    ticket_id = zammad.create_ticket_as_customer(
        "Skriveren virker ikke",
        "Hei! Skriveren i andre etasje skriver ikke ut, papirstopp hele tiden. Mvh Kari",
    )
    routing = connector.wait_routed("zammad", ticket_id)
    assert routing["service"] == "printing" and routing["language"] == "nb"
    note = own_notes(zammad, ticket_id)[0]["body"]
    assert "Rutet til reaktiv håndtering" in note and "Tjeneste:" in note


def test_own_note_coming_back_is_ignored_no_loop(zammad, connector):
    # A careless admin also added an "article created" trigger without excluding the
    # connector: Zammad then fires a webhook for the connector's own note.
    zammad.configure_webhook(
        connector.hook_url("zammad"),
        signature_token=SECRET,
        name="articles",
        trigger_name="connector: article created",
        condition=ARTICLE_TRIGGER,
    )
    ticket_id = zammad.create_ticket_as_customer(
        "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
    )
    connector.wait_routed("zammad", ticket_id)
    # create fires both triggers; the note fires the article trigger once more.
    wait_for(
        lambda: len([d for d in zammad.deliveries if d.status]) >= 3,
        message="the webhook for the connector's own note",
    )
    wait_for(connector.idle, message="the connector to go idle")
    answers = [d.status for d in zammad.deliveries]
    assert answers.count(202) == 2 and 200 in answers, answers
    assert len(own_notes(zammad, ticket_id)) == 1
    put_calls = [c for c in zammad.api_calls if c.method == "PUT"]
    assert len(put_calls) == 1


def test_redelivered_webhook_is_applied_once(zammad, connector):
    import requests

    ticket_id = zammad.create_ticket_as_customer(
        "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
    )
    connector.wait_routed("zammad", ticket_id)
    first = zammad.wait_for_deliveries(1)[0]
    again = requests.post(first.url, data=first.body, headers=first.headers, timeout=5)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(own_notes(zammad, ticket_id)) == 1


def test_zammad_down_then_back_applies_every_ticket_once(zammad, connector):
    zammad.fail_next(4, status=503)
    zammad.lose_response_next(1)  # the first write is saved but its answer is lost
    ids = [
        zammad.create_ticket_as_customer(
            f"Printer {n}", "The printer on the 2nd floor keeps jamming and prints blank pages."
        )
        for n in range(3)
    ]
    for ticket_id in ids:
        routing = connector.wait_routed("zammad", ticket_id, timeout=30)
        assert routing["outcome"] == "applied"
        assert zammad.ticket(ticket_id)["group"] == "BPSM Reactive"
        assert len(own_notes(zammad, ticket_id)) == 1


def test_a_note_whose_answer_was_lost_is_not_posted_twice(zammad, tmp_path):
    # Shadow mode moves nothing, so the note is the first write; Zammad saves it and the
    # answer is lost. Resending it within the call would leave two notes.
    env = {
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_ZAMMAD_WEBHOOK_SECRET": SECRET,
        "BPSM_MODE": "shadow",
    }
    with ConnectorService(tmp_path, env) as service:
        zammad.configure_webhook(service.hook_url("zammad"), signature_token=SECRET)
        zammad.lose_response_next(1)
        ticket_id = zammad.create_ticket_as_customer(
            "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
        )
        routing = service.wait_routed("zammad", ticket_id, timeout=30)
        assert routing["outcome"] == "shadow"
        assert len(own_notes(zammad, ticket_id)) == 1
        assert "bpsm-shadow" in zammad.tags(ticket_id)


def test_connection_refused_for_a_while_loses_nothing(zammad, tmp_path):
    env = {
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_ZAMMAD_WEBHOOK_SECRET": SECRET,
    }
    with ConnectorService(tmp_path, env) as service:
        zammad.configure_webhook(service.hook_url("zammad"), signature_token=SECRET)
        ticket_id = zammad.create_ticket_as_customer(
            "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
        )
        zammad.wait_for_deliveries(1)
        zammad.set_down(True)
        wait_for(
            lambda: (
                (service.runtime.store.delivery(1) or object()).__getattribute__("attempts") >= 2
            ),
            message="a failed attempt while Zammad is down",
        )
        assert service.routing("zammad", ticket_id)["outcome"] == "applying"
        zammad.set_down(False)
        routing = service.wait_routed("zammad", ticket_id, timeout=30)
        assert routing["outcome"] == "applied"
        assert len(own_notes(zammad, ticket_id)) == 1


def test_ticket_moved_by_an_agent_first_is_not_moved_back(zammad, tmp_path):
    env = {
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_ZAMMAD_WEBHOOK_SECRET": SECRET,
    }
    service = ConnectorService(tmp_path, env)
    # Only the web layer runs: the event is queued but not yet processed.
    service._thread.start()
    try:
        zammad.configure_webhook(service.hook_url("zammad"), signature_token=SECRET)
        ticket_id = zammad.create_ticket_as_customer(
            "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
        )
        zammad.wait_for_deliveries(1)
        zammad.move_ticket_as_agent(ticket_id, "BPSM Change")
        service.background.start()
        routing = service.wait_routed("zammad", ticket_id)
        assert routing["outcome"] == "override"
        assert zammad.ticket(ticket_id)["group"] == "BPSM Change"
        assert "bpsm-override" in zammad.tags(ticket_id)
    finally:
        service.stop()


def test_deleted_ticket_goes_to_dead_letters_not_a_retry_loop(zammad, connector):
    ticket_id = zammad.create_ticket_as_customer(
        "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
    )
    # Make the ticket disappear before the worker reads it.
    with zammad._lock:
        zammad.db.tickets.pop(ticket_id, None)
    routing = connector.wait_routed("zammad", ticket_id)
    assert routing["outcome"] == "failed"
    letters = connector.runtime.store.list_dead_letters()
    assert len(letters) == 1 and "404" in letters[0]["reason"]
