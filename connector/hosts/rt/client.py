"""Request Tracker's REST 2: polling the watched queues, moving tickets, the service custom
field, Due and a comment; setup of queues, the custom field and the connector's user.

See sansio.py for the RT facts this relies on. Comments and replies go out once, after a
look for an earlier copy.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import ApplyResult, HostClient, HostError, SetupResult
from connector.hosts.http import HttpTransport
from connector.hosts.rt.sansio import (
    BODY_CACHE_SIZE,
    DEFAULT_CONNECTOR_USER,
    PER_PAGE,
    REST_PATH,
    TICKET_CF_TYPE,
    MessageKind,
    agent_kept_line,
    create_text,
    field_value,
    is_utc_zone,
    parse_rt_time,
    queue_name,
    queues_clause,
    refusals,
    rights_instructions,
    rt_error_text,
    rt_stamp,
    rt_time,
    search_params,
    sql_quote,
    token_user_id,
    watch_query,
)
from connector.hosts.rt.settings import RTOptions, RTSettings
from connector.logs import log_extra
from connector.mapping import Mapping
from connector.notes import has_marker

log = logging.getLogger("bpsm.rt")


def connect(
    settings: RTSettings, options: RTOptions, agent_queues: tuple[str, ...] = ()
) -> RTClient:
    """The API client for these settings (an auth token, or user and password);
    `agent_queues` are the BPSM queues, polled for what agents chose there."""
    if not settings.url:
        raise HostError("rt: BPSM_RT_URL is required", permanent=True)
    base = settings.url.rstrip("/")
    if base.endswith(REST_PATH):  # accept the REST 2 URL as well as RT's base URL
        base = base[: -len(REST_PATH)]
    transport = HttpTransport(
        base + REST_PATH, "rt", timeout=settings.http_timeout, error_text=rt_error_text
    )
    if settings.token is not None:
        token = settings.token.get_secret_value()
        transport.session.headers["Authorization"] = f"token {token}"
        me = token_user_id(token)
    elif settings.user and settings.password is not None:
        transport.session.auth = (settings.user, settings.password.get_secret_value())
        me = settings.user
    else:
        raise HostError(
            "rt: set BPSM_RT_TOKEN (an RT auth token) or BPSM_RT_USER + BPSM_RT_PASSWORD",
            permanent=True,
        )
    return RTClient(transport, options, me=me, agent_queues=agent_queues)


class RTClient(HostClient):
    def __init__(
        self,
        transport: HttpTransport,
        options: RTOptions | None = None,
        me: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        agent_queues: tuple[str, ...] = (),
    ):
        self.http = transport
        # A reply is not retried within the call: after a timeout it may have been saved
        # (and mailed), so `reply` looks before the job is retried.
        self.once = transport.without_retries()
        self.options = options or RTOptions()
        self.me = me  # the API user (name or id), for the time zone check
        self._my_names: set[str] = {me} if me else set()  # how RT may name the API user
        self._names_read = False
        self.clock = clock
        # BPSM queues not watched for new tickets: polled for agents' moves and service field.
        watched = set(self.options.watch_queues)
        self.agent_queues = tuple(q for q in agent_queues if q not in watched)
        self._zone_checked = False
        self.per_page = PER_PAGE
        # A ticket's first text never changes; polls re-see tickets within the overlap.
        self._bodies: OrderedDict[str, str] = OrderedDict()

    # ----- reading ----------------------------------------------------------------------------

    def _json(self, path: str, **params: Any) -> Any:
        return self.http.request("GET", path, params=params or None).json()

    def _paged(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """All items of a collection, page by page (by number: see the module docstring).
        RT leaves `pages` null when it cannot count what the user may see: then read on
        until a short page."""
        page_number = 1
        while True:
            page = self._json(path, **params, per_page=self.per_page, page=page_number)
            items = page.get("items") or []
            yield from items
            pages = page.get("pages")
            if len(items) < self.per_page or (pages is not None and page_number >= int(pages)):
                return
            page_number += 1

    def current_queue(self, ticket_id: str) -> str | None:
        return queue_name(self.ticket(ticket_id)) or None

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        response = self.http.request(
            "GET", f"ticket/{ticket_id}", ok=(200, 403, 404), params={"fields[Queue]": "Name"}
        )
        if response.status_code == 404:
            raise HostError(f"rt: ticket {ticket_id} does not exist (404)", permanent=True)
        if response.status_code == 403:
            raise HostError(
                f"rt: ticket {ticket_id} is not visible to the connector's RT user (403): "
                "it lacks ShowTicket on the ticket's queue (or an agent moved the ticket "
                "to a queue the connector may not see)",
                permanent=True,
            )
        data: dict[str, Any] = response.json()
        return data

    def first_text(self, ticket_id: str) -> str:
        """The text the ticket was created with (its Create transaction's content)."""
        if ticket_id in self._bodies:
            self._bodies.move_to_end(ticket_id)
            return self._bodies[ticket_id]
        history = self._json(f"ticket/{ticket_id}/history", per_page=1, fields="Type")
        first = (history.get("items") or [None])[0]
        text = ""
        if first and first.get("Type") == "Create":
            attachments = self._json(
                f"transaction/{first['id']}/attachments", fields="ContentType,Content"
            )
            text = create_text(attachments.get("items") or [])
        self._bodies[ticket_id] = text
        if len(self._bodies) > BODY_CACHE_SIZE:
            self._bodies.popitem(last=False)
        return text

    def _texts(self, ticket_id: str) -> Iterator[str]:
        """The text of every message of the ticket: its Create, correspondence and comments
        (comments are listed only with ShowTicketComments)."""
        for attachment in self._paged(f"ticket/{ticket_id}/attachments", {"fields": "Content"}):
            if attachment.get("Content"):
                yield str(attachment["Content"])

    def has_note(self, ticket_id: str) -> bool:
        """Whether the connector's comment is on the ticket already (a retry after a lost
        answer must not add a second one): the marker, in a message the connector's own RT
        user wrote — a requester can type the marker into a mail."""
        found = self._paged(f"ticket/{ticket_id}/attachments", {"fields": "Content,Creator"})
        return any(
            has_marker(str(a.get("Content") or "")) and self._by_me(a.get("Creator")) for a in found
        )

    def _by_me(self, creator: Any) -> bool:
        """Whether an attachment's Creator (`{"id": <Name>, "type": "user", …}`) is the API
        user. The token names the user by number: its Name is read once, when first needed."""
        if self.me is None:
            return True  # the user cannot be told (see check_time_zone): the marker decides
        ref = str(creator.get("id") if isinstance(creator, dict) else creator or "")
        if ref in self._my_names:
            return True
        if not self._names_read:
            self._names_read = True
            response = self.http.request("GET", f"user/{quote(self.me, safe='')}", ok=(200,))
            user = response.json()
            self._my_names |= {str(user.get(k)) for k in ("id", "Name") if user.get(k)}
        return ref in self._my_names

    def has_text(self, ticket_id: str, text: str) -> bool:
        """Whether a message of the ticket says `text` (spacing aside: RT may trim the last
        newline). A reply has no marker, so its idempotence check compares the text."""
        wanted = " ".join(text.split())
        return any(" ".join(found.split()) == wanted for found in self._texts(ticket_id))

    def check_time_zone(self) -> None:
        """Refuse to poll unless the API user's Timezone is UTC (see the module docstring)."""
        if self._zone_checked:
            return
        if self.me is None:
            log.warning("rt: cannot tell the API user from the token; time zone not checked")
            self._zone_checked = True
            return
        response = self.http.request("GET", f"user/{quote(self.me, safe='')}", ok=(200, 403, 404))
        if response.status_code != 200:
            raise HostError(
                f"rt: cannot read the connector's own RT user {self.me} "
                f"({response.status_code}) to check its time zone",
                permanent=True,
            )
        user = response.json()
        zone = str(user.get("Timezone") or "")
        if not is_utc_zone(zone):
            name = user.get("Name", self.me)
            raise HostError(
                f"rt: the connector's RT user {name} has Timezone {zone!r}, but TicketSQL "
                "reads dates in the API user's time zone, so polling would miss updates; "
                f"set its Timezone to UTC (Admin → Users → {name}, or `bpsm setup rt`)",
                permanent=True,
            )
        self._zone_checked = True

    def _search(self, query: str) -> Iterator[dict[str, Any]]:
        return self._paged("tickets", search_params(query))

    def _event(
        self,
        item: dict[str, Any],
        delivery_id: str,
        kind: Literal["polled", "agent_update"] = "polled",
    ) -> TicketEvent:
        ticket_id = str(item["id"])
        return TicketEvent(
            host="rt",
            delivery_id=delivery_id,
            ticket_id=ticket_id,
            kind=kind,
            subject=str(item.get("Subject") or ""),
            # Only the Create text: the connector's own comments and replies change
            # LastUpdated (a new delivery, which the worker finds already routed) but are
            # never read as the customer's words.
            body=self.first_text(ticket_id),
            queue=queue_name(item),
            created_at=parse_rt_time(item.get("Created")),
            service_label=field_value(item, self.options.service_field),
        )

    def poll(self, since: str | None) -> tuple[list[TicketEvent], str | None]:
        """Tickets of the watched queues changed since the mark (minus the overlap), and the
        tickets of the BPSM queues changed since then, as agent updates (what agents chose:
        a move, the service field; the worker routes none of them).

        The first call (no mark) starts at now minus the overlap, so installing the connector
        does not route RT's history (`bpsm backfill` does that)."""
        self.check_time_zone()
        now = self.clock()
        mark = parse_rt_time(since) if since else None
        if since and mark is None:
            log.warning(
                "rt: unreadable poll mark; starting from now", extra=log_extra({"mark": since})
            )
        start = (mark or now) - timedelta(seconds=self.options.overlap_seconds)
        events: list[TicketEvent] = []
        newest = mark or now
        searches: list[tuple[Iterable[str], Literal["polled", "agent_update"]]]
        searches = [(self.options.watch_queues, "polled")]
        searches += [(self.agent_queues, "agent_update")] if self.agent_queues else []
        seen: set[str] = set()
        for queues, kind in searches:
            for item in self._search(watch_query(queues, start)):
                updated = parse_rt_time(item.get("LastUpdated"))
                delivery = f"rt:{item['id']}:{item.get('LastUpdated')}"
                if delivery in seen:  # moved between the two searches
                    continue
                seen.add(delivery)
                events.append(self._event(item, delivery, kind))
                if updated is not None and updated > newest:
                    newest = updated
        return events, rt_stamp(newest)

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        query = (
            f"{queues_clause(self.options.watch_queues)} AND Created >= "
            f"{sql_quote(rt_time(since))} AND Status = '__Active__'"
        )
        return self._events(query, "backfill", progress)

    def history(
        self, since: datetime, queues: Collection[str], progress: Progress | None = None
    ) -> list[TicketEvent]:
        if not queues:
            return []
        query = f"{queues_clause(sorted(queues))} AND Created >= {sql_quote(rt_time(since))}"
        return self._events(query, "history", progress)

    def _events(self, query: str, kind: str, progress: Progress | None) -> list[TicketEvent]:
        self.check_time_zone()
        events: list[TicketEvent] = []
        for item in self._search(query):
            events.append(self._event(item, f"{kind}:{item['id']}"))
            if progress is not None:
                progress(len(events))
        return events

    # ----- writing ----------------------------------------------------------------------------

    def _put(self, path: str, body: dict[str, Any]) -> list[str]:
        """PUT and return what RT refused: it answers 200 with messages either way."""
        return refusals(self.http.request("PUT", path, json=body).json())

    def _move(self, ticket_id: str, source: str, target: str) -> None:
        refused = self._put(f"ticket/{ticket_id}", {"Queue": target})
        if refused:
            raise HostError(
                f"rt: moving ticket {ticket_id} from {source!r} to {target!r} was refused "
                f"({'; '.join(refused)}): the connector's RT user needs ModifyTicket on "
                f"{source!r} and CreateTicket on {target!r}",
                permanent=True,
            )

    def _has_field(self, ticket_id: str, field: str) -> bool:
        """Whether `field` is applied to the ticket's (new) queue and visible to us."""
        fields = self.ticket(ticket_id).get("CustomFields") or []
        return any(cf.get("name") == field for cf in fields)

    def _set_fields(self, ticket_id: str, decision: RoutingDecision) -> str:
        """The service custom field (where the queue has it) and Due from the SLA."""
        field = self.options.service_field if decision.service else None
        has_field = bool(field) and self._has_field(ticket_id, str(field))
        body: dict[str, Any] = {}
        if has_field:
            body["CustomFields"] = {field: decision.service}
        if decision.sla is not None:
            body["Due"] = rt_time(decision.sla.resolution_due)
        refused = self._put(f"ticket/{ticket_id}", body) if body else []
        if refused:
            rights = f"ModifyTicket on {decision.queue!r}" + (
                f", SeeCustomField and ModifyCustomField on {field!r}" if has_field else ""
            )
            raise HostError(
                f"rt: setting {', '.join(sorted(body))} on ticket {ticket_id} was refused "
                f"({'; '.join(refused)}): the connector's RT user needs {rights}",
                permanent=True,
            )
        if field and not has_field:
            return f"; custom field {field!r} not applied to {decision.queue!r}"
        return ""

    def _message(self, ticket_id: str, kind: MessageKind, text: str) -> bool:
        """Add a plain-text message: a `comment` (internal) or `correspond` (RT mails it to
        the requestors); False when RT refused it. Sent once: after a lost answer the job's
        retry looks for it first (`has_note`, `has_text`).

        Sent as JSON: RT 5.0.3 stores a `Content-Type: text/plain` request body twice
        UTF-8-encoded ("kø" reads back as "kÃ¸"), the JSON form stores it as sent."""
        response = self.once.request(
            "POST",
            f"ticket/{ticket_id}/{kind}",
            ok=(201, 400, 403),
            json={"Content": text, "ContentType": "text/plain"},
        )
        return response.status_code == 201

    def _comment_once(self, ticket_id: str, text: str, queue: str, required: bool) -> str:
        if self.has_note(ticket_id):  # the answer to an earlier try was lost
            return "; comment existed"
        if self._message(ticket_id, "comment", text):
            return ""
        if required:
            raise HostError(
                f"rt: commenting on ticket {ticket_id} in {queue!r} was refused: the "
                f"connector's RT user needs ModifyTicket (or CommentOnTicket) on {queue!r}",
                permanent=True,
            )
        return f"; comment refused in {queue!r} (no CommentOnTicket there)"

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        current = queue_name(self.ticket(event.ticket_id))
        detail = f"queue was {current!r}"
        if mode == "shadow":
            detail += self._comment_once(event.ticket_id, decision.note, current, True)
            return ApplyResult("shadow", detail)
        # A move into another watched queue is a move into an intake: it is routed, as it
        # would be had the poll seen it there first (which it does when the move is earlier).
        moved_away = current not in (event.queue, decision.queue, *self.options.watch_queues)
        if event.queue and moved_away:
            # An agent moved it since the poll: their choice stands; say what we would do.
            note = decision.note + "\n" + agent_kept_line(decision.language, current)
            # The agent's queue may be one the connector may not comment in: not an error.
            detail += self._comment_once(event.ticket_id, note, current, False)
            return ApplyResult("override", detail)
        if current != decision.queue:
            self._move(event.ticket_id, current, decision.queue)
        detail += self._set_fields(event.ticket_id, decision)
        detail += self._comment_once(event.ticket_id, decision.note, decision.queue, True)
        return ApplyResult("applied", detail)

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        """Relation management's answer: correspondence, which RT mails to the requestors,
        or a comment an agent can send on. Nothing is posted when the ticket already has a
        message with this text: ours from a try whose answer was lost, or the draft an agent
        has sent as it was."""
        if self.has_text(event.ticket_id, text):
            return
        kind: MessageKind = "correspond" if send else "comment"
        try:
            if self._message(event.ticket_id, kind, text):
                return
        except HostError as exc:
            # Timed out or a proxy's 502: saved after all? Else the job is retried later.
            if exc.permanent or not self.has_text(event.ticket_id, text):
                raise
            return
        right = "ReplyToTicket" if send else "CommentOnTicket"
        raise HostError(
            f"rt: the {kind} on ticket {event.ticket_id} was refused: the connector's RT user "
            f"needs ModifyTicket (or {right}) on the ticket's queue",
            permanent=True,
        )

    def create_ticket(self, ticket: NewTicket) -> str:
        """Open a ticket in `ticket.queue` (tags are dropped: RT has none). Sent once; a
        retry after a lost answer finds it by subject, queue and its reference first."""
        found = self.find_ticket(ticket) if ticket.ref else None
        if found is not None:
            return found
        answer = self.once.request(
            "POST",
            "ticket",
            ok=(201,),
            json={
                "Queue": ticket.queue,
                "Subject": ticket.title,
                "Content": ticket.body,
                "ContentType": "text/plain",
            },
        ).json()
        return str(answer["id"])

    def find_ticket(self, ticket: NewTicket) -> str | None:
        """The ticket of that subject in that queue whose first text carries `ticket.ref`
        (TicketSQL on Content needs RT's full-text index; Subject does not)."""
        query = f"Queue = {sql_quote(ticket.queue)} AND Subject = {sql_quote(ticket.title)}"
        for item in self._search(query):
            if ticket.ref in self.first_text(str(item["id"])):
                return str(item["id"])
        return None

    def is_open(self, ticket_id: str) -> bool | None:
        """Whether the ticket is in an active status of its queue's lifecycle."""
        query = f"id = {int(ticket_id)} AND Status = '__Active__'"
        return bool(self._json("tickets", query=query, per_page=1).get("items"))

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        """RT has no tags; the queue, the service custom field and the comment carry the
        same information, so this is deliberately a no-op."""

    # ----- setup ------------------------------------------------------------------------------

    def _queue(self, name: str) -> dict[str, Any] | None:
        response = self.http.request("GET", f"queue/{quote(name, safe='')}", ok=(200, 404))
        data: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return data

    def _ensure_queue(self, name: str) -> tuple[dict[str, Any], str]:
        found = self._queue(name)
        if found is not None:
            return found, f"queue exists: {name}"
        self.http.request(
            "POST",
            "queue",
            ok=(201,),
            json={"Name": name, "Description": "BPSM queue (bpsm-connector)"},
        )
        return self._queue(name) or {}, f"queue created: {name}"

    def _ensure_field(self, name: str) -> str:
        query = [
            {"field": "Name", "value": name},
            {"field": "LookupType", "value": TICKET_CF_TYPE},
        ]
        found = self._json("customfields", query=json.dumps(query)).get("items") or []
        if found:
            return f"custom field exists: {name}"
        self.http.request(
            "POST",
            "customfield",
            ok=(201,),
            json={
                "Name": name,
                "Type": "Freeform",
                "MaxValues": 1,
                "LookupType": TICKET_CF_TYPE,
                "Description": "Catalogue service of the ticket (bpsm-connector)",
            },
        )
        return f"custom field created: {name}"

    def _ensure_user(self, name: str) -> list[str]:
        """The connector's user: privileged, Timezone UTC (its auth token is made by hand)."""
        path = f"user/{quote(name, safe='')}"
        response = self.http.request("GET", path, ok=(200, 403, 404))
        if response.status_code == 403:
            return [
                f"user {name}: not visible to this API user (needs AdminUsers); see the RT guide"
            ]
        if response.status_code == 404:
            self.http.request(
                "POST",
                "user",
                ok=(201,),
                json={"Name": name, "Privileged": 1, "Timezone": "UTC"},
            )
            return [f"user created: {name} (privileged, Timezone UTC)"]
        user = response.json()
        changes: dict[str, Any] = {}
        if not is_utc_zone(str(user.get("Timezone") or "")):
            changes["Timezone"] = "UTC"
        if str(user.get("Privileged")) != "1":
            changes["Privileged"] = 1
        if not changes:
            return [f"user exists: {name} (privileged, Timezone {user.get('Timezone')})"]
        refused = self._put(path, changes)
        if refused:
            return [f"user {name}: could not set {', '.join(changes)}: {'; '.join(refused)}"]
        return [f"user updated: {name} ({', '.join(f'{k} → {v}' for k, v in changes.items())})"]

    def setup(self, mapping: Mapping, hook_url: str | None) -> SetupResult:
        """Queues, the service custom field and the connector's user, idempotently; then the
        rights and the custom field's queues, which REST 2 in RT 5.0.3 cannot set, as an RT
        initialdata file for `rt-setup-database` (safe to run again)."""
        options = self.options
        lines: list[str] = []
        if hook_url:
            lines.append("RT 5 sends no webhooks: --hook-url is not used; the connector polls")
        queues = mapping.all_queues()
        records: dict[str, dict[str, Any]] = {}
        for name in queues:
            records[name], line = self._ensure_queue(name)
            lines.append(line)
        for name in options.watch_queues:
            state = "exists" if self._queue(name) is not None else "MISSING (create it in RT)"
            lines.append(f"watched queue {state}: {name}")
        field = options.service_field
        if field:
            lines.append(self._ensure_field(field))
            unapplied = [
                q
                for q, record in records.items()
                if not any(cf.get("name") == field for cf in record.get("TicketCustomFields", []))
            ]
            if unapplied:
                lines.append(f"custom field {field!r} not yet applied to: {', '.join(unapplied)}")
        user = mapping.connector_user or DEFAULT_CONNECTOR_USER
        lines += self._ensure_user(user)
        lines += rights_instructions(user, options, queues)
        return SetupResult(tuple(lines))
