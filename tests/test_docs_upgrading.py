"""docs/upgrading.md stays true: its schema history and uninstall SQL match the store, and
the `bpsm` commands and options it and docs/catalogue.md name exist."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from connector.cli import main
from connector.store.schema import MIGRATIONS, SCHEMA_VERSION, metadata

DOCS = Path(__file__).resolve().parents[1] / "docs"
UPGRADING = DOCS / "upgrading.md"
FENCE = re.compile(r"^ *```[a-z]*\n(.*?)^ *```$", re.MULTILINE | re.DOTALL)
# `bpsm <command> …` at the start of a code span or after a space or a path's slash (not
# `huey.redis.bpsm`), up to a comment, pipe or `&&` (and a redirection: see command_uses).
COMMAND = re.compile(r"(?:^|(?<=[\s/]))bpsm ([a-z][a-z-]*)([^#|&\n]*)", re.MULTILINE)


def test_the_uninstall_sql_drops_every_table_of_the_store():
    sql = FENCE.findall(UPGRADING.read_text())
    drops = [block for block in sql if block.strip().startswith("DROP TABLE")]
    assert len(drops) == 1
    assert set(re.findall(r"\bbpsm_\w+", drops[0])) == set(metadata.tables)


def test_the_schema_history_has_a_row_per_version():
    rows = re.findall(r"^\| (\d+) \|", UPGRADING.read_text(), re.MULTILINE)
    assert [int(row) for row in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert set(MIGRATIONS) <= set(range(2, SCHEMA_VERSION + 1))


def code_texts(text: str) -> list[str]:
    """The fenced blocks and the inline code spans of a Markdown page."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return blocks + re.findall(r"`([^`]+)`", prose)


def command_uses() -> list[tuple[str, str, str]]:
    uses = []
    for page in ("upgrading.md", "catalogue.md"):
        for code in code_texts((DOCS / page).read_text()):
            uses += [(page, m[1], m[2].split(" > ")[0]) for m in COMMAND.finditer(code)]
    return uses


@pytest.mark.parametrize("page,name,rest", command_uses())
def test_documented_commands_and_options_exist(page, name, rest):
    command = main.commands.get(name)
    assert command is not None, f"{page}: no command `bpsm {name}`"
    words = rest.split()
    if isinstance(command, click.Group):
        assert words and words[0] in command.commands, f"{page}: `bpsm {name}{rest}`"
        command = command.commands[words[0]]
    options = {opt for param in command.params for opt in param.opts}
    for option in re.findall(r"(?<!\S)--[a-z][a-z-]*", rest):
        assert option in options, f"{page}: `bpsm {name}` has no {option}"
