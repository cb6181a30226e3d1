"""A stateful fake Zammad for tests, served over real HTTP.

It follows ``connector/hosts/zammad/fixtures/contract/zammad.md`` (which was read out of
Zammad's own source):

* the REST endpoints the connector uses, with Zammad's status codes, body shapes, error JSON
  (``{"error": ..., "error_human": ...}``, ported from
  ``application_controller/handles_errors.rb#humanize_error``) and token/Bearer/Basic auth
  (ported from ``application_controller/authenticates.rb``);
* triggers evaluated on every ticket transaction, and webhooks delivered from a background
  thread the way ``TriggerWebhookJob`` does it: the default payload built like
  ``TriggerWebhookJob::RecordPayload`` (sorted keys, association hashes, user blacklist,
  ``accounted_time`` last), serialised like Rails' ``to_json`` (compact, ``\\u003c \\u003e
  \\u0026`` escaping), signed with HMAC-SHA1 in ``X-Hub-Signature``, retried 5 times with the
  same ``X-Zammad-Delivery`` id;
* failure injection (``fail_next``, ``lose_response_next``, ``set_down``).

Group access of agents is not enforced, and there is no Elasticsearch: ticket search
understands the simple query forms listed in :meth:`FakeZammad._search_tickets`.

Regenerate the fixtures in ``connector/hosts/zammad/fixtures`` with
``python -m tests.fakes.zammad write-fixtures``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

__all__ = [
    "ApiCall",
    "Delivery",
    "FakeZammad",
    "ScriptedClock",
    "build_webhook_headers",
    "generate_fixtures",
    "rails_json",
    "rails_time",
    "sign_body",
]

Json = Any
Record = dict[str, Any]

SYSTEM_ID = "31"  # Zammad's random system_id; ticket numbers are SYSTEM_ID + counter (min 5 chars)
FIXTURE_SIGNATURE_TOKEN = "s3cr3t-t0k3n"
USER_AGENT = "Zammad User Agent"

# app/jobs/trigger_webhook_job/record_payload/base.rb
USER_ATTRIBUTE_BLACKLIST = (
    "last_login",
    "login_failed",
    "password",
    "preferences",
    "group_ids",
    "groups",
    "authorization_ids",
    "authorizations",
)
# record_payload/ticket.rb ASSOCIATIONS, in Ticket's belongs_to reflection order
# (only matters for a missing association, which Ruby appends at the end of the hash).
TICKET_ASSOCIATIONS: tuple[tuple[str, str], ...] = (
    ("group", "groups"),
    ("organization", "organizations"),
    ("priority", "priorities"),
    ("owner", "users"),
    ("customer", "users"),
    ("created_by", "users"),
    ("updated_by", "users"),
)
ARTICLE_ASSOCIATIONS: tuple[tuple[str, str], ...] = (
    ("created_by", "users"),
    ("updated_by", "users"),
)

ROLES: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("Admin", ("admin", "user_preferences", "report", "knowledge_base.editor")),
    2: ("Agent", ("ticket.agent", "chat.agent", "user_preferences", "knowledge_base.reader")),
    3: ("Customer", ("ticket.customer", "user_preferences")),
}
STATES: dict[int, str] = {
    1: "new",
    2: "open",
    3: "pending reminder",
    4: "closed",
    5: "merged",
    6: "removed",
    7: "pending close",
}
ARTICLE_TYPES: dict[int, str] = {
    1: "email",
    2: "sms",
    3: "chat",
    4: "fax",
    5: "phone",
    6: "twitter status",
    7: "twitter direct-message",
    8: "facebook feed post",
    9: "facebook feed comment",
    10: "note",
    11: "web",
    12: "telegram personal-message",
}
SENDERS: dict[int, str] = {1: "Agent", 2: "Customer", 3: "System"}

DEFAULT_CONNECTOR_PERMISSIONS = ("admin.group", "admin.trigger", "admin.webhook", "ticket.agent")
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

# --------------------------------------------------------------------------- serialisation

_RAILS_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_RAILS_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def rails_json(value: Json) -> bytes:
    """Serialise like ActiveSupport's ``to_json``: compact, UTF-8 kept raw, ``<>&`` escaped.

    Ruby's JSON generator and Python's agree on the rest (``\\n``-style short escapes, other
    control characters as lowercase ``\\u00xx``, ``/`` not escaped); ActiveSupport then escapes
    ``< > & U+2028 U+2029`` (``escape_html_entities_in_json``).  Key order is kept as given.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _RAILS_ESCAPE_RE.sub(lambda m: _RAILS_ESCAPES[m.group(0)], text).encode("utf-8")


def rails_time(moment: datetime) -> str:
    """``2025-06-04T08:21:35.282Z``: how Rails renders a ``TimeWithZone`` in JSON."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` allowed, naive means UTC)."""
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def sign_body(body: bytes, token: str) -> str:
    """``X-Hub-Signature`` value: ``sha1=`` + hex HMAC-SHA1 of the raw body (lib/user_agent.rb)."""
    return "sha1=" + hmac.new(token.encode("utf-8"), body, hashlib.sha1).hexdigest()


def build_webhook_headers(
    body: bytes, trigger_name: str, delivery_id: str, signature_token: str | None
) -> dict[str, str]:
    """The headers Zammad sets on a webhook POST (without the ones Net::HTTP adds)."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "X-Zammad-Trigger": trigger_name,
        "X-Zammad-Delivery": delivery_id,
    }
    if signature_token and body:
        headers["X-Hub-Signature"] = sign_body(body, signature_token)
    return headers


def _rb_inspect(value: Any) -> str:
    """Close enough to Ruby's ``#inspect`` for error messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_rb_inspect(v) for v in value) + "]"
    return str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _cast_bool(value: Any) -> bool | None:
    """ActiveModel::Type::Boolean."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value.strip().lower() not in {"0", "f", "false", "off"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    return bool(value)


def _truthy(value: Any) -> bool:
    """Ruby truthiness (only nil and false are falsy)."""
    return value is not None and value is not False


def _blank(value: Any) -> bool:
    """ActiveSupport ``blank?``."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, dict)):
        return len(value) == 0
    return False


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery attempt made by the fake (successful or not)."""

    delivery_id: str
    trigger: str
    webhook_id: int
    attempt: int
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: connection error / timeout
    error: str | None
    at: float

    def json(self) -> Json:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class ApiCall:
    """One request made against the fake's REST API, with the status that was answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Json:
        return json.loads(self.body) if self.body else None


class ScriptedClock:
    """A clock for deterministic timestamps: returns ``times`` in order, then steps on."""

    def __init__(self, times: Iterable[str | datetime], step: timedelta | None = None) -> None:
        self._times = [parse_time(t) if isinstance(t, str) else t for t in times]
        self._step = step or timedelta(milliseconds=7)
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if self._times:
                self._last = self._times.pop(0)
            elif self._last is None:
                self._last = datetime(2025, 6, 4, 8, 0, tzinfo=UTC)
            else:
                self._last = self._last + self._step
            return self._last


# --------------------------------------------------------------------------- internals


class ApiError(Exception):
    """An error rendered the way Zammad's ``HandlesErrors`` renders it.

    ``kind`` is the Ruby exception class that Zammad would raise: ``not_found``
    (RecordNotFound), ``unprocessable`` (Exceptions::UnprocessableEntity), ``invalid``
    (RecordInvalid, message starts with "Validation failed: "), ``statement``
    (ActiveRecord::StatementInvalid), ``not_authorized``, ``forbidden``, ``routing``, ``internal``.
    """

    STATUS = {
        "not_found": 404,
        "routing": 404,
        "unprocessable": 422,
        "invalid": 422,
        "statement": 422,
        "not_authorized": 401,
        "forbidden": 403,
        "internal": 500,
    }

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = self.STATUS[kind]


def _humanize_error(message: str, kind: str, is_admin: bool) -> dict[str, str]:
    """Port of ``ApplicationController::HandlesErrors#humanize_error``."""
    human: str | None = None
    if m := re.search(r"Validation failed: (.+?)(,|$)", message, re.I | re.M):
        human = m.group(1)
    elif re.search(r"(already exists|duplicate key|duplicate entry)", message, re.I):
        human = "Object already exists!"
    elif m := (
        re.search(r'null value in column "(.+?)" violates not-null constraint', message, re.I)
        or re.search(r"Field '(.+?)' doesn't have a default value", message, re.I)
    ):
        human = f"Attribute '{m.group(1)}' required!"
    elif kind in {"not_found", "routing", "unprocessable", "not_authorized", "forbidden"}:
        human = message
    if human:
        return {"error": human, "error_human": human}
    if not is_admin:
        return {"error": f"Error ID {secrets.token_urlsafe(6)}: Please contact your administrator."}
    return {"error": message}


def _invalid(*messages: str) -> ApiError:
    return ApiError("invalid", "Validation failed: " + ", ".join(messages))


def _not_found(model: str, ident: Any) -> ApiError:
    if ident is None or ident == "":
        return ApiError("not_found", f"Couldn't find {model} without an ID")
    return ApiError("not_found", f"Couldn't find {model} with 'id'={ident}")


def _fk_violation(table: str, column: str, value: Any, ref_table: str) -> ApiError:
    return ApiError(
        "statement",
        f'PG::ForeignKeyViolation: ERROR:  insert or update on table "{table}" violates foreign '
        f'key constraint "fk_rails_{table}_{column}"\nDETAIL:  Key ({column})=({value}) is not '
        f'present in table "{ref_table}".\n',
    )


def _not_null(column: str) -> ApiError:
    return ApiError(
        "statement",
        f'PG::NotNullViolation: ERROR:  null value in column "{column}" violates not-null '
        "constraint",
    )


@dataclass
class _Token:
    user_id: int
    permissions: tuple[str, ...]
    expires_at: date | None = None


@dataclass
class _Auth:
    user_id: int
    permissions: frozenset[str]
    is_admin: bool

    def has(self, required: str) -> bool:
        return any(required == p or required.startswith(p + ".") for p in self.permissions)


@dataclass
class _TicketEvent:
    """One Zammad transaction on a ticket (what ``Transaction::Trigger`` sees)."""

    type: str  # "create" | "update"
    ticket_id: int
    user_id: int
    article_id: int | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class _Job:
    trigger_id: int
    trigger_name: str
    webhook_id: int
    ticket_id: int
    article_id: int | None
    delivery_id: str


@dataclass
class _Ctx:
    auth: _Auth
    params: dict[str, Any]
    args: dict[str, str]
    events: dict[int, _TicketEvent]
    query: dict[str, str]


@dataclass
class _Db:
    """The fake's tables, keyed by id (stored attributes, ids not names)."""

    users: dict[int, Record] = field(default_factory=dict)
    organizations: dict[int, Record] = field(default_factory=dict)
    groups: dict[int, Record] = field(default_factory=dict)
    priorities: dict[int, Record] = field(default_factory=dict)
    tickets: dict[int, Record] = field(default_factory=dict)
    articles: dict[int, Record] = field(default_factory=dict)
    ticket_tags: dict[int, list[str]] = field(default_factory=dict)
    webhooks: dict[int, Record] = field(default_factory=dict)
    triggers: dict[int, Record] = field(default_factory=dict)
    time_accountings: dict[int, Record] = field(default_factory=dict)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 - werkzeug's name
        return


# --------------------------------------------------------------------------- the fake


