"""Request Tracker 5: polled with TicketSQL, routed through REST 2 (`/REST/2.0`).

RT 5.0 has no outgoing webhooks, so the poller asks for tickets changed in the watched
queues (`options.watch_queues`, default RT's own `General`) and the worker moves each one to
its BPSM queue, sets the service custom field and `Due`, and adds a comment (for relation
tickets, with `relation.reply`, also the answer: correspondence or a draft comment). The RT
facts this module relies on (RT 5.0.3, pinned in tests/realhosts/test_rt_harness.py):

* TicketSQL reads date values in the *API user's* time zone and ignores any zone written in
  the value, so the connector's RT user must have Timezone UTC: `poll` checks it once and
  refuses to poll otherwise (it would silently miss updates, not fail).
* Date comparisons are to the second and `>` is strict: poll with `>=` from the mark minus
  an overlap; the delivery id `rt:<id>:<LastUpdated>` lets the store drop what was seen.
  (Two changes of a ticket within one second are one delivery; routing is decided once per
  ticket anyway.)
* `PUT /ticket/N` answers 200 with a list of messages even when RT refused the change
  (`["Ticket 7: Permission Denied"]`): every answer's messages are read.
* `Due` is written as UTC `YYYY-MM-DD HH:MM:SS` (ISO with `Z` is stored and reads as unset).
* A comment posted as a `text/plain` body is stored UTF-8-encoded twice ("kø" → "kÃ¸");
  posted as JSON (`Content` + `ContentType: text/plain`) it is stored as sent.
* Links in answers (`_url`, `next_page`) are built from RT's `$WebBaseURL`, which need not be
  the address the connector calls: pages are requested by number, never by link.
* REST 2 in 5.0.3 cannot grant rights, apply custom fields to queues or make auth tokens:
  `setup` prints an RT initialdata file for `rt-setup-database` that does the first two.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import (
    ApplyResult,
    BadPayload,
    Host,
    HostClient,
    HostError,
    Ignored,
    WebhookRequest,
    parse_time,
)
from connector.hosts.http import HttpTransport
from connector.logs import log_extra
from connector.mapping import Mapping
from connector.notes import has_marker, messages
from connector.text import markup_as_text, parse_markup, parsed_text

log = logging.getLogger("bpsm.rt")

REST_PATH = "/REST/2.0"
DEFAULT_CONNECTOR_USER = "bpsm-connector"
TICKET_CF_TYPE = "RT::Queue-RT::Ticket"
PER_PAGE = 100  # RT caps per_page at 100
BODY_CACHE_SIZE = 2000
UNSET = "1970-01-01T00:00:00Z"  # how REST 2 prints a date that is not set

MessageKind = Literal["comment", "correspond"]  # REST 2's /ticket/N/<kind>

# Least privilege, per queue (checked against RT 5.0.3; see docs/rt.md). ModifyTicket also
# allows commenting and replying (RT::Ticket::Comment and ::Correspond accept it), so neither
# CommentOnTicket nor ReplyToTicket is needed where ModifyTicket is granted.
WATCHED_RIGHTS = ("SeeQueue", "ShowTicket", "ShowTicketComments", "ModifyTicket")
TARGET_RIGHTS = ("SeeQueue", "ShowTicket", "ShowTicketComments", "CreateTicket", "ModifyTicket")
FIELD_RIGHTS = ("SeeCustomField", "ModifyCustomField")

# Messages in a PUT answer that mean RT refused (part of) the change; RT answers 200 anyway.
_REFUSED = re.compile(
    r"Permission Denied|does not exist|is disabled|invalid|illegal|could not|couldn't|"
    r"can't|cannot|no mapping|is incomplete|not allowed",
    re.IGNORECASE,
)


class RTOptions(BaseModel):
    """`options:` of mappings/rt.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watch_queues: tuple[str, ...] = Field(default=("General",), min_length=1)
    # Ticket custom field that receives the service id; null: the comment alone names it.
    service_field: str | None = "BPSM Service"
    # Re-read this many seconds before the mark: clock skew and same-second updates.
    overlap_seconds: float = Field(default=120.0, ge=0.0)


