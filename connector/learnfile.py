"""The learned file (`bpsm learn --output LEARNED.yaml`): write it, check it with file:line
errors, read it. A reviewer can delete a term's line or set its weight to 0 to undo it."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connector.catalogue import Catalogue, _pydantic_problems
from connector.classify import CatalogueIndex
from connector.learn import LEARNED_VERSION, LearnedModel, LearnedScorer, LearnedTerm
from connector.logs import log_extra
from connector.yamlsource import Problem, YamlDocument, format_loc, read_yaml

KIND = "bpsm-learned"
log = logging.getLogger("bpsm.learned")

HEADER = """\
# Learned by `bpsm learn`: the organisation's own words per service, from tickets its agents
# sorted. Each term: the index key (folded and stemmed, as the classifier matches it; a
# phrase is two keys, a concept a thesaurus concept id), its weight (added as evidence like a
# catalogue keyword), its support (tickets of the service with it) out of `seen` (tickets
# with it), the ticket words it was seen as, and example rows. Kind `catalogue` is one of the
# catalogue's own terms that won tickets for the wrong service: its weight is a factor on the
# term (support: tickets of the service it hit; seen: tickets it made the service win).
# To undo a term, delete its line (or set a word's weight to 0, a catalogue term's to 1); to
# undo everything, remove the file (or BPSM_LEARNED).
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TermEntry(_Strict):
    term: str = Field(min_length=1)
    kind: Literal["word", "phrase", "concept", "catalogue"]
    weight: float = Field(ge=0.0, le=100.0)
    support: int = Field(ge=0)
    seen: int = Field(ge=1)
    forms: list[str] = Field(default_factory=list)
    examples: list[int | str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _factor(self) -> TermEntry:
        if self.kind == "catalogue" and self.weight > 1.0:
            raise ValueError("a catalogue term's weight is a factor from 0 to 1")
        return self


class ServiceEntry(_Strict):
    tickets: int = Field(ge=0)
    terms: list[TermEntry] = Field(default_factory=list)


class LearnedDocument(_Strict):
    kind: Literal["bpsm-learned"]
    version: Literal[1]
    tickets: int = Field(ge=0)
    sources: list[str] = Field(default_factory=list)
    services: dict[str, ServiceEntry] = Field(default_factory=dict)


class LearnedError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def is_learned(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def dump(model: LearnedModel) -> str:
    """The model as reviewable YAML: one line per term, strongest first."""
    lines = [HEADER.rstrip("\n"), f"kind: {KIND}", f"version: {LEARNED_VERSION}"]
    lines.append(f"tickets: {model.tickets}")
    lines.append("sources: " + _flow(list(model.sources)))
    lines.append("services:" + ("" if model.services else " {}"))
    for service, terms in model.services.items():
        lines.append(f"  {_flow(service)}:")
        lines.append(f"    tickets: {model.service_tickets.get(service, 0)}")
        lines.append("    terms:" + ("" if terms else " []"))
        for t in terms:
            entry: dict[str, Any] = {
                "term": t.term,
                "kind": t.kind,
                "weight": t.weight,
                "support": t.support,
                "seen": t.seen,
                "forms": list(t.forms),
                "examples": list(t.examples),
            }
            lines.append(f"      - {_flow(entry)}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    text: str = yaml.safe_dump(
        value, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False
    )
    return text.strip().removesuffix("...").strip()


def check_learned_document(
    doc: YamlDocument, catalogue: Catalogue | None = None
) -> tuple[LearnedModel | None, list[Problem]]:
    """The model in a parsed file, and every problem with its line."""
    problems = list(doc.problems)
    if problems:
        return None, problems
    if not isinstance(doc.data, dict):
        return None, [Problem(doc.file, 1, "", "a learned file must be a YAML mapping")]
    try:
        parsed = LearnedDocument.model_validate(doc.data)
    except ValidationError as exc:
        return None, _pydantic_problems(exc, doc)
    if catalogue is not None:
        known = {s.id for s in catalogue.services}
        for service in parsed.services:
            if service not in known:
                loc = ("services", service)
                problems.append(
                    Problem(
                        doc.file,
                        doc.line_of(loc),
                        format_loc(loc),
                        f"{service!r} is not a service id in the catalogue",
                    )
                )
    if problems:
        return None, problems
    return to_model(parsed), []


def to_model(parsed: LearnedDocument) -> LearnedModel:
    return LearnedModel(
        tickets=parsed.tickets,
        services={
            service: tuple(
                LearnedTerm(
                    term=t.term,
                    kind=t.kind,
                    weight=t.weight,
                    support=t.support,
                    seen=t.seen,
                    forms=tuple(t.forms),
                    examples=tuple(t.examples),
                )
                for t in entry.terms
            )
            for service, entry in parsed.services.items()
        },
        service_tickets={service: entry.tickets for service, entry in parsed.services.items()},
        sources=tuple(parsed.sources),
    )


def load_learned(path: str | Path, catalogue: Catalogue | None = None) -> LearnedModel:
    """Read and check a learned file; raises LearnedError listing every problem. An empty
    file is an empty model (today's predictions)."""
    doc = read_yaml(path)
    if doc.data is None and not doc.problems:
        return LearnedModel()
    model, problems = check_learned_document(doc, catalogue)
    if model is None:
        raise LearnedError(problems)
    return model


class LearnedFileWatcher:
    """BPSM_LEARNED for a running service: the index plus the learned file, re-read when the
    file changes (its mtime and size, looked at on each use; a stat costs microseconds), so
    a new `bpsm learn` takes effect without a restart. A broken file is logged and the last
    good one kept; a removed file means no learned evidence."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._base: CatalogueIndex | None = None
        self._current: CatalogueIndex | None = None

    def current(self, base: CatalogueIndex) -> CatalogueIndex:
        try:
            status = self.path.stat()
            stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp and base is self._base and self._current is not None:
            return self._current
        with self._lock:
            if stamp != self._stamp or base is not self._base or self._current is None:
                self._current = self._reload(base, stamp)
                self._base, self._stamp = base, stamp
            return self._current

    def _reload(self, base: CatalogueIndex, stamp: tuple[int, int] | None) -> CatalogueIndex:
        if stamp is None:
            if self._stamp is not None:
                log.warning(
                    "learned file gone; classifying without it",
                    extra=log_extra({"path": str(self.path)}),
                )
            return base.with_learned(None)
        try:
            model = load_learned(self.path, base.catalogue)
        except LearnedError as exc:
            log.error(
                "learned file not used: %s",
                exc.problems[0],
                extra=log_extra({"path": str(self.path)}),
            )
            return self._current if self._current is not None else base.with_learned(None)
        log.info(
            "learned file loaded",
            extra=log_extra({"path": str(self.path), "tickets": model.tickets}),
        )
        return base.with_learned(None if model.empty else LearnedScorer.compile(base, model))


class LabelEntry(_Strict):
    service: str | None = None
    process: Literal["reactive", "relation", "change"] = "reactive"


def load_label_map(path: str | Path, catalogue: Catalogue) -> dict[str, tuple[str, str | None]]:
    """`--label-map`: the helpdesk's groups/queues/categories → (process, service id).
    A value is a service id, or {service: ID, process: reactive|relation|change}."""
    doc = read_yaml(path)
    problems = list(doc.problems)
    if not problems and not isinstance(doc.data, dict):
        problems.append(Problem(doc.file, 1, "", "a label map is a YAML mapping: queue → service"))
    if problems:
        raise LearnedError(problems)
    known = {s.id for s in catalogue.services}
    out: dict[str, tuple[str, str | None]] = {}
    for queue, value in doc.data.items():
        loc = (str(queue),)
        try:
            entry = (
                LabelEntry(service=value)
                if isinstance(value, str)
                else LabelEntry.model_validate(value)
            )
        except ValidationError as exc:
            problems += [
                Problem(doc.file, doc.line_of(loc), str(queue), e["msg"]) for e in exc.errors()
            ]
            continue
        if entry.service is not None and entry.service not in known:
            problems.append(
                Problem(
                    doc.file,
                    doc.line_of(loc),
                    str(queue),
                    f"{entry.service!r} is not a service id in the catalogue",
                )
            )
            continue
        out[str(queue)] = (entry.process, entry.service)
    if problems:
        raise LearnedError(problems)
    return out
