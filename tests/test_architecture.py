"""The import contracts of pyproject.toml ([tool.importlinter]): a pure core, reports that
never reach a helpdesk, and no import cycles. `make test` runs them here."""

from __future__ import annotations

from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold():
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_two_modules_import_each_other_however_indirectly():
    """Stricter than the siblings contract: a package and a module inside it count too."""
    graph = grimp.build_graph("connector", cache_dir=None)
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == []
