"""Zammad's REST API: group, tags and internal note out; setup of groups, webhook, triggers.

Every write is safe to repeat (see HostClient.apply): notes and replies go out once, after a
look for an earlier copy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent, TicketTimes
from connector.hosts.base import ApplyResult, HostClient, HostError, SetupResult, parse_time
from connector.hosts.http import HttpTransport
from connector.hosts.zammad.sansio import (
    TRIGGER_NAMES,
    WEBHOOK_NAME,
    note_html,
    setup_test_event,
    zammad_error_text,
)
from connector.hosts.zammad.settings import ZammadSettings
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, is_own_note


def connect(settings: ZammadSettings) -> ZammadClient:
    """The API client for these settings (token auth)."""
    if not settings.url or settings.token is None:
        raise HostError(
            "zammad: BPSM_ZAMMAD_URL and BPSM_ZAMMAD_TOKEN are required", permanent=True
        )
    transport = HttpTransport(
        settings.url, "zammad", timeout=settings.http_timeout, error_text=zammad_error_text
    )
    transport.session.headers["Authorization"] = f"Token token={settings.token.get_secret_value()}"
    return ZammadClient(transport)


class ZammadClient(HostClient):
    def __init__(self, transport: HttpTransport):
        self.http = transport
        # Writes that create an article are not retried within the call: after a timeout or
        # a lost answer the note may exist, so the job is retried and `has_note` looks first.
        self.once = transport.without_retries()
        self._me: dict[str, Any] | None = None

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.http.request(
            "GET", f"/api/v1/tickets/{ticket_id}", params={"expand": "true"}
        ).json()
        return data

    def has_note(self, ticket_id: str) -> bool:
        articles = self.http.request("GET", f"/api/v1/ticket_articles/by_ticket/{ticket_id}").json()
        me = self.me().get("id")
        return any(
            is_own_note(str(a.get("body", "")), a.get("created_by_id"), me) for a in articles
        )

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        current = self.ticket(event.ticket_id).get("group")
        moved_by_agent = bool(event.queue and current not in (event.queue, decision.queue))
        outcome: Any = "applied"
        if mode == "shadow":
            outcome = "shadow"
        elif moved_by_agent:
            outcome = "override"
        # The marker check makes the note idempotent when an earlier answer was lost.
        note = None if self.has_note(event.ticket_id) else self._note(event, decision)
        if outcome == "applied" and current != decision.queue:
            # The note rides on the move (Zammad's ticket update takes an article): one
            # call fewer per ticket, and the move and its explanation land together.
            update: dict[str, Any] = {"group": decision.queue}
            sender = self.http  # a bare move is idempotent, retried within the call
            if note is not None:
                update["article"] = {k: v for k, v in note.items() if k != "ticket_id"}
                note, sender = None, self.once
            sender.request("PUT", f"/api/v1/tickets/{event.ticket_id}", json=update)
        elif note is not None:
            self.once.request("POST", "/api/v1/ticket_articles", json=note)
        tags = list(decision.tags) + (["bpsm-shadow"] if mode == "shadow" else [])
        if outcome == "override":
            tags.append("bpsm-override")
        if decision.approver_group:
            tags.append("bpsm-cab-approval")  # the note names the approver group
        self.add_tags(event.ticket_id, tuple(tags))
        return ApplyResult(outcome, f"group was {current!r}")

    @staticmethod
    def _note(event: TicketEvent, decision: RoutingDecision) -> dict[str, Any]:
        return {
            "ticket_id": int(event.ticket_id),
            "body": note_html(decision.note),
            "content_type": "text/html",
            "type": "note",
            "internal": True,
            "subject": NOTE_MARKER,
        }

    def setup(self, mapping: Mapping, hook_url: str | None) -> SetupResult:
        """Groups, webhook (signed, SSL verified) and triggers; safe to run again."""
        lines: list[str] = []
        secret: str | None = None
        existing = {g["name"] for g in self.http.request("GET", "/api/v1/groups").json()}
        for name in mapping.all_queues():
            if name in existing:
                lines.append(f"group exists: {name}")
            else:
                self.http.request(
                    "POST",
                    "/api/v1/groups",
                    json={"name": name, "active": True, "note": "BPSM queue (bpsm-connector)"},
                )
                lines.append(f"group created: {name}")
        if not hook_url:
            lines.append("no --hook-url given: webhook and triggers not configured")
            return SetupResult(tuple(lines))
        me = self.me()
        webhooks = self.http.request("GET", "/api/v1/webhooks").json()
        webhook = next((w for w in webhooks if w.get("name") == WEBHOOK_NAME), None)
        if webhook is None:
            secret = self.new_webhook_secret()
            webhook = self.http.request(
                "POST",
                "/api/v1/webhooks",
                json={
                    "name": WEBHOOK_NAME,
                    "endpoint": hook_url,
                    "ssl_verify": True,
                    "active": True,
                    "signature_token": secret,
                    "customized_payload": False,
                    "note": "Routes new tickets to BPSM queues",
                },
            ).json()
            lines.append(f"webhook created: {hook_url} (signature token generated)")
        else:
            if webhook.get("endpoint") != hook_url:
                self.http.request(
                    "PUT", f"/api/v1/webhooks/{webhook['id']}", json={"endpoint": hook_url}
                )
                lines.append(f"webhook endpoint updated: {hook_url}")
            else:
                lines.append(f"webhook exists: {hook_url}")
        not_connector = {
            "operator": "is not",
            "pre_condition": "specific",
            "value": [str(me["id"])],
        }
        wanted = {
            TRIGGER_NAMES[0]: {
                "ticket.action": {"operator": "is", "value": "create"},
                "ticket.updated_by_id": not_connector,
            },
            TRIGGER_NAMES[1]: {
                "article.action": {"operator": "is", "value": "create"},
                "article.sender_id": {"operator": "is", "value": ["2"]},  # 2 = Customer
                "article.internal": {"operator": "is", "value": "false"},
                "ticket.updated_by_id": not_connector,
            },
        }
        triggers = {t["name"].lower() for t in self.http.request("GET", "/api/v1/triggers").json()}
        for name, condition in wanted.items():
            if name.lower() in triggers:
                lines.append(f"trigger exists: {name}")
                continue
            self.http.request(
                "POST",
                "/api/v1/triggers",
                json={
                    "name": name,
                    "active": True,
                    "activator": "action",
                    "execution_condition_mode": "selective",
                    "condition": condition,
                    "perform": {"notification.webhook": {"webhook_id": webhook["id"]}},
                    "note": "bpsm-connector; excludes the connector's own updates",
                },
            )
            lines.append(f"trigger created: {name}")
        if secret is None:
            lines.append(
                "test event skipped: the webhook existed already (its secret is not shown)"
            )
            return SetupResult(tuple(lines))
        return SetupResult(tuple(lines), secret, setup_test_event(hook_url, secret))

    def teardown(self, mapping: Mapping, queues: bool) -> list[str]:
        """Undo setup: its triggers, then its webhook (Zammad refuses to delete a webhook a
        trigger uses); with `queues` also the mapping's groups that hold no ticket."""
        lines: list[str] = []
        webhooks = self.http.request("GET", "/api/v1/webhooks").json()
        ours = [w for w in webhooks if w.get("name") == WEBHOOK_NAME]
        our_ids = {str(w["id"]) for w in ours}
        named = {name.lower() for name in TRIGGER_NAMES}
        for trigger in self.http.request("GET", "/api/v1/triggers").json():
            action = (trigger.get("perform") or {}).get("notification.webhook") or {}
            if (
                str(trigger.get("name", "")).lower() in named
                or str(action.get("webhook_id")) in our_ids
            ):
                self.http.request("DELETE", f"/api/v1/triggers/{trigger['id']}")
                lines.append(f"trigger removed: {trigger['name']}")
        for webhook in ours:
            self.http.request("DELETE", f"/api/v1/webhooks/{webhook['id']}")
            lines.append(f"webhook removed: {webhook.get('endpoint')}")
        if not ours:
            lines.append(f"no webhook named {WEBHOOK_NAME}")
        if queues:
            lines += self._remove_empty_groups(mapping)
        return lines

    def _remove_empty_groups(self, mapping: Mapping) -> list[str]:
        lines: list[str] = []
        groups = {g["name"]: g for g in self.http.request("GET", "/api/v1/groups").json()}
        for name in mapping.all_queues():
            group = groups.get(name)
            if group is None:
                lines.append(f"group not found: {name}")
                continue
            found = self.http.request(
                "GET",
                "/api/v1/tickets/search",
                params={"query": f'group.name:"{name}"', "limit": 1},
            ).json()
            if found.get("tickets"):
                lines.append(f"group kept: {name} holds tickets (move or delete them first)")
                continue
            # Zammad itself refuses a group something still refers to (422): say so, go on.
            answer = self.http.request("DELETE", f"/api/v1/groups/{group['id']}", ok=(200, 422))
            if answer.status_code == 422:
                lines.append(f"group kept: {name} ({self.http.error_text(answer)})")
            else:
                lines.append(f"group removed: {name}")
        return lines

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        events: list[TicketEvent] = []
        page = 1
        while True:
            found = self.http.request(
                "GET",
                "/api/v1/tickets/search",
                params={
                    "query": f"created_at:>{stamp}",
                    "expand": "true",
                    "limit": 100,
                    "page": page,
                },
            ).json()
            tickets = found if isinstance(found, list) else []
            for ticket in tickets:
                articles = self.http.request(
                    "GET", f"/api/v1/ticket_articles/by_ticket/{ticket['id']}"
                ).json()
                first = next((a for a in articles if a.get("sender") == "Customer"), None)
                if first is None:
                    continue
                events.append(
                    TicketEvent(
                        host="zammad",
                        delivery_id=f"backfill:{ticket['id']}",
                        ticket_id=str(ticket["id"]),
                        kind="polled",
                        subject=str(ticket.get("title")),
                        body=str(first.get("body", "")),
                        queue=ticket.get("group"),
                        created_at=parse_time(ticket.get("created_at")),
                    )
                )
                if progress is not None:
                    progress(len(events))
            if len(tickets) < 100:
                return events
            page += 1

    def is_open(self, ticket_id: str) -> bool | None:
        state = str(self.ticket(ticket_id).get("state", ""))
        return state not in ("closed", "merged", "removed")

    def ticket_times(self, ticket_id: str) -> TicketTimes | None:
        """Zammad tracks first response and close times on the ticket itself."""
        ticket = self.ticket(ticket_id)

        def epoch(key: str) -> float | None:
            moment = parse_time(ticket.get(key))
            return moment.timestamp() if moment else None

        return TicketTimes(
            first_response_at=epoch("first_response_at"), closed_at=epoch("close_at")
        )

    def current_queue(self, ticket_id: str) -> str | None:
        group = self.ticket(ticket_id).get("group")
        return str(group) if group else None

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        articles = self.http.request(
            "GET", f"/api/v1/ticket_articles/by_ticket/{event.ticket_id}"
        ).json()
        body = note_html(text)
        if any(a.get("body") == body for a in articles):
            return  # posted before; the answer was lost
        article: dict[str, Any] = {
            "ticket_id": int(event.ticket_id),
            "body": body,
            "content_type": "text/html",
            "subject": event.subject,
        }
        if send:
            # An e-mail article reaches the customer; Zammad fills in From from the group. The
            # address comes from Zammad, never from the webhook: a forged event must not turn
            # the helpdesk into a mail relay for an address of the sender's choosing.
            article.update(type="email", internal=False, to=self.customer_address(event.ticket_id))
        else:
            article.update(type="note", internal=True)
        # Once: after a lost answer the job's retry finds the text above and stops there.
        self.once.request("POST", "/api/v1/ticket_articles", json=article)

    def customer_address(self, ticket_id: str) -> str:
        """The e-mail address of the ticket's customer, as Zammad records it."""
        ticket = self.http.request("GET", f"/api/v1/tickets/{ticket_id}").json()
        customer_id = ticket.get("customer_id") if isinstance(ticket, dict) else None
        if not isinstance(customer_id, int) or isinstance(customer_id, bool):
            raise HostError(f"zammad: ticket {ticket_id} names no customer", permanent=True)
        user = self.http.request("GET", f"/api/v1/users/{customer_id}").json()
        email = user.get("email") if isinstance(user, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise HostError(
                f"zammad: the customer of ticket {ticket_id} has no e-mail address; the "
                "relation reply was not sent (relation.reply: draft leaves it for an agent)",
                permanent=True,
            )
        return email

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            self.http.request(
                "POST",
                "/api/v1/tags/add",
                idempotent=True,  # adding a tag the ticket has changes nothing
                json={"object": "Ticket", "o_id": int(ticket_id), "item": tag},
            )

    def me(self) -> dict[str, Any]:
        if self._me is None:
            self._me = self.http.request("GET", "/api/v1/users/me").json()
        return self._me

    def create_ticket(self, ticket: NewTicket) -> str:
        # Sent once and looked for first: an earlier try whose answer was lost may have
        # opened it (its reference is in the article).
        found = self.find_ticket(ticket) if ticket.ref else None
        if found is None:
            # Zammad needs a customer; the connector's own user opens its process tickets.
            created = self.once.request(
                "POST",
                "/api/v1/tickets",
                json={
                    "title": ticket.title,
                    "group": ticket.queue,
                    "customer_id": self.me()["id"],
                    "article": {
                        "subject": ticket.title,
                        "body": note_html(ticket.body),
                        "content_type": "text/html",
                        "type": "note",
                        "internal": True,
                    },
                },
            ).json()
            found = str(created["id"])
        self.add_tags(found, ticket.tags)
        return found

    def find_ticket(self, ticket: NewTicket) -> str | None:
        """The ticket carrying `ticket.ref` with the same title, if one was opened before."""
        found = self.http.request(
            "GET",
            "/api/v1/tickets/search",
            params={"query": ticket.ref, "expand": "true", "limit": 10},
        ).json()
        for candidate in found if isinstance(found, list) else []:
            if candidate.get("title") == ticket.title:
                return str(candidate["id"])
        return None
