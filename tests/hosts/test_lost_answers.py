"""Every kind of write on every host with its answer lost: the helpdesk saved it, then a proxy
answered 504 or the client timed out. The job's retry must leave exactly one effect.

Non-idempotent writes (notes, replies, new tickets, GLPI's group assignment) go out once and
are looked for before they are tried again; idempotent ones (a queue move by PUT/PATCH, a
Zammad tag) may be retried within the call. Zammad and GLPI run against their stateful fakes;
Request Tracker and django-helpdesk against small stateful stand-ins of the endpoints the
client uses (`responses` callbacks), which save the write and then lose its answer.
GLPI, RT and django-helpdesk have no tags: their `add_tags` is a no-op and the tags are in
the routing note, covered by the note cases."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import SecretStr
from werkzeug.wrappers import Response

from connector.events import NewTicket, RoutingDecision, TicketEvent
from connector.hosts import host_settings
from connector.hosts.base import HostError
from connector.hosts.django_helpdesk import DjangoHelpdeskHost
from connector.hosts.django_helpdesk.settings import DjangoHelpdeskSettings
from connector.hosts.glpi import GlpiHost
from connector.hosts.rt import RTHost
from connector.hosts.rt.settings import RTSettings
from connector.hosts.zammad import ZammadHost
from connector.hosts.zammad.settings import ZammadSettings
from connector.mapping import Mapping, load_mapping
from connector.notes import NOTE_MARKER
from connector.route import decide
from tests.e2e import ROOT, example_index
from tests.fakes.glpi import FakeGLPI
from tests.fakes.zammad import FakeZammad
from tests.hosts.test_glpi_e2e import APP_TOKEN, USER_TOKEN, after_first, api_env, seed

PRINTER = "The printer on the 2nd floor keeps jamming and prints blank pages."
LOSSES = ["504", "timeout"]
HANG = 0.6  # a lost answer by timeout comes this late; the clients wait TIMEOUT
TIMEOUT = 0.3
REPLY = "Thank you. We do not support this; please order a standard laptop instead."


def decision_for(host: str, queue: str | None = None) -> RoutingDecision:
    mapping = load_mapping(ROOT / "mappings" / f"{host}.yaml")
    event = TicketEvent(host=host, delivery_id="d", ticket_id="1", body=PRINTER, queue=queue)
    index = example_index()
    return decide(event, index.classify(PRINTER, "Printer"), index.catalogue, mapping)


def retried(call: Callable[[], Any]) -> Any:
    """The first try loses its answer and fails the job; the job's retry runs it again."""
    with pytest.raises(HostError):
        call()
    return call()


def new_ticket() -> NewTicket:
    return NewTicket(
        queue="BPSM Proactive",
        title="Restore test (2026-Q4)",
        body=f"{NOTE_MARKER}\nRestore.",
        tags=("bpsm", "proactive"),
    ).referenced("maintenance:backup:0:restore-test:2026-Q4")


# ----- Zammad ------------------------------------------------------------------------------


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with FakeZammad(token="zammad-api-token") as fake:
        for group in ("BPSM Reactive", "BPSM Relation", "BPSM Proactive", "BPSM Triage"):
            fake.add_group(group)
        yield fake


def zammad_client(fake: FakeZammad) -> Any:
    settings = ZammadSettings(name="zammad", url=fake.base_url, token=SecretStr("zammad-api-token"))
    client = ZammadHost(settings, Mapping(host="zammad")).client()
    client.http.timeout = client.once.timeout = TIMEOUT
    return client


def lose_zammad(fake: FakeZammad, method: str, loss: str) -> None:
    if loss == "504":
        fake.lose_response_next(1, methods=[method], status=504)
    else:
        fake.lose_response_next(1, methods=[method], status=200, hang=HANG)


def zammad_notes(fake: FakeZammad, ticket_id: int) -> list[Any]:
    return [a for a in fake.articles(ticket_id) if NOTE_MARKER in str(a["subject"] or "")]


@pytest.mark.parametrize("loss", LOSSES)
def test_zammad_note_on_a_ticket_already_in_its_group(zammad, loss):
    decision = decision_for("zammad")
    ticket_id = zammad.create_ticket_as_customer("Printer", PRINTER)
    zammad.move_ticket_as_agent(ticket_id, decision.queue)
    event = TicketEvent(
        host="zammad", delivery_id="d", ticket_id=str(ticket_id), body=PRINTER, queue=None
    )
    client = zammad_client(zammad)
    lose_zammad(zammad, "POST", loss)  # the note's POST /api/v1/ticket_articles
    assert retried(lambda: client.apply(event, decision, "route")).outcome == "applied"
    assert len(zammad_notes(zammad, ticket_id)) == 1


