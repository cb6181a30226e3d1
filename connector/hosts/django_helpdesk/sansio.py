"""django-helpdesk 2.6: webhooks (or polling) in, REST API out (queue move, private follow-up;
for relation tickets with `relation.reply`, a public or private reply follow-up).

Facts this module relies on (django-helpdesk 2.6.1, its `helpdesk/` package; recorded payloads
and notes in fixtures/):

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

import json
import re
import shlex
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connector.config import HostSettings
from connector.events import TicketEvent
from connector.hosts.base import (
    BadPayload,
    Host,
    Ignored,
    TestEvent,
    Unauthorized,
    WebhookRequest,
    hinted_error_text,
    json_object,
    need,
    parse_time,
    same,
)
from connector.hosts.django_helpdesk.settings import DjangoHelpdeskOptions, DjangoHelpdeskSettings
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, has_marker, starts_with_marker

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


class DjangoHelpdeskSansIO(Host[DjangoHelpdeskSettings]):
    """django-helpdesk's webhooks, pure; `connector.hosts.django_helpdesk.DjangoHelpdeskHost`
    adds the API client."""

    name = "django-helpdesk"
    settings_model = DjangoHelpdeskSettings
    options_model = DjangoHelpdeskOptions

    def __init__(self, settings: HostSettings, mapping: Mapping):
        super().__init__(settings, mapping)
        # An installation whose helpdesk cannot reach the connector polls instead.
        self.polling = self.settings.poll_interval is not None
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


# DRF answers {"detail": …} or {field: [messages]}; the hint says what the admin should do.
ERROR_HINTS = {
    400: "the helpdesk refused the values; compare options.queue_ids with "
    "`manage.py bpsm_queues --json`",
    401: "check BPSM_DJANGO_HELPDESK_USER and _PASSWORD",
    403: "the connector's account must be staff (is_staff) and, with "
    "HELPDESK_ENABLE_PER_QUEUE_STAFF_PERMISSION, hold each queue's permission",
    404: "the ticket no longer exists or its queue is hidden from the connector's account",
}
helpdesk_error_text = hinted_error_text(
    ERROR_HINTS,
    lambda data: data.get("detail") if isinstance(data, dict) and "detail" in data else data,
)


def with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


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


def setup_test_event(hook_url: str, secret: str, own_user_ids: set[int]) -> TestEvent:
    """A follow-up webhook for the connector's own note: it must answer 200 (ignored)."""
    # As django-helpdesk records the connector's own follow-up: written by a staff account
    # (its id when known; the marker alone is no proof, a customer may type it).
    author = min(own_user_ids, default=0)
    own_note = {"id": 0, "user": author, "public": False, "comment": NOTE_MARKER}
    body = {
        "ticket": {"id": 0, "queue": 0, "title": "setup test", "followup_set": [own_note]},
        "queue_slug": "setup-test",
        "followup_id": 0,
    }
    refused = "the token was refused: start it with the webhook secret above"
    headers = {"Content-Type": "application/json"}
    return TestEvent(with_token(hook_url, secret), json.dumps(body).encode(), headers, refused)
