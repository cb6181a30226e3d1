"""docs/catalogue.md stays true: its examples load, its mistakes fail as it says, and it
names every key the catalogue accepts.

The page marks its YAML blocks by their first line: `# catalogue` (a whole catalogue that
`bpsm check` passes without a warning), `# service` (entries of `services:`) and `# invalid`
(followed by a `text` block with the exact output of `bpsm check catalogue.yaml`).
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from connector.catalogue import Catalogue, check_catalogue, load_catalogue
from connector.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "catalogue.md"
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
MARKERS = ("# catalogue", "# service", "# invalid")
# The languages a `# service` fragment is checked in.
SERVICE_FRAME = "version: 1\nlanguages: [en, nb]\nservices:\n"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m["lang"], m["body"]) for m in FENCE.finditer(text)]


def marked(kind: str) -> list[str]:
    return [body for lang, body in fenced_blocks(DOC.read_text()) if _marker(lang, body) == kind]


def _marker(lang: str, body: str) -> str | None:
    first = body.split("\n", 1)[0].strip()
    return first if lang == "yaml" and first in MARKERS else None


def invalid_examples() -> list[tuple[str, str]]:
    """(yaml, expected output) of each `# invalid` block and the `text` block after it."""
    blocks = fenced_blocks(DOC.read_text())
    pairs = []
    for index, (lang, body) in enumerate(blocks):
        if _marker(lang, body) == "# invalid":
            following = blocks[index + 1] if index + 1 < len(blocks) else ("", "")
            assert following[0] == "text", f"no ```text block after:\n{body}"
            pairs.append((body, following[1]))
    return pairs


def bpsm_check(tmp_path: Path, text: str) -> tuple[int, str]:
    """Exit status and output of `bpsm check catalogue.yaml` on `text`."""
    path = tmp_path / "catalogue.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path)])
    return result.exit_code, result.output.replace(str(path), "catalogue.yaml")


def test_every_yaml_block_is_marked_and_each_kind_is_used():
    for lang, body in fenced_blocks(DOC.read_text()):
        if lang == "yaml":
            assert _marker(lang, body), f"a yaml block without one of {MARKERS}:\n{body}"
    assert all(marked(kind) for kind in MARKERS)


@pytest.mark.parametrize("text", marked("# catalogue"))
def test_catalogue_examples_load_without_a_warning(tmp_path, text):
    path = tmp_path / "catalogue.yaml"
    path.write_text(text, encoding="utf-8")
    assert [str(p) for p in check_catalogue(path)] == []
    assert load_catalogue(path).services


@pytest.mark.parametrize("text", marked("# service"))
def test_service_examples_load_without_a_warning(tmp_path, text):
    path = tmp_path / "catalogue.yaml"
    indented = "".join(f"  {line}" if line else line for line in text.splitlines(True))
    path.write_text(SERVICE_FRAME + indented, encoding="utf-8")
    assert [str(p) for p in check_catalogue(path)] == []
    assert load_catalogue(path).services


@pytest.mark.parametrize("text,expected", invalid_examples())
def test_invalid_examples_fail_with_the_documented_output(tmp_path, text, expected):
    status, output = bpsm_check(tmp_path, text)
    assert status == 1
    assert output == expected


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key path a model accepts: 'services[].sla.response'."""
    keys = set()
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        keys.add(path)
        for nested, in_list in _nested_models(field.annotation):
            keys |= model_keys(nested, path + ("[]" if in_list else "") + ".")
    return keys


def _nested_models(annotation: Any, in_list: bool = False) -> list[tuple[type[BaseModel], bool]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, in_list)]
    origin = typing.get_origin(annotation)
    if origin is dict:  # a text map or term list: its keys are languages, not format keys
        return []
    listed = in_list or origin in (list, tuple, set, frozenset)
    if origin is typing.Annotated:
        return _nested_models(typing.get_args(annotation)[0], in_list)
    if origin in (typing.Union, types.UnionType) or listed:
        return [m for arg in typing.get_args(annotation) for m in _nested_models(arg, listed)]
    return []


def documented_keys() -> set[str]:
    """The first column of the table under '## Every key'."""
    text = DOC.read_text()
    section = text.split("\n## Every key\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE))


def test_the_key_table_lists_exactly_the_keys_the_catalogue_accepts():
    accepted = model_keys(Catalogue)
    assert "services[].maintenance[].every" in accepted  # the walk reaches nested lists
    assert accepted - documented_keys() == set(), "keys without documentation"
    assert documented_keys() - accepted == set(), "documented keys the catalogue refuses"