@pytest.mark.parametrize("loss", LOSSES)
def test_zammad_queue_move_carrying_the_note(zammad, loss):
    decision = decision_for("zammad")
    ticket_id = zammad.create_ticket_as_customer("Printer", PRINTER)
    group = zammad.ticket(ticket_id)["group"]
    event = TicketEvent(
        host="zammad", delivery_id="d", ticket_id=str(ticket_id), body=PRINTER, queue=group
    )
    client = zammad_client(zammad)
    lose_zammad(zammad, "PUT", loss)
    assert retried(lambda: client.apply(event, decision, "route")).outcome == "applied"
    assert zammad.ticket(ticket_id)["group"] == decision.queue
    assert len(zammad_notes(zammad, ticket_id)) == 1


@pytest.mark.parametrize("loss", LOSSES)
def test_zammad_bare_queue_move_and_tags_are_retried_in_the_call(zammad, loss):
    decision = decision_for("zammad")
    ticket_id = zammad.create_ticket_as_customer("Printer", PRINTER)
    client = zammad_client(zammad)
    event = TicketEvent(host="zammad", delivery_id="d", ticket_id=str(ticket_id), body=PRINTER)
    client.apply(event, decision, "route")
    zammad.move_ticket_as_agent(ticket_id, "BPSM Triage")  # as if the move were undone
    lose_zammad(zammad, "PUT", loss)  # idempotent: retried within the call
    client.apply(event, decision, "route")
    assert zammad.ticket(ticket_id)["group"] == decision.queue
    lose_zammad(zammad, "POST", loss)  # a tag: idempotent too
    client.add_tags(str(ticket_id), ("bpsm-extra",))
    tags = zammad.tags(ticket_id)
    assert tags.count("bpsm-extra") == 1 and len(tags) == len(set(tags))
    assert len(zammad_notes(zammad, ticket_id)) == 1


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("send", [True, False])
def test_zammad_relation_reply(zammad, loss, send):
    ticket_id = zammad.create_ticket_as_customer("Mac?", "Do you support Macs?")
    event = TicketEvent(
        host="zammad", delivery_id="d", ticket_id=str(ticket_id), body="Macs", subject="Mac?"
    )
    client = zammad_client(zammad)
    lose_zammad(zammad, "POST", loss)
    retried(lambda: client.reply(event, REPLY, send=send))
    replies = [a for a in zammad.articles(ticket_id) if "standard laptop" in str(a["body"])]
    assert len(replies) == 1


@pytest.mark.parametrize("loss", LOSSES)
def test_zammad_ticket_create(zammad, loss):
    client = zammad_client(zammad)
    ticket = new_ticket()
    lose_zammad(zammad, "POST", loss)  # POST /api/v1/tickets
    ticket_id = retried(lambda: client.create_ticket(ticket))
    opened = [t for t in zammad.db.tickets.values() if t["title"] == ticket.title]
    assert [str(t["id"]) for t in opened] == [ticket_id]
    assert "bpsm" in zammad.tags(int(ticket_id))


# ----- GLPI --------------------------------------------------------------------------------


@pytest.fixture
def glpi() -> Iterator[FakeGLPI]:
    with FakeGLPI(version=11, app_token=APP_TOKEN, user_token=USER_TOKEN) as fake:
        yield seed(fake)


def glpi_client(fake: FakeGLPI) -> Any:
    settings = host_settings("glpi", api_env(fake))
    client = GlpiHost(settings, load_mapping(ROOT / "mappings" / "glpi.yaml")).client()
    client.http.timeout = client.once.timeout = TIMEOUT
    return client


def lose_glpi(fake: FakeGLPI, path: str, loss: str) -> None:
    """The next write to `path` is saved; its answer is lost."""

    def hang(response: Any) -> Any:
        import time

        time.sleep(HANG)
        return response

    action = (lambda _: Response("Gateway Timeout", status=504)) if loss == "504" else hang
    after_first(fake, lambda r: r.method == "POST" and r.path.endswith(path), action)


def glpi_ticket(fake: FakeGLPI) -> int:
    return fake.create_ticket_as_user("Printer jams", f"<p>{PRINTER}</p>")


