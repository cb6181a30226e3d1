"""GLPI: webhooks (GLPI ≥ 11) or polling (GLPI ≤ 10) in, the legacy REST API (apirest.php) out.

Contract: connector/hosts/glpi/fixtures/contract/glpi.md. A GLPI 11 webhook body is
`{"item": <HL API v2 object>, "event": "new"|"update"|"delete"[, "parent_item": …]}`, signed with
`X-GLPI-signature` = hex HMAC-SHA256(body + X-GLPI-timestamp). GLPI computes both headers when
the event is raised and re-sends them unchanged on its retries, minutes later: the timestamp
only has to fall inside a wide window, and the delivery id (item type, id, event, timestamp)
makes those retries duplicates.

Loop prevention: the payload names no acting user. The connector is subscribed to `new` events
only (Ticket, ITILFollowup) — its own writes raise `update`, plus one ITILFollowup `new` for its
note — and it ignores any ticket or followup carrying NOTE_MARKER. Polling (GLPI ≤ 10) skips
tickets last changed by the connector's own API user.

GLPI has no tags: the tags other hosts get are written into the private followup instead.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from connector.config import HostSettings
from connector.events import NewTicket, RoutingDecision, TicketEvent
from connector.hosts.base import (
    SIGNATURE_REFUSED,
    BadPayload,
    Host,
    HostError,
    Ignored,
    OptionsError,
    TestEvent,
    Unauthorized,
    WebhookRequest,
    hmac_hex,
    json_object,
    need,
    parse_time,
    read_mapping_options,
    same,
    with_hint,
)
from connector.hosts.glpi.settings import GlpiOptions, GlpiSettings, api_major
from connector.logs import log_extra
from connector.mapping import Mapping as HostMapping
from connector.notes import NOTE_MARKER, starts_with_marker

log = logging.getLogger("bpsm.glpi")

REQUESTER, ASSIGNED = 1, 2  # CommonITILActor types (3 is observer)
SO_NAME, SO_ID, SO_OPENED, SO_MODIFIED = 1, 2, 15, 19  # Ticket search-option ids
OK = (200, 201, 204, 206)
DATE_FMT = "%Y-%m-%d %H:%M:%S"
DEFAULT_MAX_AGE = 3600.0
DEFAULT_POLL_INTERVAL = 30.0  # the poller's default too
WEBHOOK_NAME = "bpsm-connector"
WEBHOOK_EVENTS = (("Ticket", "new"), ("ITILFollowup", "new"))
ROUTED_TYPES = ("Ticket", "ITILFollowup")
CRA_CHALLENGE_BODY = b"validate_cra_challenge"  # what GLPI signs to make its crc_token
# GLPI 12 pins each webhook to a major version of the high-level API, whose schema the
# payload follows (PR #25209); the payload names no version, so setup marks it in the URL
# (`api=2`). bpsm reads version 2 (GLPI 11's payloads, and GLPI 12's pinned to 2); an
# unmarked URL is a GLPI 11 webhook (or one made by hand): version 2 as well.
PINNED_API_VERSION = "2"
READ_API_VERSIONS = frozenset({PINNED_API_VERSION})

# Lines GLPI needs because it has no tags (other hosts tag instead); English fallback.
EXTRA_LINES: dict[str, dict[str, str]] = {
    "en": {
        "tags": "Tags: {tags}",
        "override": 'Not moved: an agent had already assigned "{group}".',
        "shadow": "Shadow mode: the ticket was not moved.",
    },
    "nb": {
        "tags": "Stikkord: {tags}",
        "override": "Ikke flyttet: en saksbehandler hadde allerede tildelt «{group}».",
        "shadow": "Skyggemodus: saken ble ikke flyttet.",
    },
}

# Profile rights per (resource, method), named as GLPI's profile form shows them.
RIGHTS: dict[tuple[str, str], str] = {
    ("Ticket", "GET"): "Assistance > Tickets: See all tickets",
    ("search", "GET"): "Assistance > Tickets: See all tickets",
    ("Ticket", "PUT"): "Assistance > Tickets: Update",
    ("Ticket", "POST"): "Assistance > Tickets: Create",
    ("Group_Ticket", "GET"): "Assistance > Tickets: See all tickets",
    ("Group_Ticket", "POST"): "Assistance > Tickets: Update and Assign a ticket",
    ("Ticket_User", "GET"): "Assistance > Tickets: See all tickets",
    ("ITILFollowup", "GET"): "Assistance > Followups: See public ones and See private ones",
    ("ITILFollowup", "POST"): "Assistance > Followups: Add to all tickets",
    ("Group", "GET"): "Administration > Groups: Read",
    ("Group", "POST"): "Administration > Groups: Create (only for bpsm setup)",
    ("ITILCategory", "GET"): "Setup > ITIL categories: Read",
    ("ITILCategory", "POST"): "Setup > ITIL categories: Create (only for bpsm setup)",
    ("Webhook", "GET"): "Setup > General: Update (webhooks; only for bpsm setup)",
    ("Webhook", "POST"): "Setup > General: Update (webhooks; only for bpsm setup)",
    ("Webhook", "PUT"): "Setup > General: Update (webhooks; only for bpsm setup)",
}

HINTS = {
    "ERROR_ITEM_NOT_FOUND": "the item no longer exists in GLPI (deleted or purged)",
    "ERROR_WRONG_APP_TOKEN_PARAMETER": (
        "BPSM_GLPI_APP_TOKEN does not match the API client (Setup > General > API)"
    ),
    "ERROR_APP_TOKEN_PARAMETERS_MISSING": (
        "the API client has an App-Token: set BPSM_GLPI_APP_TOKEN (Setup > General > API)"
    ),
    "ERROR_NOT_ALLOWED_IP": (
        "add the connector's address to an active API client's IP range (Setup > General > API)"
    ),
    "ERROR_GLPI_LOGIN_USER_TOKEN": (
        "BPSM_GLPI_USER_TOKEN is not the API token of an active user (user form > API token)"
    ),
    "ERROR_LOGIN_PARAMETERS_MISSING": "set BPSM_GLPI_USER_TOKEN",
    "ERROR_SESSION_TOKEN_INVALID": (
        "GLPI forgot the session it had just opened: several GLPI web servers without shared "
        "PHP sessions?"
    ),
    "ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM": (
        "GLPI does not know this item type (webhooks need GLPI 11: set api_version 10 to poll)"
    ),
}


# ----- pure helpers -------------------------------------------------------------------------


def glpi_text(value: Any, api_version: int) -> str:
    """A GLPI string as the HTML/text it stands for. GLPI ≤ 10 stores <, > and & as entities
    (`&lt;` or 10.0's `&#60;`): undo that layer exactly once. GLPI 11 is raw: leave it alone,
    its entities are real HTML (a second unescape would turn `&lt;x&gt;` text into a tag)."""
    if not isinstance(value, str):
        return ""
    return html.unescape(value) if api_version < 11 else value


def routing_note_lines(
    decision: RoutingDecision, outcome: str, agent_group: str | None = None
) -> list[str]:
    """The routing followup's lines: the decision's note, its tags (as other hosts tag the
    ticket: GLPI has no tags of its own), and what shadow mode or an agent's move means."""
    texts = EXTRA_LINES.get(decision.language, EXTRA_LINES["en"])
    tags = list(decision.tags) + ([f"bpsm-{outcome}"] if outcome != "applied" else [])
    if decision.approver_group:
        tags.append("bpsm-cab-approval")  # as on other hosts; the note names the group
    lines = decision.note.splitlines() + [texts["tags"].format(tags=", ".join(tags))]
    if outcome == "shadow":
        lines.append(texts["shadow"])
    if agent_group is not None:
        lines.append(texts["override"].format(group=agent_group))
    return lines


def opened_ticket_html(ticket: NewTicket) -> str:
    """The text of a ticket the connector opens: the marker and title first (its creation's
    webhook or poll is then an own update), the body, and its tags (GLPI has none)."""
    lines = [f"{NOTE_MARKER} {ticket.title}", *ticket.body.splitlines()]
    if ticket.tags:
        lines.append("Tags: " + ", ".join(ticket.tags))
    return note_html(lines)


def missing_group(name: str) -> HostError:
    return HostError(
        f"glpi: group {name!r} (mappings/glpi.yaml) does not exist: run "
        "`bpsm setup glpi` or create it in Administration > Groups",
        permanent=True,
    )


def note_html(lines: list[str]) -> str:
    return "<p>" + "<br>".join(html.escape(line, quote=False) for line in lines) + "</p>"


def webhook_delivery_id(itemtype: str, item_id: int, event: str, stamp: str) -> str:
    """Stable per raised event: GLPI's retries re-send the same timestamp, so they dedupe."""
    digest = hashlib.sha256(f"{itemtype}:{item_id}:{event}:{stamp}".encode()).hexdigest()
    return f"glpi-hook:{digest[:40]}"


def _team(item: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    team = item.get("team")
    if team is None:
        return []
    if not isinstance(team, list):
        raise BadPayload(f"field {where}.team must be a list", f"{where}.team")
    for index, member in enumerate(team):
        if not isinstance(member, dict):
            raise BadPayload(
                f"field {where}.team[{index}] must be an object", f"{where}.team[{index}]"
            )
    return team


def _is_group(member: Mapping[str, Any]) -> bool:
    # Users and groups differ only by their form link (ITILController::getCleanTeam).
    return "group.form.php" in str(member.get("href", ""))


def team_requester(team: list[dict[str, Any]]) -> str | None:
    for member in team:
        if member.get("role") == "requester" and not _is_group(member) and member.get("name"):
            return str(member["name"])
    return None


def team_queue(team: list[dict[str, Any]]) -> str | None:
    """The most recently assigned group (team lists actors in the order they were added)."""
    groups = [m for m in team if m.get("role") == "assigned" and _is_group(m) and m.get("name")]
    return str(groups[-1]["name"]) if groups else None


def _string(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadPayload(f"field {where}.{key} must be str, got {type(value).__name__}")
    return value


def created_at(data: Mapping[str, Any], where: str) -> datetime | None:
    """`date` (or `date_creation`) in UTC; a date UTC cannot hold is a bad payload."""
    key = "date" if data.get("date") else "date_creation"
    value = parse_time(data.get(key))
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise BadPayload(f"field {where}.{key} is out of range", f"{where}.{key}") from None


def local_time(value: Any) -> datetime | None:
    """GLPI's REST API dates: 'Y-m-d H:i:s' in the server's own timezone (naive)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.strptime(value.strip()[:19], DATE_FMT)
    except ValueError:
        return None


def utc_offset(date_mod: Any, last_modified: str | None) -> timedelta:
    """GLPI's timezone, from a row's local `date_mod` and the GMT `Last-Modified` header GLPI
    derives from it; 0 (UTC) when either is missing."""
    local = local_time(date_mod)
    if local is None or not last_modified:
        return timedelta(0)
    try:
        gmt = parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return timedelta(0)
    seconds = (local - gmt.replace(tzinfo=None)).total_seconds()
    return timedelta(minutes=15 * round(seconds / 900))


def local_to_utc(value: Any, offset: timedelta) -> datetime | None:
    local = local_time(value)
    return (local - offset).replace(tzinfo=UTC) if local else None


def glpi_error(response: Any) -> tuple[str | None, str]:
    """GLPI's error body `["ERROR_…", message]` as (code, message without the doc link)."""
    try:
        data = response.json()
    except ValueError:
        return None, response.text[:200].strip()
    if isinstance(data, list) and data and isinstance(data[0], str):
        message = data[1] if len(data) > 1 else ""
        text = message if isinstance(message, str) else json.dumps(message)[:300]
        return data[0], text.split("; view documentation")[0]
    return None, str(data)[:300]


def _resource(response: Any) -> tuple[str, str]:
    """(item type, method) of the request behind a response, e.g. ('Group_Ticket', 'POST')."""
    request = response.request
    path = unquote(urlsplit(str(request.url or "")).path)
    parts = [p for p in path.split("apirest.php", 1)[-1].split("/") if p and not p.isdigit()]
    name = "search" if parts[:1] == ["search"] else (parts[-1] if parts else "")
    return name, str(request.method or "GET")


def glpi_error_text(response: Any) -> str:
    """GLPI's error plus what the admin should do about it (the right to grant, the variable
    to fix)."""
    code, message = glpi_error(response)
    text = f"{code}: {message}" if code and message else (code or message)
    resource, method = _resource(response)
    denied = code == "ERROR_RIGHT_MISSING" or "permission" in message.lower()
    if denied:
        right = RIGHTS.get((resource, method), f"{method} on {resource}")
        hint = f"the API user's profile lacks the right '{right}' (see the GLPI guide)"
    elif code in HINTS:
        hint = HINTS[code]
    elif code is None and response.status_code == 404:
        hint = "BPSM_GLPI_URL must be the apirest.php base, e.g. https://glpi.example/apirest.php"
    else:
        return text
    return with_hint(text, hint)


def _content_range_total(header: str | None) -> int | None:
    if not header or "/" not in header:
        return None
    total = header.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _mark(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _mark_epoch(mark: str, default: float) -> float:
    try:
        parsed = datetime.fromisoformat(mark)
    except ValueError:
        log.warning("unreadable GLPI poll mark; starting afresh", extra=log_extra({"mark": mark}))
        return default
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# ----- the host (webhooks) ------------------------------------------------------------------


class GlpiSansIO(Host[GlpiSettings]):
    """GLPI's webhooks, pure; `connector.hosts.glpi.GlpiHost` adds the API client."""

    name = "glpi"
    settings_model = GlpiSettings
    options_model = GlpiOptions

    def __init__(self, settings: HostSettings, mapping: HostMapping):
        super().__init__(settings, mapping)
        self.options = read_mapping_options(self.name, GlpiOptions, mapping.options)
        self.api_version = api_major(self.settings.api_version, self.options.api_version)
        max_age = self.settings.webhook_max_age
        self.max_age = DEFAULT_MAX_AGE if max_age is None else max_age
        self.clock: Callable[[], float] = time.time  # tests move it
        self.polling = self.api_version < 11  # GLPI ≤ 10 has no outgoing webhooks
        if self.options.api == "hlapi" and self.polling:
            raise OptionsError(
                f"glpi mapping: options.api: hlapi needs GLPI 11 or later (the high-level API "
                f"is new in 11); GLPI {self.api_version} is read with options.api: v1"
            )

    def verify(self, request: WebhookRequest) -> None:
        secret = self.settings.webhook_secret
        if secret is None:
            return
        given = request.header("X-GLPI-signature")
        stamp = request.header("X-GLPI-timestamp")
        if not given:
            raise Unauthorized("missing X-GLPI-signature header (a webhook secret is configured)")
        if not stamp:
            raise Unauthorized("missing X-GLPI-timestamp header (it is part of the signature)")
        expected = hmac_hex(secret.get_secret_value(), request.body + stamp.encode(), "sha256")
        if not same(given.strip().lower(), expected):
            raise Unauthorized("X-GLPI-signature does not match the configured webhook secret")
        self._check_age(stamp)

    def _check_age(self, stamp: str) -> None:
        # A window, not freshness: GLPI sends ≥ 1 min after the event and retries with the
        # same headers; de-duplication stops replays inside the window.
        try:
            age = self.clock() - int(stamp.strip())
        except ValueError:
            raise Unauthorized("X-GLPI-timestamp must be unix seconds") from None
        if abs(age) > self.max_age:
            raise Unauthorized(
                f"X-GLPI-timestamp is {round(age)} s from now, outside the {self.max_age:g} s "
                "window (BPSM_GLPI_WEBHOOK_MAX_AGE; check both clocks)"
            )

    def challenge(self, request: WebhookRequest) -> str | None:
        """GLPI's CRA: GET ?crc_token=T must answer hex HMAC-SHA256(secret, T).

        GLPI only ever sends one token, HMAC(secret, "validate_cra_challenge")
        (Webhook::validateCRAChallenge). Answering any other T would sign caller-chosen
        bytes with the webhook key — the same HMAC that signs body + timestamp — so anything
        but that exact token is refused."""
        token = request.query.get("crc_token")
        secret = self.settings.webhook_secret
        if not token or secret is None:
            return None
        key = secret.get_secret_value()
        expected = hmac_hex(key, CRA_CHALLENGE_BODY, "sha256")
        if not same(token, expected):
            return None
        return hmac_hex(key, expected.encode(), "sha256")

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        check_api_version(request.query.get("api"))
        data = json_object(request.body)
        item = need(data, "item", dict, "")
        event = need(data, "event", str, "")
        item_id = need(item, "id", int, "item")
        parent = data.get("parent_item")
        if parent is not None and not isinstance(parent, dict):
            raise BadPayload("field parent_item must be an object", "parent_item")
        itemtype = request.query.get("itemtype") or infer_itemtype(item, parent)
        if itemtype not in ROUTED_TYPES:
            return Ignored(
                f"{itemtype} events are not routed (only Ticket and ITILFollowup)",
                label="not-routed-type",
            )
        if event != "new":
            ticket = str(item_id) if itemtype == "Ticket" else None
            return Ignored(_why_not_new(itemtype, event), ticket, "not-new")
        stamp = request.header("X-GLPI-timestamp") or hashlib.sha256(request.body).hexdigest()
        delivery = webhook_delivery_id(itemtype, item_id, event, stamp)
        if itemtype == "Ticket":
            return self._ticket_event(item, delivery)
        return self._followup_event(item, parent, delivery)

    def _ticket_event(self, item: dict[str, Any], delivery: str) -> TicketEvent | Ignored:
        ticket_id = str(item["id"])
        content = need(item, "content", str, "item")
        team = _team(item, "item")
        if item.get("is_deleted") is True:
            return Ignored("ticket is in the trash", ticket_id, "in-trash")
        if starts_with_marker(content):  # a ticket the connector opened (no author given)
            return Ignored("own update", ticket_id, "own-update")
        return TicketEvent(
            host=self.name,
            delivery_id=delivery,
            ticket_id=ticket_id,
            kind="created",
            subject=_string(item, "name", "item"),
            body=content,
            queue=team_queue(team),
            requester=team_requester(team),
            created_at=created_at(item, "item"),
        )

    def _followup_event(
        self, item: dict[str, Any], parent: dict[str, Any] | None, delivery: str
    ) -> TicketEvent | Ignored:
        content = need(item, "content", str, "item")
        parent_type = _string(item, "itemtype", "item") or "Ticket"
        if parent_type != "Ticket":
            return Ignored(f"followup on a {parent_type}, not a ticket", label="not-a-ticket")
        ticket_id = str(need(item, "items_id", int, "item"))
        if starts_with_marker(content):  # the payload names no author: the marker leads
            return Ignored("own update", ticket_id, "own-update")
        if item.get("is_private") is True:
            # Requesters cannot write private followups: this is an agent's internal note.
            return Ignored(
                "private followup (an agent's note), not requester text",
                ticket_id,
                "private-follow-up",
            )
        if parent is None:
            raise BadPayload("missing field parent_item", "parent_item")
        team = _team(parent, "parent_item")
        return TicketEvent(
            host=self.name,
            delivery_id=delivery,
            ticket_id=ticket_id,
            kind="customer_reply",
            subject=_string(parent, "name", "parent_item"),
            body=content,
            queue=team_queue(team),
            requester=team_requester(team),
            created_at=created_at(parent, "parent_item"),
        )


def check_api_version(marker: str | None) -> None:
    """Refuse a payload of an API version bpsm does not read: its fields may have other names
    or meanings, and parsing it as version 2 could route it wrongly."""
    if marker is None or marker.strip() in READ_API_VERSIONS:
        return
    raise BadPayload(
        f"GLPI webhook payload of API version {marker.strip()[:20]!r}: bpsm reads version "
        f"{PINNED_API_VERSION} only; pin the webhook to {PINNED_API_VERSION} (run `bpsm setup "
        f"glpi`, or set the webhook's API version to {PINNED_API_VERSION} in Setup > Webhooks "
        f"and its URL's api= to {PINNED_API_VERSION})",
        "api",
    )


def webhook_url(hook_url: str, itemtype: str) -> str:
    """The URL `bpsm setup glpi` registers: the item type (the payload does not say it) and
    the API version the webhook is pinned to (the payload does not say it either)."""
    separator = "&" if "?" in hook_url else "?"
    return f"{hook_url}{separator}itemtype={itemtype}&api={PINNED_API_VERSION}"


def glpi_root(url: str) -> str:
    """GLPI's root URL from BPSM_GLPI_URL: the apirest.php base (as v1 needs it), the
    high-level API's base, or the root itself."""
    base = url.rstrip("/")
    for suffix in ("/apirest.php", "/api.php/v2", "/api.php"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def hl_api_majors(index: Any) -> list[int]:
    """The high-level API majors GLPI lists at `GET /api.php/v2/` (CoreController::index:
    `{"message", "api_versions": [{"api_version", "version", "endpoint"}]}`)."""
    majors: set[int] = set()
    rows = index.get("api_versions") if isinstance(index, dict) else None
    for row in rows if isinstance(rows, list) else []:
        head = str(row.get("api_version", "") if isinstance(row, dict) else "").split(".")[0]
        if head.isdigit() and int(head) >= 2:  # v1 is the legacy API
            majors.add(int(head))
    return sorted(majors)


def describe_apis(legacy_answers: bool, majors: list[int]) -> tuple[list[str], int | None]:
    """What `bpsm setup glpi` says about the APIs a GLPI answers, and the GLPI major they
    suggest: HL API 3 (alpha) arrived with GLPI 12, HL API 2 with 11, none before."""
    lines = [
        "GLPI legacy REST API (apirest.php): "
        + ("answers (options.api: v1)" if legacy_answers else "does not answer")
    ]
    if majors:
        listed = ", ".join(str(m) for m in majors)
        lines.append(
            f"GLPI high-level API (api.php): versions {listed} (options.api: hlapi; bpsm "
            f"reads and pins version {PINNED_API_VERSION})"
        )
    else:
        lines.append("GLPI high-level API (api.php): not found (GLPI ≤ 10, or disabled)")
    major = (12 if max(majors) >= 3 else 11) if majors else None
    return lines, major


PRIVATE_NETWORK_HINT = (
    "GLPI 12 sends webhooks only to public addresses: add Webhook::class to "
    "GLPI_SERVERSIDE_URL_ALLOWED_PRIVATE_NETWORKS_CONTEXTS in GLPI's config/local_define.php "
    "(see the GLPI guide)"
)
PORT_HINT = (
    "GLPI 11 refuses webhook URLs with an explicit port unless GLPI_SERVERSIDE_URL_ALLOWLIST "
    "in GLPI's config/local_define.php allows it, or put the connector behind a proxy on "
    "port 443/80 (see the GLPI guide)"
)


def url_refusal_hints(glpi_major: int | None, hook_url: str, private: bool) -> list[str]:
    """Why GLPI may refuse to send to `hook_url` (`private`: its host resolves to a
    private, loopback or link-local address). Unknown major: both checks apply."""
    hints = []
    if private and glpi_major in (None, 12):
        hints.append(PRIVATE_NETWORK_HINT)
    if urlsplit(hook_url).port is not None and glpi_major in (None, 11):
        hints.append(PORT_HINT)
    return hints


def infer_itemtype(item: Mapping[str, Any], parent: Mapping[str, Any] | None) -> str:
    """Which item a default payload carries (it does not say). `bpsm setup glpi` also puts
    `?itemtype=` in the webhook URL, which wins; this covers hand-made webhooks."""
    if parent is None:
        return "Ticket" if "team" in item or "status" in item else "unknown item"
    if "itemtype" in item and "items_id" in item:
        return "ITILFollowup"
    return "TicketTask" if "tickets_id" in item else "unknown sub-item"


def _why_not_new(itemtype: str, event: str) -> str:
    if event == "update":
        return (
            f"{itemtype} update ignored: only new tickets and new followups are routed "
            "(updates include the connector's own changes)"
        )
    if event == "delete":
        return f"{itemtype} delete ignored: a deleted item has nothing to route"
    return f"{itemtype} {event!r} event ignored: only 'new' is routed"


def setup_test_event(hook_url: str, secret: str, now: float) -> TestEvent:
    """A signed Ticket `update`: the connector must answer 200 ignored."""
    body = json.dumps(
        {"item": {"id": 0, "name": "bpsm-connector setup test", "team": []}, "event": "update"}
    ).encode()
    stamp = str(int(now))
    url = webhook_url(hook_url, "Ticket")
    headers = {
        "X-GLPI-timestamp": stamp,
        "X-GLPI-signature": hmac_hex(secret, body + stamp.encode(), "sha256"),
    }
    return TestEvent(url, body, headers, SIGNATURE_REFUSED)
