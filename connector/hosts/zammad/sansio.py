"""Zammad without I/O: webhook signature, payload → TicketEvent, error hints, note HTML.

Contract: connector/hosts/zammad/fixtures/contract/zammad.md. Webhook body
`{"ticket": …, "article": …}` signed with `X-Hub-Signature: sha1=<HMAC-SHA1(raw body)>`;
delivery id in `X-Zammad-Delivery`.
Loop prevention: events whose article (or, without one, ticket update) was made by the
connector's API user are ignored, and so is any article carrying the connector's marker.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

from connector.events import TicketEvent
from connector.hosts.base import (
    SIGNATURE_REFUSED,
    BadPayload,
    Host,
    Ignored,
    TestEvent,
    Unauthorized,
    WebhookRequest,
    hinted_error_text,
    hmac_hex,
    json_object,
    need,
    parse_time,
    same,
)
from connector.hosts.zammad.settings import ZammadOptions, ZammadSettings

DEFAULT_CONNECTOR_LOGIN = "bpsm-connector"
WEBHOOK_NAME = "bpsm-connector"
TRIGGER_NAMES = (f"{WEBHOOK_NAME}: ticket created", f"{WEBHOOK_NAME}: customer article")


def _login(user: Any) -> str | None:
    if isinstance(user, dict):
        login = user.get("login") or user.get("email")
        return str(login) if login else None
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _expected_credentials(secret: bool, token: bool) -> str:
    signature = "X-Hub-Signature header (a webhook secret is configured)"
    bearer = "Authorization: Bearer header (BPSM_ZAMMAD_WEBHOOK_TOKEN is configured)"
    if secret and token:
        return "credential: send the X-Hub-Signature or an Authorization: Bearer header"
    return signature if secret else bearer


class ZammadSansIO(Host[ZammadSettings]):
    """Zammad's webhooks, pure; `connector.hosts.zammad.ZammadHost` adds the API client."""

    name = "zammad"
    settings_model = ZammadSettings
    options_model = ZammadOptions

    @property
    def connector_login(self) -> str:
        return self.mapping.connector_user or self.settings.user or DEFAULT_CONNECTOR_LOGIN

    # Zammad 7 sends webhooks with the method its admin picks (zammad#5845).
    webhook_methods = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def has_webhook_credential(self) -> bool:
        return self.settings.webhook_secret is not None or self.settings.webhook_token is not None

    def verify(self, request: WebhookRequest) -> None:
        """Zammad 7 authenticates a webhook with the HMAC-SHA1 signature, a Bearer token, or
        both. Each credential that is configured and sent is checked: one wrong credential
        refuses the request, and at least one must be there."""
        secret, token = self.settings.webhook_secret, self.settings.webhook_token
        if secret is None and token is None:
            return
        signature = request.header("X-Hub-Signature")
        bearer = bearer_token(request.header("Authorization"))
        checked = False
        if secret is not None and signature:
            expected = "sha1=" + hmac_hex(secret.get_secret_value(), request.body, "sha1")
            if not same(signature.strip().lower(), expected):
                raise Unauthorized("X-Hub-Signature does not match the configured webhook secret")
            checked = True
        if token is not None and bearer is not None:
            if not same(bearer, token.get_secret_value()):
                raise Unauthorized("the Bearer token does not match BPSM_ZAMMAD_WEBHOOK_TOKEN")
            checked = True
        if not checked:
            raise Unauthorized(
                f"missing {_expected_credentials(secret is not None, token is not None)}"
            )

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
                return Ignored("own update", str(ticket_id), "own-update")
            return Ignored("no new customer text", str(ticket_id), "no-customer-text")
        body = article.get("body", "")
        if not isinstance(body, str):
            raise BadPayload("field article.body must be a string", "article.body")
        # By author only: a customer can type the marker into a mail.
        if _login(article.get("created_by")) == own:
            return Ignored("own update", str(ticket_id), "own-update")
        if article.get("internal") is True or article.get("sender") not in (None, "Customer"):
            return Ignored("not customer text", str(ticket_id), "not-customer-text")
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


# Zammad answers {"error": …, "error_human": …}; the hint says what the admin should do.
ERROR_HINTS = {
    401: "check BPSM_ZAMMAD_TOKEN (token unknown or expired)",
    403: "the token's user lacks ticket.agent on the ticket's groups (or admin.* for setup)",
    404: "the ticket or object no longer exists",
    422: "Zammad rejected the values (if a group is missing: run `bpsm setup zammad`)",
}
zammad_error_text = hinted_error_text(
    ERROR_HINTS, lambda data: data.get("error_human") or data.get("error") or data
)


def note_html(note: str) -> str:
    return "<p>" + "<br>".join(html.escape(line) for line in note.splitlines()) + "</p>"


def setup_test_event(hook_url: str, secret: str) -> TestEvent:
    """A signed event with no article: the connector must answer 200 ignored."""
    body = b'{"article":{},"ticket":{"id":0,"title":"bpsm-connector setup test"}}'
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Zammad-Delivery": f"setup-test-{secrets.token_hex(8)}",
        "X-Hub-Signature": "sha1=" + hmac_hex(secret, body, "sha1"),
    }
    return TestEvent(hook_url, body, headers, SIGNATURE_REFUSED)
