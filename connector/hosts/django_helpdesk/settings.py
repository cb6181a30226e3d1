"""django-helpdesk's environment keys (BPSM_DJANGO_HELPDESK_*) and mapping options."""

from __future__ import annotations

from pydantic import Field, SecretStr

from connector.config import HostSettings
from connector.hosts.base import MappingOptions


class DjangoHelpdeskSettings(HostSettings):
    """BPSM_DJANGO_HELPDESK_URL, _USER, _PASSWORD(_FILE) (a staff account),
    _WEBHOOK_SECRET(_FILE) (the ?token= of the webhook URL), _POLL_INTERVAL (set: poll
    instead of receiving webhooks), _MAPPING, _ALLOW_UNSIGNED."""

    user: str | None = None
    password: SecretStr | None = None


class DjangoHelpdeskOptions(MappingOptions):
    """`options:` of mappings/django-helpdesk.yaml."""

    queue_ids: dict[str, int] = Field(default_factory=dict)  # slug → id (bpsm_queues --json)
    queue_titles: dict[str, str] = Field(default_factory=dict)  # slug → title, for setup
