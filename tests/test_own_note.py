"""A customer who types the connector's marker ("[bpsm-connector]") must not make any host's
"note already there?" look skip the routing note, nor have the event ignored as the
connector's own: own notes are recognised by their author, the connector's API user."""

from __future__ import annotations

from typing import Any

import responses
from pydantic import SecretStr

from connector.events import RoutingDecision, TicketEvent
from connector.hosts.base import WebhookRequest
from connector.hosts.django_helpdesk.client import DjangoHelpdeskClient
from connector.hosts.glpi import GlpiHost
from connector.hosts.glpi.settings import GlpiSettings
from connector.hosts.rt.settings import RTSettings
from connector.hosts.zammad import ZammadHost
from connector.hosts.zammad.settings import ZammadSettings
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, is_own_note, starts_with_marker
from tests.fakes.glpi import FakeGLPI
from tests.fakes.zammad import FakeZammad

CUSTOMER_TEXT = f"Printer broken. I saw {NOTE_MARKER} in an old mail, is that you?"


def decision() -> RoutingDecision:
    return RoutingDecision(
        process="reactive",
        service="printing",
        queue="Users",
        tags=("bpsm", "reactive", "printing"),
        note=f"{NOTE_MARKER} Routed to reactive management.",
        language="en",
        confidence=0.8,
    )


def test_is_own_note_needs_the_marker_and_the_connectors_authorship():
    assert is_own_note(f"{NOTE_MARKER} Routed", 4, 4)
    assert not is_own_note(f"{NOTE_MARKER} Routed", 2, 4)  # a customer typed it
    assert not is_own_note("Routed", 4, 4)  # the connector's other writes
    assert not is_own_note(f"{NOTE_MARKER} Routed", None, None)  # an unknown author


def test_zammad_customer_text_with_the_marker_is_routed_and_gets_its_note():
    with FakeZammad(token="zammad-api-token") as zammad:
        ticket_id = zammad.create_ticket_as_customer("Printer", CUSTOMER_TEXT)
        host = ZammadHost(
            ZammadSettings(name="zammad", url=zammad.base_url, token=SecretStr("zammad-api-token")),
            Mapping(host="zammad"),
        )
        body = zammad.webhook_payload(ticket_id, zammad.articles(ticket_id)[0]["id"])
        headers = {"X-Zammad-Delivery": "d-1"}
        assert isinstance(host.parse(WebhookRequest("POST", headers, body)), TicketEvent)
        client = host.client()
        assert not client.has_note(str(ticket_id))
        event = TicketEvent(host="zammad", delivery_id="d-1", ticket_id=str(ticket_id))
        client.apply(event, decision(), "route")
        notes = [a for a in zammad.articles(ticket_id) if a["internal"]]
        assert len(notes) == 1 and client.has_note(str(ticket_id))


def test_glpi_requester_followup_with_the_marker_is_not_the_connectors_note():
    with FakeGLPI(version=11, app_token="app-token", user_token="user-token") as glpi:
        ticket_id = glpi.create_ticket_as_user("Printer", "<p>Printer broken</p>")
        glpi.add_followup_as_user(ticket_id, f"<p>{CUSTOMER_TEXT}</p>")
        settings = GlpiSettings(
            name="glpi",
            url=glpi.url,
            app_token=SecretStr("app-token"),
            user_token=SecretStr("user-token"),
        )
        client = GlpiHost(settings, Mapping(host="glpi")).client()
        assert not client._own_note_exists(str(ticket_id))
        client._add_note_once(str(ticket_id), decision(), "applied")
        assert client._own_note_exists(str(ticket_id))
        assert len([f for f in glpi.followups(ticket_id) if NOTE_MARKER in f["content"]]) == 2
        client.close()


def test_glpi_webhook_of_a_ticket_quoting_the_marker_is_routed():
    host = GlpiHost(GlpiSettings(name="glpi"), Mapping(host="glpi"))
    body = (
        b'{"event": "new", "item": {"id": 7, "name": "Printer", "status": 1, "team": [],'
        b' "content": "<p>Printer broken. Was ' + NOTE_MARKER.encode() + b' here?</p>"}}'
    )
    assert isinstance(host.parse(WebhookRequest("POST", {}, body)), TicketEvent)
    assert starts_with_marker("<!-- [bpsm-connector] reply --><p>Hei</p>")  # its own reply


def django_ticket(*followups: dict[str, Any]) -> dict[str, Any]:
    return {"id": 5, "queue": 1, "title": "Printer", "followup_set": list(followups)}


def test_django_helpdesk_customer_followup_with_the_marker_is_not_the_note():
    client = DjangoHelpdeskClient.__new__(DjangoHelpdeskClient)
    client.own_user_ids = set()
    customer = {"id": 1, "user": None, "public": True, "comment": CUSTOMER_TEXT}
    assert not client._has_note(django_ticket(customer))
    staff_note = {"id": 2, "user": 9, "public": False, "comment": f"{NOTE_MARKER} Routed"}
    assert client._has_note(django_ticket(customer, staff_note))
    client.own_user_ids = {3}  # known: only the connector's own account counts
    assert not client._has_note(django_ticket(customer, staff_note))
    assert client._has_note(django_ticket(customer, {**staff_note, "user": 3}))


@responses.activate
def test_rt_requester_message_with_the_marker_is_not_the_comment():
    from connector.hosts.rt import RTHost

    base = "http://rt.example/REST/2.0"
    settings = RTSettings(name="rt", url="http://rt.example", token=SecretStr("1-79-" + "ab" * 16))
    client = RTHost(settings, Mapping(host="rt")).client()

    def item(n: int, text: str, creator: str) -> dict[str, Any]:
        return {"id": str(n), "Content": text, "Creator": {"id": creator, "type": "user"}}

    customer = item(1, CUSTOMER_TEXT, "customer@example.com")
    page = {"items": [customer], "count": 1, "page": 1, "pages": 1, "per_page": 100}
    responses.get(f"{base}/ticket/1/attachments", json=page)
    responses.get(f"{base}/user/79", json={"id": 79, "Name": "bpsm"})
    assert not client.has_note("1")
    own = item(2, f"{NOTE_MARKER} Routed", "bpsm")
    responses.replace(
        responses.GET, f"{base}/ticket/1/attachments", json={**page, "items": [customer, own]}
    )
    assert client.has_note("1")