class FakeZammad:
    """A stateful fake Zammad REST API + trigger/webhook engine on a real local HTTP server."""

    def __init__(
        self,
        token: str = "test-token",
        connector_login: str = "bpsm-connector",
        *,
        token_permissions: Iterable[str] = DEFAULT_CONNECTOR_PERMISSIONS,
        clock: Callable[[], datetime] | None = None,
        retry_wait: float = 0.2,
        retry_attempts: int = 5,
        delivery_timeout: tuple[float, float] = (4.0, 30.0),
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.connector_login = connector_login
        self.retry_wait = retry_wait
        self.retry_attempts = retry_attempts
        self.delivery_timeout = delivery_timeout
        self._clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._host = host
        self._port = 0
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._job_threads: list[threading.Thread] = []
        self._jobs_in_flight = 0

        self._deliveries: list[Delivery] = []
        self._api_calls: list[ApiCall] = []
        self._fail_queue: list[tuple[int, float | None]] = []
        self._lose_remaining = 0
        self._lose_methods: tuple[str, ...] = _WRITE_METHODS
        self._lose_status = 502
        self._lose_hang = 0.0
        self._latency = 0.0

        self.db = _Db()  # the fake's tables; read them in tests, guard writes with the lock
        self._tokens: dict[str, _Token] = {}
        self._passwords: dict[str, str] = {}
        # Agent access per user id (group ids), for the ticket API: Zammad lets an agent
        # read, update, annotate or tag a ticket only in a group it has access to, and move
        # it only into one (the contract: access to both the source and the target group).
        # A user missing here has access to every group — the install guide has the admin
        # grant the connector's user the source and BPSM groups; restrict_group_access()
        # takes that away.
        self._group_access: dict[int, set[int]] = {}
        self._next_id: dict[str, int] = {
            "user": 9,
            "organization": 4,
            "group": 2,
            "ticket": 1,
            "article": 1,
            "webhook": 1,
            "trigger": 1,
            "time_accounting": 1,
            "attachment": 1,
        }
        self._seed(tuple(token_permissions))
        self._url_map = self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Start listening on 127.0.0.1 (a free port the first time); return the base URL."""
        with self._lock:
            self._started = True
            self._stopping.clear()
        self._listen()
        return self.base_url

    def stop(self) -> None:
        """Stop the HTTP server and abandon pending webhook retries."""
        self._stopping.set()
        self._shutdown_server()
        with self._lock:
            self._started = False
            threads = list(self._job_threads)
        for thread in threads:
            thread.join(timeout=2.0)

    def __enter__(self) -> FakeZammad:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeZammad is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = make_server(
            self._host, self._port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._port = server.server_port
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.name = f"fake-zammad:{self._port}"
        self._server, self._server_thread = server, thread
        thread.start()

    def _shutdown_server(self) -> None:
        server, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=2.0)

    # ------------------------------------------------------------------ failure injection

    def fail_next(self, n: int = 1, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``n`` API requests with ``status`` without processing them.

        With ``retry_after`` a ``Retry-After`` header is sent (use with 429).
        """
        with self._lock:
            self._fail_queue.extend([(status, retry_after)] * n)

    def lose_response_next(
        self,
        n: int = 1,
        methods: Iterable[str] = _WRITE_METHODS,
        status: int = 502,
        hang: float = 0.0,
    ) -> None:
        """Process the next ``n`` API requests (of ``methods``, writes by default) normally,
        then answer ``status`` instead: the "saved, but the answer was lost" case. With
        ``hang`` the answer comes that many seconds late (a client timeout loses it)."""
        with self._lock:
            self._lose_remaining += n
            self._lose_methods = tuple(m.upper() for m in methods)
            self._lose_status = status
            self._lose_hang = hang

    def set_latency(self, seconds: float) -> None:
        """Every API request waits ``seconds`` before it is processed: a slow helpdesk."""
        with self._lock:
            self._latency = seconds

    def set_down(self, down: bool) -> None:
        """``True``: stop listening (connections are refused); ``False``: listen again on the
        same port."""
        if down:
            self._shutdown_server()
        else:
            if not self._port:
                raise RuntimeError("start() the fake before set_down(False)")
            self._listen()

    @property
    def is_down(self) -> bool:
        return self._server is None

    # ------------------------------------------------------------------ observations

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook delivery attempt so far, in order."""
        with self._lock:
            return list(self._deliveries)

    def clear_deliveries(self) -> None:
        with self._lock:
            self._deliveries.clear()

    @property
    def api_calls(self) -> list[ApiCall]:
        """Every request made to the API so far, with the status answered."""
        with self._lock:
            return list(self._api_calls)

    def wait_for_deliveries(self, n: int, timeout: float = 5.0) -> list[Delivery]:
        """Block until at least ``n`` delivery attempts were recorded; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._deliveries) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {n} webhook deliveries within {timeout}s, "
                        f"got {len(self._deliveries)}"
                    )
                self._cond.wait(remaining)
            return list(self._deliveries)

    def wait_for_jobs(self, timeout: float = 5.0) -> None:
        """Block until no webhook job is queued, running or waiting for a retry."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs_in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._jobs_in_flight} webhook job(s) still running")
                self._cond.wait(remaining)

    # ------------------------------------------------------------------ test helpers

    @property
    def connector_user_id(self) -> int:
        return self.user_id(self.connector_login)

    def user_id(self, login_or_email: str) -> int:
        with self._lock:
            user = self._find_user(login_or_email)
            if user is None:
                raise KeyError(login_or_email)
            return int(user["id"])

    def group_id(self, name: str) -> int:
        with self._lock:
            group = self._find_group(name)
            if group is None:
                raise KeyError(name)
            return int(group["id"])

    def ticket(self, ticket_id: int) -> Record:
        """The ticket as ``GET /api/v1/tickets/{id}?expand=true`` shows it."""
        with self._lock:
            return copy.deepcopy(self._ticket_names(self._get_ticket(ticket_id)))

    def tags(self, ticket_id: int) -> list[str]:
        with self._lock:
            return list(self.db.ticket_tags.get(ticket_id, []))

    def articles(self, ticket_id: int) -> list[Record]:
        """The ticket's articles as ``GET /api/v1/ticket_articles/by_ticket/{id}`` shows them."""
        with self._lock:
            self._get_ticket(ticket_id)
            return [
                copy.deepcopy(self._article_names(a))
                for a in sorted(self.db.articles.values(), key=lambda a: a["id"])
                if a["ticket_id"] == ticket_id
            ]

    def set_next_ids(self, *, ticket: int | None = None, article: int | None = None) -> None:
        """Make the next ticket/article get these ids (ticket numbers follow the ticket id)."""
        with self._lock:
            if ticket is not None:
                self._next_id["ticket"] = ticket
            if article is not None:
                self._next_id["article"] = article

    def restrict_group_access(self, login: str, groups: Iterable[str]) -> None:
        """Give the user agent access to these groups only (by name)."""
        with self._lock:
            ids = {g["id"] for g in self.db.groups.values() if g["name"] in set(groups)}
            self._group_access[self.user_id(login)] = ids

    def add_group(self, name: str, note: str | None = None) -> int:
        """Create a group as an admin would in the UI."""
        with self._lock:
            return int(
                self._insert_group(name, note=note, actor_id=self.user_id("chris@example.com"))[
                    "id"
                ]
            )

    def configure_webhook(
        self,
        endpoint: str,
        *,
        signature_token: str | None = FIXTURE_SIGNATURE_TOKEN,
        name: str = "connector",
        trigger_name: str = "connector: ticket created",
        condition: Record | None = None,
        execution_condition_mode: str = "selective",
        custom_payload: str | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> tuple[int, int]:
        """Create a webhook and a trigger pointing at it (as an admin would in the UI).

        The default condition is the contract's ``ticket.action is create``.
        Returns ``(webhook_id, trigger_id)``.
        """
        admin = self.user_id("chris@example.com")
        with self._lock:
            webhook = self._insert_webhook(
                {
                    "name": name,
                    "endpoint": endpoint,
                    "signature_token": signature_token,
                    "customized_payload": custom_payload is not None,
                    "custom_payload": custom_payload,
                    "basic_auth_username": basic_auth[0] if basic_auth else None,
                    "basic_auth_password": basic_auth[1] if basic_auth else None,
                },
                admin,
            )
            trigger = self._insert_trigger(
                {
                    "name": trigger_name,
                    "condition": condition
                    or {"ticket.action": {"operator": "is", "value": "create"}},
                    "perform": {"notification.webhook": {"webhook_id": webhook["id"]}},
                    "execution_condition_mode": execution_condition_mode,
                },
                admin,
            )
            return int(webhook["id"]), int(trigger["id"])

    def create_ticket_as_customer(
        self,
        title: str,
        body: str,
        *,
        customer: str = "emily@customer.example",
        group: str = "Users",
        type: str = "email",  # noqa: A002 - Zammad's field name
        content_type: str = "text/plain",
        subject: str | None = None,
        to: str = "support@example.com",
        from_: str | None = None,
        message_id: str | None = None,
        message_id_md5: str | None = None,
        preferences: Record | None = None,
    ) -> int:
        """Simulate a customer opening a ticket by e-mail (or ``type="web"``); fire triggers.

        Like Zammad it saves the ticket, then the first article, then updates the ticket's
        contact fields, reading the clock three times (ticket ``created_at``, article
        ``created_at``, ticket ``updated_at``).  Returns the ticket id.
        """
        with self._lock:
            user = self._find_user(customer)
            if user is None:
                raise KeyError(customer)
            grp = self._find_group(group)
            if grp is None:
                raise KeyError(group)
            channel = {"channel_id": 3} if type == "email" else {}
            ticket = self._insert_ticket(
                {
                    "title": title,
                    "group_id": grp["id"],
                    "customer_id": user["id"],
                    "preferences": channel if preferences is None else preferences,
                },
                actor_id=user["id"],
            )
            if message_id is None and type == "email":
                message_id = self._message_id(ticket, user)
            article = self._store_article(
                ticket,
                {
                    "type_id": self._type_id(type),
                    "sender_id": 2,
                    "from": from_ or self._mail_from(user),
                    "to": to if type == "email" else None,
                    "subject": subject if subject is not None else title,
                    "body": body,
                    "content_type": content_type,
                    "internal": False,
                    "message_id": message_id,
                    "message_id_md5": message_id_md5,
                },
                actor_id=user["id"],
            )
            jobs = self._evaluate_triggers(
                [_TicketEvent("create", ticket["id"], user["id"], article_id=article["id"])]
            )
        self._start_jobs(jobs)
        return int(ticket["id"])

    def add_customer_reply(
        self,
        ticket_id: int,
        body: str,
        *,
        content_type: str = "text/plain",
        type: str = "email",  # noqa: A002 - Zammad's field name
        subject: str | None = None,
        message_id: str | None = None,
    ) -> int:
        """Simulate the ticket's customer answering (a follow-up e-mail); fire triggers.

        Returns the new article id.
        """
        with self._lock:
            ticket = self._get_ticket(ticket_id)
            user = self.db.users[ticket["customer_id"]]
            changes: dict[str, list[Any]] = {}
            if STATES[ticket["state_id"]] in {"closed", "pending reminder", "pending close"}:
                changes = self._apply_ticket_changes(ticket, {"state_id": 2}, user["id"])
            if message_id is None and type == "email":
                message_id = self._message_id(ticket, user)
            article = self._store_article(
                ticket,
                {
                    "type_id": self._type_id(type),
                    "sender_id": 2,
                    "from": self._mail_from(user),
                    "to": "support@example.com" if type == "email" else None,
                    "subject": subject if subject is not None else f"Re: {ticket['title']}",
                    "body": body,
                    "content_type": content_type,
                    "internal": False,
                    "message_id": message_id,
                },
                actor_id=user["id"],
            )
            event = _TicketEvent(
                "update", ticket_id, user["id"], article_id=article["id"], changes=changes
            )
            jobs = self._evaluate_triggers([event])
        self._start_jobs(jobs)
        return int(article["id"])

    def move_ticket_as_agent(
        self, ticket_id: int, group: str, *, agent: str = "anna.agent@example.com"
    ) -> None:
        """An agent moves the ticket to ``group`` by hand in the UI; fire triggers
        (``updated_by`` = that agent, no article)."""
        with self._lock:
            ticket = self._get_ticket(ticket_id)
            user = self._find_user(agent)
            grp = self._find_group(group)
            if user is None or grp is None:
                raise KeyError(agent if user is None else group)
            changes = self._apply_ticket_changes(ticket, {"group_id": grp["id"]}, user["id"])
            jobs = (
                self._evaluate_triggers(
                    [_TicketEvent("update", ticket_id, user["id"], changes=changes)]
                )
                if changes
                else []
            )
        self._start_jobs(jobs)

    def webhook_payload(self, ticket_id: int, article_id: int | None = None) -> bytes:
        """The exact default webhook body Zammad would send for this ticket/article now."""
        with self._lock:
            return rails_json(self._default_payload(ticket_id, article_id))

    # ------------------------------------------------------------------ seed data

    def _seed(self, token_permissions: tuple[str, ...]) -> None:
        t_install = "2025-03-10T09:10:00.000Z"
        t_prio = "2025-03-10T09:10:01.238Z"
        t_group = "2025-03-10T09:11:02.498Z"
        t_setup = "2025-03-10T09:15:00.000Z"
        t_org = "2025-04-02T14:00:00.000Z"
        t_emily = "2025-04-02T14:01:09.551Z"

        def user(
            uid: int,
            login: str,
            first: str,
            last: str,
            roles: list[int],
            *,
            email: str | None = None,
            org: int | None = None,
            groups: dict[str, list[str]] | None = None,
            active: bool = True,
            created: str = t_setup,
            created_by: int = 1,
        ) -> None:
            self.db.users[uid] = {
                "id": uid,
                "login": login,
                "firstname": first,
                "lastname": last,
                "email": login if email is None else email,
                "image": None,
                "organization_id": org,
                "active": active,
                "verified": False,
                "vip": False,
                "out_of_office": False,
                "role_ids": roles,
                "group_ids": groups or {},
                "password": None
                if uid == 1
                else "{sha2}" + hashlib.sha256(login.encode()).hexdigest(),
                "last_login": None,
                "login_failed": 0,
                "preferences": {} if uid == 1 else {"locale": "en-us"},
                "created_by_id": created_by,
                "updated_by_id": created_by,
                "created_at": created,
                "updated_at": created,
            }

        user(1, "-", "-", "", [], email="", active=False, created=t_install)
        user(2, "nicole.braun@zammad.org", "Nicole", "Braun", [3], org=1, created=t_install)
        user(3, "chris@example.com", "Chris", "Admin", [1, 2], groups={"1": ["full"]})
        user(4, self.connector_login, "BPSM", "Connector", [1, 2],
             email="bpsm-connector@example.com", created_by=3)  # fmt: skip
        user(5, "anna.agent@example.com", "Anna", "Agent", [2], created_by=3)
        user(6, "ola.nordmann@kunde.no", "Ola", "Nordmann", [3], created_by=3)
        user(8, "emily@customer.example", "Emily", "Adams", [3], org=3, created=t_emily)

        self.db.organizations[1] = self._org_record(1, "Zammad Foundation", t_install, 1, None, "")
        self.db.organizations[3] = self._org_record(
            3, "Awesome Customer Inc.", t_org, 3, "customer.example", ""
        )
        self.db.organizations[3]["updated_at"] = "2025-04-02T14:01:09.600Z"
        self.db.organizations[3]["updated_by_id"] = 1

        self.db.groups[1] = {
            "id": 1,
            "name": "Users",
            "active": True,
            "assignment_timeout": None,
            "email_address_id": 1,
            "follow_up_assignment": True,
            "follow_up_possible": "yes",
            "note": "Standard Group/Pool for Tickets.",
            "signature_id": 1,
            "created_by_id": 1,
            "updated_by_id": 1,
            "created_at": t_group,
            "updated_at": t_group,
        }
        for pid, name, default in (
            (1, "1 low", False),
            (2, "2 normal", True),
            (3, "3 high", False),
        ):
            self.db.priorities[pid] = {
                "id": pid,
                "name": name,
                "active": True,
                "default_create": default,
                "note": None,
                "ui_color": "high-priority" if pid == 3 else ("low-priority" if pid == 1 else None),
                "ui_icon": "important" if pid == 3 else ("low-priority" if pid == 1 else None),
                "created_by_id": 1,
                "updated_by_id": 1,
                "created_at": t_prio,
                "updated_at": t_prio,
            }
        self._tokens[self.token] = _Token(user_id=4, permissions=token_permissions)
        self._passwords["chris@example.com"] = "chris-password"

    @staticmethod
    def _org_record(
        oid: int, name: str, created: str, created_by: int, domain: str | None, note: str
    ) -> Record:
        return {
            "id": oid,
            "name": name,
            "active": True,
            "domain": domain or "",
            "domain_assignment": False,
            "note": note,
            "shared": True,
            "vip": False,
            "created_by_id": created_by,
            "updated_by_id": created_by,
            "created_at": created,
            "updated_at": created,
        }

    def add_token(
        self,
        token: str,
        login: str,
        permissions: Iterable[str] = DEFAULT_CONNECTOR_PERMISSIONS,
        *,
        expires_at: date | None = None,
    ) -> None:
        """Add another API token (e.g. one without permissions, or an expired one)."""
        with self._lock:
            self._tokens[token] = _Token(self.user_id(login), tuple(permissions), expires_at)

    # ------------------------------------------------------------------ lookups

    def _now(self) -> str:
        return rails_time(self._clock())

    def _alloc(self, kind: str) -> int:
        value = self._next_id[kind]
        self._next_id[kind] = value + 1
        return value

    def _find_user(self, login_or_email: Any) -> Record | None:
        if not isinstance(login_or_email, str):
            return None
        key = login_or_email.strip().lower()
        for u in self.db.users.values():
            if u["login"].lower() == key:
                return u
        for u in self.db.users.values():
            if u["email"] and u["email"].lower() == key:
                return u
        return None

    def _find_group(self, name: Any) -> Record | None:
        # Zammad's CanLookup compares names with == (case sensitive).
        return next((g for g in self.db.groups.values() if g["name"] == name), None)

    def _find_priority(self, name: Any) -> Record | None:
        return next((p for p in self.db.priorities.values() if p["name"] == name), None)

    def _find_org(self, name: Any) -> Record | None:
        return next((o for o in self.db.organizations.values() if o["name"] == name), None)

    @staticmethod
    def _state_id(name: Any) -> int | None:
        return next((i for i, n in STATES.items() if n == name), None)

    @staticmethod
    def _type_id(name: Any) -> int:
        tid = next((i for i, n in ARTICLE_TYPES.items() if n == name), None)
        if tid is None:
            raise ApiError(
                "unprocessable", f"No lookup value found for 'type': {_rb_inspect(name)}"
            )
        return tid

    def _get_ticket(self, ticket_id: Any) -> Record:
        tid = _as_int(ticket_id)
        ticket = self.db.tickets.get(tid) if tid is not None else None
        if ticket is None:
            raise _not_found("Ticket", ticket_id)
        return ticket

    def _agent_ticket(self, ctx: _Ctx, ticket_id: Any) -> Record:
        """The ticket, if the caller has agent access to its group (else Pundit's 403)."""
        ticket = self._get_ticket(ticket_id)
        self._require_group(ctx, ticket.get("group_id"))
        return ticket

    def _require_group(self, ctx: _Ctx, group_id: Any) -> None:
        allowed = self._group_access.get(ctx.auth.user_id)
        if allowed is not None and _as_int(group_id) not in allowed:
            raise ApiError("forbidden", "Not authorized")

    def _login(self, user_id: int | None) -> str | None:
        user = self.db.users.get(user_id) if user_id is not None else None
        return user["login"] if user else None

    def _message_id(self, ticket: Record, user: Record) -> str:
        domain = user["email"].split("@")[-1] or "mail.example"
        return f"<{ticket['number']}.{self._next_id['article']}@{domain}>"

    @staticmethod
    def _mail_from(user: Record) -> str:
        name = f"{user['firstname']} {user['lastname']}".strip()
        return f"{name} <{user['email']}>" if name else user["email"]

    def _user_permissions(self, user: Record) -> set[str]:
        perms: set[str] = set()
        for rid in user["role_ids"]:
            perms.update(ROLES[rid][1])
        return perms

    # ------------------------------------------------------------------ record views

    def _user_with_ids(self, u: Record) -> Record:
        data = {k: v for k, v in u.items() if k != "password"}
        data["group_ids"] = copy.deepcopy(u["group_ids"])
        return data

    def _user_names(self, u: Record) -> Record:
        data = self._user_with_ids(u)
        org = self.db.organizations.get(u["organization_id"]) if u["organization_id"] else None
        # The contract example keeps "organization": null for users without one.
        data["organization"] = org["name"] if org else None
        data["roles"] = [ROLES[r][0] for r in u["role_ids"]]
        data["groups"] = {
            self.db.groups[int(gid)]["name"]: access
            for gid, access in u["group_ids"].items()
            if int(gid) in self.db.groups
        }
        data["created_by"] = self._login(u["created_by_id"])
        data["updated_by"] = self._login(u["updated_by_id"])
        return data

    def _group_with_ids(self, g: Record) -> Record:
        data = dict(g)
        data["user_ids"] = sorted(
            u["id"] for u in self.db.users.values() if str(g["id"]) in u["group_ids"]
        )
        return data

    def _group_names(self, g: Record) -> Record:
        data = self._group_with_ids(g)
        data["users"] = [self.db.users[uid]["login"] for uid in data["user_ids"]]
        data["created_by"] = self._login(g["created_by_id"])
        data["updated_by"] = self._login(g["updated_by_id"])
        return data

    def _org_names(self, o: Record) -> Record:
        data = dict(o)
        data["member_ids"] = sorted(
            u["id"] for u in self.db.users.values() if u["organization_id"] == o["id"]
        )
        data["members"] = [self.db.users[uid]["login"] for uid in data["member_ids"]]
        data["created_by"] = self._login(o["created_by_id"])
        data["updated_by"] = self._login(o["updated_by_id"])
        return data

    def _priority_names(self, p: Record) -> Record:
        data = dict(p)
        data["created_by"] = self._login(p["created_by_id"])
        data["updated_by"] = self._login(p["updated_by_id"])
        return data

    def _ticket_with_ids(self, t: Record) -> Record:
        data = copy.deepcopy(t)
        data["article_ids"] = sorted(
            a["id"] for a in self.db.articles.values() if a["ticket_id"] == t["id"]
        )
        data["ticket_time_accounting_ids"] = sorted(
            ta["id"] for ta in self.db.time_accountings.values() if ta["ticket_id"] == t["id"]
        )
        return data

    def _ticket_names(self, t: Record) -> Record:
        """``attributes_with_association_names``: ids plus names/logins of associations."""
        data = self._ticket_with_ids(t)
        data["group"] = self.db.groups[t["group_id"]]["name"]
        if t["organization_id"] is not None:
            data["organization"] = self.db.organizations[t["organization_id"]]["name"]
        data["state"] = STATES[t["state_id"]]
        data["priority"] = self.db.priorities[t["priority_id"]]["name"]
        data["owner"] = self._login(t["owner_id"])
        data["customer"] = self._login(t["customer_id"])
        if t["create_article_type_id"] is not None:
            data["create_article_type"] = ARTICLE_TYPES[t["create_article_type_id"]]
        if t["create_article_sender_id"] is not None:
            data["create_article_sender"] = SENDERS[t["create_article_sender_id"]]
        if not data["ticket_time_accounting_ids"]:
            # has_many without names: [] when empty, key dropped otherwise (CanAssociations)
            data["ticket_time_accounting"] = []
        data["created_by"] = self._login(t["created_by_id"])
        data["updated_by"] = self._login(t["updated_by_id"])
        return data

    def _article_names(self, a: Record) -> Record:
        data = {k: copy.deepcopy(v) for k, v in a.items() if k != "attachments"}
        data["type"] = ARTICLE_TYPES[a["type_id"]]
        data["sender"] = SENDERS[a["sender_id"]]
        data["created_by"] = self._login(a["created_by_id"])
        data["updated_by"] = self._login(a["updated_by_id"])
        if a["origin_by_id"] is not None:
            data["origin_by"] = self._login(a["origin_by_id"])
        data["attachments"] = copy.deepcopy(a["attachments"])
        return data

    # ------------------------------------------------------------------ webhook payload

    def _associated_payload(self, table: str, record_id: Any) -> Record:
        if _blank(record_id):
            return {}
        if table == "users":
            u = self.db.users.get(record_id)
            if u is None:
                return {}
            names = dict(sorted(self._user_names(u).items()))
            return {k: v for k, v in names.items() if k not in USER_ATTRIBUTE_BLACKLIST}
        if table == "groups":
            return dict(sorted(self._group_names(self.db.groups[record_id]).items()))
        if table == "organizations":
            return dict(sorted(self._org_names(self.db.organizations[record_id]).items()))
        if table == "priorities":
            return dict(sorted(self._priority_names(self.db.priorities[record_id]).items()))
        raise KeyError(table)

    def _ticket_payload(self, t: Record) -> Record:
        """``TriggerWebhookJob::RecordPayload::Ticket#generate``."""
        result = dict(sorted(self._ticket_names(t).items()))
        for name, table in TICKET_ASSOCIATIONS:
            # Ruby: an existing key keeps its place, a missing one is appended.
            result[name] = self._associated_payload(table, result.get(f"{name}_id"))
        return result

    def _article_payload(self, a: Record) -> Record:
        """``TriggerWebhookJob::RecordPayload::Ticket::Article#generate``."""
        result = dict(sorted(self._article_names(a).items()))
        for name, table in ARTICLE_ASSOCIATIONS:
            result[name] = self._associated_payload(table, result.get(f"{name}_id"))
        for attachment in result.get("attachments") or []:
            attachment["url"] = (
                f"http://zammad.example.com/api/v1/ticket_attachment/"
                f"{result['ticket_id']}/{result['id']}/{attachment['id']}"
            )
        accounting = next(
            (ta for ta in self.db.time_accountings.values() if ta["ticket_article_id"] == a["id"]),
            None,
        )
        result["accounted_time"] = int(float(accounting["time_unit"])) if accounting else 0
        return result

    def _default_payload(self, ticket_id: int, article_id: int | None) -> Record:
        ticket = self._get_ticket(ticket_id)
        article = self.db.articles.get(article_id) if article_id is not None else None
        return {
            "ticket": self._ticket_payload(ticket),
            "article": self._article_payload(article) if article else {},
        }

    def _custom_payload(
        self,
        template: str,
        ticket_id: int,
        article_id: int | None,
        trigger: Record,
        webhook: Record,
    ) -> bytes:
        """Render ``#{object.attribute}`` placeholders of a custom payload, then ``to_json``."""
        data = self._default_payload(ticket_id, article_id)
        data["ticket"]["tags"] = ", ".join(self.db.ticket_tags.get(ticket_id, []))
        scope: Record = {
            **data,
            "webhook": {"name": webhook["name"]},
            "notification": {"subject": data["ticket"]["title"]},
            "event": {"type": "trigger", "execution": trigger["activator"]},
        }

        def resolve(match: re.Match[str]) -> str:
            value: Any = scope
            for part in match.group(1).strip().split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is None or isinstance(value, (dict, list)):
                text = "" if value is None else json.dumps(value)
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            return json.dumps(text, ensure_ascii=False)[1:-1]

        rendered = re.sub(r"#\{([^}]*)\}", resolve, template)
        return rails_json(json.loads(rendered))

    # ------------------------------------------------------------------ mutations

    def _insert_group(
        self, name: Any, *, note: Any = None, actor_id: int, extra: Record | None = None
    ) -> Record:
        if _blank(name):
            raise _invalid("Name can't be blank")
        if any(g["name"].lower() == str(name).lower() for g in self.db.groups.values()):
            raise ApiError(
                "statement",
                "PG::UniqueViolation: ERROR:  duplicate key value violates unique constraint "
                '"index_groups_on_name"',
            )
        now = self._now()
        extra = extra or {}
        group = {
            "id": self._alloc("group"),
            "name": str(name),
            "active": _cast_bool(extra.get("active")) is not False,
            "assignment_timeout": _as_int(extra.get("assignment_timeout")),
            "email_address_id": _as_int(extra.get("email_address_id")),
            "follow_up_assignment": _cast_bool(extra.get("follow_up_assignment")) is not False,
            "follow_up_possible": str(extra.get("follow_up_possible") or "yes"),
            "note": note,
            "signature_id": _as_int(extra.get("signature_id")),
            "created_by_id": actor_id,
            "updated_by_id": actor_id,
            "created_at": now,
            "updated_at": now,
        }
        self.db.groups[group["id"]] = group
        return group

    def _insert_ticket(self, clean: Record, *, actor_id: int) -> Record:
        """Validate and insert a ticket (no article yet). ``clean`` holds ids, not names."""
        errors = []
        group_id = _as_int(clean.get("group_id"))
        if _blank(clean.get("group_id")):
            errors.append("Group can't be blank")
        if _blank(clean.get("title")):
            errors.append("Title can't be blank")
        if errors:
            raise _invalid(*errors)
        if group_id not in self.db.groups:
            raise _fk_violation("tickets", "group_id", clean.get("group_id"), "groups")
        customer_id = _as_int(clean.get("customer_id"))
        if clean.get("customer_id") is None:
            raise _not_null("customer_id")
        if customer_id not in self.db.users:
            raise _fk_violation("tickets", "customer_id", clean.get("customer_id"), "users")
        state_id = _as_int(clean.get("state_id")) if clean.get("state_id") is not None else 1
        if state_id not in STATES:
            raise _fk_violation("tickets", "state_id", clean.get("state_id"), "ticket_states")
        default_priority = next(p["id"] for p in self.db.priorities.values() if p["default_create"])
        priority_id = (
            _as_int(clean.get("priority_id"))
            if clean.get("priority_id") is not None
            else default_priority
        )
        if priority_id not in self.db.priorities:
            raise _fk_violation(
                "tickets", "priority_id", clean.get("priority_id"), "ticket_priorities"
            )
        owner_id = _as_int(clean.get("owner_id")) if clean.get("owner_id") is not None else 1
        if owner_id not in self.db.users:
            raise _fk_violation("tickets", "owner_id", clean.get("owner_id"), "users")
        pending_time = self._cast_time(clean.get("pending_time"))
        if not STATES[state_id].startswith("pending"):
            pending_time = None

        tid = self._alloc("ticket")
        now = self._now()
        counter = str(tid)
        pad = max(5 - len(SYSTEM_ID), len(counter))
        ticket: Record = {
            "id": tid,
            "group_id": group_id,
            "priority_id": priority_id,
            "state_id": state_id,
            "organization_id": self.db.users[customer_id]["organization_id"],
            "number": SYSTEM_ID + counter.zfill(pad),
            "title": str(clean["title"]).strip(),
            "owner_id": owner_id,
            "customer_id": customer_id,
            "note": clean.get("note"),
            "first_response_at": None,
            "first_response_escalation_at": None,
            "first_response_in_min": None,
            "first_response_diff_in_min": None,
            "close_at": now if STATES[state_id] == "closed" else None,
            "close_escalation_at": None,
            "close_in_min": None,
            "close_diff_in_min": None,
            "update_escalation_at": None,
            "update_in_min": None,
            "update_diff_in_min": None,
            "last_close_at": now if STATES[state_id] == "closed" else None,
            "last_contact_at": None,
            "last_contact_agent_at": None,
            "last_contact_customer_at": None,
            "last_owner_update_at": now if owner_id != 1 else None,
            "create_article_type_id": None,
            "create_article_sender_id": None,
            "article_count": 0,
            "escalation_at": None,
            "pending_time": pending_time,
            "type": clean.get("type"),
            "time_unit": None,
            "preferences": copy.deepcopy(clean.get("preferences") or {}),
            "updated_by_id": actor_id,
            "created_by_id": actor_id,
            "created_at": now,
            "updated_at": now,
        }
        self.db.tickets[tid] = ticket
        self.db.ticket_tags[tid] = []
        return ticket

    def _cast_time(self, value: Any) -> str | None:
        if _blank(value) or not isinstance(value, str):
            return None
        try:
            return rails_time(parse_time(value))
        except ValueError:
            return None  # Rails casts unparsable times to nil

    def _convert_names(self, params: Record, lookups: dict[str, tuple[str, str]]) -> Record:
        """``association_name_to_id_convert``: ``{"group": "X"}`` → ``{"group_id": 5}``."""
        data = dict(params)
        for assoc, (ref, kind) in lookups.items():
            value = data.get(assoc)
            if not _truthy(value) or _truthy(data.get(ref)):
                continue
            if kind == "user":
                if not isinstance(value, str):
                    raise ApiError(
                        "unprocessable",
                        f"String is needed as ref value {_rb_inspect(value)} for '{assoc}'",
                    )
                found: Any = self._find_user(value)
                found_id = found["id"] if found else None
            elif kind == "group":
                found_id = (g := self._find_group(value)) and g["id"]
            elif kind == "priority":
                found_id = (p := self._find_priority(value)) and p["id"]
            elif kind == "state":
                found_id = self._state_id(value)
            elif kind == "organization":
                found_id = (o := self._find_org(value)) and o["id"]
            elif kind == "type":
                found_id = next((i for i, n in ARTICLE_TYPES.items() if n == value), None)
            elif kind == "sender":
                found_id = next((i for i, n in SENDERS.items() if n == value), None)
            else:  # pragma: no cover
                raise KeyError(kind)
            if not found_id:
                raise ApiError(
                    "unprocessable", f"No lookup value found for '{assoc}': {_rb_inspect(value)}"
                )
            del data[assoc]
            data[ref] = found_id
        return data

    _TICKET_LOOKUPS: dict[str, tuple[str, str]] = {
        "group": ("group_id", "group"),
        "organization": ("organization_id", "organization"),
        "state": ("state_id", "state"),
        "priority": ("priority_id", "priority"),
        "owner": ("owner_id", "user"),
        "customer": ("customer_id", "user"),
    }
    _TICKET_UPDATABLE = (
        "title",
        "group_id",
        "priority_id",
        "state_id",
        "owner_id",
        "customer_id",
        "organization_id",
        "pending_time",
        "note",
        "type",
        "preferences",
    )

    def _validate_ticket_changes(self, ticket: Record, clean: Record) -> Record:
        """Check an update (``clean`` has ids) and return the new column values."""
        new: Record = {}
        errors = []
        for key in self._TICKET_UPDATABLE:
            if key not in clean:
                continue
            value = clean[key]
            if key == "title":
                if _blank(value):
                    errors.append("Title can't be blank")
                else:
                    new[key] = str(value).strip()
            elif key == "group_id":
                if _blank(value):
                    errors.append("Group can't be blank")
                elif _as_int(value) not in self.db.groups:
                    raise _fk_violation("tickets", key, value, "groups")
                else:
                    new[key] = _as_int(value)
            elif key in ("priority_id", "state_id", "owner_id", "customer_id", "organization_id"):
                tables: dict[str, Mapping[int, Any]] = {
                    "priority_id": self.db.priorities,
                    "state_id": STATES,
                    "owner_id": self.db.users,
                    "customer_id": self.db.users,
                    "organization_id": self.db.organizations,
                }
                table = tables[key]
                if _blank(value):
                    if key != "organization_id":
                        raise _not_null(key)
                    new[key] = None
                elif _as_int(value) not in table:
                    ref_table = {
                        "priority_id": "ticket_priorities",
                        "state_id": "ticket_states",
                        "organization_id": "organizations",
                    }.get(key, "users")
                    raise _fk_violation("tickets", key, value, ref_table)
                else:
                    new[key] = _as_int(value)
            elif key == "pending_time":
                new[key] = self._cast_time(value)
            elif key == "preferences":
                if isinstance(value, dict):
                    merged = copy.deepcopy(ticket["preferences"])
                    merged.update(copy.deepcopy(value))
                    new[key] = merged
            else:
                new[key] = None if value is None else str(value)
        if errors:
            raise _invalid(*errors)
        return new

    def _apply_ticket_changes(
        self, ticket: Record, new: Record, actor_id: int
    ) -> dict[str, list[Any]]:
        """Apply validated column values with Zammad's callbacks; return the changes."""
        new = dict(new)
        if "customer_id" in new and new["customer_id"] != ticket["customer_id"]:
            new.setdefault("organization_id", self.db.users[new["customer_id"]]["organization_id"])
        state_changed = "state_id" in new and new["state_id"] != ticket["state_id"]
        if state_changed and not STATES[new["state_id"]].startswith("pending"):
            new["pending_time"] = None  # Ticket#reset_pending_time
        changes = {k: [ticket[k], v] for k, v in new.items() if ticket.get(k) != v}
        if not changes:
            return {}
        now = self._now()
        ticket.update({k: v[1] for k, v in changes.items()})
        if "owner_id" in changes:
            ticket["last_owner_update_at"] = now
        if state_changed and STATES[ticket["state_id"]] == "closed":
            ticket["close_at"] = ticket["close_at"] or now
            ticket["last_close_at"] = now
        ticket["updated_at"] = now
        ticket["updated_by_id"] = actor_id
        return changes

    def _prepare_article(self, params: Any, auth: _Auth) -> Record:
        """``CreatesTicketArticles#article_create`` up to ``Ticket::Article.new``."""
        if not isinstance(params, dict):
            raise ApiError("unprocessable", "Need at least an 'article body' field.")
        if params.get("body") is None:
            raise ApiError("unprocessable", "Need at least an 'article body' field.")
        params = dict(params)
        if _blank(params.get("type_id")) and _blank(params.get("type")):
            params["type_id"] = 10  # note
        is_agent = auth.has("ticket.agent")
        if _blank(params.get("sender_id")) and _blank(params.get("sender")):
            params["sender_id"] = 1 if is_agent else 2
        clean = self._convert_names(
            params,
            {
                "type": ("type_id", "type"),
                "sender": ("sender_id", "sender"),
                "origin_by": ("origin_by_id", "user"),
            },
        )
        type_id = _as_int(clean.get("type_id"))
        if type_id not in ARTICLE_TYPES:
            raise _fk_violation(
                "ticket_articles", "type_id", clean.get("type_id"), "ticket_article_types"
            )
        sender_id = _as_int(clean.get("sender_id"))
        if sender_id not in SENDERS:
            raise _fk_violation(
                "ticket_articles", "sender_id", clean.get("sender_id"), "ticket_article_senders"
            )
        internal = bool(_cast_bool(clean.get("internal")))
        origin_by_id = _as_int(clean.get("origin_by_id"))
        if not is_agent:
            sender_id = 2
            origin_by_id = None
            if ARTICLE_TYPES[type_id] not in ("note", "web"):
                type_id = 10
            internal = False
        attachments = []
        for index, attachment in enumerate(params.get("attachments") or []):
            for key in ("mime-type", "filename", "data"):
                if not isinstance(attachment, dict) or not attachment.get(key):
                    raise ApiError(
                        "unprocessable",
                        f"Attachment needs '{key}' param for attachment with index '{index}'",
                    )
            try:
                raw = base64.b64decode(re.sub(r"[\r\n]", "", attachment["data"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ApiError(
                    "unprocessable", f"Invalid base64 for attachment with index '{index}'"
                ) from exc
            prefs = {"Mime-Type": attachment["mime-type"]}
            if attachment.get("charset"):
                prefs["Charset"] = attachment["charset"]
            attachments.append(
                {"filename": attachment["filename"], "size": str(len(raw)), "preferences": prefs}
            )
        time_unit = params.get("time_unit")
        if not _blank(time_unit):
            try:
                float(time_unit)
            except (TypeError, ValueError) as exc:
                raise _invalid("Time unit is not a number") from exc
        message_id = clean.get("message_id")
        return {
            "type_id": type_id,
            "sender_id": sender_id,
            "from": clean.get("from"),
            "to": clean.get("to"),
            "cc": clean.get("cc"),
            "subject": clean.get("subject"),
            "reply_to": clean.get("reply_to"),
            "message_id": message_id,
            "message_id_md5": None,
            "in_reply_to": clean.get("in_reply_to"),
            "content_type": clean.get("content_type") or "text/plain",
            "references": clean.get("references"),
            "body": str(clean["body"]),
            "internal": internal,
            "preferences": copy.deepcopy(clean.get("preferences") or {}),
            "origin_by_id": origin_by_id,
            "_attachments": attachments,
            "_time_unit": None if _blank(time_unit) else time_unit,
        }

    def _store_article(self, ticket: Record, prepared: Record, *, actor_id: int) -> Record:
        """Insert an article and update the ticket the way Zammad's article callbacks do."""
        prepared = dict(prepared)
        attachments = prepared.pop("_attachments", [])
        time_unit = prepared.pop("_time_unit", None)
        actor = self.db.users[actor_id]
        if _blank(prepared.get("from")):
            prepared["from"] = f"{actor['firstname']} {actor['lastname']}".strip()
        if prepared.get("message_id") and not prepared.get("message_id_md5"):
            prepared["message_id_md5"] = hashlib.md5(prepared["message_id"].encode()).hexdigest()
        now = self._now()
        aid = self._alloc("article")
        article: Record = {
            "id": aid,
            "ticket_id": ticket["id"],
            "type_id": prepared["type_id"],
            "sender_id": prepared["sender_id"],
            "from": prepared.get("from"),
            "to": prepared.get("to"),
            "cc": prepared.get("cc"),
            "subject": prepared.get("subject"),
            "reply_to": prepared.get("reply_to"),
            "message_id": prepared.get("message_id"),
            "message_id_md5": prepared.get("message_id_md5"),
            "in_reply_to": prepared.get("in_reply_to"),
            "content_type": prepared.get("content_type") or "text/plain",
            "references": prepared.get("references"),
            "body": prepared["body"],
            "internal": bool(prepared.get("internal")),
            "preferences": prepared.get("preferences") or {},
            "updated_by_id": actor_id,
            "created_by_id": actor_id,
            "origin_by_id": prepared.get("origin_by_id"),
            "time_unit": None,
            "created_at": now,
            "updated_at": now,
            "attachments": [],
        }
        for attachment in attachments:
            article["attachments"].append({"id": self._alloc("attachment"), **attachment})
        self.db.articles[aid] = article

        if time_unit is not None:
            ta_id = self._alloc("time_accounting")
            self.db.time_accountings[ta_id] = {
                "id": ta_id,
                "ticket_id": ticket["id"],
                "ticket_article_id": aid,
                "time_unit": f"{float(time_unit):.1f}",
                "created_by_id": actor_id,
                "created_at": now,
            }
            total = sum(
                float(ta["time_unit"])
                for ta in self.db.time_accountings.values()
                if ta["ticket_id"] == ticket["id"]
            )
            ticket["time_unit"] = f"{total:.1f}"  # BigDecimal renders as a string

        ticket["article_count"] = sum(
            1 for a in self.db.articles.values() if a["ticket_id"] == ticket["id"]
        )
        if ticket["create_article_type_id"] is None:
            ticket["create_article_type_id"] = article["type_id"]
            ticket["create_article_sender_id"] = article["sender_id"]
        sender = SENDERS[article["sender_id"]]
        if sender == "Customer":
            ticket["last_contact_at"] = now
            ticket["last_contact_customer_at"] = now
        elif sender == "Agent" and not article["internal"]:
            ticket["last_contact_at"] = now
            ticket["last_contact_agent_at"] = now
            ticket["first_response_at"] = ticket["first_response_at"] or now
        ticket["updated_by_id"] = actor_id
        ticket["updated_at"] = self._now()
        return article

    def _insert_webhook(
        self, params: Record, actor_id: int, existing: Record | None = None
    ) -> Record:
        fields: Record = {
            "name": None,
            "endpoint": None,
            "signature_token": None,
            "ssl_verify": True,
            "basic_auth_username": None,
            "basic_auth_password": None,
            "pre_defined_webhook_type": None,
            "customized_payload": False,
            "custom_payload": None,
            "note": None,
            "preferences": {},
            "active": True,
        }
        record = dict(existing) if existing else dict(fields)
        for key in fields:
            if key in params:
                value = params[key]
                if key in ("ssl_verify", "customized_payload", "active"):
                    value = bool(_cast_bool(value)) if value is not None else fields[key]
                record[key] = value
        errors = []
        if _blank(record["name"]):
            errors.append("Name can't be blank")
        endpoint = record["endpoint"]
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https"):
            errors.append(
                "Endpoint The provided endpoint is invalid, "
                "no http or https protocol was specified."
            )
        elif not parts.hostname:
            errors.append("Endpoint The provided endpoint is invalid, no hostname was specified.")
        if record["note"] is not None and len(str(record["note"])) > 500:
            errors.append("Note is too long (maximum is 500 characters)")
        if not record["customized_payload"]:
            record["custom_payload"] = None
        elif not _blank(record["custom_payload"]):
            try:
                json.loads(re.sub(r"#\{[^}]*\}", "x", str(record["custom_payload"])))
            except ValueError:
                errors.append(
                    "Custom payload The provided payload is invalid. Please check your syntax."
                )
        if errors:
            raise _invalid(*errors)
        now = self._now()
        if existing is None:
            record["id"] = self._alloc("webhook")
            record["created_by_id"] = actor_id
            record["created_at"] = now
        record["updated_by_id"] = actor_id
        record["updated_at"] = now
        self.db.webhooks[record["id"]] = record
        return record

    def _insert_trigger(
        self, params: Record, actor_id: int, existing: Record | None = None
    ) -> Record:
        fields: Record = {
            "name": None,
            "condition": {},
            "perform": {},
            "disable_notification": True,
            "note": None,
            "activator": "action",
            "execution_condition_mode": "selective",
            "localization": None,
            "timezone": None,
            "active": True,
        }
        record = copy.deepcopy(existing) if existing else copy.deepcopy(fields)
        for key in fields:
            if key in params:
                value = params[key]
                if key in ("active", "disable_notification"):
                    value = bool(_cast_bool(value)) if value is not None else fields[key]
                record[key] = copy.deepcopy(value)
        if not isinstance(record["condition"], dict) or not self._valid_selector(
            record["condition"]
        ):
            raise ApiError("unprocessable", "Invalid ticket selector conditions")
        errors = []
        if _blank(record["name"]):
            errors.append("Name can't be blank")
        elif any(
            str(t["name"]).lower() == str(record["name"]).lower() and t["id"] != record.get("id")
            for t in self.db.triggers.values()
        ):
            errors.append("Name has already been taken")
        if not isinstance(record["perform"], dict) or not record["perform"]:
            errors.append("Perform is invalid")
        if record["activator"] not in ("action", "time"):
            errors.append("Activator is not included in the list")
        if record["execution_condition_mode"] not in ("selective", "always"):
            errors.append("Execution condition mode is not included in the list")
        if record["note"] is not None and len(str(record["note"])) > 250:
            errors.append("Note is too long (maximum is 250 characters)")
        if errors:
            raise _invalid(*errors)
        now = self._now()
        if existing is None:
            record["id"] = self._alloc("trigger")
            record["created_by_id"] = actor_id
            record["created_at"] = now
        record["updated_by_id"] = actor_id
        record["updated_at"] = now
        self.db.triggers[record["id"]] = record
        return record

    # ------------------------------------------------------------------ triggers

    def _valid_selector(self, selector: Any) -> bool:
        if not isinstance(selector, dict) or not selector:
            return False
        if isinstance(selector.get("conditions"), list):  # expert mode
            return all(self._valid_selector_item(c) for c in selector["conditions"])
        return all(
            isinstance(k, str) and "." in k and isinstance(v, dict) and "operator" in v
            for k, v in selector.items()
        )

    def _valid_selector_item(self, item: Any) -> bool:
        if isinstance(item, dict) and isinstance(item.get("conditions"), list):
            return self._valid_selector(item)
        return isinstance(item, dict) and "name" in item and "operator" in item

    def _evaluate_triggers(self, events: Iterable[_TicketEvent]) -> list[_Job]:
        """``Ticket.perform_triggers`` for each transaction: active action triggers in name
        order; the webhook perform enqueues a ``TriggerWebhookJob``."""
        jobs: list[_Job] = []
        triggers = sorted(
            (t for t in self.db.triggers.values() if t["active"] and t["activator"] == "action"),
            key=lambda t: t["name"],
        )
        for event in events:
            ticket = self.db.tickets.get(event.ticket_id)
            if ticket is None:
                continue
            article = self.db.articles.get(event.article_id) if event.article_id else None
            if article is not None:
                event.user_id = article["updated_by_id"]
            else:
                event.user_id = ticket["updated_by_id"]
            for trigger in triggers:
                selector = trigger["condition"]
                if trigger[
                    "execution_condition_mode"
                ] == "selective" and not self._selector_changed(selector, event):
                    continue
                if not self._selector_matches(selector, event, ticket, article):
                    continue
                webhook_id = (trigger["perform"].get("notification.webhook") or {}).get(
                    "webhook_id"
                )
                if _as_int(webhook_id) is None:
                    continue
                jobs.append(
                    _Job(
                        trigger_id=trigger["id"],
                        trigger_name=trigger["name"],
                        webhook_id=int(_as_int(webhook_id) or 0),
                        ticket_id=event.ticket_id,
                        article_id=event.article_id,
                        delivery_id=str(uuid.uuid4()),
                    )
                )
        return jobs

    @staticmethod
    def _selector_keys(selector: Record) -> list[str]:
        if isinstance(selector.get("conditions"), list):
            keys: list[str] = []
            for item in selector["conditions"]:
                if isinstance(item.get("conditions"), list):
                    keys.extend(FakeZammad._selector_keys(item))
                else:
                    keys.append(item["name"])
            return keys
        return list(selector)

    def _selector_changed(self, selector: Record, event: _TicketEvent) -> bool:
        """Selective mode: fire only if a condition attribute changed (or an article came)."""
        if event.type == "create":
            return True
        keys = [
            k for k in self._selector_keys(selector) if k not in ("ticket.action", "article.action")
        ]
        if "article.action" in self._selector_keys(selector) and event.article_id:
            return True
        if not keys:
            return True
        for key in keys:
            obj, _, attr = key.partition(".")
            if obj == "article" and event.article_id:
                return True
            if obj == "ticket" and (attr in event.changes or f"{attr}_id" in event.changes):
                return True
        return False

    def _selector_matches(
        self, selector: Record, event: _TicketEvent, ticket: Record, article: Record | None
    ) -> bool:
        if isinstance(selector.get("conditions"), list):
            return self._expert_matches(selector, event, ticket, article)
        return all(
            self._condition_matches(key, spec, event, ticket, article)
            for key, spec in selector.items()
        )

    def _expert_matches(
        self, node: Record, event: _TicketEvent, ticket: Record, article: Record | None
    ) -> bool:
        results = []
        for item in node["conditions"]:
            if isinstance(item.get("conditions"), list):
                results.append(self._expert_matches(item, event, ticket, article))
            else:
                results.append(self._condition_matches(item["name"], item, event, ticket, article))
        operator = str(node.get("operator", "AND")).upper()
        if operator == "OR":
            return any(results)
        if operator == "NOT":
            return not any(results)
        return all(results)

    def _condition_matches(
        self,
        key: str,
        spec: Record,
        event: _TicketEvent,
        ticket: Record,
        article: Record | None,
    ) -> bool:
        operator = str(spec.get("operator", "")).lower()
        pre = spec.get("pre_condition")
        raw = spec.get("value")
        if pre == "current_user.id":
            expected: list[Any] = [event.user_id]
        elif pre == "not_set":
            expected = [None]
        else:
            expected = raw if isinstance(raw, list) else [raw]

        obj, _, attr = key.partition(".")
        if key == "ticket.action":
            actual: Any = event.type
        elif key == "article.action":
            actual = "create" if event.article_id else None
        elif obj == "ticket":
            if attr == "tags":
                actual = self.db.ticket_tags.get(ticket["id"], [])
            else:
                view = self._ticket_names(ticket)
                if attr not in view:
                    return False
                actual = view[attr]
        elif obj == "article":
            if article is None:
                return False
            view = self._article_names(article)
            if attr not in view:
                return False
            actual = view[attr]
        elif obj in ("customer", "organization", "owner"):
            ref = {
                "customer": "customer_id",
                "owner": "owner_id",
                "organization": "organization_id",
            }[obj]
            rid = ticket[ref]
            if rid is None:
                actual = None
            elif obj == "organization":
                actual = self._org_names(self.db.organizations[rid]).get(attr)
            else:
                actual = self._user_names(self.db.users[rid]).get(attr)
        else:
            return False
        return self._compare(operator, actual, expected, attr, event)

    @staticmethod
    def _norm(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def _compare(
        self, operator: str, actual: Any, expected: list[Any], attr: str, event: _TicketEvent
    ) -> bool:
        wanted = {self._norm(v) for v in expected}
        if operator in ("is", "is not"):
            if isinstance(actual, list):
                hit = any(self._norm(a) in wanted for a in actual)
            else:
                hit = self._norm(actual) in wanted
            return hit if operator == "is" else not hit
        text = "" if actual is None else str(actual).lower()
        needle = "" if not expected or expected[0] is None else str(expected[0]).lower()
        if operator in ("contains", "contains not"):
            hit = needle in text
            return hit if operator == "contains" else not hit
        if operator == "starts with":
            return text.startswith(needle)
        if operator == "ends with":
            return text.endswith(needle)
        if operator in ("matches regex", "does not match regex"):
            hit = re.search(str(expected[0]), "" if actual is None else str(actual)) is not None
            return hit if operator == "matches regex" else not hit
        if operator == "has changed":
            return attr in event.changes or f"{attr}_id" in event.changes
        if operator.startswith("contains all") or operator.startswith("contains one"):
            tags = {t.lower() for t in (actual or [])}
            values = (
                expected[0] if len(expected) == 1 and isinstance(expected[0], str) else expected
            )
            if isinstance(values, str):
                values = [v.strip() for v in values.split(",")]
            asked = {str(v).lower() for v in values if v}
            hit = asked <= tags if operator.startswith("contains all") else bool(asked & tags)
            return not hit if operator.endswith(" not") else hit
        return False

    # ------------------------------------------------------------------ webhook jobs

    def _start_jobs(self, jobs: list[_Job]) -> None:
        for job in jobs:
            with self._cond:
                self._jobs_in_flight += 1
            thread = threading.Thread(target=self._run_job, args=(job,), daemon=True)
            thread.name = f"fake-zammad-webhook-{job.delivery_id[:8]}"
            with self._lock:
                self._job_threads = [t for t in self._job_threads if t.is_alive()]
                self._job_threads.append(thread)
            thread.start()

    def _run_job(self, job: _Job) -> None:
        """``TriggerWebhookJob#perform`` with ``retry_on ... attempts: 5, wait: executions * x``.

        Like the real job, records are re-read from the database on every execution, so a
        retry carries the ticket as it is then (with the same delivery id).
        """
        try:
            for execution in range(1, self.retry_attempts + 1):
                if self._stopping.is_set():
                    return
                with self._lock:
                    webhook = self.db.webhooks.get(job.webhook_id)
                    trigger = self.db.triggers.get(job.trigger_id)
                    if webhook is None or not webhook["active"] or trigger is None:
                        return  # logged and skipped by Zammad
                    if job.ticket_id not in self.db.tickets:
                        return  # ActiveJob::DeserializationError: discarded
                    if webhook["customized_payload"] and not _blank(webhook["custom_payload"]):
                        body = self._custom_payload(
                            webhook["custom_payload"],
                            job.ticket_id,
                            job.article_id,
                            trigger,
                            webhook,
                        )
                    else:
                        body = rails_json(self._default_payload(job.ticket_id, job.article_id))
                    headers = build_webhook_headers(
                        body, trigger["name"], job.delivery_id, webhook["signature_token"]
                    )
                    headers["Accept-Encoding"] = "gzip;q=1.0,deflate;q=0.6,identity;q=0.3"
                    headers["Accept"] = "*/*"
                    endpoint = str(webhook["endpoint"])
                    auth = None
                    if webhook["basic_auth_username"] and webhook["basic_auth_password"]:
                        auth = (webhook["basic_auth_username"], webhook["basic_auth_password"])
                    verify = bool(webhook["ssl_verify"])
                status, error, sent_headers = self._post(endpoint, headers, body, auth, verify)
                with self._cond:
                    self._deliveries.append(
                        Delivery(
                            delivery_id=job.delivery_id,
                            trigger=job.trigger_name,
                            webhook_id=job.webhook_id,
                            attempt=execution,
                            url=endpoint,
                            headers=sent_headers,
                            body=body,
                            status=status,
                            error=error,
                            at=time.time(),
                        )
                    )
                    self._cond.notify_all()
                if status is not None and 200 <= status < 300:
                    return
                if execution < self.retry_attempts:
                    self._stopping.wait(execution * self.retry_wait)
        finally:
            with self._cond:
                self._jobs_in_flight -= 1
                self._cond.notify_all()

    def _post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        auth: tuple[str, str] | None,
        verify: bool,
    ) -> tuple[int | None, str | None, dict[str, str]]:
        with requests.Session() as session:
            session.headers.clear()
            session.trust_env = False
            prepared = session.prepare_request(
                requests.Request("POST", url, data=body, headers=headers, auth=auth)
            )
            sent = dict(prepared.headers)
            try:
                response = session.send(
                    prepared, allow_redirects=False, timeout=self.delivery_timeout, verify=verify
                )
                response.close()
                return response.status_code, None, sent
            except requests.RequestException as exc:
                return None, f"{type(exc).__name__}: {exc}", sent

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_routes(self) -> Map:
        r = Rule
        return Map(
            [
                r("/api/v1/users/me", endpoint="users_me", methods=["GET"]),
                r("/api/v1/users/<id>", endpoint="users_show", methods=["GET"]),
                r("/api/v1/groups", endpoint="groups_index", methods=["GET"]),
                r("/api/v1/groups", endpoint="groups_create", methods=["POST"]),
                r("/api/v1/groups/<id>", endpoint="groups_destroy", methods=["DELETE"]),
                r("/api/v1/tickets", endpoint="tickets_index", methods=["GET"]),
                r("/api/v1/tickets", endpoint="tickets_create", methods=["POST"]),
                r("/api/v1/tickets/search", endpoint="tickets_search", methods=["GET", "POST"]),
                r("/api/v1/tickets/<id>", endpoint="tickets_show", methods=["GET"]),
                r("/api/v1/tickets/<id>", endpoint="tickets_update", methods=["PUT"]),
                r("/api/v1/tags", endpoint="tags_list", methods=["GET"]),
                r("/api/v1/tags/add", endpoint="tags_add", methods=["POST"]),
                r("/api/v1/tags/remove", endpoint="tags_remove", methods=["DELETE"]),
                r("/api/v1/ticket_articles", endpoint="articles_create", methods=["POST"]),
                r("/api/v1/ticket_articles/<id>", endpoint="articles_show", methods=["GET"]),
                r(
                    "/api/v1/ticket_articles/by_ticket/<id>",
                    endpoint="articles_by_ticket",
                    methods=["GET"],
                ),
                r("/api/v1/webhooks", endpoint="webhooks_index", methods=["GET"]),
                r("/api/v1/webhooks", endpoint="webhooks_create", methods=["POST"]),
                r("/api/v1/webhooks/<id>", endpoint="webhooks_show", methods=["GET"]),
                r("/api/v1/webhooks/<id>", endpoint="webhooks_update", methods=["PUT"]),
                r("/api/v1/webhooks/<id>", endpoint="webhooks_destroy", methods=["DELETE"]),
                r("/api/v1/triggers", endpoint="triggers_index", methods=["GET"]),
                r("/api/v1/triggers", endpoint="triggers_create", methods=["POST"]),
                r("/api/v1/triggers/<id>", endpoint="triggers_show", methods=["GET"]),
                r("/api/v1/triggers/<id>", endpoint="triggers_update", methods=["PUT"]),
                r("/api/v1/triggers/<id>", endpoint="triggers_destroy", methods=["DELETE"]),
            ],
            strict_slashes=False,
        )

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        if self._latency:
            time.sleep(self._latency)
        response = self._dispatch(request)
        response.headers["Connection"] = "close"  # so set_down() really cuts clients off
        with self._lock:
            self._api_calls.append(
                ApiCall(
                    method=request.method,
                    path=request.path,
                    query=request.query_string.decode("latin-1"),
                    headers=dict(request.headers),
                    body=request.get_data(cache=True),
                    status=response.status_code,
                )
            )
        return response(environ, start_response)

    @staticmethod
    def _json_response(
        status: int, payload: Json, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            rails_json(payload),
            status=status,
            headers=headers or {},
            content_type="application/json; charset=utf-8",
        )

    @staticmethod
    def _proxy_error(status: int, retry_after: float | None = None) -> Response:
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(
                int(retry_after) if float(retry_after).is_integer() else retry_after
            )
        if status == 429:
            return Response("Retry later\n", status=429, headers=headers, content_type="text/plain")
        reason = HTTP_STATUS_CODES.get(status, "Error")
        html = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Response(html, status=status, headers=headers, content_type="text/html")

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            injected = self._fail_queue.pop(0) if self._fail_queue else None
        if injected is not None:
            request.get_data(cache=True)
            return self._proxy_error(*injected)

        adapter = self._url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except (NotFound, MethodNotAllowed):
            message = f"No route matches [{request.method}] {request.path}"
            return self._json_response(404, _humanize_error(message, "routing", True))

        auth: _Auth | None = None
        events: dict[int, _TicketEvent] = {}
        jobs: list[_Job] = []
        try:
            with self._lock:
                auth = self._authenticate(request)
                params = self._params(request)
                ctx = _Ctx(auth, params, dict(args), events, request.args.to_dict())
                handler = getattr(self, f"_h_{endpoint}")
                status, payload = handler(ctx)
                jobs = self._evaluate_triggers(events.values())
            response = self._json_response(status, payload)
        except ApiError as err:
            data = _humanize_error(err.message, err.kind, auth.is_admin if auth else True)
            headers = {}
            if err.status in (401, 403):
                headers["X-Failure"] = data.get("error_human", data["error"])
            response = self._json_response(err.status, data, headers)
        self._start_jobs(jobs)

        with self._lock:
            lose = self._lose_remaining > 0 and request.method in self._lose_methods
            if lose:
                self._lose_remaining -= 1
        if lose:
            if self._lose_hang:
                time.sleep(self._lose_hang)
            return self._proxy_error(self._lose_status)
        return response

    def _authenticate(self, request: Request) -> _Auth:
        """Port of ``ApplicationController::Authenticates#authentication_check_only``."""
        header = request.headers.get("Authorization", "")
        errors: list[str] = []
        user: Record | None = None
        token: _Token | None = None
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "basic" and rest.strip():
            try:
                login, _, password = base64.b64decode(rest.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                login, password = "", ""
            candidate = self._find_user(login)
            if candidate and self._passwords.get(candidate["login"]) == password:
                user = candidate
            else:
                errors.append("Invalid BasicAuth credentials")
        if user is None and re.match(r"^(Token|Bearer)\s+", header):
            raw = re.sub(r"^(Token|Bearer)\s+", "", header)
            parts = [p for p in re.split(r"\s*(?:,|;|\t)\s*", raw) if p]
            if parts and not parts[0].startswith("token="):
                parts[0] = "token=" + parts[0]
            value = parts[0].split("=", 1)[1] if parts else ""
            value = re.sub(r'^"|"$', "", value)
            if value.strip():
                token = self._tokens.get(value)
                if token is not None:
                    if token.expires_at is not None and date.today() >= token.expires_at:
                        raise ApiError("not_authorized", "Not authorized (token expired)!")
                    user = self.db.users[token.user_id]
                else:
                    errors.append("Can't find User for Token")
        if user is None and re.match(r"^Bearer ", header, re.I):
            raise ApiError("not_authorized", "The provided token is invalid.")
        if user is None:
            if errors:
                raise ApiError("not_authorized", ", ".join(errors))
            raise ApiError("forbidden", "Authentication required")
        if not user["active"]:
            raise ApiError(
                "not_authorized",
                "Login failed. Have you double-checked your credentials and completed the "
                "email verification step?",
            )
        role_perms = self._user_permissions(user)

        def covered(perm: str) -> bool:
            return any(perm == p or perm.startswith(p + ".") for p in role_perms)

        perms = (
            frozenset(p for p in token.permissions if covered(p))
            if token
            else frozenset(role_perms)
        )
        return _Auth(user_id=user["id"], permissions=perms, is_admin=covered("admin"))

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = request.args.to_dict()
        data = request.get_data(cache=True)
        if not data:
            return params
        if request.mimetype in ("application/json", "") or request.mimetype.endswith("+json"):
            try:
                body = json.loads(data)
            except ValueError as exc:
                raise ApiError(
                    "internal", "Error occurred while parsing request parameters"
                ) from exc
            if isinstance(body, dict):
                params.update(body)
            else:
                params["_json"] = body
        elif request.mimetype == "application/x-www-form-urlencoded":
            params.update(request.form.to_dict())
        return params

    @staticmethod
    def _require(ctx: _Ctx, *any_of: str) -> None:
        if not any(ctx.auth.has(p) for p in any_of):
            raise ApiError("forbidden", "Not authorized")

    @staticmethod
    def _expand(ctx: _Ctx) -> bool:
        return str(ctx.params.get("expand", "")).lower() in ("true", "1")

    def _note_event(
        self,
        ctx: _Ctx,
        kind: str,
        ticket_id: int,
        *,
        article_id: int | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> None:
        """Collect one transaction per ticket per request (Zammad's ``Transaction.execute``)."""
        event = ctx.events.get(ticket_id)
        if event is None:
            event = ctx.events[ticket_id] = _TicketEvent(kind, ticket_id, ctx.auth.user_id)
        if article_id is not None and event.article_id is None:
            event.article_id = article_id
        for key, (old, new) in (changes or {}).items():
            if key in event.changes:
                event.changes[key][1] = new
            else:
                event.changes[key] = [old, new]

    # ------------------------------------------------------------------ handlers

    def _h_users_me(self, ctx: _Ctx) -> tuple[int, Json]:
        return 200, self._user_with_ids(self.db.users[ctx.auth.user_id])

    def _h_users_show(self, ctx: _Ctx) -> tuple[int, Json]:
        # users_controller.rb#show: agents may read customers (ticket.agent), admins anyone.
        self._require(ctx, "ticket.agent", "admin.user")
        user = self._get_record(self.db.users, "User", ctx.args["id"])
        return 200, self._user_names(user) if self._expand(ctx) else self._user_with_ids(user)

    def _h_groups_index(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.group", "ticket.agent")
        view = self._group_names if self._expand(ctx) else self._group_with_ids
        return 200, [view(g) for g in sorted(self.db.groups.values(), key=lambda g: g["id"])]

    def _h_groups_create(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.group")
        p = ctx.params
        group = self._insert_group(
            p.get("name"), note=p.get("note"), actor_id=ctx.auth.user_id, extra=p
        )
        return 201, self._group_with_ids(group)

    def _h_groups_destroy(self, ctx: _Ctx) -> tuple[int, Json]:
        # unconfirmed: groups_controller#destroy with Zammad's usual references check
        # (model_references_check), answered like the webhook's (422, the referring objects).
        self._require(ctx, "admin.group")
        group = self._get_record(self.db.groups, "Group", ctx.args["id"])
        tickets = [t["number"] for t in self.db.tickets.values() if t["group_id"] == group["id"]]
        if tickets:
            raise ApiError(
                "unprocessable",
                "This object is referenced by other object(s) and thus cannot be deleted: "
                + ", ".join(f"Ticket / {number}" for number in tickets[:5]),
            )
        del self.db.groups[group["id"]]
        return 200, {}

    def _ticket_view(self, ctx: _Ctx, ticket: Record) -> Record:
        return self._ticket_names(ticket) if self._expand(ctx) else self._ticket_with_ids(ticket)

    def _h_tickets_index(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        limit = min(_as_int(ctx.params.get("per_page")) or 50, 100)
        page = max(_as_int(ctx.params.get("page")) or 1, 1)
        tickets = sorted(self.db.tickets.values(), key=lambda t: t["id"])[
            (page - 1) * limit : page * limit
        ]
        if self._expand(ctx):
            return 200, [self._ticket_names(t) for t in tickets]
        return 200, [copy.deepcopy(t) for t in tickets]

    def _h_tickets_show(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket = self._agent_ticket(ctx, ctx.args["id"])
        if self._expand(ctx):
            return 200, self._ticket_names(ticket)
        return 200, copy.deepcopy(ticket)  # render json: ticket (plain attributes)

    def _h_tickets_create(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        params = dict(ctx.params)
        article_params = params.pop("article", None)
        customer = params.get("customer")
        if isinstance(customer, dict):
            params.pop("customer")
            found = self._find_user(customer.get("email")) or self._find_user(customer.get("login"))
            params["customer_id"] = (
                found or self._create_customer(customer.get("email") or "", customer)
            )["id"]
        elif (
            isinstance(customer, str)
            and customer.startswith("guess:")
            and _blank(params.get("customer_id"))
        ):
            params.pop("customer")
            params["customer_id"] = customer
        if isinstance(params.get("customer_id"), str) and params["customer_id"].startswith(
            "guess:"
        ):
            email = params["customer_id"].removeprefix("guess:")
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                raise ApiError("unprocessable", f"Invalid email '{email}' of customer")
            params["customer_id"] = (self._find_user(email) or self._create_customer(email, {}))[
                "id"
            ]
        clean = self._convert_names(params, self._TICKET_LOOKUPS)
        if not _blank(clean.get("group_id")):
            self._require_group(ctx, clean["group_id"])
        prepared = self._prepare_article(article_params, ctx.auth) if article_params else None
        ticket = self._insert_ticket(clean, actor_id=ctx.auth.user_id)
        self._note_event(ctx, "create", ticket["id"])
        if isinstance(clean.get("tags"), str):
            for tag in clean["tags"].split(","):
                self._tag_add(ticket, tag)
        if prepared is not None:
            article = self._store_article(ticket, prepared, actor_id=ctx.auth.user_id)
            self._note_event(ctx, "create", ticket["id"], article_id=article["id"])
        return 201, self._ticket_view(ctx, ticket)

    def _create_customer(self, email: str, attrs: Record) -> Record:
        now = self._now()
        uid = self._alloc("user")
        login = str(attrs.get("login") or email).lower()
        self.db.users[uid] = {
            "id": uid,
            "login": login,
            "firstname": str(attrs.get("firstname") or ""),
            "lastname": str(attrs.get("lastname") or ""),
            "email": email.lower(),
            "image": None,
            "organization_id": None,
            "active": True,
            "verified": False,
            "vip": False,
            "out_of_office": False,
            "role_ids": [3],
            "group_ids": {},
            "password": None,
            "last_login": None,
            "login_failed": 0,
            "preferences": {},
            "created_by_id": 1,
            "updated_by_id": 1,
            "created_at": now,
            "updated_at": now,
        }
        return self.db.users[uid]

    def _h_tickets_update(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket = self._agent_ticket(ctx, ctx.args["id"])
        params = dict(ctx.params)
        article_params = params.pop("article", None)
        params.pop("number", None)
        params.pop("id", None)
        clean = self._convert_names(params, self._TICKET_LOOKUPS)
        if "group_id" in clean:
            self._require_group(ctx, clean["group_id"])  # the target group too
        new = self._validate_ticket_changes(ticket, clean)
        prepared = None
        if not _blank(article_params):
            prepared = self._prepare_article(article_params, ctx.auth)
        changes = self._apply_ticket_changes(ticket, new, ctx.auth.user_id)
        if changes:
            self._note_event(ctx, "update", ticket["id"], changes=changes)
        if prepared is not None:
            article = self._store_article(ticket, prepared, actor_id=ctx.auth.user_id)
            self._note_event(ctx, "update", ticket["id"], article_id=article["id"])
        return 200, self._ticket_view(ctx, ticket)

    def _h_tickets_search(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        p = ctx.params
        limit = _as_int(p.get("per_page")) or _as_int(p.get("limit")) or 50
        limit = max(1, min(limit, 200))
        page = max(_as_int(p.get("page")) or 1, 1)
        found = self._search_tickets(str(p.get("query") or ""))
        sort_by = str(p.get("sort_by") or "updated_at")
        descending = str(p.get("order_by") or "desc").lower() != "asc"
        found.sort(key=lambda t: (str(t.get(sort_by) or ""), t["id"]), reverse=descending)
        if sort_by in ("id", "article_count"):
            found.sort(key=lambda t: (t.get(sort_by) or 0, t["id"]), reverse=descending)
        page_items = found[(page - 1) * limit : page * limit]
        if self._expand(ctx):
            return 200, [self._ticket_names(t) for t in page_items]
        assets = (
            {"Ticket": {str(t["id"]): self._ticket_with_ids(t) for t in page_items}}
            if page_items
            else {}
        )
        return 200, {
            "tickets": [t["id"] for t in page_items],
            "tickets_count": len(page_items),
            "assets": assets,
        }

    def _search_tickets(self, query: str) -> list[Record]:
        """Tiny stand-in for Elasticsearch query strings.

        Understands ``field:value`` (``number``, ``id``, ``title``, ``group.name``/``group``,
        ``state.name``/``state``, ``priority.name``, ``customer.email``/``customer.login``,
        ``organization.name``, ``tags``, ``*_id``), quoted values, trailing ``*`` wildcards,
        ranges ``created_at:>2025-06-01``/``>=``/``<``/``<=`` (also ``now-1d``), bare words
        (title, number, article subject/body), ``*``, ``AND`` and ``OR``.
        """
        tokens = re.findall(r'(?:[^\s"]*"[^"]*"[^\s"]*|\S+)', query.strip())
        groups: list[list[str]] = [[]]
        for token in tokens:
            if token == "OR":
                groups.append([])
            elif token not in ("AND", "&&"):
                groups[-1].append(token)
        return [
            t
            for t in self.db.tickets.values()
            if any(all(self._term_matches(t, term) for term in group) for group in groups)
        ]

    def _term_matches(self, ticket: Record, term: str) -> bool:
        if term in ("*", ""):
            return True
        names = self._ticket_names(ticket)
        fieldname, sep, value = term.partition(":")
        if not sep:
            needle = term.strip('"').lower().rstrip("*")
            haystack = [ticket["title"], ticket["number"]] + [
                f"{a['subject'] or ''} {a['body']}"
                for a in self.db.articles.values()
                if a["ticket_id"] == ticket["id"]
            ]
            return any(needle in str(h).lower() for h in haystack)
        value = value.strip('"')
        if m := re.fullmatch(r"(>=|<=|>|<)(.+)", value):
            op, raw = m.groups()
            actual = ticket.get(fieldname)
            if actual is None:
                return False
            if isinstance(actual, int):
                bound_num = _as_int(raw)
                if bound_num is None:
                    return False
                left_num, right_num = actual, bound_num
                return {
                    ">": left_num > right_num,
                    ">=": left_num >= right_num,
                    "<": left_num < right_num,
                    "<=": left_num <= right_num,
                }[op]
            left, right = parse_time(str(actual)), self._parse_search_time(raw)
            return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[
                op
            ]
        aliases = {
            "group": "group",
            "group.name": "group",
            "state": "state",
            "state.name": "state",
            "priority": "priority",
            "priority.name": "priority",
            "organization.name": "organization",
            "customer.login": "customer",
            "owner.login": "owner",
        }
        if fieldname == "tags":
            candidates: list[Any] = self.db.ticket_tags.get(ticket["id"], [])
        elif fieldname in aliases:
            candidates = [names.get(aliases[fieldname])]
        elif fieldname == "customer.email":
            candidates = [self.db.users[ticket["customer_id"]]["email"]]
        elif fieldname in names:
            candidates = [names[fieldname]]
        else:
            return False
        if fieldname == "title":
            return value.lower().rstrip("*") in str(candidates[0]).lower()
        for candidate in candidates:
            text = "" if candidate is None else str(candidate)
            if value.endswith("*") and text.lower().startswith(value[:-1].lower()):
                return True
            if text.lower() == value.lower():
                return True
        return False

    def _parse_search_time(self, raw: str) -> datetime:
        if m := re.fullmatch(r"now(?:([+-])(\d+)([smhdwMy]))?(?:/[smhdwMy])?", raw):
            now = self._clock()
            if not m.group(1):
                return now
            amount = int(m.group(2)) * (1 if m.group(1) == "+" else -1)
            unit = m.group(3)
            seconds = {
                "s": 1,
                "m": 60,
                "h": 3600,
                "d": 86400,
                "w": 604800,
                "M": 2592000,
                "y": 31536000,
            }
            return now + timedelta(seconds=amount * seconds[unit])
        return parse_time(raw)

    def _tag_params(self, ctx: _Ctx) -> tuple[Record, str]:
        p = ctx.params
        if p.get("object") != "Ticket":
            raise ApiError("unprocessable", f"No such object {_rb_inspect(p.get('object'))}")
        ticket = self._agent_ticket(ctx, p.get("o_id"))
        item = p.get("item")
        if _blank(item) or not isinstance(item, str):
            raise ApiError("unprocessable", "No item given")
        return ticket, item.strip()

    def _tag_add(self, ticket: Record, item: str) -> None:
        item = item.strip()
        tags = self.db.ticket_tags.setdefault(ticket["id"], [])
        if item and item.lower() not in (t.lower() for t in tags):
            tags.append(item)
            ticket["updated_at"] = self._now()  # Tag touches its reference

    def _h_tags_list(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        tid = _as_int(ctx.params.get("o_id"))
        if ctx.params.get("object") != "Ticket" or tid is None:
            return 200, {"tags": []}
        return 200, {"tags": list(self.db.ticket_tags.get(tid, []))}

    def _h_tags_add(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket, item = self._tag_params(ctx)
        self._tag_add(ticket, item)
        return 201, True

    def _h_tags_remove(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket, item = self._tag_params(ctx)
        tags = self.db.ticket_tags.setdefault(ticket["id"], [])
        kept = [t for t in tags if t.lower() != item.lower()]
        if len(kept) != len(tags):
            self.db.ticket_tags[ticket["id"]] = kept
            ticket["updated_at"] = self._now()
        return 200, True

    def _h_articles_create(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket = self._agent_ticket(ctx, ctx.params.get("ticket_id"))
        prepared = self._prepare_article(ctx.params, ctx.auth)
        article = self._store_article(ticket, prepared, actor_id=ctx.auth.user_id)
        self._note_event(ctx, "update", ticket["id"], article_id=article["id"])
        return 201, self._article_names(article)

    def _h_articles_show(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        aid = _as_int(ctx.args["id"])
        article = self.db.articles.get(aid) if aid is not None else None
        if article is None:
            raise _not_found("Ticket::Article", ctx.args["id"])
        return 200, self._article_names(article)

    def _h_articles_by_ticket(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "ticket.agent")
        ticket = self._agent_ticket(ctx, ctx.args["id"])
        return 200, [
            self._article_names(a)
            for a in sorted(self.db.articles.values(), key=lambda a: a["id"])
            if a["ticket_id"] == ticket["id"]
        ]

    def _get_record(self, table: dict[int, Record], model: str, ident: str) -> Record:
        rid = _as_int(ident)
        record = table.get(rid) if rid is not None else None
        if record is None:
            raise _not_found(model, ident)
        return record

    def _h_webhooks_index(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.webhook")
        return 200, [
            copy.deepcopy(w) for w in sorted(self.db.webhooks.values(), key=lambda w: w["id"])
        ]

    def _h_webhooks_create(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.webhook")
        return 201, copy.deepcopy(self._insert_webhook(ctx.params, ctx.auth.user_id))

    def _h_webhooks_show(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.webhook")
        return 200, copy.deepcopy(self._get_record(self.db.webhooks, "Webhook", ctx.args["id"]))

    def _h_webhooks_update(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.webhook")
        existing = self._get_record(self.db.webhooks, "Webhook", ctx.args["id"])
        return 200, copy.deepcopy(self._insert_webhook(ctx.params, ctx.auth.user_id, existing))

    def _h_webhooks_destroy(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.webhook")
        webhook = self._get_record(self.db.webhooks, "Webhook", ctx.args["id"])
        users = [
            t["name"]
            for t in self.db.triggers.values()
            if _as_int((t["perform"].get("notification.webhook") or {}).get("webhook_id"))
            == webhook["id"]
        ]
        if users:
            raise ApiError(
                "unprocessable",
                "This object is referenced by other object(s) and thus cannot be deleted: "
                + ", ".join(f"Trigger / {name}" for name in users),
            )
        del self.db.webhooks[webhook["id"]]
        return 200, {}

    def _h_triggers_index(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.trigger")
        return 200, [
            copy.deepcopy(t) for t in sorted(self.db.triggers.values(), key=lambda t: t["id"])
        ]

    def _h_triggers_create(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.trigger")
        return 201, copy.deepcopy(self._insert_trigger(ctx.params, ctx.auth.user_id))

    def _h_triggers_show(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.trigger")
        return 200, copy.deepcopy(self._get_record(self.db.triggers, "Trigger", ctx.args["id"]))

    def _h_triggers_update(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.trigger")
        existing = self._get_record(self.db.triggers, "Trigger", ctx.args["id"])
        return 200, copy.deepcopy(self._insert_trigger(ctx.params, ctx.auth.user_id, existing))

    def _h_triggers_destroy(self, ctx: _Ctx) -> tuple[int, Json]:
        self._require(ctx, "admin.trigger")
        trigger = self._get_record(self.db.triggers, "Trigger", ctx.args["id"])
        del self.db.triggers[trigger["id"]]
        return 200, {}


# --------------------------------------------------------------------------- fixtures

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "connector" / "hosts" / "zammad" / "fixtures"
CONTRACT_DIR = FIXTURE_DIR / "contract"

_EXAMPLE_BODY = (
    "<div>Hello,<br><br>the amount on invoice 2025-0611 is wrong &amp; needs a fix."
    "<br><br>Emily</div>"
)


def contract_example_fake() -> tuple[FakeZammad, int]:
    """A (not started) fake holding the contract example's data; returns it and ticket 81.

    Same data as ``webhook-ticket-create.json``: ticket 81 / article 104 created by Emily by
    e-mail with the example's timestamps.  Only ``message_id_md5`` has to be given, because
    the example's value is not the MD5 of its message id (Zammad would compute it).
    """
    clock = ScriptedClock(
        ["2025-06-04T08:21:35.282Z", "2025-06-04T08:21:35.318Z", "2025-06-04T08:21:35.333Z"]
    )
    fake = FakeZammad(clock=clock)
    fake.set_next_ids(ticket=81, article=104)
    ticket_id = fake.create_ticket_as_customer(
        "Invoice 2025-0611 is wrong",
        _EXAMPLE_BODY,
        content_type="text/html",
        message_id="<20250604082130.1234@customer.example>",
        message_id_md5="8c2c1d5b6a4e1f0e9a1b7d3c2e4f5a6b",
    )
    return fake, ticket_id


def _last_article_id(fake: FakeZammad, ticket_id: int) -> int:
    return max(int(a["id"]) for a in fake.db.articles.values() if a["ticket_id"] == ticket_id)


def _fixture(
    body: bytes, trigger: str, delivery_id: str, token: str = FIXTURE_SIGNATURE_TOKEN
) -> tuple[bytes, dict[str, str]]:
    return body, build_webhook_headers(body, trigger, delivery_id, token)


def generate_fixtures() -> dict[str, tuple[bytes, dict[str, str]]]:
    """Build every webhook fixture: ``{file name: (body bytes, headers)}``."""
    out: dict[str, tuple[bytes, dict[str, str]]] = {}
    created, updated, article_created = (
        "connector: ticket created",
        "connector: ticket updated",
        "connector: article created",
    )

    # 1. the contract example, byte for byte (asserted equal to the generated one in tests)
    contract_body = (CONTRACT_DIR / "webhook-ticket-create.json").read_bytes()
    out["ticket_created.json"] = _fixture(
        contract_body, created, "1f0c6a2e-8f5b-4d3a-9a7e-3b2f6c1d0e94"
    )

    # 2. customer reply on ticket 81, then the connector's note, then an agent's move
    fake, t81 = contract_example_fake()
    fake._clock = ScriptedClock(["2025-06-04T09:02:11.417Z"], step=timedelta(milliseconds=23))
    reply_id = fake.add_customer_reply(
        t81,
        "Hi again,\n\nany news? The correct amount is 1.250,00 EUR (not 12.500,00).\n\nEmily",
    )
    out["customer_reply.json"] = _fixture(
        fake.webhook_payload(t81, reply_id), article_created, "5b0e7c1d-2a44-4f3b-8d6e-0c9a1f2b3c4d"
    )

    with fake._lock:
        accounting = fake._insert_group("Accounting", note="Invoices and payments", actor_id=3)
        connector = fake.db.users[fake.connector_user_id]
        auth = _Auth(connector["id"], frozenset(DEFAULT_CONNECTOR_PERMISSIONS), True)
        ticket = fake.db.tickets[t81]
        fake._apply_ticket_changes(ticket, {"group_id": accounting["id"]}, connector["id"])
        fake._tag_add(ticket, "billing")
        note = fake._store_article(
            ticket,
            fake._prepare_article(
                {
                    "body": "<p>Moved to <b>Accounting</b> by bpsm-connector "
                    "(rule: invoice &amp; billing, score 0.92)</p>",
                    "content_type": "text/html",
                    "type": "note",
                    "internal": True,
                    "subject": "bpsm-connector",
                },
                auth,
            ),
            actor_id=connector["id"],
        )
    out["agent_update_by_connector.json"] = _fixture(
        fake.webhook_payload(t81, note["id"]),
        article_created,
        "9d3f1a7b-6c2e-4b8a-a1d0-7e5f4c3b2a19",
    )

    fake.move_ticket_as_agent(t81, "Users")
    out["ticket_update_no_article.json"] = _fixture(
        fake.webhook_payload(t81), updated, "c4a8e2f6-1b3d-4e5f-9a7c-8d6b2e0f1a3c"
    )

    # 3. an HTML e-mail with markup, entities and a non-BMP character
    fake._clock = ScriptedClock(["2025-06-05T07:45:02.120Z"], step=timedelta(milliseconds=31))
    html_ticket = fake.create_ticket_as_customer(
        "VPN: error 809 <urgent> & can't connect",
        '<div dir="auto"><p>Hello support,</p><p>since this morning the VPN client says '
        "<b>&quot;Error 809&quot;</b> &amp; I can&#39;t reach the file share.</p>"
        '<table border="1"><tr><td>OS</td><td>Windows 11 23H2</td></tr>'
        "<tr><td>Client</td><td>FortiClient 7.2</td></tr></table>"
        '<p>Thanks 🙏<br>Nicole</p><img src="cid:logo@zammad.org" alt="logo"></div>',
        customer="nicole.braun@zammad.org",
        content_type="text/html",
        message_id="<CAF7x9Q=8v2_vpn809@mail.zammad.org>",
    )
    out["ticket_created_html_body.json"] = _fixture(
        fake.webhook_payload(html_ticket, _last_article_id(fake, html_ticket)),
        created,
        "2e7b9c4d-5f1a-4c8e-b3d2-6a0f9e8d7c15",
    )

    # 4. Norwegian printer problem; customer without organization ("organization": {})
    fake._clock = ScriptedClock(["2025-06-05T11:17:48.904Z"], step=timedelta(milliseconds=19))
    no_ticket = fake.create_ticket_as_customer(
        "Skriveren i 3. etasje skriver ikke ut",
        "Hei!\n\nSkriveren ved kantina i 3. etasje (HP LaserJet M607) skriver ikke ut. "
        "Displayet viser «Papirstopp i skuff 2», men det er ikke noe papir som sitter fast. "
        "Vi har prøvd å slå den av og på.\n\nKan dere sende noen?\n\nMvh\nOla Nordmann\n"
        "Økonomiavdelingen, Ålesund",
        customer="ola.nordmann@kunde.no",
        message_id="<e1b2c3d4.skriver@kunde.no>",
    )
    no_article = _last_article_id(fake, no_ticket)
    out["ticket_created_norwegian.json"] = _fixture(
        fake.webhook_payload(no_ticket, no_article), created, "7a1c3e5f-9b2d-4f6a-8c0e-1d3b5a7c9e2f"
    )

    # 5. a custom (Slack-style) payload, not the default one
    with fake._lock:
        webhook = fake._insert_webhook(
            {
                "name": "slack",
                "endpoint": "https://hooks.slack.example/services/T000/B000/XXXX",
                "customized_payload": True,
                "custom_payload": (
                    '{"text":"New ticket #{ticket.number}: #{ticket.title}",'
                    '"username":"Zammad","icon_emoji":":ticket:",'
                    '"attachments":[{"color":"#38ad69","title":"#{ticket.title}",'
                    '"text":"#{article.body}","footer":"#{ticket.group.name} | '
                    '#{ticket.customer.email}"}]}'
                ),
            },
            3,
        )
        trigger = fake._insert_trigger(
            {
                "name": "slack notify",
                "condition": {"ticket.action": {"operator": "is", "value": "create"}},
                "perform": {"notification.webhook": {"webhook_id": webhook["id"]}},
            },
            3,
        )
        slack_body = fake._custom_payload(
            webhook["custom_payload"], no_ticket, no_article, trigger, webhook
        )
    out["unknown_payload.json"] = _fixture(
        slack_body, "slack notify", "0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f"
    )

    # 6. malformed bodies (validly signed, so only the parsing is under test)
    out["malformed_not_json.txt"] = _fixture(
        contract_body[:733], created, "d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a"
    )
    example = json.loads(contract_body)
    out["malformed_missing_ticket.json"] = _fixture(
        rails_json({"article": example["article"]}), created, "e2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a6b"
    )
    bad_id = copy.deepcopy(example)
    bad_id["ticket"]["id"] = "81"
    out["malformed_ticket_id_string.json"] = _fixture(
        rails_json(bad_id), created, "f3a4b5c6-d7e8-4f9a-8b1c-2d3e4f5a6b7c"
    )
    return out


def headers_file_name(fixture_name: str) -> str:
    return fixture_name.rsplit(".", 1)[0] + ".headers.json"


def write_fixtures(directory: Path = FIXTURE_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (body, headers) in generate_fixtures().items():
        (directory / name).write_bytes(body)
        headers_path = directory / headers_file_name(name)
        headers_path.write_text(
            json.dumps(headers, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written += [directory / name, headers_path]
    return written


def _iter_main(argv: list[str]) -> Iterator[str]:
    if argv[:1] != ["write-fixtures"]:
        yield "usage: python -m tests.fakes.zammad write-fixtures [DIRECTORY]"
        return
    target = Path(argv[1]) if len(argv) > 1 else FIXTURE_DIR
    for path in write_fixtures(target):
        yield f"wrote {path}"


if __name__ == "__main__":
    for line in _iter_main(sys.argv[1:]):
        print(line)
