"""The connector's own notes: the marker every note it writes opens with, and the texts of
those notes per language (`data/messages.yaml`). Pure.

The marker is the loop guard of every host: an update whose text is the connector's own note
is not routed again. Anyone can type the marker, so `is_own_note` also asks who wrote it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from connector.yamlsource import load_data

NOTE_MARKER = "[bpsm-connector]"
# Opening tags (`<p>`, `<div …>`) or a comment's `<!--`, then the marker. The alternatives
# cannot both match at one place (`<!` versus `<` + not `!`), so matching is linear.
_LEADING_MARKER = re.compile(r"\s*(?:<!--\s*|<[^>!]*>\s*)*" + re.escape(NOTE_MARKER))


@cache
def messages() -> dict[str, dict[str, Any]]:
    text = resources.files("connector").joinpath("data/messages.yaml").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = load_data(text)
    return data


def has_marker(text: str) -> bool:
    """Whether a text carries the connector's marker. Anyone can type it: on its own it
    proves nothing about who wrote the text (see is_own_note)."""
    return NOTE_MARKER in text


def starts_with_marker(text: str) -> bool:
    """The marker opens the text (past opening HTML tags or an HTML comment's opener), as in
    everything the connector writes; a customer quoting it inside a message does not count."""
    return _LEADING_MARKER.match(text[:500]) is not None


def is_own_note(text: str, author: object, connector: object) -> bool:
    """A note the connector wrote: it carries the marker AND its author is the connector's
    own API user. The "note already there?" look of every host asks this, so that a customer
    who types the marker cannot make the connector skip its routing note."""
    return has_marker(text) and author is not None and author == connector