def glpi_event(ticket_id: int) -> TicketEvent:
    return TicketEvent(host="glpi", delivery_id="d", ticket_id=str(ticket_id), body=PRINTER)


def glpi_notes(fake: FakeGLPI, ticket_id: int) -> list[Any]:
    return [f for f in fake.followups(ticket_id) if NOTE_MARKER in f["content"]]


@pytest.mark.parametrize("loss", LOSSES)
def test_glpi_queue_move(glpi, loss):
    ticket_id = glpi_ticket(glpi)
    client = glpi_client(glpi)
    lose_glpi(glpi, "/Group_Ticket", loss)
    retried(lambda: client.apply(glpi_event(ticket_id), decision_for("glpi"), "route"))
    assert glpi.assigned_group_names(ticket_id) == ["BPSM Reactive"]
    assert len(glpi_notes(glpi, ticket_id)) == 1


@pytest.mark.parametrize("loss", LOSSES)
def test_glpi_note_carrying_the_tags(glpi, loss):
    ticket_id = glpi_ticket(glpi)
    client = glpi_client(glpi)
    lose_glpi(glpi, "/ITILFollowup", loss)
    retried(lambda: client.apply(glpi_event(ticket_id), decision_for("glpi"), "route"))
    notes = glpi_notes(glpi, ticket_id)
    assert len(notes) == 1 and "bpsm, reactive, printing" in notes[0]["content"]


@pytest.mark.parametrize("loss", LOSSES)
def test_glpi_relation_reply(glpi, loss):
    ticket_id = glpi_ticket(glpi)
    client = glpi_client(glpi)
    lose_glpi(glpi, "/ITILFollowup", loss)
    retried(lambda: client.reply(glpi_event(ticket_id), REPLY, send=True))
    replies = [f for f in glpi.followups(ticket_id) if "standard laptop" in f["content"]]
    assert len(replies) == 1


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("lost", ["/Ticket", "/Group_Ticket"])
def test_glpi_ticket_create(glpi, loss, lost):
    client = glpi_client(glpi)
    ticket = new_ticket()
    lose_glpi(glpi, lost, loss)
    ticket_id = retried(lambda: client.create_ticket(ticket))
    opened = [t["id"] for t in glpi.tickets() if t["name"] == ticket.title]
    assert opened == [int(ticket_id)]
    assert glpi.assigned_group_names(int(ticket_id)) == ["BPSM Proactive"]


# ----- Request Tracker (stand-in of REST 2) ------------------------------------------------

RT = "http://rt.example/REST/2.0"


