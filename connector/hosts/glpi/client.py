"""GLPI's legacy REST API (apirest.php): group, category, time to resolve and a private
followup out; polling for GLPI ≤ 10; setup of groups, categories and webhooks.

Every POST that creates something goes out once (`once`), after a look for an earlier copy.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import ApplyResult, HostClient, HostError, SetupResult, with_hint
from connector.hosts.glpi.sansio import (
    ASSIGNED,
    DATE_FMT,
    DEFAULT_POLL_INTERVAL,
    OK,
    PINNED_API_VERSION,
    REQUESTER,
    SO_ID,
    SO_MODIFIED,
    SO_OPENED,
    WEBHOOK_EVENTS,
    WEBHOOK_NAME,
    _content_range_total,
    _mark,
    _mark_epoch,
    describe_apis,
    glpi_error,
    glpi_error_text,
    glpi_root,
    glpi_text,
    hl_api_majors,
    local_time,
    local_to_utc,
    missing_group,
    note_html,
    opened_ticket_html,
    routing_note_lines,
    setup_test_event,
    url_refusal_hints,
    utc_offset,
    webhook_url,
)
from connector.hosts.glpi.settings import GlpiOptions, GlpiSettings
from connector.hosts.http import HttpTransport, SharedToken
from connector.logs import log_extra
from connector.mapping import Mapping as HostMapping
from connector.notes import NOTE_MARKER, is_own_note, starts_with_marker
from connector.text import html_to_text

log = logging.getLogger("bpsm.glpi")


def connect(settings: GlpiSettings, options: GlpiOptions, api_version: int) -> GlpiClient:
    """The API client for these settings: two transports on one session (App-Token)."""
    # `bpsm setup/backfill --token-file` sets BPSM_GLPI_TOKEN_FILE: take it as the user token.
    user_token = settings.user_token or settings.token
    if not settings.url or user_token is None:
        raise HostError("glpi: BPSM_GLPI_URL and BPSM_GLPI_USER_TOKEN are required", permanent=True)
    session = requests.Session()
    if settings.app_token is not None:
        session.headers["App-Token"] = settings.app_token.get_secret_value()
    timeout = settings.http_timeout
    retrying = HttpTransport(
        settings.url, "glpi", timeout=timeout, session=session, error_text=glpi_error_text
    )
    once = retrying.without_retries()
    return GlpiClient(
        retrying,
        once,
        user_token,
        options,
        api_version,
        settings.poll_interval or DEFAULT_POLL_INTERVAL,
    )


def probe_apis(http: HttpTransport, url: str) -> tuple[list[str], int | None]:
    """Which APIs this GLPI answers (lines for `bpsm setup glpi`) and the GLPI major that
    suggests; both index pages answer without credentials."""
    root = glpi_root(url)
    try:
        legacy = http.request("GET", f"{root}/apirest.php/", ok=tuple(range(200, 500)))
        index = http.request("GET", f"{root}/api.php/v2/", ok=tuple(range(200, 500)))
    except HostError as exc:
        return [f"GLPI API probe failed: {exc}"], None
    try:
        majors = hl_api_majors(index.json()) if index.status_code == 200 else []
    except ValueError:
        majors = []
    return describe_apis(legacy.status_code != 404, majors)


def resolves_to_private(url: str) -> bool:
    """Whether the URL's host is (or resolves to) a private, loopback or link-local address,
    which GLPI 12 does not send webhooks to by default."""
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address.is_private or address.is_loopback or address.is_link_local:
            return True
    return False


def _unpinned(row: Mapping[str, Any]) -> bool:
    """A GLPI 12 webhook pinned to another API version (GLPI 11's rows have no such column)."""
    return "pinned_version" in row and str(row["pinned_version"]) != PINNED_API_VERSION


def all_rows(path: str, page: Callable[[int], requests.Response]) -> list[dict[str, Any]]:
    """Every row of a GLPI list answer, page after page (`page(start)` asks for the rows from
    `start` on, as each API pages) until Content-Range's total: both APIs answer so."""
    rows: list[dict[str, Any]] = []
    while True:
        response = page(len(rows))
        batch = response.json()
        if not isinstance(batch, list):
            raise HostError(f"glpi: GET {path} did not answer a list: {str(batch)[:200]}")
        rows += [row for row in batch if isinstance(row, dict)]
        total = _content_range_total(response.headers.get("Content-Range"))
        if not batch or total is None or len(rows) >= total:
            return rows


def cached_id(
    cache: dict[str, int], name: str, find: Callable[[], dict[str, Any] | None]
) -> int | None:
    """An ITIL category's id, looked up once; None (and a warning) when missing: a category
    is a nicety, routing goes on."""
    if name not in cache:
        row = find()
        if row is None:
            log.warning(
                "ITIL category not found; run `bpsm setup glpi`", extra=log_extra({"name": name})
            )
            return None
        cache[name] = int(row["id"])
    return cache[name]


class GlpiClient(HostClient):
    """apirest.php with a session token. `http` retries blips in-call (reads and idempotent
    writes); `once` does not, for POSTs that a blind retry could duplicate — those fail the
    job instead, and the job's retry looks before it writes."""

    def __init__(
        self,
        http: HttpTransport,
        once: HttpTransport,
        user_token: SecretStr,
        options: GlpiOptions,
        api_version: int,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ):
        self.http = http
        self.once = once
        self.options = options
        self.api_version = api_version
        self.poll_interval = poll_interval
        self.user_id: int | None = None  # the API user, from the session
        self.clock: Callable[[], float] = time.time
        self._user_token = user_token
        self._session = SharedToken(self._init_session)
        self._group_ids: dict[str, int] = {}
        self._group_names: dict[int, str] = {}
        self._category_ids: dict[str, int] = {}
        self._glpi_major: int | None = None  # from setup's probe

    # ----- session ------------------------------------------------------------------------

    def _init_session(self) -> str:
        data = self.http.request(
            "GET",
            "initSession",
            params={"get_full_session": "true"},
            headers={"Authorization": f"user_token {self._user_token.get_secret_value()}"},
        ).json()
        token = data.get("session_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise HostError(f"glpi: initSession answered no session_token: {str(data)[:200]}")
        session = data.get("session")
        user_id = session.get("glpiID") if isinstance(session, dict) else None
        self.user_id = int(user_id) if isinstance(user_id, int | str) and user_id else None
        return token

    def _call(
        self, method: str, path: str, *, retry: bool = True, accept: tuple[int, ...] = (), **kw: Any
    ) -> requests.Response:
        """One API call with the session; an expired session is renewed once, then retried
        (GLPI checks the session before anything else, so nothing was written)."""
        transport = self.http if retry else self.once
        ok = OK + accept
        token = self._session.current()
        response = transport.request(
            method, path, ok=ok + (401,), headers={"Session-Token": token}, **kw
        )
        if response.status_code != 401:
            return response
        code, _ = glpi_error(response)
        if code != "ERROR_SESSION_TOKEN_INVALID":
            raise HostError(f"glpi: {method} {path} answered 401: {glpi_error_text(response)}")
        token = self._session.renew(token)
        return transport.request(method, path, ok=ok, headers={"Session-Token": token}, **kw)

    def close(self) -> None:
        token = self._session.take()
        if token:
            self.once.request(
                "GET", "killSession", ok=OK + (400, 401), headers={"Session-Token": token}
            )

    # ----- reads --------------------------------------------------------------------------

    def _rows(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every row of a list endpoint, paged with `range`."""
        size = self.options.page_size

        def page(start: int) -> requests.Response:
            query = {**(params or {}), "range": f"{start}-{start + size - 1}"}
            return self._call("GET", path, params=query)

        return all_rows(path, page)

    def _ticket(self, ticket_id: str) -> requests.Response:
        response = self._call("GET", f"Ticket/{ticket_id}", accept=(404,))
        if response.status_code == 404:
            raise HostError(
                f"glpi: ticket {ticket_id} was deleted (404 ERROR_ITEM_NOT_FOUND); "
                "nothing to route",
                permanent=True,
            )
        return response

    def _assigned(self, ticket_id: str) -> list[int]:
        """Assigned group ids, oldest first (requester/observer groups are not touched)."""
        rows = self._rows(f"Ticket/{ticket_id}/Group_Ticket")
        rows.sort(key=lambda r: int(r.get("id") or 0))
        return [
            int(r["groups_id"]) for r in rows if r.get("type") == ASSIGNED and r.get("groups_id")
        ]

    def _visible_text(self, row: Mapping[str, Any]) -> str:
        """A followup's text (HTML tags and GLPI ≤ 10's entity layer removed)."""
        return html_to_text(glpi_text(row.get("content"), self.api_version))

    def _followups(self, ticket_id: str) -> list[str]:
        return [self._visible_text(r) for r in self._rows(f"Ticket/{ticket_id}/ITILFollowup")]

    def _own_note_exists(self, ticket_id: str) -> bool:
        # In the visible text (a relation reply carries the marker only in an HTML comment),
        # and by the connector's own API user: a requester can type the marker.
        rows = self._rows(f"Ticket/{ticket_id}/ITILFollowup")
        return any(
            is_own_note(self._visible_text(row), row.get("users_id"), self.user_id) for row in rows
        )

    def _find(self, itemtype: str, name: str) -> dict[str, Any] | None:
        """The row whose name or full name ("Parent > Child") is exactly `name`."""
        column = "completename" if " > " in name else "name"
        for row in self._rows(itemtype, {f"searchText[{column}]": name}):
            names = (glpi_text(row.get(k), self.api_version) for k in ("name", "completename"))
            if name in names:
                return row
        return None

    def group_id(self, name: str) -> int:
        if name in self._group_ids:
            return self._group_ids[name]
        row = self._find("Group", name)
        if row is None:
            raise missing_group(name)
        if row.get("is_assign") in (0, "0", False):
            raise HostError(
                f"glpi: group {name!r} may not be assigned tickets: tick 'Assigned to' on its "
                "form (Administration > Groups)",
                permanent=True,
            )
        self._group_ids[name] = int(row["id"])
        self._group_names[int(row["id"])] = glpi_text(row.get("name"), self.api_version)
        return int(row["id"])

    def group_name(self, group_id: int) -> str:
        if group_id not in self._group_names:
            response = self._call("GET", f"Group/{group_id}", accept=(404,))
            row = response.json() if response.status_code != 404 else {}
            name = glpi_text(row.get("name"), self.api_version) if isinstance(row, dict) else ""
            self._group_names[group_id] = name or f"group #{group_id}"
        return self._group_names[group_id]

    def category_id(self, name: str) -> int | None:
        return cached_id(self._category_ids, name, lambda: self._find("ITILCategory", name))

    # ----- apply --------------------------------------------------------------------------

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        ticket = self._ticket(event.ticket_id).json()
        if ticket.get("is_deleted") in (1, "1", True):
            raise HostError(f"glpi: ticket {event.ticket_id} is in the trash", permanent=True)
        outcome: Literal["applied", "shadow", "override"] = "shadow"
        agent_group = None
        if mode != "shadow":  # shadow: the followup only, nothing moved
            assigned = self._assigned(event.ticket_id)
            target = self.group_id(decision.queue)
            agent_group = self._moved_by_agent(event, assigned, target)
            if agent_group is not None:
                outcome = "override"
            else:
                outcome = "applied"
                if target not in assigned:
                    self._assign(event.ticket_id, target)
                self._update_fields(ticket, event, decision)
        self._add_note_once(event.ticket_id, decision, outcome, agent_group)
        return ApplyResult(outcome, f"assigned groups at event time: {event.queue!r}")

    def _moved_by_agent(self, event: TicketEvent, assigned: list[int], target: int) -> str | None:
        """The group an agent assigned after the event (the latest one, if it is neither the
        process group nor the group the ticket had when the event was raised)."""
        if not assigned or assigned[-1] == target:
            return None
        latest = self.group_name(assigned[-1])
        return None if latest == event.queue else latest

    def _assign(self, ticket_id: str, group_id: int) -> None:
        # tickets_id must be in input even on the nested URL: createItems() ignores the parent.
        self._call(
            "POST",
            f"Ticket/{ticket_id}/Group_Ticket",
            retry=False,
            json={"input": {"tickets_id": int(ticket_id), "groups_id": group_id, "type": ASSIGNED}},
        )

    def _update_fields(
        self, ticket: dict[str, Any], event: TicketEvent, decision: RoutingDecision
    ) -> None:
        """Category and time to resolve, each only where nobody (GLPI's own SLA, the requester,
        an agent) set one: never overwrite a person's choice; also makes retries no-ops."""
        changes: dict[str, Any] = {}
        category = self.options.categories.get(decision.service or "")
        if category and not ticket.get("itilcategories_id"):
            category_id = self.category_id(category)
            if category_id is not None:
                changes["itilcategories_id"] = category_id
        due = self._time_to_resolve(ticket, event, decision)
        if due and not ticket.get("time_to_resolve"):
            changes["time_to_resolve"] = due
        if changes:
            self._call("PUT", f"Ticket/{ticket['id']}", json={"input": changes})

    def _time_to_resolve(
        self, ticket: dict[str, Any], event: TicketEvent, decision: RoutingDecision
    ) -> str | None:
        # In GLPI's own local time: its opening date plus the catalogue's resolution time.
        # (The decision's times are UTC; GLPI reads and writes its server's local time.)
        if not (self.options.set_time_to_resolve and decision.sla and event.created_at):
            return None
        opened = local_time(ticket.get("date"))
        if opened is None:
            return None
        due = opened + (decision.sla.resolution_due - event.created_at)
        return due.strftime(DATE_FMT)

    def _add_note_once(
        self,
        ticket_id: str,
        decision: RoutingDecision,
        outcome: str,
        agent_group: str | None = None,
    ) -> None:
        # The marker check makes the followup idempotent when an earlier answer was lost.
        if self._own_note_exists(ticket_id):
            return
        lines = routing_note_lines(decision, outcome, agent_group)
        self._post_followup(ticket_id, note_html(lines), private=True)

    def _post_followup(self, ticket_id: str, content: str, private: bool) -> None:
        """A followup, not retried within the call: after a lost answer it may exist, and
        the callers look for it first."""
        self._call(
            "POST",
            "ITILFollowup",
            retry=False,
            json={
                "input": {
                    "itemtype": "Ticket",
                    "items_id": int(ticket_id),
                    "content": content,
                    "is_private": 1 if private else 0,
                }
            },
        )

    # ----- polling (GLPI ≤ 10) and backfill -----------------------------------------------

    def poll(self, since: str | None) -> tuple[list[TicketEvent], str | None]:
        """Tickets changed since the mark. The mark is this connector's clock; the search asks
        GLPI for "changed within the last N minutes" relative to GLPI's own clock, so neither
        clock offsets nor GLPI's timezone matter — only elapsed time, plus the overlap.

        The first call only records its starting point (now minus the overlap): a crash
        during the first real poll then resumes from there instead of from a later 'now'."""
        now = self.clock()
        overlap = self.options.poll_overlap
        if since is None:
            return [], _mark(now - overlap)
        begin = _mark_epoch(since, now - overlap)
        minutes = max(1, math.ceil((now - begin + overlap) / 60))
        rows, window_start = self._search(SO_MODIFIED, minutes)
        events: list[TicketEvent] = []
        for ticket_id, date_mod in rows.items():
            event = self._polled_event(ticket_id, date_mod, window_start)
            if event is not None:
                events.append(event)
        return events, _mark(now)

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        minutes = max(1, math.ceil((self.clock() - since.timestamp()) / 60))
        rows, _ = self._search(SO_OPENED, minutes)
        events: list[TicketEvent] = []
        for ticket_id in rows:
            response = self._call("GET", f"Ticket/{ticket_id}", accept=(404,))
            ticket = response.json() if response.status_code == 200 else {}
            if not self._routable(ticket) or int(ticket.get("status") or 1) >= 5:
                continue  # deleted, the connector's own, or solved/closed
            events.append(self._event(ticket, response, f"backfill:{ticket_id}", "polled"))
            if progress is not None:
                progress(len(events))
        return events

    def _search(self, field: int, minutes: int) -> tuple[dict[int, str], float]:
        """{ticket id: date_mod} of tickets whose `field` is within the last `minutes` by
        GLPI's clock, and the window's start (epoch, from GLPI's Date header)."""
        found: dict[int, str] = {}
        start, window_start = 0, None
        while True:
            response = self._call(
                "GET",
                "search/Ticket",
                accept=(400,),
                params={
                    "criteria[0][field]": str(field),
                    "criteria[0][searchtype]": "morethan",
                    "criteria[0][value]": f"-{minutes}MINUTE",
                    "forcedisplay[0]": str(SO_ID),
                    "forcedisplay[1]": str(SO_MODIFIED),
                    "sort": str(SO_MODIFIED),
                    "order": "ASC",
                    "range": f"{start}-{start + self.options.page_size - 1}",
                },
            )
            if window_start is None:
                window_start = self._glpi_now(response) - minutes * 60
            if response.status_code == 400:
                self._range_end(response)  # the total shrank while paging: done
                break
            body = response.json()
            if not isinstance(body, dict) or not isinstance(body.get("data") or [], list):
                raise HostError(f"glpi: search/Ticket answered no result list: {str(body)[:200]}")
            data: list[Any] = body.get("data") or []
            for row in data:
                if isinstance(row, dict) and str(row.get(str(SO_ID), "")).isdigit():
                    found[int(row[str(SO_ID)])] = str(row.get(str(SO_MODIFIED)) or "")
            total = int(body.get("totalcount") or 0)
            # Every page is 206 while the total exceeds a page, the last one included.
            if not data or start + len(data) >= total:
                break
            start += len(data)
        return found, window_start

    def _range_end(self, response: requests.Response) -> None:
        code, _ = glpi_error(response)
        if code != "ERROR_RANGE_EXCEED_TOTAL":
            raise HostError(
                f"glpi: GET search/Ticket answered 400: {glpi_error_text(response)}",
                permanent=True,
            )

    def _glpi_now(self, response: requests.Response) -> float:
        try:
            return parsedate_to_datetime(response.headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return self.clock()

    def _polled_event(
        self, ticket_id: int, date_mod: str, window_start: float
    ) -> TicketEvent | None:
        response = self._call("GET", f"Ticket/{ticket_id}", accept=(404,))
        if response.status_code == 404:
            return None  # purged since the search
        ticket = response.json()
        if not self._routable(ticket):
            return None
        offset = utc_offset(ticket.get("date_mod"), response.headers.get("Last-Modified"))
        created = local_to_utc(ticket.get("date_creation") or ticket.get("date"), offset)
        if created is not None and created.timestamp() > window_start:
            kind: Literal["created", "customer_reply"] = "created"
        elif self._last_change_by_requester(ticket):
            kind = "customer_reply"
        else:
            return None  # an older ticket an agent changed: not the connector's to route
        return self._event(ticket, response, f"glpi:{ticket_id}:{date_mod}", kind)

    def _routable(self, ticket: Any) -> bool:
        if not isinstance(ticket, dict) or ticket.get("is_deleted") in (1, "1", True):
            return False
        if self.user_id is not None and ticket.get("users_id_lastupdater") == self.user_id:
            return False  # the connector's own change (or a ticket it opened)
        return not starts_with_marker(glpi_text(ticket.get("content"), self.api_version))

    def _last_change_by_requester(self, ticket: dict[str, Any]) -> bool:
        author = ticket.get("users_id_lastupdater")
        rows = self._rows(f"Ticket/{ticket['id']}/Ticket_User")
        return any(r.get("type") == REQUESTER and r.get("users_id") == author for r in rows)

    def _event(
        self,
        ticket: dict[str, Any],
        response: requests.Response,
        delivery: str,
        kind: Literal["created", "customer_reply", "polled"],
    ) -> TicketEvent:
        offset = utc_offset(ticket.get("date_mod"), response.headers.get("Last-Modified"))
        assigned = self._assigned(str(ticket["id"]))
        return TicketEvent(
            host="glpi",
            delivery_id=delivery,
            ticket_id=str(ticket["id"]),
            kind=kind,
            subject=glpi_text(ticket.get("name"), self.api_version),
            body=glpi_text(ticket.get("content"), self.api_version),
            queue=self.group_name(assigned[-1]) if assigned else None,
            created_at=local_to_utc(ticket.get("date"), offset),
        )

    # ----- setup, tickets, tags -----------------------------------------------------------

    def setup(self, mapping: HostMapping, hook_url: str | None) -> SetupResult:
        """Groups, categories and (GLPI 11) the two webhooks; safe to run again."""
        api_lines, self._glpi_major = probe_apis(self.http, self.http.base_url)
        lines = api_lines + [self._ensure("Group", name) for name in mapping.all_queues()]
        lines += [
            self._ensure("ITILCategory", n) for n in dict.fromkeys(self.options.categories.values())
        ]
        if self.api_version < 11:
            lines.append(
                f"GLPI {self.api_version} has no outgoing webhooks: the connector polls the API "
                f"every {self.poll_interval:g} s (BPSM_GLPI_POLL_INTERVAL)"
            )
            return SetupResult(tuple(lines))
        if not hook_url:
            lines.append("no --hook-url given: webhooks not configured")
            return SetupResult(tuple(lines))
        return self.setup_webhooks(hook_url, lines, self._glpi_major)

    def setup_webhooks(
        self, hook_url: str, lines: list[str], glpi_major: int | None
    ) -> SetupResult:
        """The two webhooks (pinned to the API version bpsm reads), what may stop GLPI from
        sending to `hook_url`, and the test event; also used by the high-level API client,
        which has no webhook endpoint."""
        hints = url_refusal_hints(glpi_major, hook_url, resolves_to_private(hook_url))
        try:
            secret = self._ensure_webhooks(hook_url, lines)
        except HostError as exc:
            # GLPI checks a webhook URL against its allowlist: say what to change there.
            raise HostError(with_hint(str(exc), "; ".join(hints) or None), exc.permanent) from exc
        lines += [f"warning: {hint}" for hint in hints]
        if secret is None:
            lines.append(
                "test event skipped: the webhooks existed already (their secret is not shown)"
            )
            return SetupResult(tuple(lines))
        return SetupResult(tuple(lines), secret, setup_test_event(hook_url, secret, time.time()))

    def _ensure(self, itemtype: Literal["Group", "ITILCategory"], name: str) -> str:
        label = "group" if itemtype == "Group" else "category"
        row = self._find(itemtype, name)
        if row is not None:
            if itemtype == "Group" and row.get("is_assign") in (0, "0"):
                return f"group exists but may not be assigned tickets: {name} (tick 'Assigned to')"
            return f"{label} exists: {name}"
        if " > " in name:
            return f"{label} missing: create {name!r} by hand (setup creates top-level ones only)"
        values: dict[str, Any] = {
            "name": name,
            "entities_id": self.options.entity,
            "is_recursive": 1,
            "comment": "BPSM (bpsm-connector)",
        }
        if itemtype == "Group":
            values["is_assign"] = 1
        self._call("POST", itemtype, retry=False, json={"input": values})
        return f"{label} created: {name}"

    def _ensure_webhooks(self, hook_url: str, lines: list[str]) -> str | None:
        """Both webhooks, reported in `lines`; the secret generated for them, if any."""
        rows = self._rows("Webhook", {"searchText[name]": WEBHOOK_NAME})
        ours = {(str(r.get("itemtype")), str(r.get("event"))): r for r in rows}
        missing = [key for key in WEBHOOK_EVENTS if key not in ours]
        secret: str | None = None
        if missing:
            # GLPI shows no stored secret: all our webhooks get the one generated now.
            secret = self.new_webhook_secret()
        for itemtype, event in WEBHOOK_EVENTS:
            url = webhook_url(hook_url, itemtype)
            row = ours.get((itemtype, event))
            # GLPI 12 pins a webhook to an API major (new ones default to the highest, an
            # alpha 3.x); GLPI 11 has no such column and ignores the field, as it ignores
            # every input key that is not a column.
            values: dict[str, Any] = {"url": url, "is_active": 1}
            values["pinned_version"] = PINNED_API_VERSION
            if secret:
                values["secret"] = secret
            if row is None:
                values |= {
                    "name": f"{WEBHOOK_NAME}: {itemtype} {event}",
                    "itemtype": itemtype,
                    "event": event,
                    "use_default_payload": 1,
                    "http_method": "post",
                    "sent_try": 3,
                    "entities_id": self.options.entity,
                    "is_recursive": 1,
                }
                self._call("POST", "Webhook", retry=False, json={"input": values})
                lines.append(f"webhook created: {itemtype} {event} → {url}")
            elif row.get("url") != url or not row.get("is_active") or secret or _unpinned(row):
                self._call("PUT", f"Webhook/{row['id']}", json={"input": values})
                lines.append(f"webhook updated: {itemtype} {event} → {url}")
            else:
                lines.append(f"webhook exists: {itemtype} {event} → {url}")
        return secret

    def teardown(self, mapping: HostMapping, queues: bool) -> list[str]:
        """Undo setup: its webhooks (GLPI 11); with `queues` also the mapping's groups that no
        ticket refers to. Categories stay: tickets keep theirs after routing."""
        lines: list[str] = []
        if self.api_version >= 11:
            rows = self._rows("Webhook", {"searchText[name]": WEBHOOK_NAME})
            for row in rows:
                if not str(row.get("name", "")).startswith(WEBHOOK_NAME):
                    continue
                self._call("DELETE", f"Webhook/{row['id']}", params={"force_purge": "true"})
                lines.append(f"webhook removed: {row.get('name')}")
            if not lines:
                lines.append(f"no webhook named {WEBHOOK_NAME}")
        else:
            lines.append(
                f"GLPI {self.api_version} has no webhooks: stop the service to stop polling"
            )
        if queues:
            lines += [self._remove_group_if_empty(name) for name in mapping.all_queues()]
            lines.append("categories kept: remove unused ones by hand (Setup > Dropdowns)")
        return lines

    def _remove_group_if_empty(self, name: str) -> str:
        row = self._find("Group", name)
        if row is None:
            return f"group not found: {name}"
        # Any link counts (assigned, requester or observer; open, closed or in the trash):
        # purging the group would silently drop it from those tickets.
        links = self._call(
            "GET",
            "Group_Ticket",
            params={"searchText[groups_id]": f"^{row['id']}$", "range": "0-0"},
        ).json()
        if links:
            return f"group kept: {name} holds tickets (move or delete them first)"
        self._call("DELETE", f"Group/{row['id']}", params={"force_purge": "true"})
        return f"group removed: {name}"

    def create_ticket(self, ticket: NewTicket) -> str:
        """Open a request in the queue's group. The marker in its text makes the webhook (or
        poll) of its creation an own update; GLPI has no tags, so they go into the text.
        Both POSTs go out once; a retry after a lost answer finds the ticket by its reference
        and the group among the assigned ones."""
        group = self.group_id(ticket.queue)
        ticket_id = self.find_ticket(ticket) if ticket.ref else None
        if ticket_id is None:
            data = self._call(
                "POST",
                "Ticket",
                retry=False,
                json={
                    "input": {
                        "name": ticket.title,
                        "content": opened_ticket_html(ticket),
                        "entities_id": self.options.entity,
                        "type": 2,  # request
                    }
                },
            ).json()
            ticket_id = str(data["id"])
        elif group in self._assigned(ticket_id):
            return ticket_id
        self._assign(ticket_id, group)
        return ticket_id

    def find_ticket(self, ticket: NewTicket) -> str | None:
        """The ticket whose text carries `ticket.ref`, if an earlier try opened it."""
        rows = self._rows("Ticket", {"searchText[content]": ticket.ref})
        return str(rows[0]["id"]) if rows else None

    def is_open(self, ticket_id: str) -> bool | None:
        response = self._call("GET", f"Ticket/{ticket_id}", accept=(404,))
        ticket = response.json() if response.status_code == 200 else {}
        if not isinstance(ticket, dict) or ticket.get("is_deleted") in (1, "1", True):
            return False
        return int(ticket.get("status") or 1) < 5  # 5 solved, 6 closed

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        """A public followup (GLPI mails it to the requester) or a private draft. The marker
        sits in an HTML comment: invisible to the customer, yet its webhook is an own update."""
        wanted = " ".join(text.split())
        if any(" ".join(t.split()) == wanted for t in self._followups(event.ticket_id)):
            return  # posted before; the answer was lost
        content = f"<!-- {NOTE_MARKER} reply -->" + note_html(text.strip().splitlines())
        self._post_followup(event.ticket_id, content, private=not send)

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        """GLPI has no tags (only a plugin does): nothing to do. apply() lists the tags in
        its followup instead, which is where agents look."""
