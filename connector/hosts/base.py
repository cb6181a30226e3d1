"""The small interface every helpdesk package implements (see connector/hosts/README.md).

A host package (`connector/hosts/<name>/`) defines one subclass of `Host` and exports it as
`HOST = ThatClass`. Parsing and signature checks are pure (headers + bytes in, TicketEvent
out; the package's `sansio.py`); only `HostClient` does I/O (its `client.py`), through an
`HttpTransport` that tests can swap. The host declares its settings (`settings_model`) and
its mapping options (`options_model`) in its `settings.py`.
"""

from __future__ import annotations

import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypeVar

from connector.config import ConfigError, HostSettings
from connector.events import NewTicket, Progress, RoutingDecision, TicketEvent, TicketTimes
from connector.mapping import Mapping
from connector.secretfile import claim_secret, new_secret


class BadPayload(Exception):
    """The body is not what this host sends (→ 400). `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class Unauthorized(Exception):
    """Missing or wrong signature/token (→ 401)."""


class HostError(Exception):
    """A helpdesk call failed. `permanent` ones go to dead letters instead of retrying."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None):
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(message)


class OptionsError(ConfigError, HostError):
    """A mapping's `options:` do not fit the host's options model: a configuration error at
    start, and a permanent HostError (→ dead letter) where a job meets it."""

    def __init__(self, message: str):
        HostError.__init__(self, message, permanent=True)


class MappingOptions(BaseModel):
    """The `options:` of a host's mapping file. A host declares its own subclass (its
    `settings.py`) as `Host.options_model`; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Options = TypeVar("Options", bound=MappingOptions)


def read_mapping_options(host: str, model: type[Options], options: AbcMapping[str, Any]) -> Options:
    """The mapping's `options:` as `model`, or OptionsError naming every bad `options.<key>`."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise OptionsError(f"{host} mapping: {problems}") from exc


class HeaderLookup(Protocol):
    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    headers: HeaderLookup  # werkzeug Headers (case-insensitive) or a plain dict
    body: bytes
    query: AbcMapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None and isinstance(self.headers, dict):
            lowered = {k.lower(): v for k, v in self.headers.items()}
            value = lowered.get(name.lower())
        return value


# Why an event was ignored, as the metric label: a fixed set, so that no request can create
# new time series (the full reason, which may quote the payload, goes to the answer and log).
IGNORE_LABELS = frozenset(
    {
        "own-update",
        "not-customer-text",
        "no-customer-text",
        "staff-follow-up",
        "private-follow-up",
        "not-routed-type",
        "not-new",
        "not-a-ticket",
        "in-trash",
        "no-text",
    }
)


@dataclass(frozen=True)
class Ignored:
    """An event the connector deliberately does not act on (→ 200)."""

    reason: str
    ticket_id: str | None = None
    # One of IGNORE_LABELS (anything else is counted as "other"); metrics only, not identity.
    label: str = field(default="other", compare=False)

    @property
    def metric_label(self) -> str:
        return self.label if self.label in IGNORE_LABELS else "other"


SIGNATURE_REFUSED = "the signature was refused: start it with the webhook secret printed above"


@dataclass(frozen=True)
class TestEvent:
    """A harmless webhook `bpsm setup` sends to the connector once the webhook exists: the
    connector must accept it (and ignore it). `refused` explains a 401 to the admin."""

    __test__ = False  # not a pytest test class

    url: str
    body: bytes
    headers: dict[str, str]
    refused: str


@dataclass(frozen=True)
class SetupResult:
    """What `HostClient.setup` did: lines for the admin; the webhook secret it generated
    (None when it kept the existing one); the test event to send to the connector, if any."""

    lines: tuple[str, ...]
    webhook_secret: str | None = None
    test_event: TestEvent | None = None


@dataclass(frozen=True)
class ApplyResult:
    outcome: Literal["applied", "shadow", "override", "dry-run"]
    detail: str = ""


