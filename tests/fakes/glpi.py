"""A stateful fake GLPI: legacy REST API v1 (``apirest.php``), the high-level API (``api.php``,
GLPI ≥ 11: OAuth2 token, tickets, team members, followups, groups, categories) and GLPI 11/12
outgoing webhooks (12: pinned API version, no private-network targets by default).

The wire behaviour follows ``connector/hosts/glpi/fixtures/contract/glpi.md`` (taken from GLPI's own
source). Where the contract is silent the fake picks one plausible behaviour and says so in a
comment marked ``unconfirmed``.

Usage::

    with FakeGLPI(version=11) as fake:
        fake.add_group("Service Desk L1")
        fake.add_webhook(receiver_url, "glpi-secret", events=["new"])
        tid = fake.create_ticket_as_user("Printer down", "<p>E-13</p>")
        fake.wait_for_deliveries(1)
        requests.get(f"{fake.url}/Ticket/{tid}", headers=...)

The HTTP server is werkzeug's threaded server on 127.0.0.1 with an ephemeral port; webhook
deliveries run in their own background thread. All state sits behind one lock.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import http.client
import ipaddress
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = [
    "ApiCall",
    "CraCheck",
    "FakeGLPI",
    "WebhookDelivery",
    "cra_expected_response",
    "cra_token",
    "glpi_signature",
    "php_json_encode",
    "verify_glpi_signature",
]

# --------------------------------------------------------------------------------------------
# PHP json_encode and webhook signatures
# --------------------------------------------------------------------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


def _php_string(value: str, *, unescaped_slashes: bool, unescaped_unicode: bool) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch == "/":
            out.append("/" if unescaped_slashes else "\\/")
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif code < 0x80:
            out.append(ch)  # DEL (0x7f) included: PHP leaves it alone, Python's json does not
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("lone surrogate: PHP json_encode fails on invalid UTF-8")
        elif unescaped_unicode and code not in (0x2028, 0x2029):
            out.append(ch)  # U+2028/9 stay escaped without JSON_UNESCAPED_LINE_TERMINATORS
        elif code > 0xFFFF:
            v = code - 0x10000
            out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def _php_float(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("PHP json_encode cannot encode NAN/INF")
    text = repr(value)  # shortest round-trip, like serialize_precision = -1
    if "e" in text:
        mantissa, exp = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        n = int(exp)
        return f"{mantissa}e{'+' if n >= 0 else '-'}{abs(n)}"
    return text


def php_json_encode(
    value: Any,
    *,
    pretty: bool = False,
    unescaped_slashes: bool = False,
    unescaped_unicode: bool = False,
) -> str:
    """Encode like PHP's ``json_encode`` (PHP >= 7.1 defaults).

    ``pretty`` is JSON_PRETTY_PRINT (4 spaces, ``": "``); without the two ``unescaped_*`` flags
    ``/`` becomes ``\\/`` and non-ASCII becomes lowercase ``\\uXXXX`` (surrogate pairs above the
    BMP). Python dicts become objects (``{}`` when empty), lists and tuples arrays. A PHP empty
    *associative* array would print ``[]``: pass an empty list for that.
    """

    def enc(v: Any, depth: int) -> str:
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return _php_float(v)
        if isinstance(v, str):
            return _php_string(
                v, unescaped_slashes=unescaped_slashes, unescaped_unicode=unescaped_unicode
            )
        if isinstance(v, Mapping):
            items = [
                (
                    _php_string(
                        str(k),
                        unescaped_slashes=unescaped_slashes,
                        unescaped_unicode=unescaped_unicode,
                    ),
                    enc(val, depth + 1),
                )
                for k, val in v.items()
            ]
            if not items:
                return "{}"
            if not pretty:
                return "{" + ",".join(f"{k}:{val}" for k, val in items) + "}"
            pad = "\n" + "    " * (depth + 1)
            body = ",".join(f"{pad}{k}: {val}" for k, val in items)
            return "{" + body + "\n" + "    " * depth + "}"
        if isinstance(v, list | tuple):
            elems = [enc(x, depth + 1) for x in v]
            if not elems:
                return "[]"
            if not pretty:
                return "[" + ",".join(elems) + "]"
            pad = "\n" + "    " * (depth + 1)
            return "[" + ",".join(pad + e for e in elems) + "\n" + "    " * depth + "]"
        raise TypeError(f"cannot PHP-encode {type(v).__name__}")

    return enc(value, 0)


def _as_bytes(data: bytes | str) -> bytes:
    return data if isinstance(data, bytes) else data.encode("utf-8")


def glpi_signature(body: bytes | str, timestamp: str | int, secret: str) -> str:
    """``X-GLPI-signature``: hex HMAC-SHA256(key=secret, msg=body . timestamp)."""
    msg = _as_bytes(body) + str(timestamp).encode("ascii")
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def verify_glpi_signature(body: bytes | str, headers: Mapping[str, str], secret: str) -> bool:
    """Check ``X-GLPI-signature`` against body + ``X-GLPI-timestamp`` (header names any case)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get("x-glpi-signature")
    timestamp = lowered.get("x-glpi-timestamp")
    if not signature or timestamp is None:
        return False
    return hmac.compare_digest(glpi_signature(body, timestamp, secret), signature.strip().lower())


def cra_token(secret: str) -> str:
    """The ``crc_token`` GLPI sends in a challenge: hex HMAC(secret, "validate_cra_challenge")."""
    return hmac.new(secret.encode(), b"validate_cra_challenge", hashlib.sha256).hexdigest()


def cra_expected_response(secret: str, crc_token: str) -> str:
    """The body a receiver must answer a challenge with: hex HMAC(secret, crc_token)."""
    return hmac.new(secret.encode(), crc_token.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookDelivery:
    """One send attempt of a queued webhook (GLPI's ``sent_try`` + 1 = ``attempt``)."""

    queued_id: int
    webhook_id: int
    attempt: int
    itemtype: str
    items_id: int
    event: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    error: str | None
    response_body: bytes
    sent_at: float

    @property
    def ok(self) -> bool:
        """GLPI counts any status below 400 as delivered."""
        return self.status is not None and self.status < 400

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class CraCheck:
    """One challenge-response check made before a send attempt."""

    queued_id: int
    webhook_id: int
    url: str
    crc_token: str
    status: int | None
    passed: bool
    error: str | None


@dataclass(frozen=True)
class ApiCall:
    """One request received by the fake REST API (including injected failures)."""

    method: str
    path: str
    query: dict[str, Any]
    headers: dict[str, str]
    body: Any
    status: int
    injected: str | None = None  # "fail", "lost" or None


@dataclass
class _Queued:
    id: int
    webhook_id: int
    itemtype: str
    items_id: int
    event: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    send_at: float
    sent_try: int = 0
    cra_skips: int = 0
    done: bool = False


class ApiError(Exception):
    """A GLPI API error, answered as ``["CODE", message]``."""

    def __init__(
        self,
        code: str,
        message: Any = None,
        *,
        status: int | None = None,
        doc: bool | None = None,
    ) -> None:
        default_status, default_message, default_doc = _ERRORS.get(code, (400, "", False))
        self.code = code
        self.message = default_message if message is None else message
        self.status = default_status if status is None else status
        self.doc = default_doc if doc is None else doc
        super().__init__(f"{code}: {self.message}")


# status, message, whether GLPI appends "; view documentation in your browser at ..."
_ERRORS: dict[str, tuple[int, str, bool]] = {
    "ERROR_WRONG_APP_TOKEN_PARAMETER": (400, "parameter app_token seems wrong", True),
    "ERROR_APP_TOKEN_PARAMETERS_MISSING": (400, "missing parameter app_token", True),
    "ERROR_NOT_ALLOWED_IP": (
        400,
        "There isn't an active API client matching your IP address in the configuration",
        False,
    ),
    "ERROR_SESSION_TOKEN_MISSING": (400, "parameter session_token is missing or empty", True),
    "ERROR_SESSION_TOKEN_INVALID": (401, "session_token seems invalid", False),
    "ERROR_LOGIN_PARAMETERS_MISSING": (
        400,
        "parameter(s) login, password or user_token are missing",
        True,
    ),
    "ERROR_LOGIN_WITH_CREDENTIALS_DISABLED": (
        400,
        "Logging in with credentials is disabled",
        False,
    ),
    "ERROR_GLPI_LOGIN_USER_TOKEN": (401, "parameter user_token seems invalid", False),
    "ERROR_GLPI_LOGIN": (401, "Incorrect username or password", False),
    "ERROR_ITEM_NOT_FOUND": (404, "Item not found", False),
    "ERROR_RIGHT_MISSING": (403, "You don't have permission to perform this action.", False),
    "ERROR_BAD_ARRAY": (400, "input parameter must be an array of objects", True),
    "ERROR_METHOD_NOT_ALLOWED": (405, "Method Not Allowed", True),
    "ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM": (
        400,
        "resource not found or not an instance of CommonDBTM",
        True,
    ),
    "ERROR_RESOURCE_MISSING": (400, "resource parameter missing", True),
    "ERROR_ITEMTYPE_NOT_FOUND_NOR_COMMONDBTM": (
        400,
        "itemtype not found or not an instance of CommonDBTM",
        True,
    ),
    "ERROR_FIELD_NOT_FOUND": (400, "Field not found", True),
    "ERROR_JSON_PAYLOAD_FORBIDDEN": (
        400,
        "GET Request should not have json payload (http body)",
        True,
    ),
    "ERROR_JSON_PAYLOAD_INVALID": (400, "JSON payload seems not valid", False),
    "ERROR_RANGE_EXCEED_TOTAL": (400, "Provided range exceed total count of data", True),
    "ERROR_GLPI_ADD": (400, "", False),
    "ERROR_GLPI_UPDATE": (400, "", False),
    "ERROR_GLPI_DELETE": (400, "", False),
    "ERROR_GLPI_PARTIAL_ADD": (207, "", False),
    "ERROR_GLPI_PARTIAL_UPDATE": (207, "", False),
    "ERROR_GLPI_PARTIAL_DELETE": (207, "", False),
    "ERROR": (400, "Bad request", True),
}

NO_RIGHT = "You don't have permission to perform this action."

# --------------------------------------------------------------------------------------------
# GLPI constants
# --------------------------------------------------------------------------------------------

REQUESTER, ASSIGNED, OBSERVER = 1, 2, 3  # CommonITILActor
ROLE_NAMES = {REQUESTER: "requester", ASSIGNED: "assigned", OBSERVER: "observer"}
STATUS_NAMES = {
    1: "New",
    2: "Processing (assigned)",
    3: "Processing (planned)",
    4: "Pending",
    5: "Solved",
    6: "Closed",
}
# GLPI's default priority matrix, [urgency][impact].
PRIORITY_MATRIX = {
    1: {1: 1, 2: 1, 3: 2, 4: 2, 5: 2},
    2: {1: 1, 2: 2, 3: 2, 4: 3, 5: 3},
    3: {1: 2, 2: 2, 3: 3, 4: 4, 5: 4},
    4: {1: 2, 2: 3, 3: 4, 4: 4, 5: 5},
    5: {1: 2, 2: 3, 3: 4, 4: 5, 5: 5},
}
API_USER_ID = 2  # "glpi", the owner of the user_token
AGENT_USER_ID = 4  # "tech", used by assign_group_as_agent
MAX_INPUT_VARS = 990  # Accept-Range value, as in the contract's examples
JSON_CONTENT_TYPE = "application/json; charset=UTF-8"
DATE_FMT = "%Y-%m-%d %H:%M:%S"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Itemtypes the HL API v2 knows (webhook itemtypes); only Ticket and ITILFollowup fire here.
WEBHOOK_ITEMTYPES = frozenset(
    [
        "Ticket",
        "Change",
        "Problem",
        "TicketTask",
        "ChangeTask",
        "ProblemTask",
        "ITILFollowup",
        "ITILSolution",
        "TicketValidation",
        "Computer",
        "Monitor",
        "NetworkEquipment",
        "Peripheral",
        "Phone",
        "Printer",
        "Software",
        "Contract",
        "Document",
        "Supplier",
    ]
)


def _cols(names: str) -> tuple[str, ...]:
    return tuple(names.split())


# Column lists (a subset of the real tables). Ticket follows the contract's get_ticket example.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "Ticket": _cols(
        "id entities_id name date closedate solvedate date_mod users_id_lastupdater status "
        "users_id_recipient requesttypes_id content urgency impact priority itilcategories_id "
        "type time_to_resolve time_to_own actiontime is_deleted locations_id date_creation "
        "externalid"
    ),
    "Group": _cols(
        "id entities_id is_recursive name comment groups_id completename level is_requester "
        "is_watcher is_assign is_task is_notify is_itemgroup is_usergroup is_manager date_mod "
        "date_creation"
    ),
    "ITILCategory": _cols(
        "id entities_id is_recursive itilcategories_id name completename comment level "
        "users_id groups_id code is_helpdeskvisible is_incident is_request is_problem "
        "is_change date_mod date_creation"
    ),
    "Group_Ticket": _cols("id tickets_id groups_id type"),
    "Ticket_User": _cols("id tickets_id users_id type use_notification alternative_email"),
    "ITILFollowup": _cols(
        "id itemtype items_id date users_id users_id_editor content is_private "
        "requesttypes_id date_mod date_creation timeline_position sourceitems_id "
        "sourceof_items_id"
    ),
    "User": _cols(
        "id name realname firstname is_active is_deleted entities_id date_mod date_creation"
    ),
    "Entity": _cols("id name entities_id completename comment level"),
    "RequestType": _cols(
        "id name is_helpdesk_default is_followup_default is_mail_default "
        "is_mailfollowup_default is_active is_ticketheader is_itilfollowup comment"
    ),
    "Location": _cols("id entities_id is_recursive name locations_id completename"),
    "Webhook": _cols(
        "id entities_id is_recursive name comment webhookcategories_id itemtype event payload "
        "use_default_payload custom_headers url secret use_cra_challenge http_method sent_try "
        "is_active save_response_body log_in_item_history use_oauth oauth_url clientid "
        "clientsecret date_creation date_mod"
    ),
}
_FK_TARGETS = {
    "entities_id": "Entity",
    "users_id": "User",
    "users_id_lastupdater": "User",
    "users_id_recipient": "User",
    "users_id_editor": "User",
    "itilcategories_id": "ITILCategory",
    "groups_id": "Group",
    "tickets_id": "Ticket",
    "requesttypes_id": "RequestType",
    "locations_id": "Location",
}
_FIRST_IDS = {
    "Ticket": 101,
    "ITILFollowup": 501,
    "Group_Ticket": 301,
    "Ticket_User": 401,
    "Group": 11,
    "ITILCategory": 21,
    "Location": 31,
}
_TICKET_CHILDREN = ("ITILFollowup", "Group_Ticket", "Ticket_User")
_CREATABLE = frozenset(
    {
        "Ticket",
        "Group",
        "ITILCategory",
        "Group_Ticket",
        "Ticket_User",
        "ITILFollowup",
        "User",
        "Webhook",
    }
)
_TREE_TYPES = {
    "Group": "groups_id",
    "ITILCategory": "itilcategories_id",
    "Location": "locations_id",
}

