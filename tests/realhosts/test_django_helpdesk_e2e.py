"""End to end with a REAL django-helpdesk 2.6: tickets created through its API fire its own
webhooks at the running connector (URL with token), whose worker routes them back through
the helpdesk's REST API; assertions read the helpdesk's state through that API.

One helpdesk and one connector serve the module (starting a helpdesk takes ~7 s); the
polling test runs its own pair, since there the helpdesk must not reach the connector.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from connector.events import NewTicket, RoutingDecision, TicketEvent
from connector.hosts.django_helpdesk.client import DjangoHelpdeskClient
from connector.hosts.http import send_test_event
from connector.jobqueue import BackgroundWorker
from connector.logs import record_fields
from connector.mapping import RelationSettings
from connector.notes import NOTE_MARKER
from connector.replies import relation_reply
from connector.store import deliveries
from tests.e2e import ROOT, ConnectorService, wait_for
from tests.realhosts import django_helpdesk_server
from tests.realhosts.django_helpdesk_server import (
    CONNECTOR_USER,
    DjangoHelpdeskFactory,
    DjangoHelpdeskServer,
)

HOST = "django-helpdesk"
SECRET = "dh-e2e-webhook-secret"
MAPPING = ROOT / "mappings" / "django-helpdesk.yaml"
CONNECTOR_ID = 2  # the harness's staff account `bpsm` (admin is 1)
MAC_NB = "Hei! Kan jeg bruke min egen MacBook med macOS på jobben i stedet for Windows-PC? Mvh Kari"


def write_mapping(path: Path, queue_ids: dict[str, int]) -> Path:
    """The shipped mapping with `bpsm_queues --json`'s output pasted in, as an admin does."""
    data = yaml.safe_load(MAPPING.read_text())
    data["options"]["queue_ids"] = queue_ids
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def create_queues(hd: DjangoHelpdeskServer) -> dict[str, int]:
    data = yaml.safe_load(MAPPING.read_text())
    return hd.queues(data["options"]["queue_titles"])


def connector_env(hd_url: str, mapping: Path, **extra: str) -> dict[str, str]:
    return {
        "BPSM_DJANGO_HELPDESK_URL": hd_url,
        "BPSM_DJANGO_HELPDESK_USER": CONNECTOR_USER[0],
        "BPSM_DJANGO_HELPDESK_PASSWORD": CONNECTOR_USER[1],
        "BPSM_DJANGO_HELPDESK_MAPPING": str(mapping),
        **extra,
    }


@dataclass
class Stack:
    hd: DjangoHelpdeskServer
    connector: ConnectorService
    ids: dict[str, int]

    def replies(self, ticket_id: int) -> list[dict[str, Any]]:
        """The connector's follow-ups other than its routing note."""
        return [
            f
            for f in self.hd.followups(ticket_id)
            if f["user"] == CONNECTOR_ID and NOTE_MARKER not in f["comment"]
        ]

    def notes(self, ticket_id: int) -> list[dict[str, Any]]:
        """The connector's follow-ups on the ticket, as the helpdesk lists them."""
        return [f for f in self.hd.followups(ticket_id) if NOTE_MARKER in f["comment"]]

    def deliveries(self, ticket_id: int) -> list[str]:
        query = sa.select(deliveries.c.delivery_id).where(
            deliveries.c.host == HOST, deliveries.c.ticket_id == str(ticket_id)
        )
        with self.connector.runtime.store.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def paused(self) -> _Paused:
        return _Paused(self.connector)


class _Paused:
    """Stops the connector's worker (the web layer keeps answering) and starts a new one on
    exit: events queue up meanwhile, as when the worker lags behind the helpdesk."""

    def __init__(self, service: ConnectorService):
        self.service = service

    def __enter__(self) -> None:
        self.service.background.stop(graceful=True)

    def __exit__(self, *exc: object) -> None:
        worker = BackgroundWorker(self.service.runtime.queue, workers=2, sweep_interval=1.0)
        self.service.background = worker
        worker.start()


