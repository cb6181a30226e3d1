"""Settings from the environment (12-factor), with `…_FILE` variants for every secret.

Names: BPSM_<HOST>_<KEY>, e.g. BPSM_ZAMMAD_URL, BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET.
A host counts as configured when its URL is set. Secrets are kept in `SecretStr` so they never
appear in a repr, a log line or an error message.

Every host declares its own keys: a `HostSettings` subclass in
`connector/hosts/<name>/settings.py` (a field per key; its type says how the variable is read,
see `read_host_settings`). `load_settings` composes the models it is given
(`connector.hosts.settings_models()`, the registry's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, SecretStr

from connector.catalogue import parse_duration

Mode = Literal["route", "shadow", "dry-run"]
MIN_WEBHOOK_SECRET_BYTES = 16
DEFAULT_HTTP_TIMEOUT = 10.0


class ConfigError(Exception):
    pass


class HostSettings(BaseModel):
    """The keys every host has. A host adds its own in a subclass (its `settings.py`); each
    field is the variable BPSM_<HOST>_<FIELD> (see `env_names` for the exceptions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields whose variable is not BPSM_<HOST>_<FIELD in capitals>.
    env_names: ClassVar[dict[str, str]] = {"mapping_path": "MAPPING"}
    # Fields not read from the host's variables (set by load_settings).
    not_from_env: ClassVar[frozenset[str]] = frozenset({"name", "http_timeout"})

    name: str
    url: str | None = None
    mapping_path: str | None = None
    webhook_secret: SecretStr | None = None
    # How often a polling host is asked for changes (the poller's default when unset).
    poll_interval: float | None = None
    # BPSM_<HOST>_ALLOW_UNSIGNED=1: accept this host's webhooks without a credential in
    # route/shadow mode (warned about at start and on /healthz).
    allow_unsigned: bool = False
    # BPSM_HTTP_TIMEOUT, shared by every host: seconds per API request.
    http_timeout: float = DEFAULT_HTTP_TIMEOUT

    @property
    def configured(self) -> bool:
        return bool(self.url)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    data_dir: Path = Path("data")
    catalogue_path: Path = Path("catalogue.yaml")
    learned_path: Path | None = None  # BPSM_LEARNED: `bpsm learn`'s file, re-read on change
    mappings_dir: Path = Path("mappings")
    database_url: str | None = None
    redis_url: str | None = None
    queue_name: str = "bpsm"  # huey queue; separate installations may share one Redis
    mode: Mode | None = None  # None: route when a host is configured, else dry-run
    max_body_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    retry_budget: int = 8  # job-level attempts before a dead letter
    retry_base_delay: float = 5.0  # seconds; doubles per attempt, capped below
    retry_max_delay: float = 600.0
    lease_seconds: float = 120.0  # a claimed job is retaken after this (worker killed)
    sweep_interval: float = 5.0  # how often abandoned deliveries are looked for
    dispatch_interval: float = 0.05  # how often new deliveries are handed to the job queue
    # Ingest first (connector/burst.py): while more webhooks than this arrive per second,
    # the consumers wait, each job at most burst_yield seconds; 0 turns it off.
    burst_rate: float = 200.0
    burst_yield: float = 5.0
    maintenance_interval: float = 600.0  # how often maintenance is checked; 0: never
    # An open improvement ticket is asked about (is it closed yet?) at most this often:
    # during an incident every reactive ticket of the service would otherwise cost a call.
    improvement_recheck: float = 60.0
    http_timeout: float = 10.0
    # How long `bpsm serve`/`bpsm worker` wait for the database and the queue at start.
    start_timeout: float = 60.0
    # Everything stored (deliveries and their ticket text, decisions, dead letters, closed
    # improvements) is deleted this many seconds after it was written; 0 keeps it for ever.
    retention: float = 365 * 86400.0
    purge_interval: float = 3600.0  # how often the running service purges
    hosts: dict[str, HostSettings] = {}

    def mapping_path(self, host: str) -> Path:
        """Where the host's mapping is: BPSM_<HOST>_MAPPING, else <mappings dir>/<host>.yaml."""
        explicit = self.host(host).mapping_path
        return Path(explicit) if explicit else self.mappings_dir / f"{host}.yaml"

    def host(self, name: str) -> HostSettings:
        found = self.hosts.get(name)
        # A host that load_settings was not given: the shared keys only (a Host converts
        # them to its own model, see Host.__init__).
        return found or HostSettings(name=name, http_timeout=self.http_timeout)

    def effective_mode(self) -> Mode:
        if self.mode:
            return self.mode
        return "route" if any(h.configured for h in self.hosts.values()) else "dry-run"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'bpsm.db').resolve()}"


def env_prefix(host: str) -> str:
    return "BPSM_" + host.upper().replace("-", "_") + "_"


def read_secret(env: Mapping[str, str], name: str) -> SecretStr | None:
    """`NAME` or `NAME_FILE` (a path whose content, stripped, is the secret)."""
    if env.get(name):
        return SecretStr(env[name])
    path = env.get(name + "_FILE")
    if path:
        try:
            return SecretStr(Path(path).read_text(encoding="utf-8").strip())
        except OSError as exc:
            # Name the variable and the path, never the content.
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
    return None


def _plain_or_file(env: Mapping[str, str], name: str) -> str | None:
    """A setting that may carry a password (a database URL): `NAME` or `NAME_FILE`."""
    secret = read_secret(env, name)
    return secret.get_secret_value() if secret else None


def parse_retention(raw: str, name: str = "BPSM_RETENTION") -> float:
    """'365d', '12w', '90d' -> seconds; '0' -> 0 (keep for ever)."""
    if raw.strip() == "0":
        return 0.0
    try:
        return parse_duration(raw.strip()).total_seconds()
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}, or 0 to keep everything") from exc


