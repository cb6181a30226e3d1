"""Request Tracker's environment keys (BPSM_RT_*) and mapping options."""

from __future__ import annotations

from pydantic import Field, SecretStr

from connector.config import HostSettings
from connector.hosts.base import MappingOptions


class RTSettings(HostSettings):
    """BPSM_RT_URL (RT's base or its /REST/2.0 URL), _TOKEN(_FILE) or _USER +
    _PASSWORD(_FILE), _POLL_INTERVAL, _MAPPING."""

    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None


class RTOptions(MappingOptions):
    """`options:` of mappings/rt.yaml."""

    watch_queues: tuple[str, ...] = Field(default=("General",), min_length=1)
    # Ticket custom field that receives the service id; null: the comment alone names it.
    service_field: str | None = "BPSM Service"
    # Re-read this many seconds before the mark: clock skew and same-second updates.
    overlap_seconds: float = Field(default=120.0, ge=0.0)
