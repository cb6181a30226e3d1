"""`bpsm learn --suggest`: learned words worth adding as catalogue keywords, for an admin who
prefers to keep everything in the catalogue. Each service's patch is measured: the catalogue
with the patch, without any learned file, is evaluated on the learning data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from connector.catalogue import Catalogue
from connector.classify import CatalogueIndex, build_index
from connector.evaluate import LabelledTicket, evaluate
from connector.learn import LearnedModel
from connector.mapping import Mapping

PER_SERVICE = 3  # words suggested per service: the strongest learned ones
MAX_SERVICES = 10  # each is measured with an index of its own, which takes a second or two


@dataclass(frozen=True)
class Suggestion:
    service: str
    language: str
    keywords: tuple[tuple[str, int], ...]  # (word, support)
    accuracy_change: float  # service accuracy on the learning data, with the patch − without


def suggest_keywords(
    index: CatalogueIndex,
    mapping: Mapping,
    tickets: Sequence[LabelledTicket],
    model: LearnedModel,
) -> list[Suggestion]:
    catalogue = index.catalogue
    language = catalogue.languages[0] if catalogue.languages else "en"
    base = evaluate(list(tickets), index.with_learned(None), mapping)["service_accuracy"]
    proposals = []
    for service, terms in model.services.items():
        words = [
            (t.forms[0], t.support)
            for t in terms
            if t.kind == "word" and t.forms and t.weight > 0 and not _listed(catalogue, t.forms)
        ][:PER_SERVICE]
        if words:
            proposals.append((sum(t.weight for t in terms[:PER_SERVICE]), service, words))
    proposals.sort(key=lambda p: (-p[0], p[1]))
    out = []
    for _, service, words in proposals[:MAX_SERVICES]:
        patched = build_index(_with_keywords(catalogue, service, language, [w for w, _ in words]))
        accuracy = evaluate(list(tickets), patched, mapping)["service_accuracy"]
        out.append(Suggestion(service, language, tuple(words), round(accuracy - base, 4)))
    return out


def _listed(catalogue: Catalogue, forms: Sequence[str]) -> bool:
    listed = {w.lower() for s in catalogue.services for ws in s.keywords.values() for w in ws}
    return any(f in listed for f in forms)


def _with_keywords(
    catalogue: Catalogue, service_id: str, language: str, words: Sequence[str]
) -> Catalogue:
    services = []
    for service in catalogue.services:
        if service.id == service_id:
            keywords = dict(service.keywords)
            keywords[language] = [*keywords.get(language, []), *words]
            service = service.model_copy(update={"keywords": keywords})
        services.append(service)
    return catalogue.model_copy(update={"services": services})


def format_suggestions(suggestions: Sequence[Suggestion]) -> str:
    """A YAML patch: per service the keywords to add, with support and measured change."""
    if not suggestions:
        return "# no learned words to suggest as catalogue keywords"
    lines = [
        "# Keywords to add to the catalogue (bpsm learn --suggest). Per word: the tickets of",
        "# the service that used it; per service: the change in service accuracy on the",
        "# learning data when its words are added (without any learned file). Words are",
        "# listed under the catalogue's first language: move each to its own language.",
        "services:",
    ]
    for s in suggestions:
        lines.append(f"  - id: {s.service}  # accuracy change {s.accuracy_change:+.3f}")
        lines.append("    keywords:")
        lines.append(f"      {s.language}:")
        for word, support in s.keywords:
            quoted = yaml.safe_dump(word, allow_unicode=True).strip().removesuffix("...").strip()
            lines.append(f"        - {quoted}  # support {support}")
    return "\n".join(lines)
