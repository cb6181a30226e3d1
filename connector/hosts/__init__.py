"""Helpdesk modules. Each `connector/hosts/<module>.py` sets `HOST = <Host subclass>`;
they are discovered here, so adding a helpdesk changes no other file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from connector.hosts.base import Host


@cache
def host_classes() -> dict[str, type[Host]]:
    found: dict[str, type[Host]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_") or module.name == "base":
            continue
        host = getattr(importlib.import_module(f"{__name__}.{module.name}"), "HOST", None)
        if host is not None:
            found[host.name] = host
    return found


def host_names() -> tuple[str, ...]:
    return tuple(sorted(host_classes()))
