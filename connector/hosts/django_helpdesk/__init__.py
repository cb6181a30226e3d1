"""django-helpdesk 2.6: webhooks (or polling) in, REST API out. The host's name is
`django-helpdesk` (webhook path, CLI argument, BPSM_DJANGO_HELPDESK_ prefix).

`sansio.py` is the pure part (token check, payload → event, error hints), `client.py` the
API client, `settings.py` the BPSM_DJANGO_HELPDESK_* keys and mapping options; `guide.md` is
the install guide, `mapping.yaml` the mapping `bpsm init` copies, `fixtures/` the recorded
webhooks. The helpdesk-side app that creates queues is in contrib/django_helpdesk.
"""

from __future__ import annotations

from connector.hosts.base import read_mapping_options
from connector.hosts.django_helpdesk.client import DjangoHelpdeskClient, connect
from connector.hosts.django_helpdesk.sansio import DjangoHelpdeskSansIO
from connector.hosts.django_helpdesk.settings import DjangoHelpdeskOptions


class DjangoHelpdeskHost(DjangoHelpdeskSansIO):
    def client(self) -> DjangoHelpdeskClient:
        options = read_mapping_options(self.name, DjangoHelpdeskOptions, self.mapping.options)
        return connect(self.settings, options, self.own_user_ids)


HOST = DjangoHelpdeskHost
__all__ = ["HOST", "DjangoHelpdeskClient", "DjangoHelpdeskHost"]
