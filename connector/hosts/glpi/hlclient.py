"""GLPI's high-level API (`/api.php/v2`, GLPI ≥ 11), chosen with `options.api: hlapi`.

OAuth2 password grant at `/api.php/token` (a client-credentials token carries no user, and
most endpoints refuse it); the token is cached and renewed once on a 401. Every call pins
the API version with `GLPI-API-Version: 2`, the version bpsm's webhooks are pinned to.
Contract: fixtures/contract/hlapi_v2_exchanges.json and fixtures/README.md (routes read in
`src/Glpi/Api/HL/Controller/ITILController.php` and `CoreController.php`).

What the high-level API does not offer, and what this client does instead:
- webhooks: no Webhook endpoint in HL API v2; setup and teardown use the legacy API when
  BPSM_GLPI_USER_TOKEN is also set, and print the manual steps otherwise;
- time to resolve: not in the v2 Ticket schema; `options.set_time_to_resolve` is ignored
  (with a warning);
- polling: GLPI ≤ 10, which polling is for, has no high-level API;
- a group's "may be assigned" flag is not read: a refusal comes back from the assignment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import requests
from pydantic import SecretStr

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import ApplyResult, HostClient, HostError, SetupResult, with_hint
from connector.hosts.glpi.client import (
    GlpiClient,
    all_rows,
    cached_id,
    connect,
    probe_apis,
    resolves_to_private,
)
from connector.hosts.glpi.sansio import (
    PINNED_API_VERSION,
    WEBHOOK_EVENTS,
    created_at,
    glpi_root,
    missing_group,
    note_html,
    opened_ticket_html,
    routing_note_lines,
    url_refusal_hints,
    webhook_url,
)
from connector.hosts.glpi.settings import GlpiOptions, GlpiSettings
from connector.hosts.http import HttpTransport, SharedToken
from connector.mapping import Mapping as HostMapping
from connector.notes import NOTE_MARKER, is_own_note, starts_with_marker
from connector.text import html_to_text

log = logging.getLogger("bpsm.glpi")

OK = (200, 201, 204, 206)
HL_HINTS = {
    "ERROR_UNAUTHENTICATED": (
        "the token carries no user: use the password grant (BPSM_GLPI_USERNAME/_PASSWORD)"
    ),
    "ERROR_RIGHT_MISSING": "the API user's profile lacks the right (see the GLPI guide)",
    "ERROR_ITEM_NOT_FOUND": "the item no longer exists in GLPI (deleted or purged)",
}
TOKEN_HINTS = {
    "invalid_grant": "BPSM_GLPI_USERNAME/BPSM_GLPI_PASSWORD are not a GLPI user's login",
    "invalid_client": (
        "BPSM_GLPI_CLIENT_ID/BPSM_GLPI_CLIENT_SECRET do not match an OAuth client "
        "(Setup > OAuth clients) that allows the password grant"
    ),
    "unsupported_grant_type": "allow the password grant on the OAuth client (Setup > OAuth)",
}
_GROUP_HREF = re.compile(r"group\.form\.php\?id=(\d+)")


def hl_error_text(response: Any) -> str:
    """The high-level API's error `{"status", "title", "detail"}` (or OAuth's `{"error",
    "error_description"}`) with what the admin should do about it."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        code = str(data["error"])
        text = f"{code}: {data.get('error_description') or data.get('message') or ''}".strip()
        return with_hint(text, TOKEN_HINTS.get(code))
    if isinstance(data, dict) and "status" in data:
        code = str(data["status"])
        detail = data.get("detail") or ""
        text = f"{code}: {data.get('title') or ''}{f' ({detail})' if detail else ''}"
        return with_hint(text, HL_HINTS.get(code))
    hint = None
    if response.status_code == 404:
        hint = (
            "is the high-level API enabled (Setup > General > API)? BPSM_GLPI_URL must be "
            "GLPI's root or its apirest.php base"
        )
    return with_hint(response.text[:200].strip(), hint)


