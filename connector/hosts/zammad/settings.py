"""Zammad's environment keys (BPSM_ZAMMAD_*) and mapping options."""

from __future__ import annotations

from pydantic import SecretStr

from connector.config import HostSettings
from connector.hosts.base import MappingOptions


class ZammadSettings(HostSettings):
    """BPSM_ZAMMAD_URL, _TOKEN(_FILE), _USER (the connector's login, for loop prevention),
    _WEBHOOK_SECRET(_FILE), _WEBHOOK_TOKEN(_FILE) (Zammad 7's Bearer authentication of a
    webhook, instead of or besides the signature), _MAPPING, _ALLOW_UNSIGNED."""

    user: str | None = None
    token: SecretStr | None = None
    webhook_token: SecretStr | None = None


class ZammadOptions(MappingOptions):
    """`options:` of mappings/zammad.yaml: Zammad has none."""
