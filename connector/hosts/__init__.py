"""Helpdesk modules. Each `connector/hosts/<module>.py` sets `HOST = <Host subclass>`;
they are discovered here, so adding a helpdesk changes no other file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from connector.config import HostSettings, read_host_settings
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


def settings_models(*names: str) -> dict[str, type[HostSettings]]:
    """The settings model each registered host declares (all hosts, or those named), for
    config.load_settings."""
    hosts = host_classes()
    return {name: hosts[name].settings_model for name in (names or tuple(hosts))}


def host_settings(host: str, env: Mapping[str, str], **shared: Any) -> HostSettings:
    """The registered host's settings from the environment."""
    return read_host_settings(settings_models(host)[host], host, env, **shared)
