"""GLPI: webhooks (GLPI ≥ 11) or polling (GLPI ≤ 10) in, the legacy REST API (client.py) or
the high-level API (hlclient.py, `options.api: hlapi`) out.

`sansio.py` is the pure part (signature, CRA challenge, payload → event, error hints),
`client.py` the API client, `settings.py` the BPSM_GLPI_* keys and mapping options;
`guide.md` is the install guide, `mapping.yaml` the mapping `bpsm init` copies, `fixtures/`
the recorded webhooks, API answers and the contract.
"""

from __future__ import annotations

from connector.hosts.glpi.client import GlpiClient, connect
from connector.hosts.glpi.hlclient import GlpiHlClient, connect_hl
from connector.hosts.glpi.sansio import GlpiSansIO


class GlpiHost(GlpiSansIO):
    def client(self) -> GlpiClient | GlpiHlClient:
        """The legacy REST API client (`options.api: v1`, the default) or the high-level
        API client (`options.api: hlapi`, hlclient.py)."""
        if self.options.api == "hlapi":
            return connect_hl(self.settings, self.options)
        return connect(self.settings, self.options, self.api_version)


HOST = GlpiHost
__all__ = ["HOST", "GlpiClient", "GlpiHlClient", "GlpiHost"]
