"""`bpsm init`: a starting catalogue and mappings for a new installation, never overwriting.

The example catalogue ships inside the package (connector/examples/), and each helpdesk's
default mapping inside its host package (connector/hosts/<name>/mapping.yaml), so that an
installed wheel can write them wherever the admin keeps the configuration.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from connector.hosts import host_classes, host_names


def host_package(host: str) -> Traversable | None:
    """The folder of a host's package (mapping.yaml, guide.md, fixtures/); None for a host
    that is a single module (demo)."""
    module = sys.modules[host_classes()[host].__module__]
    return files(module.__name__) if hasattr(module, "__path__") else None


def example_files() -> list[tuple[str, Traversable]]:
    """(path relative to the target folder, packaged file) for every starting file: the
    catalogue, and mappings/<host>.yaml for every host package that has a mapping."""
    found = [("catalogue.yaml", files("connector") / "examples" / "catalogue.yaml")]
    for host in host_names():
        package = host_package(host)
        if package is not None and (package / "mapping.yaml").is_file():
            found.append((f"mappings/{host}.yaml", package / "mapping.yaml"))
    return found


def write_starter(target: Path) -> list[tuple[Path, bool]]:
    """Copy the starting files into `target`; (path, written) — an existing file is kept."""
    results: list[tuple[Path, bool]] = []
    for relative, source in example_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(destination, "xb") as out:  # "x": never overwrite an admin's file
                out.write(source.read_bytes())
            results.append((destination, True))
        except FileExistsError:
            results.append((destination, False))
    return results
