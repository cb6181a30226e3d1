"""Zammad: trigger webhooks in, REST API out (group, tags, internal note).

`sansio.py` is the pure part (signature, payload → event), `client.py` the API client,
`settings.py` the BPSM_ZAMMAD_* keys; `guide.md` is the install guide, `mapping.yaml` the
mapping `bpsm init` copies, `fixtures/` the recorded webhooks and the contract.
"""

from __future__ import annotations

from connector.hosts.zammad.client import ZammadClient, connect
from connector.hosts.zammad.sansio import ZammadSansIO


class ZammadHost(ZammadSansIO):
    def client(self) -> ZammadClient:
        return connect(self.settings)


HOST = ZammadHost
__all__ = ["HOST", "ZammadClient", "ZammadHost"]
