"""`bpsm init`: a starting catalogue and mappings for a new installation, never overwriting.

The example catalogue and mappings ship inside the package (connector/examples/), so that an
installed wheel can write them wherever the admin keeps the configuration.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path


def example_files() -> list[tuple[str, Traversable]]:
    """(path relative to the target folder, packaged file) for every starting file."""
    root = files("connector") / "examples"
    found = [("catalogue.yaml", root / "catalogue.yaml")]
    mappings = sorted((root / "mappings").iterdir(), key=lambda item: item.name)
    found += [(f"mappings/{m.name}", m) for m in mappings if m.name.endswith(".yaml")]
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