# Ticket search options (CommonITILObject): id -> (kind, column or relation).
_SEARCH_OPTIONS: dict[int, tuple[str, str]] = {
    1: ("text", "name"),
    2: ("int", "id"),
    3: ("int", "priority"),
    4: ("users", "requester"),
    5: ("users", "assigned"),
    7: ("category", "itilcategories_id"),
    8: ("groups", "assigned"),
    10: ("int", "urgency"),
    11: ("int", "impact"),
    12: ("int", "status"),
    15: ("date", "date"),
    16: ("date", "closedate"),
    17: ("date", "solvedate"),
    18: ("date", "time_to_resolve"),
    19: ("date", "date_mod"),
    21: ("text", "content"),
    22: ("users", "recipient"),
    65: ("groups", "observer"),
    66: ("users", "observer"),
    71: ("groups", "requester"),
    80: ("entity", "entities_id"),
}
_SEARCHTYPES = frozenset(
    {"contains", "notcontains", "equals", "notequals", "lessthan", "morethan", "under", "notunder"}
)
_DEFAULT_SEARCH_COLUMNS = (1, 12, 80)  # as in the contract's search example (+ 2, 19 forced)
_ROLE_BY_NAME = {"requester": REQUESTER, "assigned": ASSIGNED, "observer": OBSERVER}


