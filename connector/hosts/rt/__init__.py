"""Request Tracker 5: polled with TicketSQL, routed through REST 2 (`/REST/2.0`).

`sansio.py` is the pure part (TicketSQL, RT's dates and answers, the rights file),
`client.py` the API client, `settings.py` the BPSM_RT_* keys and mapping options;
`guide.md` is the install guide, `mapping.yaml` the mapping `bpsm init` copies, `fixtures/`
the answers recorded from a real RT.
"""

from __future__ import annotations

from connector.hosts.base import read_mapping_options
from connector.hosts.rt.client import RTClient, connect
from connector.hosts.rt.sansio import RTSansIO
from connector.hosts.rt.settings import RTOptions


class RTHost(RTSansIO):
    def client(self) -> RTClient:
        options = read_mapping_options(self.name, RTOptions, self.mapping.options)
        return connect(self.settings, options, agent_queues=tuple(self.mapping.all_queues()))


HOST = RTHost
__all__ = ["HOST", "RTClient", "RTHost"]