class RTStandIn:
    """The REST 2 endpoints the client uses, with state; `lose` names the next write (a
    regex on "METHOD path") whose answer is lost after it was saved."""

    def __init__(self, rsps: responses.RequestsMock, loss: str):
        self.loss = loss
        self.lose: str | None = None
        self.queues = {1: "General"}
        self.messages: dict[int, list[str]] = {1: [PRINTER]}
        self.subjects = {1: "Printer"}
        self.writes: list[str] = []
        for method in ("GET", "PUT", "POST"):
            rsps.add_callback(method, re.compile(re.escape(RT) + r"/.*"), callback=self.handle)

    def handle(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlsplit(request.url)
        path = url.path.removeprefix("/REST/2.0")
        query = parse_qs(url.query)
        body = json.loads(request.body) if request.body else None
        answer = self.route(request.method, path, query, body)
        if request.method != "GET":
            self.writes.append(f"{request.method} {path}")
            if self.lose and re.fullmatch(self.lose, f"{request.method} {path}"):
                self.lose = None
                if self.loss == "timeout":
                    raise requests.ReadTimeout("read timed out (saved all the same)")
                return 504, {}, "Gateway Timeout"
        return answer[0], {"Content-Type": "application/json"}, json.dumps(answer[1])

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        if found := re.fullmatch(r"/ticket/(\d+)", path):
            number = int(found[1])
            if method == "PUT":
                self.queues[number] = body.get("Queue", self.queues[number])
                return 200, [f"Ticket {number}: changed"]
            queue = {"id": 9, "Name": self.queues[number]}
            return 200, {"id": number, "Queue": queue, "CustomFields": []}
        if found := re.fullmatch(r"/ticket/(\d+)/(comment|correspond)", path):
            self.messages[int(found[1])].append(body["Content"])
            return 201, [f"{found[2]} added"]
        if found := re.fullmatch(r"/ticket/(\d+)/attachments", path):
            items = [{"Content": text} for text in self.messages[int(found[1])]]
            return 200, {"items": items, "pages": 1, "count": len(items)}
        if path == "/ticket" and method == "POST":
            number = max(self.queues) + 1
            self.queues[number] = body["Queue"]
            self.subjects[number] = body["Subject"]
            self.messages[number] = [body["Content"]]
            return 201, {"id": number, "type": "ticket"}
        if path == "/tickets":
            wanted = re.findall(r"'([^']*)'", query["query"][0])  # queue, subject
            items = [
                {"id": n, "Subject": s, "Queue": {"id": 9, "Name": self.queues[n]}}
                for n, s in self.subjects.items()
                if [self.queues[n], s] == wanted
            ]
            return 200, {"items": items, "pages": 1, "count": len(items)}
        if found := re.fullmatch(r"/ticket/(\d+)/history", path):
            return 200, {"items": [{"id": 1000 + int(found[1]), "Type": "Create"}]}
        if found := re.fullmatch(r"/transaction/(\d+)/attachments", path):
            text = self.messages[int(found[1]) - 1000][0]
            return 200, {"items": [{"ContentType": "text/plain", "Content": text}]}
        raise AssertionError(f"the stand-in does not know {method} {path}")


@pytest.fixture(params=LOSSES)
def rt(request) -> Iterator[tuple[Any, RTStandIn]]:
    settings = RTSettings(name="rt", url="http://rt.example", token=SecretStr("1-2-abc"))
    mapping = Mapping(host="rt", options={"watch_queues": ["General"]})
    client = RTHost(settings, mapping).client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield client, RTStandIn(rsps, request.param)


def rt_event() -> TicketEvent:
    return TicketEvent(host="rt", delivery_id="d", ticket_id="1", body=PRINTER, queue="General")


def test_rt_queue_move(rt):
    client, stand_in = rt
    stand_in.lose = r"PUT /ticket/1"  # idempotent: retried within the call
    client.apply(rt_event(), decision_for("rt", "General"), "route")
    assert stand_in.queues[1] == "BPSM Reactive"
    assert len([m for m in stand_in.messages[1] if NOTE_MARKER in m]) == 1


def test_rt_note(rt):
    client, stand_in = rt
    stand_in.lose = r"POST /ticket/1/comment"
    retried(lambda: client.apply(rt_event(), decision_for("rt", "General"), "route"))
    assert len([m for m in stand_in.messages[1] if NOTE_MARKER in m]) == 1
    assert stand_in.writes.count("POST /ticket/1/comment") == 1


@pytest.mark.parametrize("send", [True, False])
def test_rt_relation_reply(rt, send):
    client, stand_in = rt
    stand_in.lose = r"POST /ticket/1/(comment|correspond)"
    client.reply(rt_event(), REPLY, send=send)  # the reply looks right after a lost answer
    client.reply(rt_event(), REPLY, send=send)  # and so does the job's next try
    assert stand_in.messages[1].count(REPLY) == 1


def test_rt_ticket_create(rt):
    client, stand_in = rt
    stand_in.lose = r"POST /ticket"
    ticket = new_ticket()
    ticket_id = retried(lambda: client.create_ticket(ticket))
    assert [n for n, s in stand_in.subjects.items() if s == ticket.title] == [int(ticket_id)]


# ----- django-helpdesk (stand-in of its REST API) ------------------------------------------

DJ = "http://helpdesk.example"
QUEUE_IDS = {"bpsm-reactive": 2, "bpsm-relation": 3, "bpsm-proactive": 6, "general": 1}


class HelpdeskStandIn:
    """`/api/tickets/`, `/api/followups/` with state; `lose` as for RTStandIn."""

    def __init__(self, rsps: responses.RequestsMock, loss: str):
        self.loss = loss
        self.lose: str | None = None
        self.tickets: dict[int, dict[str, Any]] = {}
        self.writes: list[str] = []
        self.open("Printer", PRINTER, queue=1)
        rsps.add(responses.GET, f"{DJ}/login/", status=404)  # no session: basic auth
        for method in ("GET", "PATCH", "POST"):
            rsps.add_callback(method, re.compile(re.escape(DJ) + r"/api/.*"), self.handle)

    def open(self, title: str, description: str, queue: int) -> dict[str, Any]:
        number = len(self.tickets) + 1
        now = datetime.now(UTC).isoformat()
        self.tickets[number] = {
            "id": number,
            "title": title,
            "description": description,
            "queue": queue,
            "status": 1,
            "followup_set": [{"id": 100 * number, "comment": "Ticket Opened", "date": now}],
        }
        return self.tickets[number]

    def handle(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlsplit(request.url)
        body = json.loads(request.body) if request.body else None
        answer = self.route(request.method, url.path, body)
        if request.method != "GET":
            self.writes.append(f"{request.method} {url.path}")
            if self.lose and re.fullmatch(self.lose, f"{request.method} {url.path}"):
                self.lose = None
                if self.loss == "timeout":
                    raise requests.ReadTimeout("read timed out (saved all the same)")
                return 504, {}, "Gateway Timeout"
        return answer[0], {"Content-Type": "application/json"}, json.dumps(answer[1])

    def route(self, method: str, path: str, body: Any) -> Any:
        if found := re.fullmatch(r"/api/tickets/(\d+)/", path):
            ticket = self.tickets[int(found[1])]
            if method == "PATCH":
                ticket.update(body)
            return 200, ticket
        if path == "/api/followups/":
            ticket = self.tickets[int(body["ticket"])]
            followup = {"id": len(ticket["followup_set"]) + 100 * ticket["id"], "user": 5, **body}
            ticket["followup_set"].append(followup)
            return 201, followup
        if path == "/api/tickets/" and method == "POST":
            return 201, self.open(body["title"], body["description"], body["queue"])
        if path == "/api/tickets/":
            results = [t for t in self.tickets.values() if t["status"] == 1]
            return 200, {"count": len(results), "results": results}
        raise AssertionError(f"the stand-in does not know {method} {path}")


@pytest.fixture(params=LOSSES)
def helpdesk(request) -> Iterator[tuple[Any, HelpdeskStandIn]]:
    settings = DjangoHelpdeskSettings(
        name="django-helpdesk", url=DJ, user="bpsm", password=SecretStr("secret")
    )
    mapping = load_mapping(ROOT / "mappings" / "django-helpdesk.yaml").model_copy(
        update={"options": {"queue_ids": QUEUE_IDS}}
    )
    client = DjangoHelpdeskHost(settings, mapping).client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield client, HelpdeskStandIn(rsps, request.param)


def helpdesk_event() -> TicketEvent:
    return TicketEvent(
        host="django-helpdesk", delivery_id="d", ticket_id="1", body=PRINTER, queue="general"
    )


def own_followups(stand_in: HelpdeskStandIn, number: int = 1) -> list[Any]:
    return [f for f in stand_in.tickets[number]["followup_set"] if NOTE_MARKER in f["comment"]]


def test_django_helpdesk_queue_move(helpdesk):
    client, stand_in = helpdesk
    stand_in.lose = r"PATCH /api/tickets/1/"  # idempotent: retried within the call
    client.apply(helpdesk_event(), decision_for("django-helpdesk", "general"), "route")
    assert stand_in.tickets[1]["queue"] == QUEUE_IDS["bpsm-reactive"]
    assert len(own_followups(stand_in)) == 1


def test_django_helpdesk_note(helpdesk):
    client, stand_in = helpdesk
    stand_in.lose = r"POST /api/followups/"
    decision = decision_for("django-helpdesk", "general")
    client.apply(helpdesk_event(), decision, "route")  # looks right after the lost answer
    client.apply(helpdesk_event(), decision, "route")  # and the next try looks first
    assert len(own_followups(stand_in)) == 1
    assert stand_in.writes.count("POST /api/followups/") == 1


@pytest.mark.parametrize("send", [True, False])
def test_django_helpdesk_relation_reply(helpdesk, send):
    client, stand_in = helpdesk
    stand_in.lose = r"POST /api/followups/"
    client.reply(helpdesk_event(), REPLY, send=send)
    client.reply(helpdesk_event(), REPLY, send=send)
    replies = [f for f in stand_in.tickets[1]["followup_set"] if f["comment"] == REPLY]
    assert len(replies) == 1


def test_django_helpdesk_ticket_create(helpdesk):
    client, stand_in = helpdesk
    stand_in.lose = r"POST /api/tickets/"
    ticket = new_ticket()
    ticket = NewTicket(**{**ticket.__dict__, "queue": "bpsm-proactive"})
    first = client.create_ticket(ticket)  # found right after the lost answer
    again = client.create_ticket(ticket)  # a later run finds it by its reference
    opened = [n for n, t in stand_in.tickets.items() if t["title"] == ticket.title]
    assert opened == [int(first)] == [int(again)]
    assert stand_in.writes.count("POST /api/tickets/") == 1