def read_webhook_secret(env: Mapping[str, str], name: str) -> SecretStr | None:
    """A webhook secret (`NAME` or `NAME_FILE`). Empty or short ones are refused: an empty
    key still "signs" (anyone can compute HMAC with it), and a short one can be guessed."""
    if name in env and not env[name] and not env.get(name + "_FILE"):
        raise ConfigError(f"{name} is set but empty; unset it or give a secret")
    secret = read_secret(env, name)
    if secret is None:
        return None
    size = len(secret.get_secret_value().encode("utf-8"))
    if size < MIN_WEBHOOK_SECRET_BYTES:
        source = name if env.get(name) else name + "_FILE"
        what = "is empty" if size == 0 else f"is only {size} bytes"
        raise ConfigError(
            f"{source}: the webhook secret {what}; use at least {MIN_WEBHOOK_SECRET_BYTES} "
            "(e.g. `openssl rand -hex 32`, or the file `bpsm setup` writes)"
        )
    return secret


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}: {env[name]!r} is not 1 or 0")


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {raw!r} is not a number") from exc


def _reader(field: str, annotation: Any) -> Any:
    """How a field's variable is read, from its type: secrets (with `_FILE`), numbers,
    flags, or plain text."""
    kinds = set(get_args(annotation)) | {annotation}
    if field == "webhook_secret":
        return read_webhook_secret
    if SecretStr in kinds:
        return read_secret
    if bool in kinds:
        return _flag
    if float in kinds:
        return _float
    return lambda env, name: env.get(name) or None


def read_host_settings(
    model: type[HostSettings], host: str, env: Mapping[str, str], **shared: Any
) -> HostSettings:
    """`model` filled from BPSM_<HOST>_<KEY> variables (a field per key)."""
    prefix = env_prefix(host)
    values: dict[str, Any] = {"name": host, **shared}
    for field, info in model.model_fields.items():
        if field in model.not_from_env:
            continue
        key = model.env_names.get(field, field.upper())
        value = _reader(field, info.annotation)(env, prefix + key)
        if value is not None:
            values[field] = value
    if values.get("url"):
        values["url"] = values["url"].rstrip("/") or None
    return model.model_validate(values)


def load_settings(
    env: Mapping[str, str] | None = None,
    hosts: Mapping[str, type[HostSettings]] | None = None,
    **overrides: object,
) -> Settings:
    """The settings from the environment; `hosts` are the settings models of the helpdesks
    to read (connector.hosts.settings_models(): config knows no host)."""
    unknown = set(overrides) - set(Settings.model_fields)
    if unknown:  # a misspelt override would otherwise be dropped without a word
        raise TypeError(f"load_settings: unknown setting(s) {', '.join(sorted(unknown))}")
    env = os.environ if env is None else env
    mode = env.get("BPSM_MODE") or None
    if mode not in (None, "route", "shadow", "dry-run"):
        raise ConfigError(f"BPSM_MODE: {mode!r} is not one of route, shadow, dry-run")
    max_body = _float(env, "BPSM_MAX_BODY_BYTES")
    values: dict[str, object] = {
        "data_dir": Path(env.get("BPSM_DATA_DIR", "data")),
        "catalogue_path": Path(env.get("BPSM_CATALOGUE", "catalogue.yaml")),
        "learned_path": Path(env["BPSM_LEARNED"]) if env.get("BPSM_LEARNED") else None,
        "mappings_dir": Path(env.get("BPSM_MAPPINGS_DIR", "mappings")),
        "database_url": _plain_or_file(env, "BPSM_DATABASE_URL"),
        "redis_url": _plain_or_file(env, "BPSM_REDIS_URL"),
        "queue_name": env.get("BPSM_QUEUE_NAME", "bpsm"),
        "mode": mode,
        "log_level": env.get("BPSM_LOG_LEVEL", "INFO"),
    }
    if max_body is not None:
        values["max_body_bytes"] = int(max_body)
    if env.get("BPSM_RETENTION"):
        values["retention"] = parse_retention(env["BPSM_RETENTION"])
    for key, name in (
        ("retry_budget", "BPSM_RETRY_BUDGET"),
        ("retry_base_delay", "BPSM_RETRY_BASE_DELAY"),
        ("retry_max_delay", "BPSM_RETRY_MAX_DELAY"),
        ("lease_seconds", "BPSM_LEASE_SECONDS"),
        ("sweep_interval", "BPSM_SWEEP_INTERVAL"),
        ("dispatch_interval", "BPSM_DISPATCH_INTERVAL"),
        ("burst_rate", "BPSM_BURST_RATE"),
        ("burst_yield", "BPSM_BURST_YIELD"),
        ("maintenance_interval", "BPSM_MAINTENANCE_INTERVAL"),
        ("improvement_recheck", "BPSM_IMPROVEMENT_RECHECK"),
        ("http_timeout", "BPSM_HTTP_TIMEOUT"),
        ("start_timeout", "BPSM_START_TIMEOUT"),
        ("purge_interval", "BPSM_PURGE_INTERVAL"),
    ):
        number = _float(env, name)
        if number is not None:
            values[key] = int(number) if key == "retry_budget" else number
    values.update(overrides)
    timeout = values.get("http_timeout", DEFAULT_HTTP_TIMEOUT)
    if "hosts" not in overrides:
        values["hosts"] = {
            name: read_host_settings(model, name, env, http_timeout=timeout)
            for name, model in (hosts or {}).items()
        }
    return Settings.model_validate(values)
