"""What the worker and the processes use of a running connector, handed to them.

The Runtime builds one Context and the job queue passes it to every job: the worker and the
processes never reach back into the Runtime (or the queue) for a mapping, a mode or a
client, so neither imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from connector.catalogue import Catalogue
from connector.classify import CatalogueIndex
from connector.config import Mode, Settings
from connector.hosts.base import HostClient
from connector.mapping import Mapping
from connector.store import Store


@dataclass(frozen=True)
class Context:
    settings: Settings
    store: Store
    catalogue: Catalogue
    # The classifier, built on first use (web workers never classify) and replaced when
    # BPSM_LEARNED changes: asked for at each use, never kept.
    index: Callable[[], CatalogueIndex]
    mapping: Callable[[str], Mapping]  # host → its mapping (re-read once a file appears)
    mode: Callable[[str], Mode]  # host → dry-run | shadow | route
    client: Callable[[str], HostClient]  # host → its API client (one per process)
    # (host, improvement ticket) → when it was last seen open; see processes._free_slot.
    seen_open: dict[tuple[str, str], float] = field(default_factory=dict)