def rt_options(mapping: Mapping) -> RTOptions:
    try:
        return RTOptions.model_validate(mapping.options)
    except ValidationError as exc:
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise HostError(f"rt: mapping {problems}", permanent=True) from exc


# ----- pure helpers ---------------------------------------------------------------------------


def rt_time(moment: datetime) -> str:
    """A date as RT wants it in TicketSQL and in writes: UTC `YYYY-MM-DD HH:MM:SS`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def rt_stamp(moment: datetime) -> str:
    """A date as REST 2 prints it (`2026-11-24T17:37:19Z`); the form of the stored mark."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rt_time(value: Any) -> datetime | None:
    """REST 2's `...Z` dates; None for RT's "not set" (1970-01-01) and for garbage."""
    if value == UNSET:
        return None
    moment = parse_time(value)
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sql_quote(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def queues_clause(queues: Iterable[str]) -> str:
    return "(" + " OR ".join(f"Queue = {sql_quote(q)}" for q in queues) + ")"


def watch_query(queues: Iterable[str], since: datetime) -> str:
    """Active tickets of the watched queues changed at or after `since` (`>=`: `>` is strict
    to the second, so an update in the mark's own second would be lost)."""
    return (
        f"{queues_clause(queues)} AND LastUpdated >= {sql_quote(rt_time(since))} "
        "AND Status = '__Active__'"
    )


def search_params(query: str) -> dict[str, Any]:
    """A ticket search with what an event needs; the queue's name needs SeeQueue."""
    return {
        "query": query,
        "fields": "Subject,Queue,LastUpdated,Created",
        "fields[Queue]": "Name",
        "orderby": ["LastUpdated", "id"],
        "order": ["ASC", "ASC"],
    }


def refusals(messages: Any) -> list[str]:
    """The messages of a PUT answer that say RT refused something."""
    if not isinstance(messages, list):
        return [f"unexpected answer: {str(messages)[:200]}"]
    return [str(m) for m in messages if _REFUSED.search(str(m))]


def token_user_id(token: str) -> str | None:
    """RT auth tokens read `1-<user id>-<32 hex>` (RT::AuthToken::ParseAuthString)."""
    found = re.fullmatch(r"1-(\d+)-[0-9a-fA-F]{32}", token.strip())
    return found.group(1) if found else None


def is_utc_zone(name: str) -> bool:
    """True for zone names that never differ from UTC ('UTC', 'Etc/UTC', 'GMT', …)."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    probes = (datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 7, 15, tzinfo=UTC))
    return all(p.astimezone(zone).utcoffset() == timedelta(0) for p in probes)


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML mail body, for the classifier (layout does not matter)."""
    parser = _TextExtractor()
    # Canonical markup (html.parser is quadratic on unfinished tags), and plain text when
    # the parser fails anyway: a customer's mail must not stop the poller.
    parsed = parse_markup(parser, markup)
    text = parsed_text(parser.parts) if parsed else markup_as_text(markup)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def create_text(attachments: list[dict[str, Any]]) -> str:
    """The customer's text from the attachments of a ticket's Create transaction."""
    plain = [a for a in attachments if str(a.get("ContentType", "")).startswith("text/plain")]
    if plain:
        return "\n".join(str(a.get("Content") or "") for a in plain)
    html = [a for a in attachments if str(a.get("ContentType", "")).startswith("text/html")]
    return "\n".join(html_to_text(str(a.get("Content") or "")) for a in html)


def queue_name(ticket: dict[str, Any]) -> str:
    """The queue name of a ticket or search item read with `fields[Queue]=Name`. Without
    SeeQueue RT sends an empty name: say so rather than treat every ticket as moved."""
    queue = ticket.get("Queue")
    name = queue.get("Name") if isinstance(queue, dict) else None
    if not name:
        where = queue.get("id") if isinstance(queue, dict) else "?"
        raise HostError(
            f"rt: cannot read the name of queue #{where} of ticket {ticket.get('id')}: "
            "the connector's RT user needs SeeQueue on the watched and BPSM queues",
            permanent=True,
        )
    return str(name)


def agent_kept_line(language: str, queue: str) -> str:
    texts = messages().get(language) or messages()["en"]
    template = str(texts.get("left_by_agent") or messages()["en"]["left_by_agent"])
    return template.format(queue=queue)


def rt_error_text(response: Any) -> str:
    """RT answers `{"message": …}`; add what the admin should check."""
    try:
        data = response.json()
        text = str(data.get("message") if isinstance(data, dict) else data)[:300]
    except ValueError:
        text = response.text[:200].strip()
    hints = {
        401: "check BPSM_RT_TOKEN (or BPSM_RT_USER + BPSM_RT_PASSWORD)",
        403: "the connector's RT user lacks a right on this queue or object (docs/rt.md)",
        404: "no such ticket, queue or user (or BPSM_RT_URL does not point at RT's base URL)",
    }
    hint = hints.get(response.status_code)
    return f"{text} — {hint}" if hint else text


# ----- the host -------------------------------------------------------------------------------


class RTHost(Host):
    name = "rt"
    polling = True

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        raise BadPayload(
            "Request Tracker 5 sends no webhooks: the connector polls RT "
            "(BPSM_RT_URL, BPSM_RT_POLL_INTERVAL); nothing is accepted at /hooks/rt"
        )

    def client(self) -> RTClient:
        settings = self.settings
        if not settings.url:
            raise HostError("rt: BPSM_RT_URL is required", permanent=True)
        base = settings.url.rstrip("/")
        if base.endswith(REST_PATH):  # accept the REST 2 URL as well as RT's base URL
            base = base[: -len(REST_PATH)]
        transport = HttpTransport(base + REST_PATH, "rt", error_text=rt_error_text)
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
        return RTClient(transport, rt_options(self.mapping), me=me)


class RTClient(HostClient):
    def __init__(
        self,
        transport: HttpTransport,
        options: RTOptions | None = None,
        me: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
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

    def _event(self, item: dict[str, Any], delivery_id: str) -> TicketEvent:
        ticket_id = str(item["id"])
        return TicketEvent(
            host="rt",
            delivery_id=delivery_id,
            ticket_id=ticket_id,
            kind="polled",
            subject=str(item.get("Subject") or ""),
            # Only the Create text: the connector's own comments and replies change
            # LastUpdated (a new delivery, which the worker finds already routed) but are
            # never read as the customer's words.
            body=self.first_text(ticket_id),
            queue=queue_name(item),
            created_at=parse_rt_time(item.get("Created")),
        )

    def poll(self, since: str | None) -> tuple[list[TicketEvent], str | None]:
        """Tickets of the watched queues changed since the mark (minus the overlap).

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
        for item in self._search(watch_query(self.options.watch_queues, start)):
            updated = parse_rt_time(item.get("LastUpdated"))
            stamp = str(item.get("LastUpdated"))
            events.append(self._event(item, f"rt:{item['id']}:{stamp}"))
            if updated is not None and updated > newest:
                newest = updated
        return events, rt_stamp(newest)

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        self.check_time_zone()
        query = (
            f"{queues_clause(self.options.watch_queues)} AND Created >= "
            f"{sql_quote(rt_time(since))} AND Status = '__Active__'"
        )
        events: list[TicketEvent] = []
        for item in self._search(query):
            events.append(self._event(item, f"backfill:{item['id']}"))
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
            return [f"user {name}: not visible to this API user (needs AdminUsers); see docs/rt.md"]
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

    def setup(self, mapping: Mapping, hook_url: str | None) -> list[str]:
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
        return lines


# ----- rights -----------------------------------------------------------------------------------


def _perl(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _perl_items(values: Iterable[str]) -> str:
    return ", ".join(_perl(v) for v in values)


def initialdata(user: str, options: RTOptions, queues: list[str]) -> str:
    """An RT initialdata file that grants the connector's rights and applies the service
    field to the BPSM queues. `rt-setup-database --action insert` runs its @Final code with
    RT's own libraries; every step checks first, so running it again changes nothing."""
    grants: list[tuple[str, tuple[str, ...]]] = [(q, WATCHED_RIGHTS) for q in options.watch_queues]
    grants += [(q, TARGET_RIGHTS) for q in queues if q not in options.watch_queues]
    grant_lines = "\n".join(f"    [{_perl(q)}, [{_perl_items(r)}]]," for q, r in grants)
    field = options.service_field or ""
    return f"""# bpsm-connector: rights of the RT user {user} (generated by `bpsm setup rt`).
# Run on the RT server: rt-setup-database-5 --action insert --skip-create --datafile THIS_FILE
my $user_name = {_perl(user)};
my @queue_rights = (
{grant_lines}
);
my $field_name = {_perl(field)};
my @field_rights = ({_perl_items(FIELD_RIGHTS)});
my @field_queues = ({_perl_items(queues)});

@Final = (sub {{
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($user_name);
    die "bpsm: no RT user '$user_name' (run bpsm setup rt first)\\n" unless $user->Id;
    my $grant = sub {{
        my ($object, $label, @rights) = @_;
        for my $right (@rights) {{
            if ($user->PrincipalObj->HasRight(Right => $right, Object => $object)) {{
                print "bpsm: $user_name has $right on $label\\n";
                next;
            }}
            my ($ok, $msg) = $user->PrincipalObj->GrantRight(Right => $right, Object => $object);
            die "bpsm: granting $right on $label: $msg\\n" unless $ok;
            print "bpsm: granted $right on $label\\n";
        }}
    }};
    for my $entry (@queue_rights) {{
        my ($name, $rights) = @$entry;
        my $queue = RT::Queue->new(RT->SystemUser);
        $queue->Load($name);
        die "bpsm: no queue '$name'\\n" unless $queue->Id;
        $grant->($queue, "queue '$name'", @$rights);
    }}
    return unless length $field_name;
    my $cf = RT::CustomField->new(RT->SystemUser);
    $cf->LoadByName(Name => $field_name, LookupType => '{TICKET_CF_TYPE}');
    die "bpsm: no ticket custom field '$field_name'\\n" unless $cf->Id;
    $grant->($cf, "custom field '$field_name'", @field_rights);
    for my $name (@field_queues) {{
        my $queue = RT::Queue->new(RT->SystemUser);
        $queue->Load($name);
        die "bpsm: no queue '$name'\\n" unless $queue->Id;
        next if $cf->IsAdded($queue->Id);
        my ($ok, $msg) = $cf->AddToObject($queue);
        die "bpsm: applying '$field_name' to '$name': $msg\\n" unless $ok;
        print "bpsm: applied custom field '$field_name' to queue '$name'\\n";
    }}
}});
1;
"""


def rights_instructions(user: str, options: RTOptions, queues: list[str]) -> list[str]:
    """What the admin does by hand: REST 2 in RT 5.0.3 has no way to grant rights."""
    watched = ", ".join(options.watch_queues)
    lines = [
        "",
        f"Rights of {user} (REST 2 in RT 5.0 cannot grant rights; an RT admin does it once):",
        f"  watched queues ({watched}): {', '.join(WATCHED_RIGHTS)}",
        f"  BPSM queues: {', '.join(TARGET_RIGHTS)}",
    ]
    if options.service_field:
        lines.append(
            f"  custom field {options.service_field!r}: {', '.join(FIELD_RIGHTS)}; "
            "applied to the BPSM queues"
        )
    lines += [
        "Either in RT's web UI (Admin → Queues → <queue> → User Rights; Admin → Custom Fields),",
        "or on the RT server as root, paste this (it checks first: safe to run again):",
        "",
        "cat > bpsm-rt-rights.pl <<'BPSM_EOF'",
        *initialdata(user, options, queues).splitlines(),
        "BPSM_EOF",
        "rt-setup-database-5 --action insert --skip-create --datafile bpsm-rt-rights.pl",
        "",
        f"Then give {user} an auth token (Admin → Users → {user} → Auth Tokens) and run the",
        "connector with BPSM_RT_URL and BPSM_RT_TOKEN (or BPSM_RT_TOKEN_FILE).",
    ]
    return lines


HOST = RTHost