@pytest.fixture(scope="module")
def stack(django_helpdesk_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Each side must know the other's URL before it starts: the connector binds first (its
    # hook URL goes into the helpdesk's environment), so the helpdesk's port is chosen now.
    hd_port = django_helpdesk_server.free_loopback_port()
    tmp = tmp_path_factory.mktemp("dh-e2e")
    mapping = tmp / "django-helpdesk.yaml"  # written once the queue ids are known
    env = connector_env(
        f"http://127.0.0.1:{hd_port}", mapping, BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET=SECRET
    )
    # No pollers (webhook mode): nothing reads the mapping before service.start().
    service = ConnectorService(tmp / "data", env, poll=False)
    hook = f"{service.hook_url(HOST)}?token={SECRET}"
    hd = DjangoHelpdeskServer([hook], [hook], venv_dir=django_helpdesk_venv)
    started = False
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(django_helpdesk_server, "free_loopback_port", lambda: hd_port)
            hd.start()
        assert hd.url == f"http://127.0.0.1:{hd_port}"
        ids = create_queues(hd)
        write_mapping(mapping, ids)  # read by the connector on its first event
        service.start()
        started = True
        yield Stack(hd, service, ids)
    finally:
        if started:
            service.stop()
        else:  # never served: stop() would wait for a serve loop that never ran
            service.server.server_close()
            service.runtime.close()
        hd.stop()


@pytest.mark.parametrize(
    "title,body,process,service,language",
    [
        (
            "Printer jams",
            "The printer on the 2nd floor keeps jamming and prints blank pages.",
            "reactive",
            "printing",
            "en",
        ),
        (
            "Mac for work?",
            "Does IT support Macs? I would like to use my own MacBook with macOS at work.",
            "relation",
            "mac-computers",
            "en",
        ),
        (
            "Visma integration",
            "We would like a new integration between Visma and the archive for the whole "
            "department, the budget is approved.",
            "change",
            "erp",
            "en",
        ),
        (
            "Skriveren virker ikke",
            "Hei! Skriveren i andre etasje skriver ikke ut, papirstopp hele tiden. Mvh Kari",
            "reactive",
            "printing",
            "nb",
        ),
    ],
)
def test_new_ticket_lands_in_its_process_queue_with_one_private_followup(
    stack, title, body, process, service, language
):
    ticket = stack.hd.create_ticket(stack.ids["general"], title, body)
    routing = stack.connector.wait_routed(HOST, ticket["id"])
    assert routing["outcome"] == "applied"
    assert (routing["process"], routing["service"], routing["language"]) == (
        process,
        service,
        language,
    )
    assert stack.hd.get_ticket(ticket["id"])["queue"] == stack.ids[f"bpsm-{process}"]
    [note] = stack.notes(ticket["id"])
    assert note["public"] is False
    assert note["user"] == 2  # the connector's staff account, not the admin who opened it
    assert stack.hd.get_ticket(ticket["id"])["title"] == title  # a follow-up title renames
    if process == "relation":
        assert "Why:" in note["comment"] and "Alternative:" in note["comment"]
    if language == "nb":
        assert "Rutet til reaktiv håndtering" in note["comment"]
    else:
        assert "SLA: first response by" in note["comment"] or process != "reactive"


def ignored(caplog: pytest.LogCaptureFixture, ticket_id: int) -> list[str]:
    """Reasons the web layer gave for the webhooks of this ticket it ignored."""
    return [
        record_fields(r).get("reason", "")
        for r in caplog.records
        if r.getMessage() == "ignored event" and record_fields(r).get("ticket") == str(ticket_id)
    ]


def test_own_followup_coming_back_is_ignored_no_loop(stack, caplog):
    caplog.set_level(logging.INFO)
    ticket = stack.hd.create_ticket(
        stack.ids["general"],
        "Mailbox full",
        "My Outlook mailbox is full and I cannot receive e-mail",
    )
    stack.connector.wait_routed(HOST, ticket["id"])
    # The helpdesk posted the follow-up webhook while the connector's POST was waiting.
    assert ignored(caplog, ticket["id"]) == ["own update"]
    # A staff member's follow-up is not customer text either.
    stack.hd.add_followup(ticket["id"], "Looking into it", auth=stack.hd.admin_auth)
    assert ignored(caplog, ticket["id"]) == ["own update", "staff follow-up"]
    wait_for(stack.connector.idle, message="the connector to go idle")
    assert stack.deliveries(ticket["id"]) == [f"ticket:{ticket['id']}:created"]
    assert len(stack.notes(ticket["id"])) == 1
    assert len(stack.hd.followups(ticket["id"])) == 3  # opened, the note, the agent's


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("policy", ["send", "draft"])
def test_relation_reply_is_one_followup_and_its_webhook_is_ignored(
    stack, caplog, monkeypatch, policy
):
    caplog.set_level(logging.INFO)
    runtime = stack.connector.runtime
    # The module's connector with this relation.reply: the runtime caches each host's
    # mapping, and only the worker reads `relation` (hosts and clients do not).
    mapping = runtime.mapping(HOST).model_copy(update={"relation": RelationSettings(reply=policy)})
    monkeypatch.setitem(runtime._mappings, HOST, mapping)
    submitter = f"kari.{policy}@customer.example"
    subject = "Mac på jobb?"
    ticket = stack.hd.create_ticket(stack.ids["general"], subject, MAC_NB, submitter)
    routing = stack.connector.wait_routed(HOST, ticket["id"])
    assert routing["outcome"] == "applied", runtime.store.list_dead_letters()
    assert (routing["process"], routing["language"]) == ("relation", "nb")
    assert routing["replied_at"] is not None
    wait_for(stack.connector.idle, message="the connector to go idle")
    [reply] = stack.replies(ticket["id"])
    assert reply["public"] is (policy == "send")
    # update_ticket() mails a public follow-up to the submitter and records whom it mailed.
    assert reply["email_recipients"] == ([submitter] if policy == "send" else [])
    decision = RoutingDecision.model_validate_json(routing["decision"])
    event = TicketEvent(host=HOST, delivery_id="-", ticket_id="0", subject=subject)
    text = relation_reply(event, decision, runtime.index.catalogue, mapping)
    assert "ikke en tjeneste" in text and words(reply["comment"]) == words(text)
    # The note's and the reply's webhooks came back while their POSTs waited: both ignored.
    assert len(ignored(caplog, ticket["id"])) == 2
    assert set(ignored(caplog, ticket["id"])) <= {"own update", "staff follow-up"}
    assert stack.deliveries(ticket["id"]) == [f"ticket:{ticket['id']}:created"]
    assert len(stack.notes(ticket["id"])) == 1
    assert stack.hd.get_ticket(ticket["id"])["queue"] == stack.ids["bpsm-relation"]


def test_reply_again_posts_nothing(stack):
    ticket = stack.hd.create_ticket(stack.ids["general"], "Mac på jobb?", MAC_NB)
    stack.connector.wait_routed(HOST, ticket["id"])  # relation.reply is off here
    client = stack.connector.runtime.client(HOST)
    event = TicketEvent(host=HOST, delivery_id="-", ticket_id=str(ticket["id"]))
    text = "Hei,\n\nMac er ikke en tjeneste her, {{ ticket.title }}.\n"
    client.reply(event, text, send=True)
    client.reply(event, text, send=True)  # the job retried after a lost answer
    client.reply(event, text, send=False)  # the same text as a draft: already said
    [reply] = stack.replies(ticket["id"])
    assert reply["public"] is True
    assert "{ { ticket.title } }" in reply["comment"]  # not rendered by the helpdesk


def test_ticket_an_agent_moved_first_is_not_moved_back(stack):
    with stack.paused():
        ticket = stack.hd.create_ticket(
            stack.ids["general"],
            "Printer jams",
            "The printer on the 2nd floor keeps jamming and prints blank pages.",
        )
        assert stack.deliveries(ticket["id"]) == [f"ticket:{ticket['id']}:created"]
        stack.hd.move_ticket(ticket["id"], stack.ids["bpsm-change"])
    routing = stack.connector.wait_routed(HOST, ticket["id"])
    assert routing["outcome"] == "override"
    assert stack.hd.get_ticket(ticket["id"])["queue"] == stack.ids["bpsm-change"]
    [note] = stack.notes(ticket["id"])
    assert note["comment"].endswith("[bpsm-override]") and note["public"] is False


def test_deleted_ticket_is_a_dead_letter_not_a_retry_loop(stack):
    with stack.paused():
        ticket = stack.hd.create_ticket(stack.ids["general"], "Printer jams", "Paper jam.")
        stack.hd.api("DELETE", f"tickets/{ticket['id']}/", expect=204)
    routing = stack.connector.wait_routed(HOST, ticket["id"])
    assert routing["outcome"] == "failed"
    [letter] = [
        d
        for d in stack.connector.runtime.store.list_dead_letters()
        if d["ticket_id"] == str(ticket["id"])
    ]
    assert "404" in letter["reason"]


def test_connector_uses_a_session_not_a_password_per_request(stack):
    client = stack.connector.runtime.client(HOST)
    assert isinstance(client, DjangoHelpdeskClient)
    assert client.auth_mode == "session"
    # The helpdesk accepts the session alone (no basic auth): the password hash is not
    # recomputed on every call.
    cookies_only = requests.get(
        f"{stack.hd.api_url}/tickets/", cookies=client.http.session.cookies, timeout=10
    )
    assert cookies_only.status_code == 200
    # Where the login page cannot be used, every call still works on basic auth.
    fallback = stack.connector.runtime.host(HOST).client()
    fallback.login_path = "/no-login-here/"
    assert fallback.api("GET", "tickets/", params={"page_size": 1}).status_code == 200
    assert fallback.auth_mode == "basic"
    fallback.close()


def test_a_session_refused_by_csrf_checks_falls_back_to_basic_auth(stack):
    ticket = stack.hd.create_ticket(stack.ids["general"], "Printer jams", "Paper jam.")
    stack.connector.wait_routed(HOST, ticket["id"])
    strict = stack.connector.runtime.host(HOST).client()
    strict.login()
    assert strict.auth_mode == "session"
    for cookie in strict.http.session.cookies:  # as if a proxy broke the CSRF check
        if cookie.name == "csrftoken":
            cookie.value = "!" * 32
    queue = {"queue": stack.ids["bpsm-reactive"]}
    answer = strict.api("PATCH", f"tickets/{ticket['id']}/", json=queue)
    assert answer.status_code == 200 and strict.auth_mode == "basic"
    strict.close()


def test_setup_checks_access_and_prints_the_helpdesk_environment(stack):
    client = stack.connector.runtime.client(HOST)
    assert isinstance(client, DjangoHelpdeskClient)
    hook = stack.connector.hook_url(HOST)
    result = client.setup(stack.connector.runtime.mapping(HOST), hook)
    text = "\n".join(result.lines)
    assert "API access ok as 'bpsm' (session auth)" in text
    assert f"bpsm-reactive={stack.ids['bpsm-reactive']}" in text
    assert f"HELPDESK_NEW_TICKET_WEBHOOK_URLS={hook}?token={SECRET}" in text
    assert f"HELPDESK_FOLLOWUP_WEBHOOK_URLS={hook}?token={SECRET}" in text
    assert result.webhook_secret is None  # the configured secret is kept, none generated
    assert result.test_event is not None
    answer = send_test_event(result.test_event)
    assert answer.startswith("test event: connector answered 200") and "own update" in answer


def test_polling_mode_routes_tickets_the_webhook_could_not_deliver(
    django_helpdesk_factory: DjangoHelpdeskFactory, tmp_path: Path
) -> None:
    # The helpdesk's webhooks point at a connector that is not listening: creating a ticket
    # answers 500 though the ticket is saved, and so will the connector's own note.
    refused = f"http://127.0.0.1:{django_helpdesk_server.free_loopback_port()}/hooks/{HOST}"
    hd = django_helpdesk_factory(webhook_urls=[refused], followup_webhook_urls=[refused])
    ids = create_queues(hd)
    body = {
        "queue": ids["general"],
        "title": "Printer jams",
        "description": "The printer on the 2nd floor keeps jamming and prints blank pages.",
        "submitter_email": "kari@example.com",
        "priority": 3,
    }
    assert hd.api("POST", "tickets/", json_body=body).status_code == 500
    [ticket] = hd.api("GET", "tickets/", expect=200).json()["results"]

    env = connector_env(
        hd.url, write_mapping(tmp_path / "m.yaml", ids), BPSM_DJANGO_HELPDESK_POLL_INTERVAL="0.3"
    )
    with ConnectorService(tmp_path / "data", env) as service:
        assert service.pollers is not None and service.pollers.hosts == [HOST]
        routing = service.wait_routed(HOST, ticket["id"])
        assert routing["outcome"] == "applied" and routing["process"] == "reactive"
        assert hd.get_ticket(ticket["id"])["queue"] == ids["bpsm-reactive"]
        # A ticket the connector opens is answered 500 too (its webhook is refused): found,
        # not opened twice, and never routed by the poller.
        client = service.runtime.client(HOST)
        opened = client.create_ticket(
            NewTicket(queue="bpsm-proactive", title="Restore test", body="Restore a backup.")
        )
        titles = [t["title"] for t in hd.api("GET", "tickets/?page_size=100").json()["results"]]
        assert titles.count("Restore test") == 1
        assert hd.get_ticket(int(opened))["queue"] == ids["bpsm-proactive"]
        # So is a reply: saved, found, not posted again and not an error.
        event = TicketEvent(host=HOST, delivery_id="-", ticket_id=str(ticket["id"]))
        client.reply(event, "Hei,\nMac er ikke en tjeneste her.\n", send=True)
        # Later polls see both tickets again (overlap): no second delivery or note.
        time.sleep(1.0)
        assert [r["ticket_id"] for r in service.runtime.store.all_routings()] == [str(ticket["id"])]
        assert service.runtime.store.count_deliveries() == 1
    notes = [f for f in hd.followups(ticket["id"]) if NOTE_MARKER in f["comment"]]
    assert len(notes) == 1 and notes[0]["public"] is False
    replies = [f for f in hd.followups(ticket["id"]) if "ikke en tjeneste" in f["comment"]]
    assert len(replies) == 1 and replies[0]["public"] is True
