"""django-helpdesk 2.6: webhooks (or polling) in, REST API out (queue move, private follow-up;
for relation tickets with `relation.reply`, a public or private reply follow-up).

Facts this module relies on (django-helpdesk 2.6.1, its `helpdesk/` package; recorded payloads
and notes in tests/fixtures/django_helpdesk/):

* webhooks.py posts `{"ticket": <TicketSerializer>, "queue_slug": …}` for a new ticket and the
  same plus `"followup_id"` for a follow-up. Nothing is signed and no delivery id is sent, so
  the secret rides in the URL (`/hooks/django-helpdesk?token=…`) and delivery ids are derived:
  `ticket:<id>:created` (also used by polling and backfill, so the paths de-duplicate each
  other) and `followup:<id>`.
* `ticket.queue` is an integer id and the API has no queue endpoint: ids come from the mapping,
  `options.queue_ids`, which is the JSON printed by `manage.py bpsm_queues --json`
  (contrib/django_helpdesk).
* update_ticket.py records a follow-up's `user` only when the author is helpdesk staff: a
  follow-up without a user is the customer's (e-mail, public ticket page).
* The connector's own private follow-up comes back as a follow-up webhook while its POST is
  still waiting; it is recognised by NOTE_MARKER in its comment (or by its author id).
* A webhook target that refuses connections makes the helpdesk answer 500 to whoever created
  the ticket or follow-up, although both are saved; hence the polling mode, chosen by setting
  BPSM_DJANGO_HELPDESK_POLL_INTERVAL, and no blind retry of the connector's own POSTs.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from requests.auth import HTTPBasicAuth
from requests.cookies import RequestsCookieJar

from connector.config import HostSettings
from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import (
    ApplyResult,
    BadPayload,
    Host,
    HostClient,
    HostError,
    Ignored,
    Unauthorized,
    WebhookRequest,
    json_object,
    need,
    parse_time,
    same,
)
from connector.hosts.http import HttpTransport, send_test_event
from connector.logs import log_extra
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, has_marker, starts_with_marker

log = logging.getLogger("bpsm.django_helpdesk")

OPEN_STATUS = 1  # Ticket.OPEN_STATUS: every new ticket starts here, whatever its channel
CLOSED_STATUSES = (3, 4, 5)  # Resolved, Closed, Duplicate
NORMAL_PRIORITY = 3  # the API refuses a ticket without a priority; 3 is the form's default
PAGE_SIZE = 100
# Ticket ids are handed out before the creating transaction commits, so a ticket may become
# visible after one with a higher id: each poll looks this many ids below its mark again.
ID_OVERLAP = 25
FIRST_POLL_WINDOW = timedelta(minutes=10)  # the first poll routes only recent tickets
RECHECK_WINDOW = timedelta(minutes=5)  # how far back a failed create looks for its ticket
# How far back a create with a reference looks first (maintenance runs retry within hours).
REF_WINDOW = timedelta(days=2)
# A project with ATOMIC_REQUESTS posts the webhook before the ticket is committed: a 404
# right after the event is read once more before it counts as "deleted".
NOT_COMMITTED_WAIT = 0.5
LOGIN_PATH = "/login/"  # helpdesk.urls; it redirects to the project's LOGIN_URL if different
LOGIN_RETRY_SECONDS = 600.0
SESSION_COOKIE = "sessionid"  # Django's defaults (SESSION_COOKIE_NAME, CSRF_COOKIE_NAME)
CSRF_COOKIE = "csrftoken"

SLUG = re.compile(r"[-a-zA-Z0-9_]+")  # Django's validate_slug, as bpsm_queues applies it

EventKind = Literal["created", "customer_reply", "polled"]


class DjangoHelpdeskOptions(BaseModel):
    """`options:` of mappings/django-helpdesk.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_ids: dict[str, int] = Field(default_factory=dict)  # slug → id (bpsm_queues --json)
    queue_titles: dict[str, str] = Field(default_factory=dict)  # slug → title, for setup


