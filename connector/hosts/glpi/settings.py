"""GLPI's environment keys (BPSM_GLPI_*) and mapping options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from connector.config import ConfigError, HostSettings
from connector.hosts.base import MappingOptions


class GlpiSettings(HostSettings):
    """BPSM_GLPI_URL (the apirest.php base), _USER_TOKEN(_FILE), _APP_TOKEN(_FILE),
    _WEBHOOK_SECRET(_FILE), _API_VERSION, _WEBHOOK_MAX_AGE, _POLL_INTERVAL, _MAPPING,
    _ALLOW_UNSIGNED; _TOKEN(_FILE) stands in for the user token (`bpsm setup --token-file`).
    With `options.api: hlapi`: _CLIENT_ID, _CLIENT_SECRET, _USERNAME, _PASSWORD (each also
    `_FILE`), the OAuth2 client and the API user of GLPI's high-level API."""

    token: SecretStr | None = None
    user_token: SecretStr | None = None
    app_token: SecretStr | None = None
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    username: SecretStr | None = None
    password: SecretStr | None = None
    api_version: str | None = None
    webhook_max_age: float | None = None


class GlpiOptions(MappingOptions):
    """`options:` of mappings/glpi.yaml."""

    api_version: int = Field(default=11, ge=9, le=99)
    # Which API the client writes through: the legacy REST API (apirest.php, App-Token and
    # user token) or the high-level API (api.php/v2, OAuth2; GLPI ≥ 11).
    api: Literal["v1", "hlapi"] = "v1"
    entity: int = Field(default=0, ge=0)  # where setup creates groups, categories, webhooks
    categories: dict[str, str] = Field(default_factory=dict)  # service id → ITIL category
    set_time_to_resolve: bool = False
    page_size: int = Field(default=50, ge=1, le=1000)  # rows per search/list page
    poll_overlap: float = Field(default=120.0, ge=0.0)  # seconds re-read on every poll


def api_major(env_value: str | None, option: int) -> int:
    """BPSM_GLPI_API_VERSION ("10", "10.0.18", "11") wins over `options.api_version`."""
    if not env_value:
        return option
    head = env_value.strip().split(".", 1)[0]
    if not head.isdigit() or not 9 <= int(head) <= 99:
        raise ConfigError(f"BPSM_GLPI_API_VERSION: {env_value!r} is not a GLPI version (10, 11)")
    return int(head)