class HostClient(ABC):
    """Talks to one helpdesk's API. Every write must be safe to repeat (see apply)."""

    # Where setup keeps a webhook secret it generates (`bpsm setup --secret-file`): the
    # secret is written there before the helpdesk is given it. None: generated in memory.
    secret_file: Path | None = None

    def new_webhook_secret(self) -> str:
        """A secret for a webhook setup is about to create, already saved when it returns."""
        return claim_secret(self.secret_file) if self.secret_file else new_secret()

    @abstractmethod
    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        """Move/tag/annotate the ticket. Must be idempotent: a retry after a lost answer
        must not add a second note (look for the connector's marker first), and a ticket an
        agent has already moved (its queue differs from `event.queue`) is not moved back."""

    def poll(self, since: str | None) -> tuple[list[TicketEvent], str | None]:
        """New/changed tickets since the high-water mark; returns events and the new mark.

        `since` is what the previous call returned (None the first time: start from now,
        minus a small overlap, so installation does not route the whole history; use
        `backfill` for that). Used by polling hosts and by `bpsm backfill`."""
        raise NotImplementedError

    def backfill(self, since: datetime, progress: Progress | None = None) -> list[TicketEvent]:
        """Open tickets created since `since`, for `bpsm backfill` (routes them once);
        `progress` is called with the number of tickets read so far, as they are read."""
        raise NotImplementedError

    def history(
        self, since: datetime, queues: Collection[str], progress: Progress | None = None
    ) -> list[TicketEvent]:
        """Tickets created since `since` in `queues`, whatever their status, for `bpsm learn
        --from-host`: what agents sorted (the BPSM queues, the label map's queues). Default:
        backfill's open tickets, for hosts whose backfill already reads every queue."""
        return self.backfill(since, progress)

    def setup(self, mapping: Mapping, hook_url: str | None) -> SetupResult:
        """Idempotently create what routing needs in the helpdesk (queues/groups, and the
        webhook pointing at `hook_url` where the host has webhooks): a second run creates
        nothing. Returns lines for the admin (what was created, what existed, what to do by
        hand), a webhook secret it generated and a test event for `hook_url`."""
        raise NotImplementedError

    def teardown(self, mapping: Mapping, queues: bool) -> list[str]:
        """Remove what `setup` created to deliver events (webhooks, triggers); with `queues`
        also the mapping's queues that hold no ticket. Returns lines for the admin."""
        raise NotImplementedError

    def create_ticket(self, ticket: NewTicket) -> str:
        """Open a ticket (proactive maintenance, improvement); returns its id."""
        raise NotImplementedError

    def add_tags(self, ticket_id: str, tags: tuple[str, ...]) -> None:
        """Tag an existing ticket (where the host has tags; else a no-op is fine)."""
        raise NotImplementedError

    def is_open(self, ticket_id: str) -> bool | None:
        """Whether the ticket is still open; None when the host cannot tell."""
        return None

    def reply(self, event: TicketEvent, text: str, send: bool) -> None:
        """Relation management's answer to the customer: sent (`send`) or left as an
        internal draft for an agent. Must not post the same text twice."""
        raise NotImplementedError

    def ticket_times(self, ticket_id: str) -> TicketTimes | None:
        """First response and close times of a ticket (KPI report); None when the host
        cannot tell. Optional: hosts that do not override it are skipped by the report."""
        return None

    def current_queue(self, ticket_id: str) -> str | None:
        """The queue/group the ticket is in now (a pilot's agreement with the agents, `bpsm
        report --agreement`). Optional: hosts that do not override it are skipped."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook; most hosts keep no session
        """Release sessions (GLPI's killSession); default: nothing to do."""


# A host's own settings model; plain `Host` means any host (PEP 696 default).
Settings = TypeVar("Settings", bound=HostSettings, default=HostSettings)


class Host(ABC, Generic[Settings]):
    # The user-facing name: webhook path /hooks/<name>, CLI argument, BPSM_<NAME>_ prefix.
    name: ClassVar[str]
    # The host's environment keys and its mapping's `options:` (its settings.py).
    settings_model: ClassVar[type[HostSettings]] = HostSettings
    options_model: ClassVar[type[MappingOptions]] = MappingOptions
    # The HTTP methods its webhooks may use on /hooks/<name>; others are answered 405.
    webhook_methods: ClassVar[frozenset[str]] = frozenset({"POST"})
    # True when the host has no webhooks (RT, GLPI ≤ 10). Not a ClassVar: a host may decide
    # per installation (django-helpdesk polls when BPSM_DJANGO_HELPDESK_POLL_INTERVAL is set).
    polling: bool = False

    def __init__(self, settings: HostSettings, mapping: Mapping):
        if not isinstance(settings, self.settings_model):
            # The common keys only (e.g. Settings.host() of an unregistered name): the host's
            # own keys take their defaults.
            settings = self.settings_model.model_validate(settings.model_dump())
        self.settings: Settings = settings  # type: ignore[assignment]
        self.mapping = mapping

    def verify(self, request: WebhookRequest) -> None:  # noqa: B027 - optional hook
        """Raise Unauthorized unless the request is signed with the configured secret.

        Default: no verification possible; hosts with signatures override this."""

    def has_webhook_credential(self) -> bool:
        """Whether `verify` has something to check webhooks against (the API token does not
        count: it authenticates the connector to the helpdesk, not the helpdesk to it)."""
        return self.settings.webhook_secret is not None

    @abstractmethod
    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        """Turn a webhook into a TicketEvent; raise BadPayload naming what is wrong."""

    def client(self) -> HostClient:
        raise NotImplementedError(f"{self.name}: no API client")

    def challenge(self, request: WebhookRequest) -> str | None:
        """Answer to a GET verification challenge, if the host uses one."""
        return None


# ----- helpers shared by host modules -------------------------------------------------------


def with_hint(text: str, hint: str | None) -> str:
    """An error text followed by what the admin should do about it."""
    return f"{text} — {hint}" if hint else text


def hinted_error_text(
    hints: AbcMapping[int, str], message: Callable[[Any], Any] = lambda data: data
) -> Callable[[Any], str]:
    """An HttpTransport error text: `message` of the JSON answer (else the start of its
    text), with the admin hint for its status."""

    def error_text(response: Any) -> str:
        try:
            text = str(message(response.json()))[:300]
        except (ValueError, AttributeError):
            text = response.text[:200].strip()
        return with_hint(text, hints.get(response.status_code))

    return error_text


def hmac_hex(secret: str, message: bytes, digest: str) -> str:
    return hmac.new(secret.encode("utf-8"), message, digest).hexdigest()


def same(a: str | None, b: str) -> bool:
    """Constant-time comparison (timing must not reveal how much of a signature matched)."""
    if a is None:
        return False
    return hmac.compare_digest(
        a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape")
    )


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object body or raise BadPayload with a precise reason."""
    if not body.strip():
        raise BadPayload("empty body; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPayload(f"body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise BadPayload("JSON is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise BadPayload(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise BadPayload(f"body is not usable JSON: {str(exc)[:120]}") from exc
    if not isinstance(data, dict):
        raise BadPayload(f"expected a JSON object, got {type(data).__name__}")
    return data


def need(data: AbcMapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """data[key] of the given type, else BadPayload naming `where.key`."""
    path = f"{where}.{key}" if where else key
    if key not in data or data[key] is None:
        raise BadPayload(f"missing field {path}", path)
    value = data[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadPayload(f"field {path} has the wrong type (bool)", path)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadPayload(f"field {path} must be {names}, got {type(value).__name__}", path)
    return value


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
