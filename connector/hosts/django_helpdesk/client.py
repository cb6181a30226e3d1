"""django-helpdesk's REST API: queue move, private follow-up, relation replies; polling and
backfill; setup checks (the API cannot create queues or configure webhooks).

POSTs are not idempotent: each goes out once and a failure is followed by a look for the
result (see `_followup_once`, `create_ticket`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from requests.auth import HTTPBasicAuth
from requests.cookies import RequestsCookieJar

from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent
from connector.hosts.base import (
    ApplyResult,
    HostClient,
    HostError,
    SetupResult,
    read_mapping_options,
)
from connector.hosts.django_helpdesk.sansio import (
    CLOSED_STATUSES,
    CSRF_COOKIE,
    FIRST_POLL_WINDOW,
    ID_OVERLAP,
    LOGIN_PATH,
    LOGIN_RETRY_SECONDS,
    NORMAL_PRIORITY,
    NOT_COMMITTED_WAIT,
    OPEN_STATUS,
    PAGE_SIZE,
    RECHECK_WINDOW,
    REF_WINDOW,
    SESSION_COOKIE,
    SLUG,
    _opening,
    bpsm_queues_command,
    created_delivery,
    followups,
    has_comment,
    helpdesk_error_text,
    is_own_ticket,
    note_text,
    opened_at,
    setup_test_event,
    template_safe,
    ticket_event,
    with_token,
)
from connector.hosts.django_helpdesk.settings import DjangoHelpdeskOptions, DjangoHelpdeskSettings
from connector.hosts.http import HttpTransport
from connector.logs import log_extra
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, has_marker

log = logging.getLogger("bpsm.django_helpdesk")


def connect(
    settings: DjangoHelpdeskSettings, options: DjangoHelpdeskOptions, own_user_ids: set[int]
) -> DjangoHelpdeskClient:
    """The API client for these settings (basic auth, then a session)."""
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
        settings.url,
        "django-helpdesk",
        timeout=settings.http_timeout,
        session=session,
        error_text=helpdesk_error_text,
    )
    return DjangoHelpdeskClient(transport, settings, options, own_user_ids)


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


# django-helpdesk 2.6.1 helpdesk/urls.py mounts api/ only when HELPDESK_API_ENABLED is true
# (helpdesk/settings.py: getattr(settings, "HELPDESK_API_ENABLED", True)).
API_DISABLED = (
    "django-helpdesk answered 404 on /api/tickets/: its REST API is not mounted — set "
    "HELPDESK_API_ENABLED = True in the helpdesk's Django settings (False unmounts /api/), "
    "or check BPSM_DJANGO_HELPDESK_URL"
)
# How django-helpdesk 2.6.1 splits the two variables (helpdesk/settings.py): the new-ticket
# list with str.split(","), the follow-up list with re.split(r"[\s],[\s]", …).
NEW_TICKET_SEPARATOR, FOLLOWUP_SEPARATOR = ",", " , "


def webhook_env_lines(url: str) -> list[str]:
    """The two variables, each with the separator its own list is split on."""
    other = "https://other.example/hook"
    return [
        f"  HELPDESK_NEW_TICKET_WEBHOOK_URLS={url}",
        f"  HELPDESK_FOLLOWUP_WEBHOOK_URLS={url}",
        "  beside other URLs, each list has its own separator:",
        f"    HELPDESK_NEW_TICKET_WEBHOOK_URLS={other}{NEW_TICKET_SEPARATOR}{url}"
        "   (',' with no spaces)",
        f"    HELPDESK_FOLLOWUP_WEBHOOK_URLS={other}{FOLLOWUP_SEPARATOR}{url}"
        "   (' , ': a space on each side)",
    ]


class DjangoHelpdeskClient(HostClient):
    def __init__(
        self,
        transport: HttpTransport,
        settings: DjangoHelpdeskSettings,
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
        data: dict[str, Any] = self.ticket_list(
            {"status": OPEN_STATUS, "page": page, "page_size": PAGE_SIZE}
        ).json()
        return data

    def ticket_list(self, params: dict[str, Any]) -> requests.Response:
        """GET /api/tickets/; a 404 on the list itself means the API is not mounted."""
        response = self.api("GET", "tickets/", ok=(200, 404), params=params)
        if response.status_code == 404:
            raise HostError(API_DISABLED, permanent=True)
        return response

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
            if not followups(ticket):
                # Still being created: its opening follow-up (the opener, the creation date,
                # whether the connector opened it) is not saved yet. The mark does not pass
                # it, so the next poll reads it whole.
                continue
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
        if not followups(ticket) or is_own_ticket(ticket, self.own_user_ids):
            return None  # still being created (see poll), or opened by the connector
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

    def setup(self, mapping: Mapping, hook_url: str | None) -> SetupResult:
        """Checks API access and queue ids, and prints what the helpdesk admin must do: the
        API can neither create queues nor configure webhooks (they are environment
        variables of the helpdesk process)."""
        self.ticket_list({"page_size": 1})
        lines = [f"API access ok as {self.settings.user!r} ({self.auth_mode} auth)"]
        lines += self._queue_lines(mapping)
        existing = self.settings.webhook_secret
        generated = None
        if hook_url and self.settings.poll_interval is None and existing is None:
            generated = self.new_webhook_secret()
        secret = generated or (existing.get_secret_value() if existing else "")
        lines += self._webhook_lines(hook_url, secret)
        test = setup_test_event(hook_url, secret, self.own_user_ids) if hook_url else None
        return SetupResult(tuple(lines), generated, test)

    def _queue_lines(self, mapping: Mapping) -> list[str]:
        options = read_mapping_options("django-helpdesk", DjangoHelpdeskOptions, mapping.options)
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

    def _webhook_lines(self, hook_url: str | None, secret: str) -> list[str]:
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
        return [
            "add to the environment of the helpdesk's web and e-mail processes, then restart "
            "them (the lines hold the webhook secret: keep them like a password):",
            *webhook_env_lines(with_token(hook_url, secret)),
        ]

    def close(self) -> None:
        self.http.session.close()