def _php_query(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Parse ``a[b][c]=v`` query keys into nested dicts the way PHP fills ``$_GET``."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if not m:
            result[key] = value
            continue
        node = result
        name = m.group(1)
        for sub in re.findall(r"\[([^\[\]]*)\]", m.group(2)):
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
            name = sub if sub != "" else str(len(node))
        node[name] = value
    return result


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def _like(pattern: str, value: Any) -> bool:
    """SQL ``LIKE '%pattern%'`` (case-insensitive), with GLPI's ``^``/``$`` anchors."""
    text = "" if value is None else str(value)
    pat = pattern
    start = pat.startswith("^")
    end = pat.endswith("$") and len(pat) > (1 if start else 0)
    core = pat[1 if start else 0 : len(pat) - 1 if end else len(pat)].lower()
    text = text.lower()
    if start and end:
        return text == core
    if start:
        return text.startswith(core)
    if end:
        return text.endswith(core)
    return core in text


def _sort_key(value: Any) -> tuple[int, int, str]:
    """Order like SQL does: NULLs first, numbers numerically, strings case-insensitively."""
    if value is None:
        return (0, 0, "")
    if isinstance(value, bool | int):
        return (1, int(value), "")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return (2, 0, str(value).lower())


def _html_date(value: str, tz: tzinfo) -> str:
    dt = datetime.strptime(value, DATE_FMT).replace(tzinfo=tz).astimezone(UTC)
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


class _Handler(WSGIRequestHandler):
    """werkzeug handler that stays quiet and lets the fake cut live connections."""

    fake: FakeGLPI | None = None

    def setup(self) -> None:
        super().setup()
        if self.fake is not None:
            self.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.fake is not None:
                self.fake._track_connection(self.connection, add=False)

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeGLPI:
    """Stateful fake GLPI (10 or 11) served over real HTTP; see the module docstring."""

    def __init__(
        self,
        app_token: str | None = "app-token",
        user_token: str = "user-token",
        version: int = 11,
        session_ttl: float = 3600.0,
        *,
        tz: tzinfo = UTC,
        clock: Callable[[], float] = time.time,
        list_limit: int = 15,
        allow_basic_auth: bool = False,
        login: str = "glpi",
        password: str = "glpi",
        v10_entities: Literal["named", "numeric"] = "named",
        webhook_send_delay: float = 0.0,
        webhook_retry_delay: float = 0.05,
        webhook_timeout: float = 5.0,
        webhook_max_cra_skips: int = 3,
        oauth_client_id: str = "bpsm",
        oauth_client_secret: str = "oauth-secret",
        webhook_private_networks_allowed: bool | None = None,
    ) -> None:
        if version not in (10, 11, 12):
            raise ValueError("version must be 10, 11 or 12")
        self.app_token = app_token
        self.user_token = user_token
        self.version = version
        self.session_ttl = session_ttl
        self.tz = tz
        self.list_limit = list_limit
        self.allow_basic_auth = allow_basic_auth
        self.login = login
        self.password = password
        self.v10_entities = v10_entities
        self.webhook_send_delay = webhook_send_delay
        self.webhook_retry_delay = webhook_retry_delay
        self.webhook_timeout = webhook_timeout
        self.webhook_max_cra_skips = webhook_max_cra_skips
        # The high-level API's OAuth client (password grant with login/password).
        self.oauth_client_id = oauth_client_id
        self.oauth_client_secret = oauth_client_secret
        # GLPI 12 wraps its HTTP client in Symfony's NoPrivateNetworkHttpClient unless
        # Webhook::class is in GLPI_SERVERSIDE_URL_ALLOWED_PRIVATE_NETWORKS_CONTEXTS
        # (src/Glpi/Toolbox/HttpClient.php); GLPI 11 does not.
        if webhook_private_networks_allowed is None:
            webhook_private_networks_allowed = version < 12
        self.webhook_private_networks_allowed = webhook_private_networks_allowed
        self.ip_allowed = True
        self.internal_errors: list[BaseException] = []

        self._clock = clock
        self._time_offset = 0.0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._tables: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in _COLUMNS}
        # Distinct id ranges per table, so that a ticket id used as a group id fails loudly.
        self._next_ids: dict[str, int] = {name: 1 for name in _COLUMNS} | _FIRST_IDS
        self._sessions: dict[str, float] = {}
        self._hl_tokens: dict[str, tuple[float, int | None]] = {}  # token → (issued, user)
        self._denied: dict[str, set[str]] = {}
        self._fail_queue: list[tuple[int, int | None]] = []
        self._lose_count = 0
        self._lose_status = 502
        self._calls: list[ApiCall] = []
        self._deliveries: list[WebhookDelivery] = []
        self._cra_checks: list[CraCheck] = []
        self._queue: list[_Queued] = []
        self._next_queued_id = 1
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._port: int | None = None
        self._down = False
        self._seed()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Start the HTTP server and the webhook worker; return the ``apirest.php`` base URL."""
        if self._server is None:
            self._start_server(0)
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(
                target=self._delivery_loop, name="fake-glpi-webhooks", daemon=True
            )
            self._worker.start()
        return self.url

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=self.webhook_timeout + 2)
            self._worker = None
        self._stop_server()
        self._down = False

    def __enter__(self) -> FakeGLPI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeGLPI is not started")
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The ``apirest.php`` base URL (what ``BPSM_GLPI_URL`` points at)."""
        return f"{self.root_url}/apirest.php"

    def _start_server(self, port: int) -> None:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        last_error: BaseException | None = None
        for _ in range(50):
            try:
                server = make_server(
                    "127.0.0.1", port, self._wsgi, threaded=True, request_handler=handler
                )
                break
            except (OSError, SystemExit) as exc:  # werkzeug exits on EADDRINUSE
                last_error = exc
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cannot bind 127.0.0.1:{port}: {last_error!r}")
        self._server = server
        self._port = server.server_port
        self._server_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._server_thread.start()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._server_thread is not None:
            self._server_thread.join(timeout=2)
            self._server_thread = None

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---------------------------------------------------------------- failure injection

    def fail_next(self, n: int, status: int = 503, *, retry_after: int | None = None) -> None:
        """Answer the next ``n`` API requests with ``status`` without processing them."""
        with self._lock:
            self._fail_queue.extend([(status, retry_after)] * n)

    def lose_response_next(self, n: int, status: int = 502) -> None:
        """Process the next ``n`` write requests (POST/PUT/PATCH/DELETE) but answer ``status``."""
        with self._lock:
            self._lose_count += n
            self._lose_status = status

    def set_down(self, down: bool) -> None:
        """Down: the port refuses connections (live ones are cut). Up: same port again."""
        if down == self._down:
            return
        if down:
            self._stop_server()
        else:
            self._start_server(self.port)
        self._down = down

    def expire_sessions(self) -> None:
        """Forget every session: the next call with an old token gets 401."""
        with self._lock:
            self._sessions.clear()
            self._hl_tokens.clear()

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock (dates, timestamps, session expiry) forward."""
        with self._lock:
            self._time_offset += seconds

    def deny(self, itemtype: str, *rights: str) -> None:
        """Remove rights (``read``, ``create``, ``update``, ``delete``; all if none given)."""
        wanted = set(rights) or {"read", "create", "update", "delete"}
        with self._lock:
            self._denied.setdefault(itemtype, set()).update(wanted)

    def allow(self, itemtype: str) -> None:
        with self._lock:
            self._denied.pop(itemtype, None)

    # ---------------------------------------------------------------- inspection

    @property
    def calls(self) -> list[ApiCall]:
        with self._lock:
            return list(self._calls)

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def cra_checks(self) -> list[CraCheck]:
        with self._lock:
            return list(self._cra_checks)

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        """The stored ``glpi_tickets`` row (raw, never HTML-encoded). KeyError if purged."""
        with self._lock:
            return dict(self._tables["Ticket"][ticket_id])

    def tickets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._tables["Ticket"].values()]

    def group_tickets(self, ticket_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._children("Group_Ticket", ticket_id)]

    def ticket_users(self, ticket_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._children("Ticket_User", ticket_id)]

    def followups(self, ticket_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._children("ITILFollowup", ticket_id)]

    def assigned_group_names(self, ticket_id: int) -> list[str]:
        with self._lock:
            return [
                self._tables["Group"][r["groups_id"]]["completename"]
                for r in self._children("Group_Ticket", ticket_id)
                if r["type"] == ASSIGNED and r["groups_id"] in self._tables["Group"]
            ]

    def hl_ticket(self, ticket_id: int) -> dict[str, Any]:
        """The HL API v2 ``Ticket`` object GLPI 11 puts in webhook payloads."""
        with self._lock:
            return self._hl_ticket(self._tables["Ticket"][ticket_id])

    # ---------------------------------------------------------------- seeding helpers

    def _seed(self) -> None:
        now = self._now_str()
        self._tables["Entity"][0] = {
            "id": 0,
            "name": "Root entity",
            "entities_id": None,
            "completename": "Root entity",
            "comment": None,
            "level": 1,
        }
        for rid, name, helpdesk, followup, mail in (
            (1, "Helpdesk", 1, 1, 0),
            (2, "E-Mail", 0, 0, 1),
            (3, "Phone", 0, 0, 0),
            (4, "Direct", 0, 0, 0),
            (5, "Written", 0, 0, 0),
            (6, "Other", 0, 0, 0),
        ):
            self._insert(
                "RequestType",
                {
                    "id": rid,
                    "name": name,
                    "is_helpdesk_default": helpdesk,
                    "is_followup_default": followup,
                    "is_mail_default": mail,
                    "is_mailfollowup_default": mail,
                    "is_active": 1,
                    "is_ticketheader": 1,
                    "is_itilfollowup": 1,
                    "comment": None,
                },
            )
        for uid, login, realname, firstname in (
            (API_USER_ID, "glpi", None, None),
            (AGENT_USER_ID, "tech", None, None),
            (5, "jdoe", "Doe", "John"),
        ):
            self._insert(
                "User",
                {
                    "id": uid,
                    "name": login,
                    "realname": realname,
                    "firstname": firstname,
                    "is_active": 1,
                    "is_deleted": 0,
                    "entities_id": 0,
                    "date_mod": now,
                    "date_creation": now,
                },
            )
        self._next_ids["User"] = 7

    def add_user(self, name: str, realname: str | None = None, firstname: str | None = None) -> int:
        with self._lock:
            now = self._now_str()
            return self._insert(
                "User",
                {
                    "name": name,
                    "realname": realname,
                    "firstname": firstname,
                    "is_active": 1,
                    "is_deleted": 0,
                    "entities_id": 0,
                    "date_mod": now,
                    "date_creation": now,
                },
            )

    def add_group(self, name: str, *, parent: str | int | None = None, is_assign: int = 1) -> int:
        with self._lock:
            parent_id = self._resolve_named("Group", parent) if parent is not None else 0
            return self._create_tree_item(
                "Group", {"name": name, "groups_id": parent_id, "is_assign": is_assign}
            )

    def add_category(self, name: str, *, parent: str | int | None = None) -> int:
        with self._lock:
            parent_id = self._resolve_named("ITILCategory", parent) if parent is not None else 0
            return self._create_tree_item(
                "ITILCategory", {"name": name, "itilcategories_id": parent_id}
            )

    def add_location(self, name: str) -> int:
        with self._lock:
            return self._create_tree_item("Location", {"name": name, "locations_id": 0})

    def group_id(self, name: str) -> int:
        with self._lock:
            return self._resolve_named("Group", name)

    def category_id(self, name: str) -> int:
        with self._lock:
            return self._resolve_named("ITILCategory", name)

    def add_webhook(
        self,
        url: str,
        secret: str = "",
        itemtype: str = "Ticket",
        events: Sequence[str] = ("new",),
        *,
        custom_headers: Mapping[str, str] | None = None,
        http_method: str = "post",
        sent_try: int = 3,
        use_cra_challenge: bool = False,
        payload: str | None = None,
        use_oauth: bool = False,
        oauth_url: str = "",
        clientid: str = "",
        clientsecret: str = "",
        is_active: bool = True,
    ) -> list[int]:
        """Register an active webhook; one ``glpi_webhooks`` row per event. Returns their ids."""
        if self.version < 11:
            raise RuntimeError("GLPI 10 has no outgoing webhooks (GLPI >= 11.0.0 only)")
        ids: list[int] = []
        with self._lock:
            for event in events:
                item_id, message = self._create_webhook(
                    {
                        "name": f"{itemtype} {event}",
                        "url": url,
                        "secret": secret,
                        "itemtype": itemtype,
                        "event": event,
                        "custom_headers": dict(custom_headers or {}),
                        "http_method": http_method,
                        "sent_try": sent_try,
                        "use_cra_challenge": int(use_cra_challenge),
                        "payload": payload,
                        "use_default_payload": 0 if payload is not None else 1,
                        "use_oauth": int(use_oauth),
                        "oauth_url": oauth_url,
                        "clientid": clientid,
                        "clientsecret": clientsecret,
                        "is_active": int(is_active),
                    }
                )
                if item_id is None:
                    raise ValueError(message)
                ids.append(item_id)
        return ids

    def webhook_secret(self, webhook_id: int) -> str:
        """The clear-text secret (GLPI generates a 40-char one when left empty)."""
        with self._lock:
            return str(self._tables["Webhook"][webhook_id]["_secret"])

    # ---------------------------------------------------------------- "GLPI UI" actions

    def create_ticket_as_user(
        self,
        name: str,
        content: str,
        *,
        requester: str = "jdoe",
        observers: Sequence[str] = (),
        urgency: int = 3,
        impact: int = 3,
        type: int = 1,
        category: str | int | None = None,
        location: str | int | None = None,
        requesttypes_id: int = 1,
    ) -> int:
        """A requester opens a ticket (helpdesk form). Raises the Ticket ``new`` webhook."""
        with self._lock:
            requester_id = self._user_by_name(requester)
            values: dict[str, Any] = {
                "name": name,
                "content": content,
                "urgency": urgency,
                "impact": impact,
                "type": type,
                "requesttypes_id": requesttypes_id,
                "_users_id_requester": requester_id,
                "_users_id_observer": [self._user_by_name(o) for o in observers],
            }
            if category is not None:
                values["itilcategories_id"] = self._resolve_named("ITILCategory", category)
            if location is not None:
                values["locations_id"] = self._resolve_named("Location", location)
            ticket_id, message = self._create_ticket(values, author=requester_id)
            if ticket_id is None:
                raise ValueError(message)
            return ticket_id

    def add_followup_as_user(
        self, ticket_id: int, text: str, *, user: str | None = None, private: bool = False
    ) -> int:
        """A requester (default: the ticket's first requester) answers on the ticket."""
        with self._lock:
            if user is None:
                requesters = [
                    r["users_id"]
                    for r in self._children("Ticket_User", ticket_id)
                    if r["type"] == REQUESTER
                ]
                author = requesters[0] if requesters else API_USER_ID
            else:
                author = self._user_by_name(user)
            fid, message = self._create_followup(
                {
                    "itemtype": "Ticket",
                    "items_id": ticket_id,
                    "content": text,
                    "is_private": int(private),
                },
                author=author,
            )
            if fid is None:
                raise ValueError(message)
            return fid

    def assign_group_as_agent(
        self, ticket_id: int, group_name: str, *, agent: str = "tech"
    ) -> None:
        """An agent moves the ticket by hand: the assigned group(s) are replaced by this one."""
        with self._lock:
            ticket = self._tables["Ticket"][ticket_id]
            group_id = self._resolve_named("Group", group_name)
            agent_id = self._user_by_name(agent)
            for row in list(self._children("Group_Ticket", ticket_id)):
                if row["type"] == ASSIGNED:
                    del self._tables["Group_Ticket"][row["id"]]
            self._insert(
                "Group_Ticket", {"tickets_id": ticket_id, "groups_id": group_id, "type": ASSIGNED}
            )
            changes: dict[str, Any] = {}
            if ticket["status"] == 1:
                changes["status"] = 2
            self._apply_ticket_changes(ticket, changes, author=agent_id, force_event=True)

    def update_ticket_as_agent(
        self, ticket_id: int, changes: Mapping[str, Any], *, agent: str = "tech"
    ) -> None:
        """An agent edits ticket fields in the UI (raises ``update`` if anything changed)."""
        with self._lock:
            ticket = self._tables["Ticket"][ticket_id]
            self._apply_ticket_changes(ticket, dict(changes), author=self._user_by_name(agent))

    def delete_ticket(self, ticket_id: int, *, purge: bool = True) -> None:
        """Trash (``purge=False``: still readable, ``is_deleted=1``) or purge (404 afterwards)."""
        with self._lock:
            self._delete_ticket(ticket_id, purge=purge)

    # ---------------------------------------------------------------- time

    def _time(self) -> float:
        return self._clock() + self._time_offset

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._time(), self.tz).replace(microsecond=0)

    def _now_str(self) -> str:
        return self._now().strftime(DATE_FMT)

    def _iso(self, value: str | None) -> str | None:
        if value is None:
            return None
        return datetime.strptime(value, DATE_FMT).replace(tzinfo=self.tz).isoformat()

    # ---------------------------------------------------------------- storage

    def _insert(self, itemtype: str, values: Mapping[str, Any]) -> int:
        table = self._tables[itemtype]
        item_id = values.get("id")
        if item_id is None:
            item_id = self._next_ids[itemtype]
        self._next_ids[itemtype] = max(self._next_ids[itemtype], int(item_id) + 1)
        row = {col: values.get(col) for col in _COLUMNS[itemtype]}
        row.update({k: v for k, v in values.items() if k.startswith("_")})  # hidden state
        if itemtype == "Webhook" and "pinned_version" in values:  # GLPI 12's column
            row["pinned_version"] = values["pinned_version"]
        row["id"] = int(item_id)
        table[int(item_id)] = row
        return int(item_id)

    def _children(self, child_type: str, ticket_id: int) -> list[dict[str, Any]]:
        rows = self._tables[child_type].values()
        if child_type == "ITILFollowup":
            return [r for r in rows if r["itemtype"] == "Ticket" and r["items_id"] == ticket_id]
        return [r for r in rows if r["tickets_id"] == ticket_id]

    def _resolve_named(self, itemtype: str, ref: str | int) -> int:
        table = self._tables[itemtype]
        if isinstance(ref, int):
            if ref not in table:
                raise KeyError(f"{itemtype} {ref} does not exist")
            return ref
        for row in table.values():
            if ref in (row.get("name"), row.get("completename")):
                return int(row["id"])
        raise KeyError(f"{itemtype} {ref!r} does not exist")

    def _user_by_name(self, login: str) -> int:
        for row in self._tables["User"].values():
            if row["name"] == login:
                return int(row["id"])
        return self.add_user(login)

    def _create_tree_item(self, itemtype: str, values: dict[str, Any]) -> int:
        fk = _TREE_TYPES[itemtype]
        now = self._now_str()
        parent_id = int(values.get(fk) or 0)
        parent = self._tables[itemtype].get(parent_id)
        name = str(values.get("name") or "")
        row: dict[str, Any] = {
            "entities_id": 0,
            "is_recursive": 1,
            "comment": None,
            "level": (parent["level"] + 1) if parent else 1,
            "date_mod": now,
            "date_creation": now,
        }
        if itemtype == "Group":
            row.update(
                is_requester=1,
                is_watcher=1,
                is_assign=1,
                is_task=1,
                is_notify=1,
                is_itemgroup=1,
                is_usergroup=1,
                is_manager=1,
            )
        if itemtype == "ITILCategory":
            row.update(
                users_id=0,
                groups_id=0,
                code=None,
                is_helpdeskvisible=1,
                is_incident=1,
                is_request=1,
                is_problem=1,
                is_change=1,
            )
        row.update({k: v for k, v in values.items() if k in _COLUMNS[itemtype]})
        row[fk] = parent_id
        row["name"] = name
        row["completename"] = f"{parent['completename']} > {name}" if parent else name
        return self._insert(itemtype, row)

    # ---------------------------------------------------------------- v1 row rendering

    def _encode_v10(self, value: str) -> str:
        if self.v10_entities == "numeric":  # GLPI 10.0's Sanitizer
            return value.replace("&", "&#38;").replace("<", "&#60;").replace(">", "&#62;")
        return html.escape(value, quote=False)  # the contract's "&lt;p&gt;" form

    def _out_value(self, value: Any) -> Any:
        if self.version == 10 and isinstance(value, str):
            return self._encode_v10(value)
        return value

    def _dropdown_name(self, itemtype: str, item_id: Any) -> Any:
        row = self._tables.get(itemtype, {}).get(item_id) if isinstance(item_id, int) else None
        if row is None:
            return "" if item_id == 0 else item_id
        return row.get("completename") or row.get("name") or ""

    def _row_out(
        self, itemtype: str, row: Mapping[str, Any], params: Mapping[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col in _COLUMNS[itemtype]:
            value = row.get(col)
            if itemtype == "Webhook" and col == "secret":
                value = self._encrypted(str(row.get("_secret", "")))
            if itemtype == "Webhook" and col == "custom_headers":
                value = json.dumps(value or {})
            out[col] = self._out_value(value)
        if itemtype == "Webhook" and "pinned_version" in row:  # GLPI 12's column
            out["pinned_version"] = row["pinned_version"]
        if _truthy(params.get("expand_dropdowns", False)):
            for col, fk_target in _FK_TARGETS.items():
                if col in out and fk_target != "Ticket":
                    out[col] = self._out_value(self._dropdown_name(fk_target, row.get(col)))
        if _truthy(params.get("get_hateoas", True)):
            links = []
            for col in _COLUMNS[itemtype]:
                link_target = _FK_TARGETS.get(col)
                fk_value = row.get(col)
                if (
                    link_target
                    and isinstance(fk_value, int)
                    and (fk_value > 0 or col == "entities_id")
                ):
                    links.append(
                        {"rel": link_target, "href": f"{self.url}/{link_target}/{fk_value}"}
                    )
            if itemtype == "ITILFollowup" and row.get("items_id"):
                parent_type = str(row["itemtype"])
                links.append(
                    {
                        "rel": parent_type,
                        "href": f"{self.url}/{parent_type}/{row['items_id']}",
                    }
                )
            if itemtype == "Ticket":
                for child in _TICKET_CHILDREN:
                    links.append({"rel": child, "href": f"{self.url}/Ticket/{row['id']}/{child}/"})
            out["links"] = links
        return out

    @staticmethod
    def _encrypted(secret: str) -> str:
        # GLPIKey-encrypted in the DB; the fake shows an opaque, stable stand-in.
        return base64.b64encode(hashlib.sha256(secret.encode()).digest()).decode()

    # ---------------------------------------------------------------- HL API v2 objects

    def _dropdown(self, itemtype: str, item_id: Any) -> dict[str, Any] | None:
        # unconfirmed: how HL API renders an empty dropdown (id 0); the fake says null.
        row = self._tables[itemtype].get(item_id) if isinstance(item_id, int) else None
        if row is None:
            return None
        return {"id": row["id"], "name": row["name"]}

    def _display_name(self, user: Mapping[str, Any]) -> str:
        parts = [p for p in (user.get("realname"), user.get("firstname")) if p]
        return " ".join(parts) if parts else str(user["name"])

    def _team(self, ticket_id: int) -> list[dict[str, Any]]:
        team: list[dict[str, Any]] = []
        for link in sorted(self._children("Ticket_User", ticket_id), key=lambda r: r["id"]):
            user = self._tables["User"].get(link["users_id"])
            if user is None:
                continue
            team.append(
                {
                    "role": ROLE_NAMES.get(link["type"], link["type"]),
                    "name": user["name"],
                    "realname": user["realname"],
                    "firstname": user["firstname"],
                    "display_name": self._display_name(user),
                    "href": f"/front/user.form.php?id={user['id']}",
                }
            )
        for link in sorted(self._children("Group_Ticket", ticket_id), key=lambda r: r["id"]):
            group = self._tables["Group"].get(link["groups_id"])
            if group is None:
                continue
            team.append(
                {
                    "role": ROLE_NAMES.get(link["type"], link["type"]),
                    "name": group["name"],
                    "display_name": group["completename"],  # unconfirmed for sub-groups
                    "href": f"/front/group.form.php?id={group['id']}",
                }
            )
        return team

    def _hl_ticket(self, row: Mapping[str, Any]) -> dict[str, Any]:
        entity = self._tables["Entity"].get(row["entities_id"]) or self._tables["Entity"][0]
        return {
            "id": row["id"],
            "name": row["name"],
            "content": row["content"],
            "is_deleted": bool(row["is_deleted"]),
            "category": self._dropdown("ITILCategory", row["itilcategories_id"]),
            "location": self._dropdown("Location", row["locations_id"]),
            "urgency": row["urgency"],
            "impact": row["impact"],
            "priority": row["priority"],
            "actiontime": row["actiontime"],
            "date_creation": self._iso(row["date_creation"]),
            "date_mod": self._iso(row["date_mod"]),
            "date": self._iso(row["date"]),
            "type": row["type"],
            "external_id": row["externalid"],
            "request_type": self._dropdown("RequestType", row["requesttypes_id"]),
            "status": {"id": row["status"], "name": STATUS_NAMES.get(row["status"], "")},
            "entity": {
                "id": entity["id"],
                "name": entity["name"],
                "completename": entity["completename"],
            },
            "team": self._team(row["id"]),
        }

    def _hl_followup(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "itemtype": row["itemtype"],
            "items_id": row["items_id"],
            "content": row["content"],
            "is_private": bool(row["is_private"]),
            "request_type": self._dropdown("RequestType", row["requesttypes_id"]),
            "date_creation": self._iso(row["date_creation"]),
            "date_mod": self._iso(row["date_mod"]),
        }

    # ---------------------------------------------------------------- domain operations

    def _validate_ticket_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Type-check Ticket input; unknown keys are ignored as GLPI does. Raises ValueError."""
        clean: dict[str, Any] = {}
        ranges = {
            "urgency": (1, 5),
            "impact": (1, 5),
            "priority": (1, 6),
            "status": (1, 6),
            "type": (1, 2),
        }
        for key, value in values.items():
            if key in (
                "itilcategories_id",
                "locations_id",
                "requesttypes_id",
                "entities_id",
                "users_id_recipient",
                "actiontime",
                "is_deleted",
                *ranges,
            ):
                number = _to_int(value)
                if number is None or number < 0:
                    raise ValueError(f"Invalid value for field {key}")
                lo_hi = ranges.get(key)
                if lo_hi and not lo_hi[0] <= number <= lo_hi[1]:
                    raise ValueError(f"Invalid value for field {key}")
                clean[key] = number
            elif key in ("time_to_resolve", "time_to_own", "date", "closedate", "solvedate"):
                if value in (None, "", "NULL"):
                    clean[key] = None
                    continue
                parsed = None
                for fmt in (DATE_FMT, "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
                    try:
                        parsed = datetime.strptime(str(value), fmt)
                        break
                    except ValueError:
                        continue
                if parsed is None:
                    raise ValueError(f"Invalid date for field {key}")
                clean[key] = parsed.strftime(DATE_FMT)
            elif key in ("name", "content", "externalid"):
                if value is not None and not isinstance(value, str | int | float):
                    raise ValueError(f"Invalid value for field {key}")
                clean[key] = None if value is None else str(value)
        return clean

    def _create_ticket(self, values: Mapping[str, Any], *, author: int) -> tuple[int | None, str]:
        try:
            clean = self._validate_ticket_values(values)
        except ValueError as exc:
            return None, str(exc)
        content = clean.get("content") or ""
        name = clean.get("name") or ""
        if not content and not name:
            return None, "Mandatory field Description is missing"
        if not name:  # GLPI derives a title from the description
            name = re.sub(r"<[^>]+>", " ", content)
            name = re.sub(r"\s+", " ", html.unescape(name)).strip()[:70]
        now = self._now_str()
        urgency = clean.get("urgency", 3)
        impact = clean.get("impact", 3)
        row = {
            "entities_id": clean.get("entities_id", 0),
            "name": name,
            "date": clean.get("date") or now,
            "closedate": None,
            "solvedate": None,
            "date_mod": now,
            "users_id_lastupdater": author,
            "status": clean.get("status", 1),
            "users_id_recipient": author,
            "requesttypes_id": clean.get("requesttypes_id", 1),
            "content": content,
            "urgency": urgency,
            "impact": impact,
            "priority": clean.get("priority", PRIORITY_MATRIX[urgency][impact]),
            "itilcategories_id": clean.get("itilcategories_id", 0),
            "type": clean.get("type", 1),
            "time_to_resolve": clean.get("time_to_resolve"),
            "time_to_own": clean.get("time_to_own"),
            "actiontime": 0,
            "is_deleted": 0,
            "locations_id": clean.get("locations_id", 0),
            "date_creation": now,
            "externalid": clean.get("externalid"),
        }
        ticket_id = self._insert("Ticket", row)
        requester = _to_int(values.get("_users_id_requester"))
        self._insert(
            "Ticket_User",
            {
                "tickets_id": ticket_id,
                "users_id": requester or author,
                "type": REQUESTER,
                "use_notification": 1,
                "alternative_email": "",
            },
        )
        observers = values.get("_users_id_observer") or []
        for observer in observers if isinstance(observers, list) else [observers]:
            self._insert(
                "Ticket_User",
                {
                    "tickets_id": ticket_id,
                    "users_id": observer,
                    "type": OBSERVER,
                    "use_notification": 1,
                    "alternative_email": "",
                },
            )
        group = _to_int(values.get("_groups_id_assign"))
        if group and group in self._tables["Group"]:
            self._insert(
                "Group_Ticket", {"tickets_id": ticket_id, "groups_id": group, "type": ASSIGNED}
            )
            if row["status"] == 1:
                self._tables["Ticket"][ticket_id]["status"] = 2
        self._raise("Ticket", ticket_id, "new")
        return ticket_id, ""

    def _apply_ticket_changes(
        self,
        ticket: dict[str, Any],
        changes: Mapping[str, Any],
        *,
        author: int,
        force_event: bool = False,
    ) -> None:
        """CommonDBTM::update: store changed fields, bump date_mod, raise ``update``."""
        updates = {k: v for k, v in changes.items() if ticket.get(k) != v}
        if ("urgency" in updates or "impact" in updates) and "priority" not in changes:
            urgency = updates.get("urgency", ticket["urgency"])
            impact = updates.get("impact", ticket["impact"])
            if PRIORITY_MATRIX[urgency][impact] != ticket["priority"]:
                updates["priority"] = PRIORITY_MATRIX[urgency][impact]
        if not updates and not force_event:
            return
        now = self._now_str()
        if updates.get("status") == 5 and not ticket["solvedate"]:
            updates["solvedate"] = now
        if updates.get("status") == 6 and not ticket["closedate"]:
            updates["closedate"] = now
        ticket.update(updates)
        ticket["date_mod"] = now
        ticket["users_id_lastupdater"] = author
        self._raise("Ticket", ticket["id"], "update")

    def _touch_ticket(self, ticket_id: int, author: int) -> None:
        """CommonITILObject::updateDateMod: a direct DB write, no webhook."""
        ticket = self._tables["Ticket"].get(ticket_id)
        if ticket is not None:
            ticket["date_mod"] = self._now_str()
            ticket["users_id_lastupdater"] = author

    def _create_actor(self, itemtype: str, values: Mapping[str, Any]) -> tuple[int | None, str]:
        """Group_Ticket / Ticket_User add. ``tickets_id`` must be in the input."""
        target_type, target_fk = (
            ("Group", "groups_id") if itemtype == "Group_Ticket" else ("User", "users_id")
        )
        ticket_id = _to_int(values.get("tickets_id"))
        target_id = _to_int(values.get(target_fk))
        actor_type = _to_int(values.get("type", 1))
        # Without both ends, CommonDBRelation::can(-1, CREATE) fails -> rights message
        # (the contract only says tickets_id "must be in input"; message inferred).
        if (
            ticket_id not in self._tables["Ticket"]
            or target_id not in self._tables[target_type]
            or actor_type not in ROLE_NAMES
        ):
            return None, NO_RIGHT
        for row in self._children(itemtype, ticket_id):
            if row[target_fk] == target_id and row["type"] == actor_type:
                return None, ""  # unique key (tickets_id, type, *_id): add() fails. unconfirmed
        values_row: dict[str, Any] = {
            "tickets_id": ticket_id,
            target_fk: target_id,
            "type": actor_type,
        }
        if itemtype == "Ticket_User":
            values_row.update(use_notification=1, alternative_email="")
        new_id = self._insert(itemtype, values_row)
        ticket = self._tables["Ticket"][ticket_id]
        if actor_type == ASSIGNED and ticket["status"] == 1:
            # CommonITILActor::post_addItem moves a new ticket to "assigned" via update()
            self._apply_ticket_changes(ticket, {"status": 2}, author=API_USER_ID)
        else:
            self._touch_ticket(ticket_id, API_USER_ID)
        return new_id, ""

    def _create_followup(self, values: Mapping[str, Any], *, author: int) -> tuple[int | None, str]:
        itemtype = values.get("itemtype")
        items_id = _to_int(values.get("items_id"))
        if itemtype != "Ticket" or items_id not in self._tables["Ticket"]:
            return None, NO_RIGHT
        content = values.get("content")
        if not isinstance(content, str) or not content.strip():
            return None, "You can't add a followup without description"
        now = self._now_str()
        private = _to_int(values.get("is_private", 0))
        row = {
            "itemtype": "Ticket",
            "items_id": items_id,
            "date": now,
            "users_id": author,
            "users_id_editor": 0,
            "content": content,
            "is_private": 1 if private else 0,
            "requesttypes_id": _to_int(values.get("requesttypes_id")) or 1,
            "date_mod": now,
            "date_creation": now,
            "timeline_position": 1,
            "sourceitems_id": 0,
            "sourceof_items_id": 0,
        }
        fid = self._insert("ITILFollowup", row)
        ticket = self._tables["Ticket"][items_id]
        is_requester = any(
            r["users_id"] == author and r["type"] == REQUESTER
            for r in self._children("Ticket_User", items_id)
        )
        # post_addItem touches (or reopens) the parent before CommonDBTM::add() raises "new"
        if is_requester and ticket["status"] == 5:  # a requester answer reopens a solved ticket
            assigned = any(r["type"] == ASSIGNED for r in self._children("Group_Ticket", items_id))
            self._apply_ticket_changes(ticket, {"status": 2 if assigned else 1}, author=author)
        else:
            self._touch_ticket(items_id, author)
        self._raise("ITILFollowup", fid, "new")
        return fid, ""

    def _create_webhook(self, values: Mapping[str, Any]) -> tuple[int | None, str]:
        itemtype = values.get("itemtype")
        if itemtype not in WEBHOOK_ITEMTYPES:
            return None, "Invalid itemtype"
        event = values.get("event")
        if not isinstance(event, str) or not event:
            return None, "Invalid event"
        url = values.get("url")
        if not isinstance(url, str) or not url:
            return None, "Invalid URL"
        headers = values.get("custom_headers") or {}
        if isinstance(headers, str):
            try:
                headers = json.loads(headers) if headers.strip() else {}
            except ValueError:
                return None, "Invalid custom headers"
        if not isinstance(headers, dict):
            return None, "Invalid custom headers"
        # handleInput strips the two reserved names from the UI input
        headers = {
            str(k): str(v)
            for k, v in headers.items()
            if str(k).lower() not in ("x-glpi-signature", "x-glpi-timestamp")
        }
        secret = values.get("secret") or secrets.token_urlsafe(40)[:40]
        now = self._now_str()
        row = {
            "entities_id": 0,
            "is_recursive": 1,
            "name": values.get("name") or "",
            "comment": values.get("comment"),
            "webhookcategories_id": 0,
            "itemtype": itemtype,
            "event": event,
            "payload": values.get("payload"),
            "use_default_payload": _to_int(values.get("use_default_payload", 1)) or 0,
            "custom_headers": headers,
            "url": url,
            "use_cra_challenge": _to_int(values.get("use_cra_challenge", 0)) or 0,
            "http_method": str(values.get("http_method") or "POST"),
            "sent_try": _to_int(values.get("sent_try", 3)) or 0,
            "is_active": _to_int(values.get("is_active", 0)) or 0,
            "save_response_body": 0,
            "log_in_item_history": 0,
            "use_oauth": _to_int(values.get("use_oauth", 0)) or 0,
            "oauth_url": values.get("oauth_url") or "",
            "clientid": values.get("clientid") or "",
            "clientsecret": values.get("clientsecret") or "",
            "date_creation": now,
            "date_mod": now,
            "_secret": str(secret),
        }
        if self.version >= 12:
            # PR #25209: only majors are pinned; new webhooks default to the highest (3).
            pinned = str(values.get("pinned_version") or self._hl_versions()[-1]["api_version"])
            row["pinned_version"] = pinned
        return self._insert("Webhook", row), ""

    def _delete_ticket(self, ticket_id: int, *, purge: bool) -> None:
        ticket = self._tables["Ticket"][ticket_id]
        ticket["is_deleted"] = 1
        ticket["date_mod"] = self._now_str()
        self._raise("Ticket", ticket_id, "delete")  # unconfirmed: item as it was at raise time
        if purge:
            del self._tables["Ticket"][ticket_id]
            for child in _TICKET_CHILDREN:
                for row in self._children(child, ticket_id):
                    del self._tables[child][row["id"]]

    # ---------------------------------------------------------------- webhooks (raise/queue)

    def _raise(self, itemtype: str, items_id: int, event: str) -> None:
        """Webhook::raise(): build body + headers now, enqueue one row per matching webhook."""
        if self.version < 11:
            return
        hooks = [
            w
            for w in self._tables["Webhook"].values()
            if w["is_active"] and w["itemtype"] == itemtype and w["event"] == event
        ]
        if not hooks:
            return
        if itemtype == "Ticket":
            data: dict[str, Any] = {
                "item": self._hl_ticket(self._tables["Ticket"][items_id]),
                "event": event,
            }
        elif itemtype == "ITILFollowup":
            row = self._tables["ITILFollowup"][items_id]
            data = {
                "item": self._hl_followup(row),
                "event": event,
                "parent_item": self._hl_ticket(self._tables["Ticket"][row["items_id"]]),
            }
        else:
            return
        timestamp = str(int(self._time()))
        for hook in hooks:
            body = self._webhook_body(hook, data)
            headers = {
                "X-GLPI-signature": glpi_signature(body, timestamp, hook["_secret"]),
                "X-GLPI-timestamp": timestamp,
            }
            for name, template in (hook["custom_headers"] or {}).items():
                value = self._render(str(template), data)
                if value != "":
                    headers[name] = value
            self._queue.append(
                _Queued(
                    id=self._next_queued_id,
                    webhook_id=hook["id"],
                    itemtype=itemtype,
                    items_id=items_id,
                    event=event,
                    method=str(hook["http_method"]).upper(),
                    url=self._render(hook["url"], data),
                    headers=headers,
                    body=body.encode("utf-8"),
                    send_at=time.monotonic() + self.webhook_send_delay,
                )
            )
            self._next_queued_id += 1
        self._cond.notify_all()

    def _webhook_body(self, hook: Mapping[str, Any], data: Mapping[str, Any]) -> str:
        if hook["use_default_payload"] or not hook["payload"]:
            return php_json_encode(data, pretty=True)

        def quote(value: Any) -> Any:  # every string has " replaced by \" before rendering
            if isinstance(value, str):
                return value.replace('"', '\\"')
            if isinstance(value, Mapping):
                return {k: quote(v) for k, v in value.items()}
            if isinstance(value, list):
                return [quote(v) for v in value]
            return value

        try:
            return self._render(str(hook["payload"]), quote(data), strict=True)
        except (KeyError, TypeError):
            return ""  # a failed render gives a null body

    @staticmethod
    def _render(template: str, data: Mapping[str, Any], *, strict: bool = False) -> str:
        """Just enough Twig for ``{{ item.id }}``-style placeholders."""

        def lookup(match: re.Match[str]) -> str:
            node: Any = data
            for part in match.group(1).split("."):
                if isinstance(node, Mapping) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                elif strict:
                    raise KeyError(match.group(1))
                else:
                    return ""
            if isinstance(node, Mapping | list):
                if strict:
                    raise TypeError("array to string conversion")
                return "Array"
            if node is None or node is False:
                return ""
            if node is True:
                return "1"
            return str(node)

        return re.sub(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}", lookup, template)

    # ---------------------------------------------------------------- webhooks (delivery)

    def wait_for_deliveries(self, n: int, timeout: float = 5.0) -> list[WebhookDelivery]:
        """Block until at least ``n`` send attempts are recorded; return all of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._deliveries) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {n} webhook deliveries, got {len(self._deliveries)}"
                    )
                self._cond.wait(remaining)
            return list(self._deliveries)

    def wait_webhooks_idle(self, timeout: float = 5.0) -> None:
        """Block until no queued webhook is waiting for a (re)try."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(not q.done for q in self._queue):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("webhook queue still busy")
                self._cond.wait(min(remaining, 0.05))

    def _delivery_loop(self) -> None:
        while True:
            with self._cond:
                job: _Queued | None = None
                while job is None:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    pending = [q for q in self._queue if not q.done]
                    due = [q for q in pending if q.send_at <= now]
                    if due:
                        job = due[0]
                        break
                    wait = min((q.send_at for q in pending), default=now + 0.5) - now
                    self._cond.wait(max(0.005, min(wait, 0.5)))
                hook = dict(self._tables["Webhook"].get(job.webhook_id) or {})
                if not hook:
                    job.done = True
                    self._cond.notify_all()
                    continue
            self._attempt(job, hook)
            with self._cond:
                self._cond.notify_all()

    def _attempt(self, job: _Queued, hook: Mapping[str, Any]) -> None:
        secret = str(hook["_secret"])
        if hook.get("use_cra_challenge"):
            token = cra_token(secret)
            sep = "&" if urlsplit(job.url).query else "?"
            status, body, error = _http_request(
                "GET", f"{job.url}{sep}{urlencode({'crc_token': token})}", {}, b"", timeout=1.0
            )
            passed = status == 200 and body == cra_expected_response(secret, token).encode()
            with self._lock:
                self._cra_checks.append(
                    CraCheck(job.id, job.webhook_id, job.url, token, status, passed, error)
                )
                if not passed:  # skipped: nothing sent, sent_try unchanged
                    job.cra_skips += 1
                    job.done = job.cra_skips > self.webhook_max_cra_skips
                    job.send_at = time.monotonic() + self.webhook_retry_delay
                    return
        headers = {"User-Agent": "GuzzleHttp/7", **job.headers}
        status, body, error = None, b"", None
        if hook.get("use_oauth"):
            token_or_error = _oauth_token(hook, self.webhook_timeout)
            if token_or_error[0] is None:
                error = token_or_error[1]
            else:
                headers["Authorization"] = f"Bearer {token_or_error[0]}"
        if error is None and not self.webhook_private_networks_allowed and _private(job.url):
            # unconfirmed: the exact text GLPI 12 logs; the attempt fails without a status.
            error = f'Host "{urlsplit(job.url).hostname}" is blocked (private network)'
        elif error is None:
            status, body, error = _http_request(
                job.method, job.url, headers, job.body, timeout=self.webhook_timeout
            )
        with self._lock:
            self._deliveries.append(
                WebhookDelivery(
                    queued_id=job.id,
                    webhook_id=job.webhook_id,
                    attempt=job.sent_try + 1,
                    itemtype=job.itemtype,
                    items_id=job.items_id,
                    event=job.event,
                    method=job.method,
                    url=job.url,
                    headers=headers,
                    body=job.body,
                    status=status,
                    error=error,
                    response_body=body,
                    sent_at=time.time(),
                )
            )
            job.sent_try += 1
            if (status is not None and status < 400) or job.sent_try > int(hook["sent_try"]):
                job.done = True
            else:
                job.send_at = time.monotonic() + self.webhook_retry_delay
            self._cond.notify_all()

    # ---------------------------------------------------------------- WSGI entry

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        raw = request.get_data(cache=True)
        try:
            body_json: Any = json.loads(raw) if raw else None
        except ValueError:
            body_json = raw.decode("utf-8", "replace")
        query = _php_query(
            parse_qsl(request.query_string.decode("utf-8", "replace"), keep_blank_values=True)
        )
        headers = dict(request.headers.items())
        with self._lock:
            injected: str | None = None
            if self._fail_queue:
                status, retry_after = self._fail_queue.pop(0)
                response = Response(
                    f"Injected failure {status}\n", status=status, content_type="text/plain"
                )
                if retry_after is not None:
                    response.headers["Retry-After"] = str(retry_after)
                injected = "fail"
            else:
                response = self._dispatch(request, raw, query)
                if self._lose_count and request.method in WRITE_METHODS:
                    self._lose_count -= 1
                    response = Response(
                        "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                        status=self._lose_status,
                        content_type="text/html",
                    )
                    injected = "lost"
            self._calls.append(
                ApiCall(
                    request.method,
                    request.path,
                    query,
                    headers,
                    body_json,
                    response.status_code,
                    injected,
                )
            )
            return response

    def _json_response(
        self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        text = php_json_encode(data, unescaped_slashes=True, unescaped_unicode=True)
        response = Response(text.encode("utf-8"), status=status)
        response.headers["Content-Type"] = JSON_CONTENT_TYPE
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def _error_response(self, error: ApiError) -> Response:
        message = error.message
        if error.doc and isinstance(message, str):
            message = f"{message}; view documentation in your browser at {self.url}/#{error.code}"
        return self._json_response([error.code, message], error.status)

    def _dispatch(self, request: Request, raw: bytes, query: dict[str, Any]) -> Response:
        if request.path == "/api.php" or request.path.startswith("/api.php/"):
            return self._hl_dispatch(request, raw, query)
        prefix = "/apirest.php"
        if request.path != prefix and not request.path.startswith(prefix + "/"):
            return Response("Not Found\n", status=404, content_type="text/plain")
        try:
            params = self._params(request, raw, query)
            self._check_client(request, params)
            parts = [p for p in request.path[len(prefix) :].split("/") if p]
            if parts and parts[0].lower() in ("v1", "api"):
                parts = parts[1:]
            if not parts:
                return Response("GLPI API (fake)\n", content_type="text/plain")
            endpoint = parts[0].lower()
            if endpoint == "initsession":
                return self._init_session(request, params)
            self._check_session(request, params)
            if endpoint == "killsession":
                self._sessions.pop(self._session_token(request, params) or "", None)
                return self._json_response(True)
            if endpoint == "getfullsession":
                return self._json_response({"session": self._session_data()})
            if endpoint == "search":
                if request.method != "GET":
                    raise ApiError("ERROR_METHOD_NOT_ALLOWED")
                if len(parts) < 2:
                    raise ApiError("ERROR_RESOURCE_MISSING")
                return self._search(self._itemtype(parts[1]), params)
            return self._item_route(request.method, parts, params)
        except ApiError as error:
            return self._error_response(error)
        except Exception as exc:  # a bug in the fake: answer 500 and keep it for the test
            self.internal_errors.append(exc)
            return self._json_response(["ERROR", f"FakeGLPI internal error: {exc!r}"], 500)

    # ---------------------------------------------------------------- high-level API (api.php)
    #
    # GLPI ≥ 11's api.php: OAuth2 at /api.php/token (league/oauth2-server), the API under
    # /api.php/v2 (CoreController, ITILController, AdministrationController,
    # DropdownController); errors {"status", "title", "detail"} (AbstractController).
    # Contract: connector/hosts/glpi/fixtures/contract/hlapi_v2_exchanges.json.

    def _hl_dispatch(self, request: Request, raw: bytes, query: dict[str, Any]) -> Response:
        if self.version < 11:
            return Response("Not Found\n", status=404, content_type="text/plain")
        path = request.path[len("/api.php") :]
        try:
            if path == "/token":
                return self._hl_token(request, raw)
            if not (path == "/v2" or path.startswith("/v2/")):
                raise _HlError(404, "ERROR_ITEM_NOT_FOUND", "Item not found")
            parts = [p for p in path[len("/v2") :].split("/") if p]
            if not parts and request.method == "GET":  # the index needs no token
                return self._json_response(
                    {"message": "Welcome to GLPI API", "api_versions": self._hl_versions()}
                )
            self._hl_check_token(request)
            self._hl_check_version(request)
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise _HlError(400, "ERROR_INVALID_PARAMETER", "Invalid parameter")
            return self._hl_route(request.method, parts, body, query)
        except _HlError as error:
            return self._json_response(
                {"status": error.code, "title": error.title, "detail": None}, error.status
            )
        except Exception as exc:  # a bug in the fake: answer 500 and keep it for the test
            self.internal_errors.append(exc)
            return self._json_response({"status": "ERROR", "title": repr(exc)}, 500)

    def _hl_versions(self) -> list[dict[str, str]]:
        # unconfirmed: the exact minor versions; GLPI 12 adds 3.0 (alpha, PR #24940).
        versions = [
            {"api_version": "2", "version": "2.2.0", "endpoint": f"{self.root_url}/api.php/v2"}
        ]
        if self.version >= 12:
            versions.append(
                {"api_version": "3", "version": "3.0.0", "endpoint": f"{self.root_url}/api.php/v3"}
            )
        return versions

    def _hl_token(self, request: Request, raw: bytes) -> Response:
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if request.method != "POST":
            raise _HlError(404, "ERROR_ITEM_NOT_FOUND", "Item not found")
        grant = form.get("grant_type")
        if (form.get("client_id"), form.get("client_secret")) != (
            self.oauth_client_id,
            self.oauth_client_secret,
        ):
            return self._json_response(
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed",
                    "message": "Client authentication failed",
                },
                401,
            )
        user: int | None
        if grant == "password":
            if (form.get("username"), form.get("password")) != (self.login, self.password):
                return self._json_response(
                    {
                        "error": "invalid_grant",
                        "error_description": "The user credentials were incorrect.",
                        "message": "The user credentials were incorrect.",
                    },
                    400,
                )
            user = API_USER_ID
        elif grant == "client_credentials":
            user = None  # a token with no user: most endpoints refuse it
        else:
            return self._json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "The authorization grant type is not supported by the "
                    "authorization server.",
                    "message": "The authorization grant type is not supported by the "
                    "authorization server.",
                },
                400,
            )
        token = secrets.token_urlsafe(32)
        self._hl_tokens[token] = (self._time(), user)
        return self._json_response(
            {"token_type": "Bearer", "expires_in": int(self.session_ttl), "access_token": token}
        )

    def _hl_check_token(self, request: Request) -> None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        issued = self._hl_tokens.get(token)
        if issued is None or self._time() - issued[0] > self.session_ttl or issued[1] is None:
            # unconfirmed: status and text for a user-less token (#13304, #19150, #21991)
            raise _HlError(401, "ERROR_UNAUTHENTICATED", "You are not authenticated")

    def _hl_check_version(self, request: Request) -> None:
        wanted = request.headers.get("GLPI-API-Version", "2")
        known = {v["api_version"] for v in self._hl_versions()}
        if wanted.split(".")[0] not in known:
            raise _HlError(400, "ERROR_INVALID_PARAMETER", f"Unknown API version {wanted}")

    def _hl_route(
        self, method: str, parts: list[str], body: dict[str, Any], query: Mapping[str, Any]
    ) -> Response:
        route = tuple(p if not p.isdigit() else "{id}" for p in parts)
        ids = [int(p) for p in parts if p.isdigit()]
        if route == ("session",) and method == "GET":
            return self._json_response({"user_id": API_USER_ID, "name": self.login})
        if route == ("Assistance", "Ticket"):
            if method == "GET":
                self._hl_right("Ticket", "read")
                rows = [self._hl_ticket(r) for r in self._tables["Ticket"].values()]
                return self._hl_search(rows, query)
            if method == "POST":
                values = {
                    "name": body.get("name"),
                    "content": body.get("content"),
                    "type": body.get("type", 1),
                    "entities_id": _hl_id(body.get("entity")) or 0,
                }
                return self._hl_created(self._create_one("Ticket", values), "/Assistance/Ticket/{}")
        if route == ("Assistance", "Ticket", "{id}"):
            ticket = self._hl_item("Ticket", ids[0])
            if method == "GET":
                return self._json_response(self._hl_ticket(ticket))
            if method == "PATCH":
                values: dict[str, Any] = {}
                for key in ("name", "content", "urgency", "impact", "type"):
                    if key in body:
                        values[key] = body[key]
                if "category" in body:
                    values["itilcategories_id"] = _hl_id(body["category"]) or 0
                if "status" in body:
                    values["status"] = _hl_id(body["status"]) or body["status"]
                done, message = self._update_one("Ticket", ids[0], values)
                if not done:
                    raise _HlError(*self._hl_refusal(message))
                return self._json_response(self._hl_ticket(self._tables["Ticket"][ids[0]]))
        if route == ("Assistance", "Ticket", "{id}", "TeamMember"):
            ticket = self._hl_item("Ticket", ids[0])
            if method == "GET":
                return self._json_response(self._team(ticket["id"]))
            if method == "POST":
                self._hl_right("Group_Ticket", "create")
                kind = body.get("type")
                role = {"requester": REQUESTER, "assigned": ASSIGNED, "observer": OBSERVER}.get(
                    str(body.get("role")), _to_int(body.get("role"))
                )
                fk = {"Group": "groups_id", "User": "users_id"}.get(str(kind))
                if fk is None or role is None:
                    raise _HlError(400, "ERROR_INVALID_PARAMETER", "Invalid parameter")
                link = "Group_Ticket" if kind == "Group" else "Ticket_User"
                new_id, message = self._create_actor(
                    link, {"tickets_id": ticket["id"], fk: _to_int(body.get("id")), "type": role}
                )
                if new_id is None and message:
                    raise _HlError(400, "ERROR_INVALID_PARAMETER", "Invalid parameter")
                return self._json_response(None, 201)
        if route == ("Assistance", "Ticket", "{id}", "Timeline", "Followup"):
            ticket = self._hl_item("Ticket", ids[0])
            if method == "GET":
                self._hl_right("ITILFollowup", "read")
                # ITILController @ e934661d: Followup also has `user` and `user_editor`
                # (the contract's 11.x snapshot lists neither, so webhook payloads keep the
                # contract's shape); the list wraps each item in {"type", "item"}.
                items = [
                    {"type": "Followup", "item": self._hl_followup(r) | self._hl_authors(r)}
                    for r in sorted(self._children_followups(ticket["id"]), key=lambda r: r["id"])
                ]
                return self._json_response(items)
            if method == "POST":
                values = {
                    "itemtype": "Ticket",
                    "items_id": ticket["id"],
                    "content": body.get("content"),
                    "is_private": 1 if body.get("is_private") else 0,
                }
                created = self._create_one("ITILFollowup", values)
                return self._hl_created(
                    created, f"/Assistance/Ticket/{ticket['id']}/Timeline/Followup/{{}}"
                )
        for prefix, itemtype in (
            (("Administration", "Group"), "Group"),
            (("Dropdowns", "ITILCategory"), "ITILCategory"),
        ):
            if route == prefix:
                if method == "GET":
                    self._hl_right(itemtype, "read")
                    rows = [
                        self._hl_dropdown_row(itemtype, r) for r in self._tables[itemtype].values()
                    ]
                    return self._hl_search(rows, query)
                if method == "POST":
                    values = {
                        "name": body.get("name"),
                        "comment": body.get("comment"),
                        "entities_id": _hl_id(body.get("entity")) or 0,
                        "is_recursive": 1 if body.get("is_recursive") else 0,
                    }
                    if itemtype == "Group":
                        values["is_assign"] = 1  # unconfirmed: the HL Group schema's default
                    return self._hl_created(
                        self._create_one(itemtype, values), "/" + "/".join(prefix) + "/{}"
                    )
        raise _HlError(404, "ERROR_ITEM_NOT_FOUND", "Item not found")

    def _hl_authors(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "user": self._dropdown("User", row.get("users_id")),
            "user_editor": self._dropdown("User", row.get("users_id_editor")),
        }

    def _children_followups(self, ticket_id: int) -> list[dict[str, Any]]:
        return [
            r
            for r in self._tables["ITILFollowup"].values()
            if r["itemtype"] == "Ticket" and r["items_id"] == ticket_id
        ]

    def _hl_item(self, itemtype: str, item_id: int) -> dict[str, Any]:
        self._hl_right(itemtype, "read")
        row = self._tables[itemtype].get(item_id)
        if row is None:
            raise _HlError(404, "ERROR_ITEM_NOT_FOUND", "Item not found")
        return row

    def _hl_right(self, itemtype: str, right: str) -> None:
        if not self._check_right(itemtype, right):
            raise _HlError(
                403, "ERROR_RIGHT_MISSING", "You do not have the right to perform this action"
            )

    @staticmethod
    def _hl_refusal(message: str) -> tuple[int, str, str]:
        if message == NO_RIGHT:
            return 403, "ERROR_RIGHT_MISSING", "You do not have the right to perform this action"
        return 400, "ERROR_INVALID_PARAMETER", message or "Invalid parameter"

    def _hl_created(self, created: tuple[int | None, str], href: str) -> Response:
        new_id, message = created
        if new_id is None:
            raise _HlError(*self._hl_refusal(message))
        link = href.format(new_id)
        return self._json_response(
            {"id": new_id, "href": f"/api.php/v2{link}"},
            201,
            {"Location": f"{self.root_url}/api.php/v2{link}"},
        )

    def _hl_dropdown_row(self, itemtype: str, row: Mapping[str, Any]) -> dict[str, Any]:
        entity = self._tables["Entity"].get(row.get("entities_id", 0)) or self._tables["Entity"][0]
        return {
            "id": row["id"],
            "name": row["name"],
            "completename": row.get("completename", row["name"]),
            "comment": row.get("comment"),
            "entity": {"id": entity["id"], "name": entity["name"]},
            "is_recursive": bool(row.get("is_recursive")),
        }

    def _hl_search(self, rows: list[dict[str, Any]], query: Mapping[str, Any]) -> Response:
        """ResourceAccessor::searchBySchema: RSQL `filter` (`;` is AND; `==`, `=ge=`,
        `=like=` with `*`), `start`, `limit`; Content-Range `start-end/total`."""
        filters = str(query.get("filter") or "")
        for clause in (c for c in filters.split(";") if c):
            found = re.fullmatch(r"([\w.]+)(==|=ge=|=lt=|=like=)(.*)", clause)
            if not found:
                raise _HlError(400, "ERROR_INVALID_PARAMETER", f"Invalid filter {clause}")
            field, operator, value = found.groups()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            rows = [r for r in rows if _rsql_match(_hl_field(r, field), operator, value)]
        rows.sort(key=lambda r: r["id"])
        start = _to_int(query.get("start")) or 0
        limit = _to_int(query.get("limit")) or 100
        page = rows[start : start + limit]
        end = start + len(page) - 1 if page else start
        headers = {"Content-Range": f"{start}-{end}/{len(rows)}"}
        return self._json_response(page, 200, headers)

    # ---------------------------------------------------------------- request checks

    def _params(self, request: Request, raw: bytes, query: dict[str, Any]) -> dict[str, Any]:
        params = dict(query)
        if request.method == "GET" and raw.strip():
            raise ApiError("ERROR_JSON_PAYLOAD_FORBIDDEN")
        content_type = request.headers.get("Content-Type", "")
        if raw.strip():
            if "application/json" in content_type or not content_type:
                try:
                    decoded = json.loads(raw)
                except ValueError as exc:
                    raise ApiError("ERROR_JSON_PAYLOAD_INVALID") from exc
                if isinstance(decoded, dict):
                    params.update(decoded)
                else:
                    params["_body"] = decoded
            elif "application/x-www-form-urlencoded" in content_type:
                params.update(
                    _php_query(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                )
        return params

    def _check_client(self, request: Request, params: Mapping[str, Any]) -> None:
        if not self.ip_allowed:
            raise ApiError(
                "ERROR_NOT_ALLOWED_IP",
                f"{_ERRORS['ERROR_NOT_ALLOWED_IP'][1]} ({request.remote_addr})",
            )
        given = request.headers.get("App-Token")
        if given is None:
            given = params.get("app_token")
        if given is None:
            if self.app_token:
                raise ApiError("ERROR_APP_TOKEN_PARAMETERS_MISSING")
        elif given != (self.app_token or ""):
            raise ApiError("ERROR_WRONG_APP_TOKEN_PARAMETER")

    @staticmethod
    def _session_token(request: Request, params: Mapping[str, Any]) -> str | None:
        token = request.headers.get("Session-Token")
        if token is None:
            value = params.get("session_token")
            token = value if isinstance(value, str) else None
        return token

    def _check_session(self, request: Request, params: Mapping[str, Any]) -> None:
        token = self._session_token(request, params)
        if not token:
            raise ApiError("ERROR_SESSION_TOKEN_MISSING")
        last_used = self._sessions.get(token)
        now = self._time()
        if last_used is None or now - last_used > self.session_ttl:
            self._sessions.pop(token, None)
            raise ApiError("ERROR_SESSION_TOKEN_INVALID")
        self._sessions[token] = now  # PHP sessions expire after inactivity

    def _session_data(self) -> dict[str, Any]:
        return {
            "glpiID": API_USER_ID,
            "glpiname": "glpi",
            "glpiactive_entity": 0,
            "glpiactiveprofile": {"id": 4, "name": "Super-Admin"},
            "glpilist_limit": self.list_limit,
        }

    def _init_session(self, request: Request, params: Mapping[str, Any]) -> Response:
        auth = request.headers.get("Authorization", "")
        user_token: str | None = None
        basic: tuple[str, str] | None = None
        if "user_token" in auth:
            user_token = auth.split(" ", 1)[1] if " " in auth else ""
        elif auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
                login, _, password = decoded.partition(":")
                basic = (login, password)
            except (ValueError, UnicodeDecodeError):
                basic = ("", "")
        elif isinstance(params.get("user_token"), str):
            user_token = params["user_token"]
        elif isinstance(params.get("login"), str) and isinstance(params.get("password"), str):
            basic = (params["login"], params["password"])
        if user_token is None and basic is None:
            raise ApiError("ERROR_LOGIN_PARAMETERS_MISSING")
        if basic is not None:
            if not self.allow_basic_auth:
                raise ApiError("ERROR_LOGIN_WITH_CREDENTIALS_DISABLED")
            if basic != (self.login, self.password):
                raise ApiError("ERROR_GLPI_LOGIN")
        elif user_token != self.user_token:
            raise ApiError("ERROR_GLPI_LOGIN_USER_TOKEN")
        token = secrets.token_hex(20)
        self._sessions[token] = self._time()
        data: dict[str, Any] = {"session_token": token}
        if _truthy(params.get("get_full_session", False)):
            data["session"] = self._session_data()
        return self._json_response(data)

    # ---------------------------------------------------------------- item routes

    def _itemtype(self, name: str) -> str:
        known = {t.lower(): t for t in _COLUMNS}
        itemtype = known.get(name.lower())
        if itemtype is None or (itemtype == "Webhook" and self.version < 11):
            raise ApiError("ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM")
        return itemtype

    def _check_right(self, itemtype: str, right: str) -> bool:
        return right not in self._denied.get(itemtype, set())

    def _item_route(self, method: str, parts: list[str], params: dict[str, Any]) -> Response:
        itemtype = self._itemtype(parts[0])
        if len(parts) == 1:
            if method == "GET":
                return self._list(itemtype, params, parent=None)
            if method == "POST":
                return self._create(itemtype, params)
            if method in ("PUT", "PATCH"):
                return self._update(itemtype, None, params)
            if method == "DELETE":
                return self._delete(itemtype, None, params)
            raise ApiError("ERROR_METHOD_NOT_ALLOWED")
        item_id = _to_int(parts[1])
        if item_id is None:
            raise ApiError("ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM")
        if len(parts) == 2:
            if method == "GET":
                return self._get(itemtype, item_id, params)
            if method in ("PUT", "PATCH"):
                return self._update(itemtype, item_id, params)
            if method == "DELETE":
                return self._delete(itemtype, item_id, params)
            raise ApiError("ERROR_METHOD_NOT_ALLOWED")
        child = self._itemtype(parts[2])
        if len(parts) == 3:
            if method == "GET":
                return self._list(child, params, parent=(itemtype, item_id))
            if method == "POST":
                return self._create(child, params)  # createItems() ignores the parent id
            raise ApiError("ERROR_METHOD_NOT_ALLOWED")
        child_id = _to_int(parts[3])
        if child_id is None or len(parts) > 4:
            raise ApiError("ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM")
        if method == "GET":
            return self._get(child, child_id, params)
        if method in ("PUT", "PATCH"):
            return self._update(child, child_id, params)
        if method == "DELETE":
            return self._delete(child, child_id, params)
        raise ApiError("ERROR_METHOD_NOT_ALLOWED")

    def _get(self, itemtype: str, item_id: int, params: Mapping[str, Any]) -> Response:
        row = self._tables[itemtype].get(item_id)
        if row is None:
            raise ApiError("ERROR_ITEM_NOT_FOUND")
        if not self._check_right(itemtype, "read"):
            raise ApiError("ERROR_RIGHT_MISSING")
        headers = {}
        if row.get("date_mod"):
            headers["Last-Modified"] = _html_date(row["date_mod"], self.tz)
        return self._json_response(self._row_out(itemtype, row, params), 200, headers)

    @staticmethod
    def _range(params: Mapping[str, Any], default_size: int) -> tuple[int, int]:
        raw = params.get("range")
        if raw is None:
            return 0, default_size - 1
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(raw))
        if not m or int(m.group(1)) > int(m.group(2)):
            raise ApiError("ERROR", "range must be in format : [start-end] with integers")
        return int(m.group(1)), int(m.group(2))

    def _list(
        self, itemtype: str, params: Mapping[str, Any], *, parent: tuple[str, int] | None
    ) -> Response:
        if parent is not None:
            if parent[1] not in self._tables[parent[0]]:
                raise ApiError("ERROR_ITEM_NOT_FOUND")
            if parent[0] != "Ticket" or itemtype not in _TICKET_CHILDREN:
                raise ApiError("ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM")
            rows = list(self._children(itemtype, parent[1]))
        else:
            rows = list(self._tables[itemtype].values())
        if not self._check_right(itemtype, "read"):
            raise ApiError("ERROR_RIGHT_MISSING")
        if "is_deleted" in _COLUMNS[itemtype] and itemtype != "User":
            wanted = 1 if _truthy(params.get("is_deleted", False)) else 0
            rows = [r for r in rows if (r.get("is_deleted") or 0) == wanted]
        search_text = params.get("searchText") or {}
        if isinstance(search_text, dict):
            for column, pattern in search_text.items():
                if column not in _COLUMNS[itemtype]:
                    raise ApiError("ERROR_FIELD_NOT_FOUND")
                rows = [r for r in rows if _like(str(pattern), self._out_value(r.get(column)))]
        sort = str(params.get("sort", "id"))
        if sort not in _COLUMNS[itemtype]:
            raise ApiError("ERROR", "sort field not found")
        order = str(params.get("order", "ASC")).upper()
        if order not in ("ASC", "DESC"):
            raise ApiError("ERROR", "order must be ASC or DESC")
        rows.sort(key=lambda r: r["id"])
        rows.sort(key=lambda r: _sort_key(r.get(sort)), reverse=order == "DESC")
        start, end = self._range(params, self.list_limit)
        total = len(rows)
        if start > total:
            raise ApiError(
                "ERROR_RANGE_EXCEED_TOTAL", f"Provided range exceed total count of data: {total}"
            )
        page = rows[start : end + 1]
        if _truthy(params.get("only_id", False)):
            data: list[Any] = [{"id": r["id"]} for r in page]
        else:
            data = [self._row_out(itemtype, r, params) for r in page]
        headers = {"Accept-Range": f"{itemtype} {MAX_INPUT_VARS}"}
        if total > 0:  # unconfirmed for empty lists: the fake omits Content-Range then
            headers["Content-Range"] = f"{start}-{start + max(len(page), 1) - 1}/{total}"
        return self._json_response(data, 206 if len(page) < total else 200, headers)

    @staticmethod
    def _inputs(params: Mapping[str, Any]) -> tuple[list[Any], bool]:
        if "input" not in params:
            raise ApiError("ERROR_BAD_ARRAY")
        value = params["input"]
        if isinstance(value, dict):
            return [value], False
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value, True
        raise ApiError("ERROR_BAD_ARRAY")

    def _create_one(self, itemtype: str, values: dict[str, Any]) -> tuple[int | None, str]:
        if itemtype not in _CREATABLE:
            return None, NO_RIGHT
        if not self._check_right(itemtype, "create"):
            return None, NO_RIGHT
        if itemtype == "Ticket":
            return self._create_ticket(values, author=API_USER_ID)
        if itemtype in ("Group_Ticket", "Ticket_User"):
            return self._create_actor(itemtype, values)
        if itemtype == "ITILFollowup":
            return self._create_followup(values, author=API_USER_ID)
        if itemtype in ("Group", "ITILCategory"):
            fk = _TREE_TYPES[itemtype]
            parent = _to_int(values.get(fk, 0))
            if parent is None or (parent and parent not in self._tables[itemtype]):
                return None, f"Invalid value for field {fk}"
            if "name" in values and not isinstance(values["name"], str | int):
                return None, "Invalid value for field name"
            return self._create_tree_item(itemtype, {**values, fk: parent}), ""
        if itemtype == "User":
            name = values.get("name")
            if not isinstance(name, str) or not name:
                return None, "The login is mandatory"
            if any(u["name"] == name for u in self._tables["User"].values()):
                return None, "Unable to add. The user already exists."
            return self.add_user(name, values.get("realname"), values.get("firstname")), ""
        return self._create_webhook(values)

    def _create(self, itemtype: str, params: Mapping[str, Any]) -> Response:
        inputs, multiple = self._inputs(params)
        results: list[dict[str, Any]] = []
        failed = 0
        for values in inputs:
            new_id, message = self._create_one(itemtype, values)
            if new_id is None:
                failed += 1
                results.append({"id": False, "message": message})
            else:
                results.append({"id": new_id, "message": message})
        if not multiple:
            if failed:
                raise ApiError("ERROR_GLPI_ADD", results[0]["message"])
            headers = {"Location": f"{self.url}/{itemtype}/{results[0]['id']}"}
            return self._json_response(results[0], 201, headers)
        if failed == len(inputs):
            raise ApiError("ERROR_GLPI_ADD", results)
        if failed:
            raise ApiError("ERROR_GLPI_PARTIAL_ADD", results)
        return self._json_response(results, 201)

    def _update_one(self, itemtype: str, item_id: int, values: dict[str, Any]) -> tuple[bool, str]:
        row = self._tables[itemtype].get(item_id)
        if row is None:
            return False, "Item not found"
        if not self._check_right(itemtype, "update"):
            return False, NO_RIGHT
        if itemtype == "Ticket":
            try:
                clean = self._validate_ticket_values(values)
            except ValueError as exc:
                return False, str(exc)
            group = _to_int(values.get("_groups_id_assign"))
            if group and group in self._tables["Group"]:
                self._create_actor(
                    "Group_Ticket", {"tickets_id": item_id, "groups_id": group, "type": ASSIGNED}
                )
            self._apply_ticket_changes(row, clean, author=API_USER_ID)
            return True, ""
        if itemtype == "ITILFollowup":
            changes = {}
            if isinstance(values.get("content"), str):
                changes["content"] = values["content"]
            if "is_private" in values:
                changes["is_private"] = 1 if _truthy(values["is_private"]) else 0
            if changes:
                row.update(changes)
                row["date_mod"] = self._now_str()
                row["users_id_editor"] = API_USER_ID
                self._raise("ITILFollowup", item_id, "update")
            return True, ""
        if itemtype == "Webhook":
            for key in ("name", "url", "event", "itemtype", "http_method", "payload"):
                if isinstance(values.get(key), str):
                    row[key] = values[key]
            for key in ("is_active", "use_cra_challenge", "use_default_payload", "sent_try"):
                if key in values and _to_int(values[key]) is not None:
                    row[key] = _to_int(values[key])
            if isinstance(values.get("secret"), str) and values["secret"]:
                row["_secret"] = values["secret"]
            if self.version >= 12 and values.get("pinned_version") is not None:
                row["pinned_version"] = str(values["pinned_version"])
            return True, ""
        if itemtype in ("Group", "ITILCategory", "User"):
            for key, value in values.items():
                if key in _COLUMNS[itemtype] and key != "id" and isinstance(value, str | int):
                    row[key] = value
            if "name" in values and itemtype in _TREE_TYPES:
                parent = self._tables[itemtype].get(row[_TREE_TYPES[itemtype]])
                row["completename"] = (
                    f"{parent['completename']} > {row['name']}" if parent else row["name"]
                )
            row["date_mod"] = self._now_str()
            return True, ""
        return False, NO_RIGHT

    def _ids_and_values(
        self, item_id: int | None, params: Mapping[str, Any]
    ) -> tuple[list[tuple[int | None, dict[str, Any]]], bool]:
        inputs, multiple = self._inputs(params)
        if item_id is not None and not multiple:
            return [(item_id, inputs[0])], False  # the id comes from the URL
        return [(_to_int(values.get("id")), values) for values in inputs], multiple

    def _update(self, itemtype: str, item_id: int | None, params: Mapping[str, Any]) -> Response:
        pairs, multiple = self._ids_and_values(item_id, params)
        results: list[dict[str, Any]] = []
        failed = 0
        for target, values in pairs:
            ok, message = (
                (False, "Item not found")
                if target is None
                else self._update_one(itemtype, target, values)
            )
            failed += 0 if ok else 1
            results.append({str(target): ok, "message": message})
        if failed == len(pairs):
            raise ApiError("ERROR_GLPI_UPDATE", results if multiple else results[0]["message"])
        if failed:
            raise ApiError("ERROR_GLPI_PARTIAL_UPDATE", results)
        return self._json_response(results)

    def _delete(self, itemtype: str, item_id: int | None, params: Mapping[str, Any]) -> Response:
        if item_id is not None:
            pairs: list[tuple[int | None, dict[str, Any]]] = [(item_id, {})]
            multiple = False
        else:
            pairs, multiple = self._ids_and_values(None, params)
        purge = _truthy(params.get("force_purge", False))
        results: list[dict[str, Any]] = []
        failed = 0
        for target, _values in pairs:
            row = self._tables[itemtype].get(target) if target is not None else None
            if row is None:
                ok, message = False, "Item not found"
            elif not self._check_right(itemtype, "delete"):
                ok, message = False, NO_RIGHT
            else:
                ok, message = True, ""
                assert target is not None
                if itemtype == "Ticket":
                    self._delete_ticket(target, purge=purge)
                else:
                    del self._tables[itemtype][target]
                    if itemtype == "ITILFollowup":
                        self._raise_deleted_followup(row)
            failed += 0 if ok else 1
            results.append({str(target): ok, "message": message})
        if failed == len(pairs):
            raise ApiError("ERROR_GLPI_DELETE", results if multiple else results[0]["message"])
        if failed:
            raise ApiError("ERROR_GLPI_PARTIAL_DELETE", results)
        return self._json_response(results)

    def _raise_deleted_followup(self, row: dict[str, Any]) -> None:
        self._tables["ITILFollowup"][row["id"]] = row  # visible while the event is built
        try:
            self._raise("ITILFollowup", row["id"], "delete")
        finally:
            del self._tables["ITILFollowup"][row["id"]]

    # ---------------------------------------------------------------- search

    def _search_sort_key(self, option: int, row: Mapping[str, Any]) -> tuple[int, int, str]:
        return _sort_key(self._search_value(row, option))

    def _search_value(self, row: Mapping[str, Any], option: int) -> Any:
        kind, ref = _SEARCH_OPTIONS[option]
        if kind in ("text", "int", "date"):
            return self._out_value(row.get(ref))
        if kind == "category":
            cat = self._tables["ITILCategory"].get(row["itilcategories_id"])
            return self._out_value(cat["completename"]) if cat else None
        if kind == "entity":
            entity = self._tables["Entity"].get(row["entities_id"])
            return entity["completename"] if entity else None
        names = [self._out_value(n) for n in self._related_names(row, kind, ref)]
        # unconfirmed: how several values of one column come back; the fake gives a list
        return None if not names else names[0] if len(names) == 1 else names

    def _related_ids(self, row: Mapping[str, Any], kind: str, ref: str) -> list[int]:
        if kind == "users" and ref == "recipient":
            return [row["users_id_recipient"]]
        role = _ROLE_BY_NAME[ref]
        child, fk = (
            ("Ticket_User", "users_id") if kind == "users" else ("Group_Ticket", "groups_id")
        )
        return [r[fk] for r in self._children(child, row["id"]) if r["type"] == role]

    def _related_names(self, row: Mapping[str, Any], kind: str, ref: str) -> list[str]:
        table = self._tables["User" if kind == "users" else "Group"]
        out = []
        for rid in self._related_ids(row, kind, ref):
            target = table.get(rid)
            if target is not None:
                out.append(target["name"] if kind == "users" else target["completename"])
        return out

    def _descendants(self, itemtype: str, root: int) -> set[int]:
        fk = _TREE_TYPES[itemtype]
        found = {root}
        changed = True
        while changed:
            changed = False
            for row in self._tables[itemtype].values():
                if row[fk] in found and row["id"] not in found:
                    found.add(row["id"])
                    changed = True
        return found

    def _date_value(self, value: str) -> str:
        text = value.strip()
        if text.upper() == "NOW":
            return self._now_str()
        m = re.fullmatch(r"-(\d+)(MINUTE|HOUR|DAY|WEEK|MONTH|YEAR)", text.upper())
        if m:
            unit = {
                "MINUTE": 60,
                "HOUR": 3600,
                "DAY": 86400,
                "WEEK": 7 * 86400,
                "MONTH": 30 * 86400,
                "YEAR": 365 * 86400,
            }[m.group(2)]
            return (self._now() - timedelta(seconds=int(m.group(1)) * unit)).strftime(DATE_FMT)
        return text

    def _criterion_matches(self, row: Mapping[str, Any], crit: Mapping[str, Any]) -> bool:
        field_ref = str(crit["field"])
        searchtype = str(crit["searchtype"])
        value = "" if crit.get("value") is None else str(crit.get("value"))
        if field_ref in ("view", "all"):
            hay = f"{row.get('name') or ''} {row.get('content') or ''}"
            hit = _like(value, hay)
            return not hit if searchtype.startswith("not") else hit
        kind, ref = _SEARCH_OPTIONS[int(field_ref)]
        if kind in ("users", "groups", "category", "entity"):
            if kind == "category":
                ids = [row["itilcategories_id"]]
            elif kind == "entity":
                ids = [row["entities_id"]]
            else:
                ids = self._related_ids(row, kind, ref)
            if searchtype in ("equals", "notequals", "under", "notunder"):
                wanted = _to_int(value)
                pool: set[int | None] = {wanted}
                if searchtype in ("under", "notunder") and kind in ("category", "groups"):
                    pool = set(
                        self._descendants(
                            "ITILCategory" if kind == "category" else "Group", wanted or 0
                        )
                    )
                hit = any(i in pool for i in ids)
                return not hit if searchtype.startswith("not") else hit
            display = self._search_value(row, int(field_ref))
            texts = display if isinstance(display, list) else [display]
            hit = any(_like(value, t) for t in texts if t is not None)
            return not hit if searchtype == "notcontains" else hit
        actual = row.get(ref)
        if searchtype in ("contains", "notcontains"):
            if value.upper() == "NULL":
                hit = actual in (None, "")
            else:
                hit = actual is not None and _like(value, actual)
            return not hit if searchtype == "notcontains" else hit
        if kind == "date":
            target: Any = self._date_value(value)
        elif kind == "int":
            target = _to_int(value)
        else:
            target = value
        if searchtype in ("equals", "notequals", "under", "notunder"):
            hit = actual == target
            return not hit if searchtype.startswith("not") else hit
        if actual is None or target is None:
            return False
        return bool(actual < target if searchtype == "lessthan" else actual > target)  # strict

    def _search(self, itemtype: str, params: Mapping[str, Any]) -> Response:
        if itemtype != "Ticket":
            raise ApiError("ERROR", "the fake only searches Ticket")
        if not self._check_right("Ticket", "read"):
            raise ApiError("ERROR_RIGHT_MISSING")
        bad_field = ApiError("ERROR", "Bad field ID in search criteria")
        raw_criteria = params.get("criteria", {})
        if not isinstance(raw_criteria, dict | list):
            raise bad_field
        criteria = list(raw_criteria.values() if isinstance(raw_criteria, dict) else raw_criteria)
        for crit in criteria:
            if not isinstance(crit, dict) or "field" not in crit or "searchtype" not in crit:
                raise bad_field
            ref = str(crit["field"])
            if ref not in ("view", "all") and (
                _to_int(ref) not in _SEARCH_OPTIONS or crit["searchtype"] not in _SEARCHTYPES
            ):
                raise bad_field
        wanted_deleted = 1 if _truthy(params.get("is_deleted", False)) else 0
        rows = [r for r in self._tables["Ticket"].values() if r["is_deleted"] == wanted_deleted]
        matched = []
        for row in rows:
            result: bool | None = None
            for crit in criteria:
                hit = self._criterion_matches(row, crit)
                link = str(crit.get("link", "AND")).upper()
                if link.endswith("NOT"):
                    hit = not hit
                if result is None:
                    result = hit
                elif link.startswith("OR"):
                    result = result or hit
                else:
                    result = result and hit
            if result is None or result:
                matched.append(row)
        sort_param = params.get("sort", 19)
        sorts = list(sort_param.values()) if isinstance(sort_param, dict) else [sort_param]
        order_param = params.get("order", "DESC")
        orders = list(order_param.values()) if isinstance(order_param, dict) else [order_param]
        sort_ids = [_to_int(s) for s in sorts]
        if any(s not in _SEARCH_OPTIONS for s in sort_ids):
            raise ApiError("ERROR", "Bad sort field")
        order_values = [str(o).upper() for o in orders] or ["ASC"]
        if any(o not in ("ASC", "DESC") for o in order_values):
            raise ApiError("ERROR", "order must be ASC or DESC")
        matched.sort(key=lambda r: r["id"])
        for position in range(len(sort_ids) - 1, -1, -1):
            sid = sort_ids[position]
            assert sid is not None
            descending = order_values[min(position, len(order_values) - 1)] == "DESC"

            matched.sort(key=partial(self._search_sort_key, sid), reverse=descending)
        total = len(matched)
        start, end = self._range(params, self.list_limit)
        if start > total:
            raise ApiError(
                "ERROR_RANGE_EXCEED_TOTAL", f"Provided range exceed total count of data: {total}"
            )
        page = matched[start : end + 1]
        columns = set(_DEFAULT_SEARCH_COLUMNS)
        forced = params.get("forcedisplay", {})
        for value in forced.values() if isinstance(forced, dict) else forced or []:
            number = _to_int(value)
            if number in _SEARCH_OPTIONS:
                columns.add(number)
        for crit in criteria:
            number = _to_int(crit["field"])
            if number in _SEARCH_OPTIONS:
                columns.add(number)
        ordered = sorted(columns)
        data_rows = [{str(c): self._search_value(r, c) for c in ordered} for r in page]
        data: Any = data_rows
        if _truthy(params.get("withindexes", False)):
            data = {str(r["id"]): d for r, d in zip(page, data_rows, strict=True)}
        end_shown = start + len(page) - 1 if page else end
        content_range = f"{start}-{end_shown}/{total}"  # unconfirmed when the page is empty
        body = {
            "totalcount": total,
            "count": len(page),
            "sort": [s for s in sort_ids],
            "order": order_values,
            "data": data,
            "content-range": content_range,
        }
        headers = {"Accept-Range": f"Ticket {MAX_INPUT_VARS}"}
        if total > 0:
            headers["Content-Range"] = content_range
        return self._json_response(body, 206 if len(page) < total else 200, headers)


# --------------------------------------------------------------------------------------------
# Outgoing HTTP (webhooks): http.client gives exact control over the headers sent
# --------------------------------------------------------------------------------------------


class _HlError(Exception):
    """An HL API error answer: {"status": code, "title": title, "detail": null}."""

    def __init__(self, status: int, code: str, title: str) -> None:
        super().__init__(title)
        self.status, self.code, self.title = status, code, title


def _private(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _hl_id(value: Any) -> int | None:
    """A dropdown given as an id or as {"id": N} (unconfirmed which forms GLPI accepts)."""
    if isinstance(value, dict):
        value = value.get("id")
    return _to_int(value)


def _hl_field(row: Mapping[str, Any], field: str) -> Any:
    value: Any = row
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _rsql_match(actual: Any, operator: str, wanted: str) -> bool:
    if operator == "==":
        return str(actual) == wanted if actual is not None else wanted == "null"
    if operator == "=like=":
        pattern = "^" + ".*".join(re.escape(p) for p in wanted.split("*")) + "$"
        return actual is not None and re.search(pattern, str(actual), re.S) is not None
    if actual is None:
        return False
    try:
        left: Any = datetime.fromisoformat(str(actual))
        right: Any = datetime.fromisoformat(wanted)
    except ValueError:
        left, right = float(actual), float(wanted)
    return bool(left >= right) if operator == "=ge=" else bool(left < right)


def _http_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float
) -> tuple[int | None, bytes, str | None]:
    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_cls(parts.hostname or "localhost", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body or method not in ("GET", "HEAD"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.read(), None
    except (OSError, http.client.HTTPException) as exc:
        return None, b"", f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def _oauth_token(hook: Mapping[str, Any], timeout: float) -> tuple[str | None, str]:
    form = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": hook.get("clientid", ""),
            "client_secret": hook.get("clientsecret", ""),
            "scope": "",
        }
    ).encode()
    status, body, error = _http_request(
        "POST",
        str(hook.get("oauth_url", "")),
        {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "GuzzleHttp/7"},
        form,
        timeout=timeout,
    )
    if error is not None or status is None or status >= 400:
        return None, error or f"OAuth token request answered {status}"
    try:
        token = json.loads(body)["access_token"]
    except (ValueError, KeyError, TypeError):
        return None, "OAuth answer has no access_token"
    return str(token), ""
