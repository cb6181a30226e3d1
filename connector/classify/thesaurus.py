"""The thesaurus: concepts (terms per language, topic, scope), the shipped files and domain
packs, and how a service's links to concepts extend to their topic siblings. Pure, but for
reading the shipped files once."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

from connector.yamlsource import load_data

SIBLING_LINK = 0.5
SIBLING_FULL = 3.0  # linked concepts of a topic at which siblings reach SIBLING_LINK


@dataclass(frozen=True)
class Concept:
    id: str
    terms: dict[str, tuple[str, ...]]  # language -> terms
    topic: str = ""  # concepts of one topic (one thesaurus file) are siblings
    # "it", or "outside": a matter outside IT (furniture, parking) that a ticket sent to the
    # IT desk may be about; see CatalogueIndex.outside.
    scope: str = "it"
    label: dict[str, str] = field(default_factory=dict)  # language -> name, for notes


# Domain packs: thesaurus files with a file-level `domain:` key (healthcare, education, ...).
# They load by default; BPSM_DOMAIN_PACKS (a comma list, "all" or "none") or the caller selects.
PACKS_VARIABLE = "BPSM_DOMAIN_PACKS"


@cache
def _thesaurus_files() -> tuple[tuple[str, tuple[Concept, ...]], ...]:
    """Each shipped thesaurus file's domain ("" for the IT core) and concepts, in file order."""
    folder = resources.files("connector").joinpath("data/thesaurus")
    files: list[tuple[str, tuple[Concept, ...]]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            raw = load_data(entry.read_text(encoding="utf-8"))
            # A file is a topic unless it names one (several files may share a topic).
            topic = str(raw.get("topic") or entry.name.removesuffix(".yaml"))
            files.append((str(raw.get("domain") or ""), parse_thesaurus(raw, topic)))
    return tuple(files)


# A file's `domain:` key, read without parsing the file: a process that loads a prebuilt
# index needs the pack names (to name the index file), not the 50 files' concepts (~1.3 s).
_DOMAIN_LINE = re.compile(r"^domain:[ \t]*[\"']?([\w-]+)", re.MULTILINE)


@cache
def domain_packs() -> tuple[str, ...]:
    """Names of the shipped domain packs, sorted."""
    folder = resources.files("connector").joinpath("data/thesaurus")
    names = set()
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            found = _DOMAIN_LINE.search(entry.read_text(encoding="utf-8"))
            if found:
                names.add(found.group(1))
    return tuple(sorted(names))


def parse_packs(value: str | None) -> frozenset[str]:
    """The packs a selection as written in BPSM_DOMAIN_PACKS or --packs names: "all" (or
    empty), "none", or a comma list of pack names. Unknown names are an error that lists
    the known ones (a typo would otherwise silently drop a pack)."""
    text = (value or "").strip().lower()
    if text in ("", "all"):
        return frozenset(domain_packs())
    if text == "none":
        return frozenset()
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(domain_packs()))
    if unknown:
        known = ", ".join(domain_packs())
        raise ValueError(f"unknown domain pack {', '.join(unknown)} (known: {known}, all, none)")
    return names


def shipped_thesaurus(packs: Collection[str] | None = None) -> tuple[Concept, ...]:
    """The thesaurus that ships with the product (en + nb), one YAML file per topic: the IT
    core and the domain packs named in `packs` (None: all of them)."""
    return tuple(
        concept
        for domain, concepts in _thesaurus_files()
        if not domain or packs is None or domain in packs
        for concept in concepts
    )


def parse_thesaurus(raw: dict[str, object], topic: str = "") -> tuple[Concept, ...]:
    """Concepts of one thesaurus file: per concept an id, terms per language, and an optional
    label per language; the file's `scope` (default "it") applies to all of them."""
    concepts = raw.get("concepts", []) if isinstance(raw, dict) else []
    scope = str(raw.get("scope") or "it") if isinstance(raw, dict) else "it"
    out = []
    for item in concepts if isinstance(concepts, list) else []:
        terms = {
            lang: tuple(str(t) for t in words)
            for lang, words in item.items()
            if lang != "id" and isinstance(words, list)
        }
        label = item.get("label")
        labels = {str(k): str(v) for k, v in label.items()} if isinstance(label, dict) else {}
        # Matters outside IT are unrelated to each other: no topic, so no sibling links (a
        # service that names server-room ventilation is not about coffee machines).
        out.append(Concept(str(item["id"]), terms, topic if scope == "it" else "", scope, labels))
    return tuple(out)


def without_claimed(
    concept: Concept, claimed: set[str], canonical: Callable[[str], str]
) -> Concept:
    """An outside concept minus the terms that an IT concept of the catalogue's services has
    too: "sick leave" is a matter for the HR system when the catalogue has one."""
    terms = {
        lang: tuple(t for t in words if canonical(t) not in claimed)
        for lang, words in concept.terms.items()
    }
    return replace(concept, terms=terms)


def concept_label(concept: Concept, language: str) -> str:
    return concept.label.get(language) or concept.label.get("en") or concept.id.replace("-", " ")


def topics(concepts: Sequence[Concept]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for index, concept in enumerate(concepts):
        if concept.topic:
            by_topic[concept.topic].append(index)
    return by_topic


def with_siblings(
    linked: dict[int, float],
    concepts: Sequence[Concept],
    by_topic: dict[str, list[int]] | None = None,
) -> dict[int, float]:
    """Extend a service's concepts to their topic siblings, by how much of the topic it covers.

    A service whose keywords name laptops, monitors and docking stations is about workplace
    hardware, so "blue screen" and "won't boot" (same topic) are its symptoms too; a service
    that mentions one monitor among other things gets the siblings only faintly."""
    if SIBLING_LINK <= 0:
        return linked
    if by_topic is None:
        by_topic = topics(concepts)
    result = dict(linked)
    # Only the linked concepts' topics, in by_topic's order (its first member's place), so
    # that siblings are added in the same order as over all topics.
    touched = {concepts[m].topic for m in linked if concepts[m].topic}
    for topic in sorted(touched, key=lambda t: by_topic[t][0]):
        members = by_topic[topic]
        covered = sum(linked.get(m, 0.0) for m in members)
        if covered <= 0:
            continue
        share = SIBLING_LINK * min(1.0, covered / SIBLING_FULL)
        for member in members:
            result[member] = max(result.get(member, 0.0), share)
    return result
