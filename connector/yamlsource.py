"""Load YAML while remembering the line of every node, so errors can name file and line.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two equal keys; both
hide admin mistakes. We compose the node tree ourselves, record ``path -> line`` and report
duplicate keys as problems of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off
    as booleans, which turns the Norwegian language code `no` into False."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


if yaml.__with_libyaml__:

    class FastYaml12Loader(yaml.CSafeLoader):
        """Yaml12Loader's resolvers on libyaml's parser: a 10,000-service catalogue is
        composed in 5 s instead of 13. Its nodes carry the same lines; its error messages
        differ, so a file it rejects is parsed again by Yaml12Loader (parse_yaml)."""

    FastYaml12Loader.yaml_implicit_resolvers = Yaml12Loader.yaml_implicit_resolvers
    COMPOSER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = FastYaml12Loader
else:  # a PyYAML built without libyaml
    COMPOSER = Yaml12Loader


def load_data(text: str) -> Any:
    """safe_load with YAML 1.2 booleans, for the product's own data files."""
    return yaml.load(text, Loader=COMPOSER)  # noqa: S506 - a SafeLoader (or CSafeLoader)


@dataclass(frozen=True)
class Problem:
    """One finding about a configuration file: where it is and what is wrong."""

    file: str
    line: int
    path: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {prefix}{where}{self.message}"


@dataclass
class YamlDocument:
    """Plain Python data plus the line of every mapping key and sequence item."""

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    constructor: yaml.SafeLoader = field(default_factory=lambda: Yaml12Loader(""), repr=False)

    def line_of(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one."""
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)


def format_loc(loc: Loc) -> str:
    """('services', 3, 'sla', 'response') -> 'services[3].sla.response'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


MERGE_TAG = "tag:yaml.org,2002:merge"


def _under(loc: Loc, lines: dict[Loc, int]) -> dict[Loc, int]:
    """The entries of `lines` at `loc` or below it."""
    return {at: n for at, n in lines.items() if at[: len(loc)] == loc}


def _merged(
    value_node: yaml.Node, loc: Loc, doc: YamlDocument
) -> tuple[dict[Any, Any], dict[Loc, int]]:
    """The keys a merge key (`<<: *std` or `<<: [*a, *b]`) brings in, and their lines.

    As in YAML's merge type (and PyYAML's loader), the first mapping named wins over later
    ones. The lines are those of the anchored mapping, where an admin can fix the value."""
    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
    merged: dict[Any, Any] = {}
    lines: dict[Loc, int] = {}
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            doc.problems.append(
                Problem(
                    doc.file,
                    source.start_mark.line + 1,
                    format_loc(loc),
                    "a merge key (<<) must name a mapping, e.g. <<: *defaults",
                )
            )
            continue
        scratch = YamlDocument(doc.file, None, constructor=doc.constructor)
        data = _convert(source, loc, scratch)
        # The anchored mapping reports its own problems where it is defined; once is enough.
        doc.problems.extend(p for p in scratch.problems if p not in doc.problems)
        for key, value in data.items():
            if key not in merged:
                merged[key] = value
                lines.update(_under(loc + (str(key),), scratch.lines))
    return merged, lines


def _convert(node: yaml.Node, loc: Loc, doc: YamlDocument) -> Any:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        merged_lines: dict[Loc, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                more, more_lines = _merged(value_node, loc, doc)
                for key, value in more.items():
                    if key not in merged:  # an earlier merge key wins, as within one
                        merged[key] = value
                        merged_lines.update(_under(loc + (str(key),), more_lines))
                continue
            key = _convert(key_node, loc + ("<key>",), doc)
            if isinstance(key, list | dict):
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        format_loc(loc),
                        "a mapping key must be a plain value",
                    )
                )
                continue
            child = loc + (str(key),)
            if key in result:
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        format_loc(child),
                        f"duplicate key {key!r} (first on line {doc.lines.get(child, '?')})",
                    )
                )
                continue
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, child, doc)
        # Keys written in the mapping itself win over merged ones.
        for key, value in merged.items():
            if key not in result:
                result[key] = value
                for at, line in _under(loc + (str(key),), merged_lines).items():
                    doc.lines.setdefault(at, line)
        doc.lines.pop(loc + ("<key>",), None)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, loc + (i,), doc) for i, item in enumerate(node.value)]
    # Scalars resolve exactly as safe_load would (ints, bools, nulls, strings).
    return doc.constructor.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse ``text``; syntax errors become a Problem with the line YAML reports."""
    doc = YamlDocument(file=file, data=None)
    try:
        try:
            node = yaml.compose(text, Loader=COMPOSER)
        except yaml.YAMLError:
            node = yaml.compose(text, Loader=Yaml12Loader)  # its messages, which we report
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        doc.problems.append(Problem(file, line, "", f"YAML syntax error: {exc.problem}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, 1, "", f"YAML error: {exc}"))
        return doc
    if node is None:
        doc.data = None
        return doc
    try:
        doc.data = _convert(node, (), doc)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag such as !!python/object
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        doc.problems.append(Problem(file, line, "", f"YAML error: {exc.problem}"))
        doc.data = None
    return doc


def read_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; unreadable files and bad UTF-8 become Problems."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return YamlDocument(name, None, problems=[Problem(name, 0, "", "file not found")])
    except UnicodeDecodeError as exc:
        return YamlDocument(
            name, None, problems=[Problem(name, 1, "", f"not valid UTF-8 ({exc.reason})")]
        )
    except OSError as exc:
        return YamlDocument(name, None, problems=[Problem(name, 0, "", f"cannot read: {exc}")])
    return parse_yaml(text, name)
