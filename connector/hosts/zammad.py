"""Zammad: trigger webhooks in, REST API out (group, tags, internal note).

Contract: ../shared/contracts/zammad.md. Webhook body `{"ticket": …, "article": …}` signed
with `X-Hub-Signature: sha1=<HMAC-SHA1(raw body)>`; delivery id in `X-Zammad-Delivery`.
Loop prevention: events whose article (or, without one, ticket update) was made by the
connector's API user are ignored, and so is any article carrying the connector's marker.
"""

from __future__ import annotations

import html
from typing import Any

from connector.events import RoutingDecision, TicketEvent
from connector.hosts.base import (
    ApplyResult,
    BadPayload,
    Host,
    HostClient,
    HostError,
    Ignored,
    NewTicket,
    Unauthorized,
    WebhookRequest,
    hmac_hex,
    json_object,
    need,
    parse_time,
    same,
)
from connector.hosts.http import HttpTransport
from connector.route import NOTE_MARKER, is_own_note

DEFAULT_CONNECTOR_LOGIN = "bpsm-connector"


def _login(user: Any) -> str | None:
    if isinstance(user, dict):
        login = user.get("login") or user.get("email")
        return str(login) if login else None
    return None


class ZammadHost(Host):
    name = "zammad"

    @property
    def connector_login(self) -> str:
        return self.mapping.connector_user or self.settings.user or DEFAULT_CONNECTOR_LOGIN

    def verify(self, request: WebhookRequest) -> None:
        secret = self.settings.webhook_secret
        if secret is None:
            return
        given = request.header("X-Hub-Signature")
        if not given:
            raise Unauthorized("missing X-Hub-Signature header (a webhook secret is configured)")
        expected = "sha1=" + hmac_hex(secret.get_secret_value(), request.body, "sha1")
        if not same(given.strip().lower(), expected):
            raise Unauthorized("X-Hub-Signature does not match the configured webhook secret")

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        data = json_object(request.body)
        ticket = need(data, "ticket", dict, "")
        ticket_id = need(ticket, "id", int, "ticket")
        article = data.get("article", {})
        if not isinstance(article, dict):
            raise BadPayload("field article must be an object", "article")
        delivery = request.header("X-Zammad-Delivery")
        if not delivery:
            raise BadPayload("missing X-Zammad-Delivery header", "X-Zammad-Delivery")
        own = self.connector_login
        if not article:
            if _login(ticket.get("updated_by")) == own:
                return Ignored("own update", str(ticket_id))
            return Ignored("no new customer text", str(ticket_id))
        body = article.get("body", "")
        if not isinstance(body, str):
            raise BadPayload("field article.body must be a string", "article.body")
        if _login(article.get("created_by")) == own or is_own_note(body):
            return Ignored("own update", str(ticket_id))
        if article.get("internal") is True or article.get("sender") not in (None, "Customer"):
            return Ignored("not customer text", str(ticket_id))
        group = ticket.get("group")
        first = ticket.get("article_count") in (None, 0, 1)
        title = ticket.get("title")
        return TicketEvent(
            host=self.name,
            delivery_id=delivery,
            ticket_id=str(ticket_id),
            kind="created" if first else "customer_reply",
            subject=str(title or article.get("subject") or ""),
            body=body,
            queue=group.get("name") if isinstance(group, dict) else None,
            requester=_login(ticket.get("customer")),
            actor=_login(article.get("created_by")),
            created_at=parse_time(ticket.get("created_at")),
        )

    def client(self) -> ZammadClient:
        if not self.settings.url or self.settings.token is None:
            raise HostError(
                "zammad: BPSM_ZAMMAD_URL and BPSM_ZAMMAD_TOKEN are required", permanent=True
            )
        transport = HttpTransport(self.settings.url, "zammad", error_text=zammad_error_text)
        transport.session.headers["Authorization"] = (
            f"Token token={self.settings.token.get_secret_value()}"
        )
        return ZammadClient(transport)


def zammad_error_text(response: Any) -> str:
    """Zammad answers {"error": …, "error_human": …}; add what the admin should do."""
    try:
        data = response.json()
        text = str(data.get("error_human") or data.get("error") or data)[:300]
    except (ValueError, AttributeError):
        text = response.text[:200]
    hints = {
        401: "check BPSM_ZAMMAD_TOKEN (token unknown or expired)",
        403: "the token's user lacks ticket.agent on the ticket's groups (or admin.* for setup)",
        404: "the ticket or object no longer exists",
        422: "Zammad rejected the values; run `bpsm setup zammad` to create missing groups",
    }
    hint = hints.get(response.status_code)
    return f"{text} — {hint}" if hint else text


def note_html(note: str) -> str:
    return "<p>" + "<br>".join(html.escape(line) for line in note.splitlines()) + "</p>"


class ZammadClient(HostClient):
    def __init__(self, transport: HttpTransport):
        self.http = transport

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.request(
            "GET", f"/api/v1/tickets/{ticket_id}", params={"expand": "true"}
        ).json()
        return data

    def has_note(self, ticket_id: str) -> bool:
        articles = self.http.request("GET", f"/api/v1/ticket_articles/by_ticket/{ticket_id}").json()
        return any(is_own_note(str(a.get("body", ""))) for a in articles)

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        current = self.ticket(event.ticket_id).get("group")
        moved_by_agent = bool(event.queue and current not in (event.queue, decision.queue))
        outcome: Any = "applied"
        if mode == "shadow":
            outcome = "shadow"
        elif moved_by_agent:
            outcome = "override"
        elif current != decision.queue:
            self.http.request(
                "PUT", f"/api/v1/tickets/{event.ticket_id}", json={"group": decision.queue}
            )
        tags = list(decision.tags) + (["bpsm-shadow"] if mode == "shadow" else [])
        if outcome == "override":
            tags.append("bpsm-override")
        for tag in tags:
            self.http.request(
                "POST",
                "/api/v1/tags/add",
                json={"object": "Ticket", "o_id": int(event.ticket_id), "item": tag},
            )
        # The marker check makes the note idempotent when an earlier answer was lost.
        if not self.has_note(event.ticket_id):
            self.http.request(
                "POST",
                "/api/v1/ticket_articles",
                json={
                    "ticket_id": int(event.ticket_id),
                    "body": note_html(decision.note),
                    "content_type": "text/html",
                    "type": "note",
                    "internal": True,
                    "subject": NOTE_MARKER,
                },
            )
        return ApplyResult(outcome, f"group was {current!r}")

    def create_ticket(self, ticket: NewTicket) -> str:
        data = self.http.request(
            "POST",
            "/api/v1/tickets",
            json={
                "title": ticket.title,
                "group": ticket.queue,
                "article": {
                    "subject": ticket.title,
                    "body": ticket.body,
                    "type": "note",
                    "internal": True,
                },
            },
        ).json()
        ticket_id = str(data["id"])
        for tag in ticket.tags:
            self.http.request(
                "POST",
                "/api/v1/tags/add",
                json={"object": "Ticket", "o_id": int(ticket_id), "item": tag},
            )
        return ticket_id


HOST = ZammadHost