def team_groups(ticket: Mapping[str, Any]) -> list[tuple[int, str]]:
    """Assigned groups (id, name) in the order they were added (ITILController::getCleanTeam
    tells groups from users by their form link)."""
    groups = []
    for member in ticket.get("team") or []:
        if not isinstance(member, dict) or member.get("role") != "assigned":
            continue
        found = _GROUP_HREF.search(str(member.get("href", "")))
        if found:
            groups.append((int(found.group(1)), str(member.get("name") or "")))
    return groups


def rsql_equals(field: str, value: str) -> str:
    """An RSQL `==` filter; the value quoted (names have spaces) with `"` and `\\` escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{field}=="{escaped}"'


def _dropdown_id(value: Any) -> int | None:
    return int(value["id"]) if isinstance(value, dict) and value.get("id") else None


def _timeline_items(rows: Any) -> list[dict[str, Any]]:
    """`GET …/Timeline/Followup` answers `[{"type": "Followup", "item": {…}}]`
    (ITILController::getITILTimelineItems)."""
    items = []
    for row in rows if isinstance(rows, list) else []:
        item = row.get("item") if isinstance(row, dict) else None
        if isinstance(item, dict):
            items.append(item)
    return items


def connect_hl(settings: GlpiSettings, options: GlpiOptions) -> GlpiHlClient:
    """The high-level API client; with BPSM_GLPI_USER_TOKEN also set, a legacy client for
    what the high-level API cannot do (webhooks)."""
    needed = {
        "BPSM_GLPI_URL": settings.url,
        "BPSM_GLPI_CLIENT_ID": settings.client_id,
        "BPSM_GLPI_CLIENT_SECRET": settings.client_secret,
        "BPSM_GLPI_USERNAME": settings.username,
        "BPSM_GLPI_PASSWORD": settings.password,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing or not settings.url:
        raise HostError(
            f"glpi: options.api: hlapi needs {', '.join(missing)} (each also _FILE)",
            permanent=True,
        )
    root = glpi_root(settings.url)
    retrying = HttpTransport(
        f"{root}/api.php/v2", "glpi", timeout=settings.http_timeout, error_text=hl_error_text
    )
    retrying.session.headers["GLPI-API-Version"] = PINNED_API_VERSION
    legacy = None
    if settings.user_token or settings.token:
        legacy = connect(settings, options, 11)
    assert settings.client_id and settings.client_secret and settings.username
    assert settings.password
    credentials: dict[str, SecretStr | str] = {
        "grant_type": "password",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret,
        "username": settings.username,
        "password": settings.password,
    }
    return GlpiHlClient(retrying, retrying.without_retries(), root, credentials, options, legacy)


class GlpiHlClient(HostClient):
    """api.php/v2 with an OAuth2 bearer token. `http` retries blips (reads, PATCH of a
    field); `once` sends POSTs that create something a single time (see HostClient)."""

    def __init__(
        self,
        http: HttpTransport,
        once: HttpTransport,
        root: str,
        credentials: Mapping[str, SecretStr | str],
        options: GlpiOptions,
        legacy: GlpiClient | None = None,
    ):
        self.http = http
        self.once = once
        self.root = root
        self.options = options
        self.legacy = legacy
        self.user_id: int | None = None
        self._credentials = credentials
        self._access = SharedToken(self._fetch_token)
        self._group_ids: dict[str, int] = {}
        self._category_ids: dict[str, int] = {}
        self._warned_ttr = False

    # ----- token --------------------------------------------------------------------------

    def _fetch_token(self) -> str:
        form = {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in self._credentials.items()
        }
        form["scope"] = "api"
        # A token request creates nothing: safe to repeat after a blip.
        data = self.http.request(
            "POST", f"{self.root}/api.php/token", data=form, idempotent=True
        ).json()
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HostError(f"glpi: /api.php/token answered no access_token: {str(data)[:200]}")
        return token

    def _call(
        self, method: str, path: str, *, retry: bool = True, accept: tuple[int, ...] = (), **kw: Any
    ) -> requests.Response:
        """One call with the bearer token; an expired token is renewed once and the call
        repeated (the API refuses an unauthenticated request before doing anything)."""
        transport = self.http if retry else self.once
        token = self._access.current()
        response = transport.request(
            method, path, ok=OK + accept + (401,), headers=self._auth(token), **kw
        )
        if response.status_code != 401:
            return response
        token = self._access.renew(token)
        return transport.request(method, path, ok=OK + accept, headers=self._auth(token), **kw)

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _me(self) -> int | None:
        if self.user_id is None:
            data = self._call("GET", "session").json()
            user = data.get("user_id") if isinstance(data, dict) else None
            self.user_id = int(user) if isinstance(user, int) and user > 0 else None
        return self.user_id

    # ----- reads --------------------------------------------------------------------------

    def _rows(self, path: str, filters: str = "") -> list[dict[str, Any]]:
        """Every row of a search, paged with start/limit."""
        size = self.options.page_size

        def page(start: int) -> requests.Response:
            params = {"start": str(start), "limit": str(size)}
            if filters:
                params["filter"] = filters
            return self._call("GET", path, params=params)

        return all_rows(path, page)

    def _ticket(self, ticket_id: str) -> dict[str, Any]:
        response = self._call("GET", f"Assistance/Ticket/{ticket_id}", accept=(404,))
        if response.status_code == 404:
            raise HostError(
                f"glpi: ticket {ticket_id} was deleted (404 ERROR_ITEM_NOT_FOUND); "
                "nothing to route",
                permanent=True,
            )
        data = response.json()
        if not isinstance(data, dict):
            raise HostError(f"glpi: ticket {ticket_id} answered no object: {str(data)[:200]}")
        return data

    def _followups(self, ticket_id: str) -> list[dict[str, Any]]:
        rows = self._call("GET", f"Assistance/Ticket/{ticket_id}/Timeline/Followup").json()
        return _timeline_items(rows)

    def _own_note_exists(self, ticket_id: str) -> bool:
        me = self._me()
        return any(
            is_own_note(html_to_text(str(f.get("content") or "")), _dropdown_id(f.get("user")), me)
            for f in self._followups(ticket_id)
        )

    def _find(self, path: str, name: str) -> dict[str, Any] | None:
        column = "completename" if " > " in name else "name"
        for row in self._rows(path, rsql_equals(column, name)):
            if name in (row.get("name"), row.get("completename")):
                return row
        return None

    def group_id(self, name: str) -> int:
        if name not in self._group_ids:
            row = self._find("Administration/Group", name)
            if row is None:
                raise missing_group(name)
            self._group_ids[name] = int(row["id"])
        return self._group_ids[name]

    def category_id(self, name: str) -> int | None:
        return cached_id(
            self._category_ids, name, lambda: self._find("Dropdowns/ITILCategory", name)
        )

    # ----- apply --------------------------------------------------------------------------

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        ticket = self._ticket(event.ticket_id)
        if ticket.get("is_deleted") is True:
            raise HostError(f"glpi: ticket {event.ticket_id} is in the trash", permanent=True)
        outcome: Literal["applied", "shadow", "override"] = "shadow"
        agent_group = None
        if mode != "shadow":
            assigned = team_groups(ticket)
            target = self.group_id(decision.queue)
            agent_group = _moved_by_agent(event, assigned, target)
            if agent_group is not None:
                outcome = "override"
            else:
                outcome = "applied"
                if target not in [group for group, _ in assigned]:
                    self._assign(event.ticket_id, target)
                self._update_category(ticket, decision)
        self._add_note_once(event.ticket_id, decision, outcome, agent_group)
        return ApplyResult(outcome, f"assigned groups at event time: {event.queue!r}")

    def _assign(self, ticket_id: str, group_id: int) -> None:
        self._call(
            "POST",
            f"Assistance/Ticket/{ticket_id}/TeamMember",
            retry=False,
            json={"type": "Group", "id": group_id, "role": "assigned"},
        )

    def _update_category(self, ticket: dict[str, Any], decision: RoutingDecision) -> None:
        """The category, only where nobody set one (as v1); time to resolve is not in the
        high-level API's Ticket schema."""
        if self.options.set_time_to_resolve and not self._warned_ttr:
            self._warned_ttr = True
            log.warning("options.set_time_to_resolve is not supported with options.api: hlapi")
        category = self.options.categories.get(decision.service or "")
        if not category or _dropdown_id(ticket.get("category")):
            return
        category_id = self.category_id(category)
        if category_id is not None:
            self._call("PATCH", f"Assistance/Ticket/{ticket['id']}", json={"category": category_id})

    def _add_note_once(
        self, ticket_id: str, decision: RoutingDecision, outcome: str, agent_group: str | None
    ) -> None:
        if self._own_note_exists(ticket_id):
            return
        lines = routing_note_lines(decision, outcome, agent_group)
        self._post_followup(ticket_id, note_html(lines), private=True)

    def _post_followup(self, ticket_id: str, content: str, private: bool) -> None:
        self._call(
            "POST",
            f"Assistance/Ticket/{ticket_id}/Timeline/Followup",
            retry=False,
            json={"content": content, "is_private": private},
        )

    # ----- other writes and reads ---------------------------------------------------------

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        wanted = " ".join(text.split())
        for followup in self._followups(event.ticket_id):
            if " ".join(html_to_text(str(followup.get("content") or "")).split()) == wanted:
                return  # posted before; the answer was lost
        content = f"<!-- {NOTE_MARKER} reply -->" + note_html(text.strip().splitlines())
        self._post_followup(event.ticket_id, content, private=not send)

    def create_ticket(self, ticket: NewTicket) -> str:
        group = self.group_id(ticket.queue)
        ticket_id = self.find_ticket(ticket) if ticket.ref else None
        if ticket_id is None:
            response = self._call(
                "POST",
                "Assistance/Ticket",
                retry=False,
                json={
                    "name": ticket.title,
                    "content": opened_ticket_html(ticket),
                    "entity": self.options.entity,
                    "type": 2,  # request
                },
            )
            ticket_id = _created_id(response)
        elif group in [g for g, _ in team_groups(self._ticket(ticket_id))]:
            return ticket_id
        self._assign(ticket_id, group)
        return ticket_id

    def find_ticket(self, ticket: NewTicket) -> str | None:
        rows = self._rows("Assistance/Ticket", f'content=like="*{ticket.ref}*"')
        found = [r for r in rows if ticket.ref and ticket.ref in str(r.get("content") or "")]
        return str(found[0]["id"]) if found else None

    def is_open(self, ticket_id: str) -> bool | None:
        response = self._call("GET", f"Assistance/Ticket/{ticket_id}", accept=(404,))
        ticket = response.json() if response.status_code == 200 else {}
        if not isinstance(ticket, dict) or not ticket or ticket.get("is_deleted") is True:
            return False
        return _status(ticket) < 5  # 5 solved, 6 closed

    def current_queue(self, ticket_id: str) -> str | None:
        groups = team_groups(self._ticket(ticket_id))
        return groups[-1][1] if groups else None

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        """GLPI has no tags: apply() lists them in its followup."""

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        stamp = since.astimezone().isoformat(timespec="seconds")
        events: list[TicketEvent] = []
        for ticket in self._rows("Assistance/Ticket", f"date_creation=ge={stamp}"):
            content = str(ticket.get("content") or "")
            if ticket.get("is_deleted") is True or _status(ticket) >= 5:
                continue
            if starts_with_marker(content):
                continue  # a ticket the connector opened
            groups = team_groups(ticket)
            events.append(
                TicketEvent(
                    host="glpi",
                    delivery_id=f"backfill:{ticket['id']}",
                    ticket_id=str(ticket["id"]),
                    kind="polled",
                    subject=str(ticket.get("name") or ""),
                    body=content,
                    queue=groups[-1][1] if groups else None,
                    created_at=created_at(ticket, "ticket"),
                )
            )
            if progress is not None:
                progress(len(events))
        return events

    # ----- setup --------------------------------------------------------------------------

    def setup(self, mapping: HostMapping, hook_url: str | None) -> SetupResult:
        lines, major = probe_apis(self.http, self.root)
        lines += [self._ensure("Administration/Group", n) for n in mapping.all_queues()]
        categories = dict.fromkeys(self.options.categories.values())
        lines += [self._ensure("Dropdowns/ITILCategory", n) for n in categories]
        if not hook_url:
            lines.append("no --hook-url given: webhooks not configured")
            return SetupResult(tuple(lines))
        hints = url_refusal_hints(major, hook_url, resolves_to_private(hook_url))
        if self.legacy is None:
            lines += manual_webhook_lines(hook_url)
            lines += [f"warning: {hint}" for hint in hints]
            return SetupResult(tuple(lines))
        self.legacy.secret_file = self.secret_file
        return self.legacy.setup_webhooks(hook_url, lines, major)

    def _ensure(self, path: str, name: str) -> str:
        label = "group" if path.endswith("Group") else "category"
        if self._find(path, name) is not None:
            return f"{label} exists: {name}"
        if " > " in name:
            return f"{label} missing: create {name!r} by hand (setup creates top-level ones only)"
        values = {
            "name": name,
            "entity": self.options.entity,
            "is_recursive": True,
            "comment": "BPSM (bpsm-connector)",
        }
        self._call("POST", path, retry=False, json=values)
        return f"{label} created: {name}"

    def teardown(self, mapping: HostMapping, queues: bool) -> list[str]:
        if self.legacy is not None:
            return self.legacy.teardown(mapping, queues)
        return [
            "the high-level API has no webhooks endpoint: delete the webhooks named "
            "'bpsm-connector: …' in Setup > Webhooks (or set BPSM_GLPI_USER_TOKEN and run "
            "this again)",
            "groups and categories kept: remove unused ones by hand",
        ]

    def close(self) -> None:
        if self.legacy is not None:
            self.legacy.close()


