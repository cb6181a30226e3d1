"""Settings from the environment (12-factor), with `…_FILE` variants for every secret.

Names: BPSM_<HOST>_<KEY>, e.g. BPSM_ZAMMAD_URL, BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET.
A host counts as configured when its URL is set. Secrets are kept in `SecretStr` so they never
appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

Mode = Literal["route", "shadow", "dry-run"]
SECRET_KEYS = ("TOKEN", "PASSWORD", "WEBHOOK_SECRET", "APP_TOKEN", "USER_TOKEN")
MIN_WEBHOOK_SECRET_BYTES = 16
PLAIN_KEYS = ("URL", "USER", "POLL_INTERVAL", "MAPPING", "API_VERSION", "WEBHOOK_MAX_AGE")


class ConfigError(Exception):
    pass


class HostSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    url: str | None = None
    user: str | None = None
    token: SecretStr | None = None
    password: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    user_token: SecretStr | None = None
    poll_interval: float | None = None
    mapping_path: str | None = None
    api_version: str | None = None
    webhook_max_age: float | None = None
    # BPSM_<HOST>_ALLOW_UNSIGNED=1: accept this host's webhooks without a credential in
    # route/shadow mode (warned about at start and on /healthz).
    allow_unsigned: bool = False

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

    def host(self, name: str) -> HostSettings:
        return self.hosts.get(name) or HostSettings(name=name)

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
    from connector.catalogue import parse_duration

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


def host_settings(host: str, env: Mapping[str, str]) -> HostSettings:
    prefix = env_prefix(host)
    return HostSettings(
        name=host,
        url=(env.get(prefix + "URL") or "").rstrip("/") or None,
        user=env.get(prefix + "USER") or None,
        token=read_secret(env, prefix + "TOKEN"),
        password=read_secret(env, prefix + "PASSWORD"),
        webhook_secret=read_webhook_secret(env, prefix + "WEBHOOK_SECRET"),
        app_token=read_secret(env, prefix + "APP_TOKEN"),
        user_token=read_secret(env, prefix + "USER_TOKEN"),
        poll_interval=_float(env, prefix + "POLL_INTERVAL"),
        mapping_path=env.get(prefix + "MAPPING") or None,
        api_version=env.get(prefix + "API_VERSION") or None,
        webhook_max_age=_float(env, prefix + "WEBHOOK_MAX_AGE"),
        allow_unsigned=_flag(env, prefix + "ALLOW_UNSIGNED"),
    )


def load_settings(
    env: Mapping[str, str] | None = None, host_names: tuple[str, ...] = (), **overrides: object
) -> Settings:
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
        "hosts": {name: host_settings(name, env) for name in host_names},
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
    return Settings.model_validate(values)