def read_options(mapping: Mapping) -> DjangoHelpdeskOptions:
    try:
        return DjangoHelpdeskOptions.model_validate(mapping.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise HostError(
            f"django-helpdesk mapping: options.{where}: {first['msg']}", permanent=True
        ) from exc


def configured_user_ids(mapping: Mapping) -> set[int]:
    """`connector_user` as the numeric id of the connector's staff account, when given so:
    payloads name follow-up authors by id only."""
    user = (mapping.connector_user or "").strip()
    return {int(user)} if user.isdigit() else set()


# ----- pure parsing ---------------------------------------------------------------------


def followups(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    """`ticket.followup_set`, oldest first, each checked to be an object with an int id."""
    items = ticket.get("followup_set")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadPayload("field ticket.followup_set must be a list", "ticket.followup_set")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadPayload(
                f"ticket.followup_set[{n}] must be an object", f"ticket.followup_set[{n}]"
            )
        need(item, "id", int, f"ticket.followup_set[{n}]")
        user = item.get("user")
        if user is not None and (isinstance(user, bool) or not isinstance(user, int)):
            raise BadPayload(
                f"field ticket.followup_set[{n}].user must be int or null",
                f"ticket.followup_set[{n}].user",
            )
    return sorted(items, key=lambda f: int(f["id"]))


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"field {where}.{key} must be a string", f"{where}.{key}")
    return value


def _opening(ticket: dict[str, Any]) -> dict[str, Any]:
    """The follow-up every new ticket starts with ("Ticket Opened"); {} if there is none."""
    items = followups(ticket)
    return items[0] if items else {}


def opened_at(ticket: dict[str, Any]) -> datetime | None:
    """The serializer has no creation date; the opening follow-up has."""
    return parse_time(_opening(ticket).get("date"))


def is_own_ticket(ticket: dict[str, Any], own_ids: set[int]) -> bool:
    """Opened by the connector (create_ticket marks the description and runs as its user)."""
    opener = _opening(ticket).get("user")
    if opener in own_ids:
        return True
    # Customers are never recorded as a follow-up's user: a marker they type does not count.
    return opener is not None and starts_with_marker(_text(ticket, "description", "ticket"))


def ticket_event(
    host: str,
    ticket: dict[str, Any],
    queue: str,
    delivery_id: str,
    kind: EventKind,
    body: str = "",
) -> TicketEvent:
    ticket_id = need(ticket, "id", int, "ticket")
    opener = _opening(ticket).get("user")
    return TicketEvent(
        host=host,
        delivery_id=delivery_id,
        ticket_id=str(ticket_id),
        kind=kind,
        subject=_text(ticket, "title", "ticket"),
        body=body or _text(ticket, "description", "ticket"),
        queue=queue,
        requester=_text(ticket, "submitter_email", "ticket") or None,
        actor=None if opener is None else str(opener),
        created_at=opened_at(ticket),
    )


def created_delivery(ticket_id: int) -> str:
    return f"ticket:{ticket_id}:created"


class DjangoHelpdeskHost(Host):
    name = "django-helpdesk"

    def __init__(self, settings: HostSettings, mapping: Mapping):
        super().__init__(settings, mapping)
        # An installation whose helpdesk cannot reach the connector polls instead.
        self.polling = settings.poll_interval is not None
        # The configured id, plus the one the client learns from its own writes (this
        # process only; across processes NOTE_MARKER is what recognises own notes).
        self.own_user_ids: set[int] = configured_user_ids(mapping)

    def verify(self, request: WebhookRequest) -> None:
        secret = self.settings.webhook_secret
        if secret is None:
            return
        # The token is never echoed: these messages end up in logs and 401 bodies.
        token = request.query.get("token")
        if not token:
            raise Unauthorized(
                "missing ?token= in the webhook URL (a webhook secret is configured)"
            )
        if not same(token, secret.get_secret_value()):
            raise Unauthorized("the webhook URL's token does not match the configured secret")

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        data = json_object(request.body)
        ticket = need(data, "ticket", dict, "")
        ticket_id = need(ticket, "id", int, "ticket")
        slug = need(data, "queue_slug", str, "")
        items = followups(ticket)
        if "followup_id" in data:
            return self._followup(data, ticket, slug, items)
        if is_own_ticket(ticket, self.own_user_ids):
            return Ignored("own update", str(ticket_id), "own-update")
        return ticket_event(self.name, ticket, slug, created_delivery(ticket_id), "created")

    def _followup(
        self, data: dict[str, Any], ticket: dict[str, Any], slug: str, items: list[dict[str, Any]]
    ) -> TicketEvent | Ignored:
        followup_id = need(data, "followup_id", int, "")
        ticket_id = str(ticket["id"])
        followup = next((f for f in items if f["id"] == followup_id), None)
        if followup is None:
            raise BadPayload(
                f"follow-up {followup_id} is not in ticket.followup_set", "followup_id"
            )
        comment = _text(followup, "comment", "followup")
        author = followup.get("user")
        if author in self.own_user_ids or (author is not None and has_marker(comment)):
            return Ignored("own update", ticket_id, "own-update")
        if author is not None:  # only staff authors are recorded (update_ticket.py)
            return Ignored("staff follow-up", ticket_id, "staff-follow-up")
        if followup.get("public") is not True:
            return Ignored("not customer text", ticket_id, "not-customer-text")
        # Routed only if the ticket never was (the worker checks): classify all its text.
        body = "\n\n".join(t for t in (_text(ticket, "description", "ticket"), comment) if t)
        return ticket_event(
            self.name, ticket, slug, f"followup:{followup_id}", "customer_reply", body
        )

    def client(self) -> DjangoHelpdeskClient:
        settings = self.settings
        if not settings.url or not settings.user or settings.password is None:
            raise HostError(
                "django-helpdesk: BPSM_DJANGO_HELPDESK_URL, _USER and _PASSWORD are required",
                permanent=True,
            )
        session = requests.Session()
        session.auth = BasicAuthWithCsrf(
            settings.user, settings.password.get_secret_value(), session.cookies
        )
        # Django checks the Referer of HTTPS writes made with a session (CSRF).
        session.headers["Referer"] = settings.url + "/"
        transport = HttpTransport(
            settings.url, self.name, session=session, error_text=helpdesk_error_text
        )
        return DjangoHelpdeskClient(
            transport, settings, read_options(self.mapping), self.own_user_ids
        )


class BasicAuthWithCsrf(HTTPBasicAuth):
    """Basic auth on every request, plus the CSRF token Django wants beside a session cookie.

    DRF tries SessionAuthentication before BasicAuthentication: while the session (see
    `DjangoHelpdeskClient.login`) is valid the password is not hashed again — Django's default
    PBKDF2 costs the helpdesk ~0.35 s of CPU per basic-auth request — and when it has expired
    the same request still passes on basic auth."""

    def __init__(self, username: str, password: str, cookies: RequestsCookieJar):
        super().__init__(username, password)
        self.cookies = cookies

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r = super().__call__(r)  # type: ignore[no-untyped-call]  # untyped in types-requests
        token = self.cookies.get(CSRF_COOKIE)
        if token:
            r.headers["X-CSRFToken"] = token
        return r


def helpdesk_error_text(response: Any) -> str:
    """DRF answers {"detail": …} or {field: [messages]}; add what the admin should do."""
    try:
        data = response.json()
        text = str(data.get("detail") if isinstance(data, dict) and "detail" in data else data)
    except (ValueError, AttributeError):
        text = response.text[:200]
    hints = {
        400: "the helpdesk refused the values; compare options.queue_ids with "
        "`manage.py bpsm_queues --json`",
        401: "check BPSM_DJANGO_HELPDESK_USER and _PASSWORD",
        403: "the connector's account must be staff (is_staff) and, with "
        "HELPDESK_ENABLE_PER_QUEUE_STAFF_PERMISSION, hold each queue's permission",
        404: "the ticket no longer exists or its queue is hidden from the connector's account",
    }
    hint = hints.get(response.status_code)
    text = text[:300]
    return f"{text} — {hint}" if hint else text


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class DjangoHelpdeskClient(HostClient):
    def __init__(
        self,
        transport: HttpTransport,
        settings: HostSettings,
        options: DjangoHelpdeskOptions,
        own_user_ids: set[int],
    ):
        self.http = transport
        # POSTs are not idempotent: no in-call retry (a 500 may mean "saved, but the
        # helpdesk's own webhook failed"); the caller looks for the result before retrying.
        self.once = transport.without_retries()
        self.settings = settings
        self.options = options
        self.own_user_ids = own_user_ids
        self.login_path = LOGIN_PATH
        self.webhook_secret: str | None = None  # set when setup generated one
        self._login_lock = threading.Lock()
        self._next_login = 0.0

    # ----- session ------------------------------------------------------------------------

    @property
    def auth_mode(self) -> str:
        return "session" if SESSION_COOKIE in self.http.session.cookies else "basic"

    def login(self) -> None:
        """Trade the password for a session cookie once; on any failure stay on basic auth
        (slower for the helpdesk, equally correct) and try again later."""
        with self._login_lock:
            if self.auth_mode == "session" or time.monotonic() < self._next_login:
                return
            try:
                ok = self._try_login()
            except requests.RequestException:
                ok = False
            if not ok:
                self._next_login = time.monotonic() + LOGIN_RETRY_SECONDS
                log.info(
                    "session login failed; using basic auth",
                    extra=log_extra({"host": "django-helpdesk"}),
                )

    def _try_login(self) -> bool:
        session, timeout = self.http.session, self.http.timeout
        page = session.get(self.http.url(self.login_path), timeout=timeout)
        token = session.cookies.get(CSRF_COOKIE)
        if page.status_code != 200 or not token:
            return False
        password = self.settings.password.get_secret_value() if self.settings.password else ""
        answer = session.post(
            page.url,  # after redirects: the project's LOGIN_URL
            data={
                "username": self.settings.user or "",
                "password": password,
                "csrfmiddlewaretoken": token,
                "next": self.http.url("/api/"),
            },
            headers={"Referer": page.url},
            allow_redirects=False,
            timeout=timeout,
        )
        return answer.status_code in (301, 302, 303) and self.auth_mode == "session"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._call(self.http, method, path, **kwargs)

    def post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = self._call(self.once, "POST", path, json=body).json()
        return data

    def _call(
        self, transport: HttpTransport, method: str, path: str, **kwargs: Any
    ) -> requests.Response:
        self.login()
        try:
            return transport.request(method, f"/api/{path}", **kwargs)
        except HostError as exc:
            # Django may refuse the session's CSRF check (a proxy rewriting Host, an HTTPS
            # Referer it does not trust): a refusal, so nothing was written. Basic auth
            # needs no CSRF token: keep to it in this process.
            if "CSRF Failed" not in str(exc) or self.auth_mode != "session":
                raise
        log.warning(
            "session refused by CSRF checks; basic auth", extra=log_extra({"host": transport.host})
        )
        self._next_login = math.inf
        self.http.session.cookies.clear()
        return transport.request(method, f"/api/{path}", **kwargs)

    # ----- queues -------------------------------------------------------------------------

    def queue_id(self, slug: str) -> int:
        ids = self.options.queue_ids
        if slug not in ids:
            raise HostError(
                f"django-helpdesk: no id for queue {slug!r} in options.queue_ids; run "
                "`bpsm setup django-helpdesk` and follow its steps",
                permanent=True,
            )
        return ids[slug]

    def queue_name(self, queue_id: Any) -> str:
        """The slug for an id, or "#<id>" for a queue the mapping does not list."""
        for slug, known in self.options.queue_ids.items():
            if known == queue_id:
                return slug
        return f"#{queue_id}"

    def known_queue_id(self, name: str | None) -> int | None:
        if name and name.startswith("#") and name[1:].isdigit():
            return int(name[1:])
        return self.options.queue_ids.get(name) if name else None

    # ----- routing ------------------------------------------------------------------------

    def current_queue(self, ticket_id: str) -> str | None:
        return self.queue_name(self.ticket(ticket_id).get("queue")) or None

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        path = f"tickets/{ticket_id}/"
        response = self.api("GET", path, ok=(200, 404))
        if response.status_code == 404:
            time.sleep(NOT_COMMITTED_WAIT)
            response = self.api("GET", path)
        data: dict[str, Any] = response.json()
        return data

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        ticket = self.ticket(event.ticket_id)
        current = ticket.get("queue")
        target = self.queue_id(decision.queue)
        before = self.known_queue_id(event.queue)
        outcome: Any = "applied"
        if mode == "shadow":
            outcome = "shadow"
        elif before is not None and current not in (before, target):
            outcome = "override"  # an agent moved it since the event: theirs wins
        elif current != target:
            self.api(
                "PATCH", f"tickets/{event.ticket_id}/", idempotent=True, json={"queue": target}
            )
        self.add_note(ticket, note_text(decision.note, outcome))
        return ApplyResult(outcome, f"queue was {self.queue_name(current)}")

    def add_note(self, ticket: dict[str, Any], note: str) -> None:
        """A private follow-up, unless the ticket has one with the marker already."""
        if not self._has_note(ticket):
            self._followup_once(ticket["id"], note, False, self._has_note)

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        """A public follow-up, which update_ticket() e-mails to the submitter, or a private
        one as a draft for an agent; nothing when a follow-up already says the same (ours
        from a try whose answer was lost). The connector's own follow-ups coming back as
        webhooks are ignored by `parse` (staff author)."""
        comment = template_safe(text)

        def posted(ticket: dict[str, Any]) -> bool:
            return has_comment(ticket, comment)

        ticket = self.ticket(event.ticket_id)
        if not posted(ticket):
            self._followup_once(ticket["id"], comment, send, posted)

    def _followup_once(
        self,
        ticket_id: Any,
        comment: str,
        public: bool,
        posted: Callable[[dict[str, Any]], bool],
    ) -> None:
        """POST a follow-up once; `posted` tells whether a failed POST was saved after all."""
        body = {"ticket": ticket_id, "comment": comment, "public": public}
        # No "title": update_ticket() would rename the ticket to it.
        try:
            answer = self.post_once("followups/", body)
        except HostError as exc:
            # Saved but answered with an error (e.g. the helpdesk's webhook to a stopped
            # connector failed with 500)? Look before the job is retried.
            if exc.permanent or not posted(self.ticket(str(ticket_id))):
                raise
            return
        self._learn(answer.get("user"))

    def _has_note(self, ticket: dict[str, Any]) -> bool:
        return any(self._is_own_note(f) for f in followups(ticket))

    def _is_own_note(self, followup: dict[str, Any]) -> bool:
        """The connector's marker, written by the connector's staff account: by its id when
        known (configured, or learned from its own writes), else by being staff-written
        (the helpdesk records no user for a customer's follow-up)."""
        if not has_marker(str(followup.get("comment") or "")):
            return False
        author = followup.get("user")
        return author in self.own_user_ids if self.own_user_ids else author is not None

    def _learn(self, user: Any) -> None:
        """Record the author of a write the connector itself just made (never the author of
        a note that merely carries the marker: an agent may quote one)."""
        if isinstance(user, int) and not isinstance(user, bool):
            self.own_user_ids.add(user)

    def is_open(self, ticket_id: str) -> bool | None:
        return self.ticket(ticket_id).get("status") not in CLOSED_STATUSES

    # ----- polling and backfill -----------------------------------------------------------

    def _page(self, page: int) -> dict[str, Any]:
        data: dict[str, Any] = self.api(
            "GET",
            "tickets/",
            params={"status": OPEN_STATUS, "page": page, "page_size": PAGE_SIZE},
        ).json()
        return data

    def newest_open(self) -> Iterator[dict[str, Any]]:
        """Open tickets, newest first. The API lists by id ascending with no date or id
        filter, so pages are read from the last one backwards; callers stop early."""
        first = self._page(1)
        last = max(1, math.ceil(int(first.get("count") or 0) / PAGE_SIZE))
        for page in range(last, 0, -1):
            data = first if page == 1 else self._page(page)
            yield from reversed(data.get("results") or [])

    def poll(self, since: str | None) -> tuple[list[TicketEvent], str | None]:
        mark = int(since) if since and since.isdigit() else None
        floor = mark - ID_OVERLAP if mark is not None else None
        not_before = datetime.now(UTC) - FIRST_POLL_WINDOW
        events: list[TicketEvent] = []
        newest = mark
        for ticket in self.newest_open():
            ticket_id = int(ticket["id"])
            newest = max(newest or 0, ticket_id)
            if floor is not None and ticket_id <= floor:
                break
            if floor is None:
                # First poll: recent tickets only (the history is `bpsm backfill`'s job).
                created = opened_at(ticket)
                if created is None or created < not_before:
                    break
            event = self._polled(ticket)
            if event is not None:
                events.append(event)
        events.reverse()  # oldest first, as they were opened
        return events, None if newest is None else str(newest)

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        events: list[TicketEvent] = []
        for ticket in self.newest_open():
            created = opened_at(ticket)
            if created is not None and created < since:
                break
            event = self._polled(ticket)
            if event is not None:
                events.append(event)
                if progress is not None:
                    progress(len(events))
        return events

    def _polled(self, ticket: dict[str, Any]) -> TicketEvent | None:
        if is_own_ticket(ticket, self.own_user_ids):
            return None
        queue = self.queue_name(ticket.get("queue"))
        return ticket_event(
            "django-helpdesk", ticket, queue, created_delivery(int(ticket["id"])), "polled"
        )

    # ----- tickets the connector opens ----------------------------------------------------

    def create_ticket(self, ticket: NewTicket) -> str:
        """Opens the ticket in its queue; the description starts with NOTE_MARKER so that
        its new-ticket webhook (or the poller) leaves it alone. Tags: see add_tags."""
        description = f"{NOTE_MARKER}\n{ticket.body}"
        body = {
            "queue": self.queue_id(ticket.queue),
            "title": ticket.title,
            "description": description,
            "priority": NORMAL_PRIORITY,
        }
        # An earlier try whose answer was lost (and whose look below failed too) opened it:
        # its reference is in the description. Opened tickets only: the API lists no others.
        if ticket.ref:
            found = self._just_created(ticket.title, lambda text: ticket.ref in text, REF_WINDOW)
            if found is not None:
                return str(found["id"])
        try:
            created = self.post_once("tickets/", body)
        except HostError as exc:
            # Saved but answered 500 (the helpdesk's webhook to a stopped connector)? Then
            # it is among the newest tickets; a blind retry would open a second one.
            found = (
                None
                if exc.permanent
                else self._just_created(
                    ticket.title, lambda text: text.strip() == description.strip()
                )
            )
            if found is None:
                raise
            created = found
        self._learn(_opening(created).get("user"))
        return str(created["id"])

    def _just_created(
        self, title: str, same_text: Callable[[str], bool], window: timedelta = RECHECK_WINDOW
    ) -> dict[str, Any] | None:
        recent = datetime.now(UTC) - window
        for ticket in self.newest_open():
            created = opened_at(ticket)
            if created is None or created < recent:
                return None
            if ticket.get("title") == title and same_text(str(ticket.get("description") or "")):
                return ticket
        return None

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        """django-helpdesk has no ticket tags: a no-op. The routing note names the process
        and service instead."""

    # ----- setup --------------------------------------------------------------------------

    def setup(self, mapping: Mapping, hook_url: str | None) -> list[str]:
        """Checks API access and queue ids, and prints what the helpdesk admin must do: the
        API can neither create queues nor configure webhooks (they are environment
        variables of the helpdesk process)."""
        self.api("GET", "tickets/", params={"page_size": 1})
        lines = [f"API access ok as {self.settings.user!r} ({self.auth_mode} auth)"]
        lines += self._queue_lines(mapping)
        lines += self._webhook_lines(hook_url)
        return lines

    def _queue_lines(self, mapping: Mapping) -> list[str]:
        options = read_options(mapping)
        slugs = mapping.all_queues()
        bad = [s for s in slugs if not SLUG.fullmatch(s)]
        if bad:
            return [
                f"not queue slugs: {', '.join(map(repr, bad))}; a django-helpdesk mapping names "
                "every queue (processes, services, fallback) by its slug, e.g. bpsm-reactive"
            ]
        command = bpsm_queues_command(slugs, options.queue_titles)
        missing = [s for s in slugs if s not in options.queue_ids]
        if not missing:
            return [
                f"queue ids known for all {len(slugs)} queues: "
                + ", ".join(f"{s}={options.queue_ids[s]}" for s in slugs),
                f"(to create or re-check them on the helpdesk host: {command})",
            ]
        return [
            f"queue ids missing for: {', '.join(missing)}",
            "  1. on the helpdesk host (contrib/django_helpdesk installed), run:",
            f"     {command}",
            "  2. paste its one-line JSON output after `queue_ids:` under `options:` in "
            "mappings/django-helpdesk.yaml (or $BPSM_DJANGO_HELPDESK_MAPPING)",
            "  3. run `bpsm setup django-helpdesk` again to check",
        ]

    def _webhook_lines(self, hook_url: str | None) -> list[str]:
        if self.settings.poll_interval is not None:
            return [
                f"polling mode (every {self.settings.poll_interval:g} s): leave "
                "HELPDESK_NEW_TICKET_WEBHOOK_URLS and HELPDESK_FOLLOWUP_WEBHOOK_URLS unset"
            ]
        if not hook_url:
            return [
                "no --hook-url given: webhook lines not printed (or set "
                "BPSM_DJANGO_HELPDESK_POLL_INTERVAL to poll instead)"
            ]
        existing = self.settings.webhook_secret
        secret = existing.get_secret_value() if existing else self.new_webhook_secret()
        if existing is None:
            self.webhook_secret = secret
        url = with_token(hook_url, secret)
        return [
            "add to the environment of the helpdesk's web and e-mail processes, then restart "
            "them (the lines hold the webhook secret: keep them like a password):",
            f"  HELPDESK_NEW_TICKET_WEBHOOK_URLS={url}",
            f"  HELPDESK_FOLLOWUP_WEBHOOK_URLS={url}",
            "  (beside other URLs: join new-ticket URLs with ',' but follow-up URLs with ' , ')",
        ]

    def test_event(self, hook_url: str) -> str:
        """Send the connector a follow-up webhook for its own note: it must answer 200."""
        secret = self.webhook_secret or (
            self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else ""
        )
        # As django-helpdesk records the connector's own follow-up: written by a staff
        # account (its id when known; the marker alone is no proof, a customer may type it).
        author = min(self.own_user_ids, default=0)
        own_note = {"id": 0, "user": author, "public": False, "comment": NOTE_MARKER}
        body = {
            "ticket": {"id": 0, "queue": 0, "title": "setup test", "followup_set": [own_note]},
            "queue_slug": "setup-test",
            "followup_id": 0,
        }
        refused = "the token was refused: start it with the webhook secret above"
        return send_test_event(with_token(hook_url, secret), refused, json=body)

    def close(self) -> None:
        self.http.session.close()


def template_safe(text: str) -> str:
    """update_ticket() renders a comment as a Django template (it guards only "{%"): "{{"
    is broken up so that the comment is stored as written."""
    return text.replace("{{", "{ {").replace("}}", "} }")


def note_text(note: str, outcome: str) -> str:
    """The routing note as django-helpdesk will show it; with no tags in django-helpdesk,
    shadow/override are stated here."""
    text = template_safe(note)
    if outcome in ("shadow", "override"):
        text += f"\n[bpsm-{outcome}]"
    return text


def has_comment(ticket: dict[str, Any], comment: str) -> bool:
    """Whether a follow-up of the ticket says `comment` (spacing aside)."""
    wanted = " ".join(comment.split())
    return any(" ".join(str(f.get("comment") or "").split()) == wanted for f in followups(ticket))


def bpsm_queues_command(slugs: list[str], titles: dict[str, str]) -> str:
    specs = " ".join(
        "--create " + shlex.quote(f"{titles.get(slug, slug)}={slug}") for slug in slugs
    )
    return f"python manage.py bpsm_queues {specs} --json"


HOST = DjangoHelpdeskHost