def manual_webhook_lines(hook_url: str) -> list[str]:
    """What to create by hand when only the high-level API is configured."""
    lines = [
        "webhooks: the high-level API cannot create them; create these in Setup > Webhooks "
        "(or set BPSM_GLPI_USER_TOKEN and BPSM_GLPI_APP_TOKEN and run setup again):"
    ]
    for itemtype, event in WEBHOOK_EVENTS:
        lines.append(
            f"  {itemtype} {event} → {webhook_url(hook_url, itemtype)} (API version "
            f"{PINNED_API_VERSION}, method POST, a secret of 16+ bytes in "
            "BPSM_GLPI_WEBHOOK_SECRET_FILE)"
        )
    return lines


def _moved_by_agent(event: TicketEvent, assigned: list[tuple[int, str]], target: int) -> str | None:
    """The group an agent assigned after the event (as the v1 client decides it)."""
    if not assigned or assigned[-1][0] == target:
        return None
    latest = assigned[-1][1] or f"group #{assigned[-1][0]}"
    return None if latest == event.queue else latest


def _status(ticket: Mapping[str, Any]) -> int:
    status = ticket.get("status")
    value = status.get("id") if isinstance(status, dict) else status
    return int(value) if isinstance(value, int) else 1


def _created_id(response: requests.Response) -> str:
    """The id of what a POST created: `{"id", "href"}`, else the Location header's end."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("id"):
        return str(data["id"])
    location = response.headers.get("Location", "")
    tail = location.rstrip("/").rsplit("/", 1)[-1]
    if tail.isdigit():
        return tail
    raise HostError(f"glpi: POST answered no id: {str(data)[:200]} {location}")
