"""Catalogue → index; ticket text → ServiceMatch with evidence. Pure and deterministic.

How a ticket is matched:
1. Each service gets weighted terms: its name (strongest), keywords, description words, and
   the terms of every thesaurus concept that its name or keywords mention (the shipped IT
   thesaurus knows that "AnyConnect" and "hjemmekontor" are about VPN, so a catalogue that
   lists only "VPN" still catches them).
2. Every term is indexed under its Snowball stems in each catalogue language, so
   "skriveren", "printers" and "printing" meet their terms; multi-word terms match as phrases.
3. A ticket word with no direct hit is tried as a Norwegian compound (head + tail, with the
   linking -s/-e: "eksamens|systemet", "trådløs|nettet") and then as a typo (one edit away,
   two for long words) via a symmetric-delete index, so lookups never scan the catalogue.
4. A service's score sums, over distinct terms hit, field weight × rarity (BM25 idf over
   services) × match quality. Confidence combines the winner's strength with its margin over
   the runner-up.
"""

from __future__ import annotations

import copy
import gc
import heapq
import math
import os
import re
from array import array
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import cache, partial
from importlib import resources
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from rapidfuzz.distance import OSA

from connector.catalogue import Catalogue, Service
from connector.events import Evidence, ServiceMatch
from connector.memo import SizedMemo
from connector.text import (
    MAX_SUBJECT_CHARS,
    MAX_WORD_LEN,
    Work,
    clean_text,
    fold,
    guess_language,
    is_forward,
    language_data,
    stem,
    tokenize,
)
from connector.yamlsource import load_data

FIELD_WEIGHT = {"name": 3.0, "keyword": 2.0, "thesaurus": 1.2, "description": 0.6}
# Words of a multi-word name or keyword also count alone, at this share of the phrase weight.
PART_SHARE = 0.5
# ...unless the word is not IT vocabulary (not in the thesaurus): "home" of "home care" or
# "new" of "new employee" says little on its own.
PLAIN_PART_SHARE = 0.1
# A description link from a thesaurus concept is weaker evidence than a name/keyword link.
DESCRIPTION_LINK = 0.5
DESCRIPTION_MIN_HITS = 2
# Two neighbouring description words, matched as a phrase, weigh this share of a description
# word more (the phrase's own weight; its words still count alone).
DESCRIPTION_PHRASE = 1.0
_CLAUSE = re.compile(r"[,.;:()!?]+\s|[;:()]")
# A description word the thesaurus does not know counts at this share of an IT word's weight.
PLAIN_DESCRIPTION = 0.5
# A catalogue term that links a concept by its stem only ("skrivere" → "skriver") links it
# this strongly; the word itself links fully.
STEM_LINK = 0.8
NON_IT_KEYWORD = 0.7
COORDINATION = 0.5  # exponent on the number of distinct matched words
SIBLING_LINK = 0.5
SIBLING_FULL = 3.0  # linked concepts of a topic at which siblings reach SIBLING_LINK
QUALITY = {"exact": 1.0, "stem": 0.95, "phrase": 1.0, "compound": 0.8, "fuzzy": 0.7}
SUBJECT_BOOST = 1.5
LENGTH_NORM = 0.3  # BM25's b over the number of terms a service has
IDF_SCALE = 3.0
# Catalogues larger than this score exactly only a shortlist of likely services.
SHORTLIST_ABOVE = 300
SHORTLIST = 40
MIN_SCORE = 2.0  # below this the ticket is about nothing in the catalogue
# A private matter picks an unsupported service with this share of MIN_SCORE as evidence.
PRIVATE_SHARE = 0.5
# A matter outside IT (thesaurus scope "outside") must outweigh the best service this many
# times: in a ticket about furniture the IT words are incidental ("the computers we carry
# ourselves"), in an IT ticket the outside words are context ("printer by the coffee machine").
OUTSIDE_RATIO = 2.0
MIN_FUZZY_LEN = 5
FUZZY2_LEN = 11  # words this long may be two edits off
MIN_COMPOUND_LEN = 6
MIN_PART_LEN = 3
COMPOUNDING = frozenset({"nb", "nn", "no", "da", "sv", "de", "nl", "fi", "is"})
MIN_TAIL_LEN = 5
# Memory of the per-word memos (bytes, estimated: see _memo_bytes) and their entries.
KEYS_MEMO = (32 << 20, 200_000)
SEARCH_MEMO = (32 << 20, 100_000)
HITS_MEMO = (64 << 20, 100_000)  # a small catalogue's word hits (_lookup)
GROUPED_MEMO = (256 << 20, 100_000)  # a large one's, as arrays (_grouped)
# Steps a token costs in the passes that read every token (language, phrases, intents,
# scoring, in both indexes), besides its length: about as long as 40 search steps (a
# ticket of 10,000 "a" took 0.3 s, much of it testing the cues that start with "a").
TOKEN_STEPS = 40
# Steps a Snowball stem costs (pure Python: 50-100 µs), counted whether or not the stem
# memo had it, so that the count does not depend on the tickets before.
STEM_STEPS = 100

# The steps of the word search under way (see _searched). A context variable rather than a
# parameter: the search functions keep their signatures, and threads that share one index
# each count their own search.
_search_steps: ContextVar[list[int] | None] = ContextVar("_search_steps", default=None)


def _spend_search(steps: int) -> None:
    counter = _search_steps.get()
    if counter is not None:
        counter[0] += steps


def _memo_bytes(word: str, items: int) -> int:
    """Rough memory of a memo entry: the word, and `items` hits or keys (~80 bytes each)."""
    return 100 + 2 * len(word) + 80 * items


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


def domain_packs() -> tuple[str, ...]:
    """Names of the shipped domain packs, sorted."""
    return tuple(sorted({domain for domain, _ in _thesaurus_files() if domain}))


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


# (term, source, weight, add parts, language) of a service's own catalogue text
Term = tuple[str, str, float, bool, str | None]


@dataclass(frozen=True, slots=True)
class Posting:
    service: int
    term: str  # canonical key of the term (its stems joined) — one hit per service and term
    surface: str
    source: str
    weight: float


@dataclass(frozen=True, slots=True)
class Phrase:
    keys: tuple[frozenset[str], ...]  # acceptable keys at each position
    posting: Posting


@dataclass(slots=True)
class _Hit:
    weight: float
    posting: Posting
    how: str
    word: str
    in_subject: bool
    _evidence: Evidence | None = None

    @property
    def evidence(self) -> Evidence:
        # Built on demand: a large catalogue records thousands of hits per ticket, and
        # only the winner's evidence is ever shown.
        if self._evidence is None:
            self._evidence = Evidence(
                term=self.posting.surface,
                word=self.word,
                source=self.posting.source,
                how=self.how,
                weight=round(self.weight, 3),
            )
        return self._evidence


# A thesaurus term compiled for indexing: (surface, canonical, lists its posting goes into,
# phrase keys or None for a single word).
_ConceptTerm = tuple[str, str, list[Any], tuple[frozenset[str], ...] | None]


# Services hit and one weight each, as arrays: the shortlist adds up thousands of them per
# ticket, which numpy does in microseconds where a Python loop takes milliseconds.
_Vector = tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.float64]]


class _Hits(Protocol):
    def __getitem__(self, index: int, /) -> tuple[Posting, str, str]: ...


# The integer type of a service array (int64 for postings, int32 for the many phrases).
_Service = TypeVar("_Service", np.int32, np.int64)

# Positions in a key's postings: a tuple, or an array in a large catalogue.
_Positions = Sequence[int] | npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True, eq=False)
class _Segment:
    """Hits of a ticket word that share a key: postings[key] (or, for a short stem, those at
    `chosen`, ascending), each matched as `how` by `word` (the ticket word, or a compound's
    part)."""

    key: str
    how: str
    word: str
    chosen: _Positions | None = None


@dataclass(frozen=True, slots=True)
class _KeyHits:
    """A word's hits in the order _lookup lists them, read from the postings on demand: the
    scorer only needs the shortlisted services' few among thousands."""

    lists: tuple[Sequence[Posting], ...]  # postings[key] of each segment
    segments: tuple[_Segment, ...]
    starts: tuple[int, ...]  # index of each segment's first hit
    size: int

    def __getitem__(self, index: int, /) -> tuple[Posting, str, str]:
        part = bisect_right(self.starts, index) - 1
        segment = self.segments[part]
        offset = index - self.starts[part]
        if segment.chosen is not None:
            offset = segment.chosen[offset]
        return (self.lists[part][offset], segment.how, segment.word)

    def pick(self, indices: npt.NDArray[np.intp]) -> list[tuple[Posting, str, str]]:
        """The hits at `indices` (ascending), segment by segment: the scorer takes the
        shortlisted services' hundreds of hits, and one lookup each was its costliest line."""
        out: list[tuple[Posting, str, str]] = []
        ends = np.searchsorted(indices, (*self.starts[1:], self.size)).tolist()
        first = 0
        for part, end in enumerate(ends):
            if end > first:
                segment = self.segments[part]
                offsets = indices[first:end] - self.starts[part]
                if segment.chosen is not None:
                    offsets = np.asarray(segment.chosen)[offsets]
                postings, how, word = self.lists[part], segment.how, segment.word
                out += [(postings[i], how, word) for i in offsets.tolist()]
            first = end
        return out


# The services and weights of a word that hits nothing, shared and read-only.
_NO_SERVICES: npt.NDArray[np.int64] = np.zeros(0, np.int64)
_NO_WEIGHTS: npt.NDArray[np.float64] = np.zeros(0, np.float64)
_NO_SERVICES.flags.writeable = False
_NO_WEIGHTS.flags.writeable = False

# A word's best weight per service (the shortlist's input), its hits, and each hit's service.
_WordHits = tuple[_Vector, _Hits, npt.NDArray[np.int64]]
# A phrase pattern found in the ticket: (start token, first-word key, group numbers).
_PhraseMatch = tuple[int, str, list[int]]


@dataclass
class _ConceptLinks:
    """What a catalogue term can link a thesaurus concept by: the concept's words as
    written, its words' stems in their own language, and its phrases (under their first
    word and its stems, as written)."""

    words: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    stems: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    phrases: dict[str, list[tuple[int, str, tuple[str, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add_word(self, concept: int, word: str, lang: str) -> None:
        self.words[word].add(concept)
        self.stems[(lang, stem(word, lang))].add(concept)


@dataclass
class IntentCues:
    """Cue phrases of signal groups, indexed by their first word's keys."""

    threshold: float = 2.0
    cues: dict[str, list[tuple[tuple[frozenset[str], ...], str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    groups: list[tuple[str, float]] = field(default_factory=list)  # (name, weight)


@dataclass(frozen=True)
class Token:
    text: str
    position: int
    in_subject: bool


class LearnedEvidence(Protocol):
    """The organisation's learned evidence (connector/learn.py): adjusts the scores."""

    def rescore(
        self,
        index: CatalogueIndex,
        tokens: Sequence[Token],
        unsorted: list[tuple[float, int]],
        kept: dict[int, list[_Hit]],
    ) -> tuple[list[tuple[float, int]], dict[int, list[_Hit]]]: ...


@dataclass
class CatalogueIndex:
    """Everything needed to classify a ticket, built once per catalogue."""

    catalogue: Catalogue
    languages: tuple[str, ...]
    services: list[Service] = field(default_factory=list)
    postings: dict[str, list[Posting]] = field(default_factory=lambda: defaultdict(list))
    phrases: dict[str, list[Phrase]] = field(default_factory=lambda: defaultdict(list))
    idf: dict[str, float] = field(default_factory=dict)
    norm: list[float] = field(default_factory=list)
    _norm: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    deletes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    change_cues: IntentCues = field(default_factory=lambda: IntentCues())
    private_cues: IntentCues = field(default_factory=lambda: IntentCues())
    stopwords: frozenset[str] = frozenset()
    it_vocabulary: frozenset[str] = frozenset()
    # Every word of the catalogue, the thesaurus and the language data, with its stems in
    # the compounding languages: the parts a compound may be split into (see _compound).
    lexicon: frozenset[str] = frozenset()
    exact_only: frozenset[str] = frozenset()  # language data: terms not matched by stem
    # Matters outside IT that no service takes (see _build_outside), as services of their
    # own in a small index of their own; None when there are none.
    outside: CatalogueIndex | None = None
    keyword_parts: bool = True  # words of a multi-word keyword also count alone (PART_SHARE)
    outside_concepts: dict[str, Concept] = field(default_factory=dict)
    compounding: tuple[str, ...] = ()  # languages that write compounds as one word
    # Unsupported services whose name or keywords say they are for private matters.
    private_services: frozenset[int] = frozenset()
    _token_cache: SizedMemo[str, list[tuple[Posting, str, str]]] = field(
        default_factory=lambda: SizedMemo(*HITS_MEMO)
    )
    _grouped_cache: SizedMemo[str, _WordHits] = field(
        default_factory=lambda: SizedMemo(*GROUPED_MEMO)
    )
    # A ticket word's segments (_search) and the steps finding them took.
    _search_cache: SizedMemo[str, tuple[list[_Segment], int]] = field(
        default_factory=lambda: SizedMemo(*SEARCH_MEMO)
    )
    # Large catalogues only: every key's postings as arrays, services and weight × idf,
    # laid end to end; a key's span in them.
    _key_services: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    _key_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    _key_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    # ...and for a short stem (see _direct): its distinct term surfaces, each with the
    # positions of its postings.
    _key_surfaces: dict[str, tuple[list[str], list[npt.NDArray[np.intp]]]] = field(
        default_factory=dict
    )
    # ...and every phrase pattern's phrases the same way (int32 services: 19 M phrases at
    # 10,000 services), one slice per pattern: a key's patterns start at _group_starts[key].
    _phrase_services: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    _phrase_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    _group_starts: dict[str, array[int]] = field(default_factory=dict)
    # Memos of pure functions of a word or term (building re-reads every thesaurus term once
    # per linked service; matching asks for a word's keys several times per ticket).
    _keys_cache: SizedMemo[str, frozenset[str]] = field(
        default_factory=lambda: SizedMemo(*KEYS_MEMO)
    )
    _words_cache: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _canonical_cache: dict[str, str] = field(default_factory=dict)
    _term_keys_cache: dict[tuple[str, str | None], frozenset[str]] = field(default_factory=dict)
    _phrase_keys_cache: dict[tuple[str, str | None], tuple[frozenset[str], ...]] = field(
        default_factory=dict
    )
    _deleted_words: set[str] = field(default_factory=set)
    _term_count: int = 0  # entries in postings + phrases
    # phrases[key] grouped by pattern: (pattern, positions of its phrases in phrases[key])
    _phrase_groups: dict[str, list[tuple[tuple[frozenset[str], ...], array[int]]]] = field(
        default_factory=dict
    )
    # _phrase_groups[key] by a key of the pattern's second word: the group numbers, ascending
    # (one-word patterns under ""). A word then tests only the patterns its successor fits.
    _phrase_next: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    learned: LearnedEvidence | None = None  # see with_learned

    def with_learned(self, learned: LearnedEvidence | None) -> CatalogueIndex:
        """This index plus learned evidence (None: without), sharing everything else: a
        learned file is swapped in without rebuilding the index."""
        other = copy.copy(self)
        other.learned = learned
        return other

    # ----- building -------------------------------------------------------------------------

    def keys(self, word: str) -> frozenset[str]:
        """All index keys of one folded word: itself and its stem in each language."""
        if len(word) > MAX_WORD_LEN:
            return frozenset((word,))  # no word: its exact form only, see MAX_WORD_LEN
        found = self._keys_cache.get(word)
        if found is None:
            found = frozenset([word, *(stem(word, lang) for lang in self.languages)])
            self._keys_cache.put(word, found, _memo_bytes(word, len(found)))
        return found

    def _words(self, term: str) -> tuple[str, ...]:
        """tokenize(term), memoised (build time: catalogue and thesaurus terms)."""
        words = self._words_cache.get(term)
        if words is None:
            words = self._words_cache[term] = tuple(tokenize(term))
        return words

    def _term_keys(self, term: str) -> tuple[frozenset[str], ...]:
        return tuple(self.keys(w) for w in tokenize(term))

    def term_keys(self, word: str, lang: str | None) -> frozenset[str]:
        """Index keys of a catalogue or thesaurus word: itself and its stem in its own
        language. (Ticket words are looked up under their stems in every language, so
        "printeren" still meets "printer"; but the English "leave" no longer meets the
        keyword "leaver" through the Norwegian stemmer.)"""
        if word in self.exact_only:
            return frozenset((word,))
        if lang is None or lang not in self.languages:
            return self.keys(word)
        found = self._term_keys_cache.get((word, lang))
        if found is None:
            found = self._term_keys_cache[(word, lang)] = frozenset((word, stem(word, lang)))
        return found

    def _add_term(
        self,
        service: int,
        term: str,
        source: str,
        weight: float,
        own_word: Callable[[str], bool] | None,
        lang: str | None = None,
    ) -> None:
        """Index a term; with `own_word`, a multi-word term's words also count alone, fully
        (PART_SHARE) when own_word says one of the service's concepts lists them."""
        words = self._words(term)
        if not words:
            return
        canonical = self._canonical_cache.get(term)
        if canonical is None:
            canonical = " ".join(min(self.keys(w)) for w in words)
            self._canonical_cache[term] = canonical
        posting = Posting(service, canonical, term, source, weight)
        if len(words) == 1:
            if words[0] in self.stopwords:
                return
            word_keys = self.term_keys(words[0], lang)
            for key in word_keys:
                self.postings[key].append(posting)
            self._term_count += len(word_keys)
            self._add_deletes(words[0])
            return
        keys = self._phrase_keys(term, lang, words)
        phrase = Phrase(keys, posting)  # one object under each key of the first word
        for key in keys[0]:
            self.phrases[key].append(phrase)
        self._term_count += len(keys[0])
        for word in words:
            self._add_deletes(word)
        if own_word is not None:
            for word in words:
                share = PART_SHARE if own_word(word) else PLAIN_PART_SHARE
                self._add_term(service, word, source, weight * share, None, lang)

    def _phrase_keys(
        self, term: str, lang: str | None, words: tuple[str, ...]
    ) -> tuple[frozenset[str], ...]:
        keys = self._phrase_keys_cache.get((term, lang))
        if keys is None:
            keys = tuple(self.term_keys(w, lang) for w in words)
            self._phrase_keys_cache[(term, lang)] = keys
        return keys

    def _compile_concept(self, terms: list[tuple[str, str]]) -> list[_ConceptTerm]:
        """What _add_term does for each term of a thesaurus concept, minus the posting: the
        lists the posting goes into. Done once per concept, the first time a service links
        it (the same point in the build at which _add_term would have created those lists
        and the deletes), instead of once per term per linked service."""
        compiled: list[_ConceptTerm] = []
        for term, lang in terms:
            words = self._words(term)
            if not words:
                continue
            canonical = self._canonical(term)
            if len(words) == 1:
                if words[0] in self.stopwords:
                    continue
                targets = [self.postings[key] for key in self.term_keys(words[0], lang)]
                compiled.append((term, canonical, targets, None))
                self._add_deletes(words[0])
                continue
            keys = self._phrase_keys(term, lang, words)
            compiled.append((term, canonical, [self.phrases[key] for key in keys[0]], keys))
            for word in words:
                self._add_deletes(word)
        return compiled

    def _keyword_weight(self, keyword: str) -> float:
        """Keywords the thesaurus knows as IT terms weigh fully; others (places, units,
        "home care") are often the ticket's context rather than its subject."""
        it = any(self.is_it_word(w) for w in self._words(keyword))
        return FIELD_WEIGHT["keyword"] * (1.0 if it else NON_IT_KEYWORD)

    def _own_concept_word(
        self, concept_words: Mapping[str, set[int]], linked: Collection[int], word: str
    ) -> bool:
        """True when one of the `linked` concepts lists the word (any form)."""
        return any(not concept_words.get(k, set()).isdisjoint(linked) for k in self.keys(word))

    def is_it_word(self, word: str) -> bool:
        """True when the thesaurus knows the word (in any of its forms) as an IT term."""
        return not self.keys(word).isdisjoint(self.it_vocabulary)

    def _add_deletes(self, word: str) -> None:
        if word in self._deleted_words:
            return  # sets: adding the same word's variants again changes nothing
        self._deleted_words.add(word)
        if len(word) >= MIN_FUZZY_LEN and not word.isdigit():
            for variant in _deletes(word):
                self.deletes[variant].add(word)
            self.deletes[word].add(word)

    def _service_terms(self, service: Service) -> list[Term]:
        """(term, source, weight, add_parts, language) for a service's catalogue text."""
        terms: list[Term] = []
        name_weight = FIELD_WEIGHT["name"]
        for lang, name in service.name.items():
            terms.append((_strip_brackets(name), "name", name_weight, True, lang))
            terms += [(inner, "name", name_weight, True, lang) for inner in _brackets(name)]
        for lang, words in service.keywords.items():
            terms += [
                (w, "keyword", self._keyword_weight(w), self.keyword_parts, lang) for w in words
            ]
        for lang, text in service.description.items():
            # Descriptions are prose: their IT words carry signal, and so do the words of
            # the organisation's own domain the thesaurus does not know ("specimen labels");
            # how specific a word is to the service is left to its idf over services.
            terms += [
                (
                    w,
                    "description",
                    FIELD_WEIGHT["description"]
                    * (1.0 if self.is_it_word(w) else PLAIN_DESCRIPTION),
                    False,
                    lang,
                )
                for w in dict.fromkeys(tokenize(text))
                if len(w) > 2 and w not in self.stopwords and not w.isdigit()
            ]
            terms += [
                (pair, "description", FIELD_WEIGHT["description"] * DESCRIPTION_PHRASE, False, lang)
                for pair in self._description_pairs(text)
            ]
        terms += [(service.id.replace("-", " "), "name", name_weight * 0.5, True, None)]
        return terms

    def _description_pairs(self, text: str) -> list[str]:
        """Two neighbouring words of a description, within one clause and neither a
        stopword ("fluid balance", "specimen labels"): a ticket that says both in a row
        says more than each word apart."""
        pairs: dict[str, None] = {}
        for clause in _CLAUSE.split(text):
            words = tokenize(clause)
            for first, second in zip(words, words[1:], strict=False):
                if all(len(w) > 2 and w not in self.stopwords for w in (first, second)):
                    pairs[f"{first} {second}"] = None
        return list(pairs)

    def _linked_concepts(self, terms: list[Term], links: _ConceptLinks) -> dict[int, float]:
        """Concepts a service's own terms mention, with the strength of the link.

        A term links a concept that lists the same word (in any language: brands and loan
        words are shared), or that shares its stem in the term's own language only: the
        Norwegian "elever" (pupils) and the English "elevator" share a Snowball stem, but
        not a meaning. A link made by the stem alone is weaker (STEM_LINK) than one made by
        the word itself. Multi-word terms must match a concept phrase word for word."""
        strength: dict[int, float] = defaultdict(float)
        description_hits: dict[int, int] = defaultdict(int)
        for term, source, _, _, lang in terms:
            hits = self._term_links(term, lang, links)
            for concept, how in hits.items():
                if source == "description":
                    description_hits[concept] += 1
                else:
                    strength[concept] = max(strength[concept], how)
        for concept, count in description_hits.items():
            if concept not in strength and count >= DESCRIPTION_MIN_HITS:
                strength[concept] = DESCRIPTION_LINK
        return strength

    def _term_links(self, term: str, lang: str | None, links: _ConceptLinks) -> dict[int, float]:
        """The concepts one catalogue term links (see _linked_concepts), with the strength."""
        words = self._words(term)
        found: dict[int, float] = {}
        languages = self.languages if lang is None else (lang,)
        if len(words) == 1 and words[0] not in self.stopwords:
            word = words[0]
            for language in languages:
                for concept in links.stems.get((language, stem(word, language)), ()):
                    found[concept] = STEM_LINK
            for concept in links.words.get(word, ()):
                found[concept] = 1.0
        elif len(words) > 1:
            firsts = {words[0], *(stem(words[0], language) for language in languages)}
            candidates = {entry for first in firsts for entry in links.phrases.get(first, ())}
            for concept, language, phrase in sorted(candidates):
                if len(phrase) != len(words):
                    continue
                if phrase == words:
                    found[concept] = 1.0
                elif language in languages and concept not in found:
                    stems = tuple(stem(w, language) for w in words)
                    if stems == tuple(stem(w, language) for w in phrase):
                        found[concept] = STEM_LINK
        return found

    def build(self, concepts: Sequence[Concept]) -> CatalogueIndex:
        # Millions of small objects and no garbage cycles: the cyclic collector would only
        # re-scan the growing index again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._build(concepts)
        finally:
            if collecting:
                gc.enable()

    def _build(self, concepts: Sequence[Concept]) -> CatalogueIndex:
        self.services = list(self.catalogue.services)
        self.compounding = tuple(lang for lang in self.languages if lang in COMPOUNDING)
        self.stopwords = language_data().all_stopwords
        self.exact_only = language_data().exact_only
        concept_terms: list[list[tuple[str, str]]] = [
            [(t, lang) for lang, words in c.terms.items() for t in words] for c in concepts
        ]
        concept_words: dict[str, set[int]] = defaultdict(set)  # word key → concepts
        links = _ConceptLinks()
        it_vocabulary: set[str] = set()
        for index, terms in enumerate(concept_terms):
            for term, term_lang in terms:
                words = self._words(term)
                if len(words) == 1 and words[0] not in self.stopwords:
                    links.add_word(index, words[0], term_lang)
                    for key in self.keys(words[0]):
                        concept_words[key].add(index)
                        if concepts[index].scope == "it":
                            it_vocabulary.add(key)
                elif len(words) > 1:
                    # Phrases are compared word by word, stemmed in their own language.
                    for first in {words[0], stem(words[0], term_lang)}:
                        links.phrases[first].append((index, term_lang, words))
        self.it_vocabulary = frozenset(it_vocabulary)
        written = self._lexicon(concept_terms)
        self.lexicon = written | {stem(w, lang) for w in written for lang in self.compounding}
        by_topic = _topics(concepts)
        labels = [f"thesaurus:{c.id}" for c in concepts]
        compiled: dict[int, list[_ConceptTerm]] = {}
        sizes = []
        taken: set[int] = set()  # concepts linked to some service, if only as a sibling
        for number, service in enumerate(self.services):
            own = self._service_terms(service)
            before = self._count_terms()
            # The description's plain words are the service's own evidence; they link no
            # concept ("patient" in a record system's description is not nurse call).
            linked = self._linked_concepts(
                [t for t in own if t[1] != "description" or self.is_it_word(t[0])], links
            )
            # A keyword's single words count as IT words of this service only when one of
            # its own concepts lists them ('library' in 'document library' is not storage).
            own_word = partial(self._own_concept_word, concept_words, linked.keys())
            for term, source, weight, parts, lang in own:
                self._add_term(number, term, source, weight, own_word if parts else None, lang)
            with_siblings = _with_siblings(linked, concepts, by_topic)
            taken.update(with_siblings)
            for concept, strength in with_siblings.items():
                label = labels[concept]
                weight = FIELD_WEIGHT["thesaurus"] * strength
                # = self._add_term(number, term, label, weight, None, lang) for each term
                specs = compiled.get(concept)
                if specs is None:
                    specs = compiled[concept] = self._compile_concept(concept_terms[concept])
                for term, canonical, targets, pattern in specs:
                    posting = Posting(number, canonical, term, label, weight)
                    entry: Posting | Phrase = (
                        posting if pattern is None else Phrase(pattern, posting)
                    )
                    for target in targets:
                        target.append(entry)
                    self._term_count += len(targets)
            sizes.append(self._count_terms() - before)
        self._compute_idf()
        self._drop_dominated()
        self._group_phrases()
        if len(self.services) > SHORTLIST_ABOVE:
            self._build_key_arrays()
        average = sum(sizes) / len(sizes) if sizes else 1.0
        self.norm = [
            1 - LENGTH_NORM + LENGTH_NORM * (s / average if average else 1.0) for s in sizes
        ]
        self._norm = np.array(self.norm, dtype=np.float64)
        self._build_cues()
        self.private_services = frozenset(
            number
            for number, service in enumerate(self.services)
            if not service.supported and self._names_private(service)
        )
        claimed = {
            self._canonical(term)
            for i in taken
            if concepts[i].scope == "it"
            for term, _ in concept_terms[i]
        }
        self._build_outside(
            [
                _without(c, claimed, self._canonical)
                for i, c in enumerate(concepts)
                if c.scope == "outside" and i not in taken
            ]
        )
        return self

    def _lexicon(self, concept_terms: list[list[tuple[str, str]]]) -> frozenset[str]:
        data = language_data()
        words: set[str] = set(data.all_stopwords)
        for function_words in data.function_words.values():
            words |= function_words
        for terms in concept_terms:
            for term, _ in terms:
                words.update(self._words(term))
        for service in self.services:
            for texts in (service.name, service.description):
                for text in texts.values():
                    words.update(tokenize(text))
            for keywords in service.keywords.values():
                for keyword in keywords:
                    words.update(self._words(keyword))
        return frozenset(words)

    def _names_private(self, service: Service) -> bool:
        """Whether a service's name or keywords name private matters ("Private devices",
        "Privatkjøpt programvare", "own laptop")."""
        marks = language_data().private_service_words
        texts = [*service.name.values(), *(k for ks in service.keywords.values() for k in ks)]
        return any(
            word in marks or any(word.startswith(m) for m in marks if len(m) >= 6)
            for text in texts
            for word in tokenize(text)
        )

    def _canonical(self, term: str) -> str:
        """A term as the index files it: its words' smallest keys, joined."""
        canonical = self._canonical_cache.get(term)
        if canonical is None:
            canonical = " ".join(min(self.keys(w)) for w in self._words(term))
            self._canonical_cache[term] = canonical
        return canonical

    def _build_outside(self, concepts: Sequence[Concept]) -> None:
        """Matters outside IT that no service of the catalogue names (a catalogue with a
        facilities service takes "coffee machine" like any other concept). Each becomes a
        service of a small index of its own, so a ticket's outside evidence is scored the
        same way as its IT evidence and the two can be compared (see classify)."""
        languages = list(dict.fromkeys([*self.languages, *(g for c in concepts for g in c.terms)]))
        services = [
            {
                "id": concept.id,
                "name": {"en": concept.label.get("en") or concept.id.replace("-", " ")},
                "keywords": {lang: list(terms) for lang, terms in concept.terms.items()},
            }
            for concept in concepts
        ]
        if not services:
            return
        catalogue = Catalogue.model_validate(
            {"version": 1, "languages": languages, "services": services}
        )
        # An outside matter counts whole ("office chair"), not by its everyday words ("office").
        self.outside = CatalogueIndex(
            catalogue=catalogue, languages=tuple(languages), keyword_parts=False
        ).build(())
        self.outside_concepts = {c.id: c for c in concepts}

    def _count_terms(self) -> int:
        """Entries in postings + phrases (kept as a running count: summing the lists once
        per service made building quadratic in the catalogue size)."""
        return self._term_count

    def _drop_dominated(self) -> None:
        """Postings that can never count, dropped: the scorer keeps per service and term the
        heaviest hit, the first on ties, and a key's postings are always hit together, in
        order, with the same quality; so under one key only the first of the heaviest
        postings of a (service, term) can win. A service's term comes under a key several
        times (name and keywords, each language, thesaurus links): in a large catalogue an
        everyday word made four times the hits it needed. A short stem's postings are chosen
        by surface (_same_family_postings), so there the surface is part of the identity.
        Runs after idf and the length norms, which count every posting."""
        for key, postings in self.postings.items():
            kept = _can_win(postings, by_surface=len(key) < SHORT_STEM)
            if len(kept) < len(postings):
                self.postings[key] = [postings[position] for position in kept]

    def _group_phrases(self) -> None:
        """Phrases under one key share a handful of patterns (the same thesaurus phrase is
        linked to many services); matching tests each pattern once instead of each phrase."""
        self._phrase_groups = {}
        for key, phrases in self.phrases.items():
            groups: dict[tuple[frozenset[str], ...], list[int]] = defaultdict(list)
            for position, phrase in enumerate(phrases):
                groups[phrase.keys].append(position)
            # A pattern's phrases are hit together, so only those that can win are listed.
            self._phrase_groups[key] = [
                (pattern, _winning_phrases(phrases, positions))
                for pattern, positions in groups.items()
            ]
        self._phrase_next = {}
        for key, patterns in self._phrase_groups.items():
            by_next: dict[str, list[int]] = defaultdict(list)
            for number, (pattern, _) in enumerate(patterns):
                for second in pattern[1] if len(pattern) > 1 else ("",):
                    by_next[second].append(number)
            self._phrase_next[key] = {k: tuple(v) for k, v in by_next.items()}

    def _build_key_arrays(self) -> None:
        """Every key's postings as arrays, once: a word new to a worker then costs a few
        array operations in _grouped instead of a Python loop over the thousands of postings
        an everyday word has in a large catalogue (the cold path of bench/classify.py)."""
        services: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        offset = 0
        for key, postings in self.postings.items():
            count = len(postings)
            if not count:
                continue
            key_services, key_weights = self._posting_arrays(postings, np.int64)
            services.append(key_services)
            weights.append(key_weights)
            self._key_spans[key] = (offset, offset + count)
            offset += count
            if len(key) < SHORT_STEM:
                positions: dict[str, list[int]] = defaultdict(list)
                for position, posting in enumerate(postings):
                    positions[posting.surface].append(position)
                self._key_surfaces[key] = (
                    list(positions),
                    [np.array(p, dtype=np.intp) for p in positions.values()],
                )
        if services:
            self._key_services = np.concatenate(services)
            self._key_weights = np.concatenate(weights)
        self._build_phrase_arrays()

    def _build_phrase_arrays(self) -> None:
        """Every phrase pattern's phrases (those that can win) as arrays, one slice per
        pattern: a pattern linked to thousands of services then gives its vector as a view
        (_group_vector) instead of a loop over its phrases, which made a worker's first
        tickets 5-10 times slower than later ones, or a gather per ticket."""
        services: list[npt.NDArray[np.int32]] = []
        weights: list[npt.NDArray[np.float64]] = []
        offset = 0
        for key, groups in self._phrase_groups.items():
            phrases = self.phrases[key]
            starts = self._group_starts[key] = array("Q", [offset])
            for _, positions in groups:
                offset += len(positions)
                starts.append(offset)
            key_services, key_weights = self._posting_arrays(
                [phrases[p].posting for _, positions in groups for p in positions], np.int32
            )
            services.append(key_services)
            weights.append(key_weights)
        if services:
            self._phrase_services = np.concatenate(services)
            self._phrase_weights = np.concatenate(weights)

    def _posting_arrays(
        self, postings: Sequence[Posting], service_type: type[_Service]
    ) -> tuple[npt.NDArray[_Service], npt.NDArray[np.float64]]:
        """The postings' services and weights × idf, as the arrays the shortlist sums."""
        idf = self.idf.get
        count = len(postings)
        return (
            np.fromiter((p.service for p in postings), service_type, count),
            np.fromiter((p.weight * idf(p.term, 1.0) for p in postings), np.float64, count),
        )

    def _compute_idf(self) -> None:
        services_with: dict[str, set[int]] = defaultdict(set)
        for postings in self.postings.values():
            for p in postings:
                services_with[p.term].add(p.service)
        for phrases in self.phrases.values():
            for ph in phrases:
                services_with[ph.posting.term].add(ph.posting.service)
        n = len(self.services)
        # BM25 idf, rescaled so a term unique to one service weighs IDF_SCALE whatever the
        # catalogue's size: score thresholds then mean the same for 5 or 10,000 services.
        rarest = math.log(1 + (n - 0.5) / 1.5) if n > 1 else 1.0
        self.idf = {
            term: IDF_SCALE * math.log(1 + (n - len(s) + 0.5) / (len(s) + 0.5)) / rarest
            for term, s in services_with.items()
        }

    def _build_cues(self) -> None:
        """Change-intent signal groups (language data + the catalogue's change_cues), and
        the private-matter groups."""
        data = language_data()
        explicit: dict[str, list[str]] = defaultdict(list)
        for source in (data.change_cues, self.catalogue.change_cues):
            for lang, cues in source.items():
                explicit[lang] += cues
        change = data.change_intent
        self.change_cues = self._intent_cues(
            change.threshold, [("explicit", change.explicit_weight, explicit), *change.signals]
        )
        self.private_cues = self._intent_cues(
            data.private_intent.threshold, list(data.private_intent.signals)
        )

    def _intent_cues(
        self, threshold: float, groups: list[tuple[str, float, Mapping[str, Sequence[str]]]]
    ) -> IntentCues:
        table = IntentCues(threshold=threshold)
        for group, (name, weight, phrases) in enumerate(groups):
            table.groups.append((name, weight))
            for cue in (c for cues in phrases.values() for c in cues):
                keys = self._term_keys(cue)
                for key in keys[0] if keys else ():
                    table.cues[key].append((keys, cue, group))
        return table

    # ----- matching -------------------------------------------------------------------------

    def _lookup(self, word: str) -> list[tuple[Posting, str, str]]:
        """(posting, how, matched word) for one ticket word; cached across tickets."""
        cached = self._token_cache.get(word)
        if cached is not None:
            return cached
        found = [
            (posting, segment.how, segment.word)
            for segment in self._segments(word)
            for posting in self._postings(segment)
        ]
        return self._token_cache.put(word, found, _memo_bytes(word, len(found)))

    def _segments(self, word: str) -> list[_Segment]:
        return self._searched(word)[0]

    def search_steps(self, word: str) -> int:
        """The steps that searching a ticket word takes (see _searched)."""
        return self._searched(word)[1]

    def _searched(self, word: str) -> tuple[list[_Segment], int]:
        """A word's segments and the steps that finding them took: the same number whether
        the memo had them or not, so that a ticket's work does not depend on the tickets
        before it."""
        cached = self._search_cache.get(word)
        if cached is not None:
            return cached
        counter = [0]
        token = _search_steps.set(counter)
        try:
            found = self._search(word)
        finally:
            _search_steps.reset(token)
        if len(word) > MAX_WORD_LEN:
            return found, counter[0]  # its exact form: cheaper to look up again than to keep
        chosen = sum(len(s.chosen) for s in found if s.chosen is not None)
        return self._search_cache.put(
            word, (found, counter[0]), _memo_bytes(word, len(found) + chosen // 8)
        )

    def _search(self, word: str) -> list[_Segment]:
        """Where a word's hits are: its direct keys, else a compound's parts, else the words
        one typo away. A word longer than MAX_WORD_LEN is no word: direct keys only."""
        found = self._direct(word)
        if len(word) > MAX_WORD_LEN:
            return found
        if not found and len(word) >= MIN_COMPOUND_LEN:
            found = self._compound(word)
        if (
            not found
            and len(word) >= MIN_FUZZY_LEN
            and not word.isdigit()
            and not self._known(word)
        ):
            found = self._fuzzy(word)
        return found

    def _postings(self, segment: _Segment) -> Sequence[Posting]:
        postings = self.postings.get(segment.key, ())
        if segment.chosen is None:
            return postings
        return [postings[i] for i in segment.chosen]

    def _grouped(self, word: str) -> _WordHits:
        """A word's best weight per service, its hits and their services; cached like
        _lookup. Built with numpy: an everyday word hits thousands of services in a large
        catalogue, and a word new to the process paid a Python loop over all of them."""
        cached = self._grouped_cache.get(word)
        if cached is not None:
            return cached
        arrays = self._segment_arrays(word)
        hits: _Hits
        if arrays is not None:
            hits, services, weights = arrays
        else:
            listed = hits = self._lookup(word)
            idf = self.idf.get
            services = np.fromiter((h[0].service for h in listed), np.int64, len(listed))
            weights = np.fromiter(
                (h[0].weight * idf(h[0].term, 1.0) * QUALITY[h[1]] for h in listed),
                dtype=np.float64,
                count=len(listed),
            )
        # Per service the heaviest hit; a service with no positive weight has no evidence.
        positive = weights > 0.0
        hit_services, hit_weights = services[positive], weights[positive]
        # A segment lists its services ascending (postings are added service by service):
        # one segment needs no sort, several need a stable sort that merges their runs.
        if not isinstance(hits, _KeyHits) or len(hits.segments) > 1:
            order = np.argsort(hit_services, kind="stable")
            hit_services, hit_weights = hit_services[order], hit_weights[order]
        first = np.ones(len(hit_services), dtype=bool)
        first[1:] = hit_services[1:] != hit_services[:-1]
        starts = np.flatnonzero(first)
        vector = (
            (hit_services[starts], np.maximum.reduceat(hit_weights, starts))
            if len(starts)
            else (hit_services, hit_weights)
        )
        size = vector[0].nbytes + vector[1].nbytes + services.nbytes
        if not isinstance(hits, _KeyHits):  # a list of its own, not views of the postings
            size += _memo_bytes(word, len(services))
        return self._grouped_cache.put(word, (vector, hits, services), size + len(word) * 2)

    def _segment_arrays(
        self, word: str
    ) -> tuple[_KeyHits, npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
        """A word's hits, their services and weights, from the key arrays; None for a
        catalogue without them (up to SHORTLIST_ABOVE services)."""
        if not self._key_spans:
            return None
        segments = self._segments(word)
        lists: list[Sequence[Posting]] = []
        starts: list[int] = []
        services: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        count = 0
        for segment in segments:
            start, end = self._key_spans[segment.key]
            key_services = self._key_services[start:end]
            key_weights = self._key_weights[start:end] * QUALITY[segment.how]
            if segment.chosen is not None:
                chosen = np.asarray(segment.chosen)
                key_services, key_weights = key_services[chosen], key_weights[chosen]
            lists.append(self.postings.get(segment.key, ()))
            starts.append(count)
            services.append(key_services)
            weights.append(key_weights)
            count += len(key_services)
        hits = _KeyHits(tuple(lists), tuple(segments), tuple(starts), count)
        if len(segments) == 1:
            return hits, services[0], weights[0]
        if not segments:
            return hits, _NO_SERVICES, _NO_WEIGHTS
        return hits, np.concatenate(services), np.concatenate(weights)

    def _group_vector(self, key: str, group: int) -> _Vector:
        """Services and weights of the phrases of one pattern group (see _group_phrases), in
        the order of its positions: views of the phrase arrays."""
        starts = self._group_starts[key]
        start, end = starts[group], starts[group + 1]
        return self._phrase_services[start:end], self._phrase_weights[start:end]

    def _shortlist(self, tokens: Sequence[Token], matches: list[_PhraseMatch]) -> set[int]:
        """The SHORTLIST services most likely to win, by an estimate of their score: each
        word's and phrase's best term per service, summed, then coordinated and normalised
        like the score. On a catalogue of thousands of services an everyday word hits
        hundreds of them; exact scoring is then done for the shortlist only. Catalogues of
        up to SHORTLIST_ABOVE services never take this path, so their results are exact."""
        services: list[npt.NDArray[np.integer[Any]]] = []
        weights: list[npt.NDArray[np.float64]] = []
        seen: set[str] = set()
        for token in tokens:
            text = token.text
            if text in seen or text in self.stopwords or len(text) < 2:
                continue
            seen.add(text)
            (hit, weight), _, _ = self._grouped(text)
            services.append(hit)
            weights.append(weight * SUBJECT_BOOST if token.in_subject else weight)
        for start, key, groups in matches:
            boost = SUBJECT_BOOST if tokens[start].in_subject else 1.0
            for group in groups:
                hit, weight = self._group_vector(key, group)
                services.append(hit)
                weights.append(weight * boost)
        if not services:
            return set()
        every = np.concatenate(services)
        size = len(self.services)
        total = np.bincount(every, weights=np.concatenate(weights), minlength=size)
        words = np.bincount(every, minlength=size)
        candidates = np.flatnonzero(words)
        # The final score's form: coordination and length norm.
        estimate = total[candidates] * words[candidates] ** COORDINATION / self._norm[candidates]
        return set(_best(candidates, estimate, SHORTLIST).tolist())

    def _phrase_matches(self, tokens: Sequence[Token]) -> list[_PhraseMatch]:
        """The phrase patterns the ticket contains, without listing their phrases (a pattern
        linked to thousands of services stands for thousands of phrases)."""
        matches: list[_PhraseMatch] = []
        words = [t.text for t in tokens]
        word_keys = [self.keys(w) for w in words]
        for i, keys in enumerate(word_keys):
            following = word_keys[i + 1] if i + 1 < len(words) else frozenset()
            for k in sorted(keys):  # set order varies per process; ties keep the first
                by_next = self._phrase_next.get(k)
                if by_next is None:
                    continue
                numbers = set(by_next.get("", ()))
                for second in following:
                    numbers.update(by_next.get(second, ()))
                patterns = self._phrase_groups[k]
                groups = [
                    number
                    for number in sorted(numbers)
                    if i + len(pattern := patterns[number][0]) <= len(words)
                    and all(word_keys[i + j] & pattern[j] for j in range(2, len(pattern)))
                ]
                if groups:
                    matches.append((i, k, groups))
        return matches

    def _phrase_hits(
        self, matches: list[_PhraseMatch], chosen: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[Phrase, int]]:
        """The phrases behind the matched patterns — of the chosen services only (a mask
        over all services) when there is a shortlist — in index order at each position
        (ties keep the first)."""
        hits: list[tuple[Phrase, int]] = []
        for start, key, groups in matches:
            positions: list[int] = []
            for group in groups:
                kept = self._phrase_groups[key][group][1]
                if chosen is None:
                    positions += kept
                    continue
                services, _ = self._group_vector(key, group)
                positions += np.frombuffer(kept, dtype=np.uintc)[chosen[services]].tolist()
            phrases = self.phrases[key]
            hits += [(phrases[p], start) for p in sorted(positions)]
        return hits

    def _direct(self, word: str) -> list[_Segment]:
        # Exact form first and every posting kept: the scorer keeps the best per term, and
        # the result must not depend on set iteration order (hash seeds differ per process).
        stemmed = len(self.languages) if len(word) <= MAX_WORD_LEN else 0
        _spend_search(len(word) + stemmed * (STEM_STEPS + len(word)))
        out = []
        for key in sorted(self.keys(word), key=lambda k: (k != word, k)):
            kind = "exact" if key == word else "stem"
            postings = self.postings.get(key, ())
            if not postings:
                continue
            if key != word and len(key) < SHORT_STEM:
                chosen = self._same_family_postings(word, key)
                if len(chosen):
                    out.append(_Segment(key, kind, word, chosen))
                continue
            out.append(_Segment(key, kind, word))
        return out

    def _same_family_postings(self, word: str, key: str) -> _Positions:
        """Positions in postings[key] (a short stem) of the terms of the word's family,
        ascending; the test is made once per distinct term, not once per posting."""
        surfaces = self._key_surfaces.get(key)
        if surfaces is None:
            return tuple(
                i for i, p in enumerate(self.postings[key]) if self._same_family(word, p.surface)
            )
        names, positions = surfaces
        family = [
            positions[n] for n, surface in enumerate(names) if self._same_family(word, surface)
        ]
        if len(family) < 2:
            return family[0] if family else ()
        return np.sort(np.concatenate(family))

    def _same_family(self, word: str, surface: str) -> bool:
        words = self._words(surface)  # the term as the ticket's words are: folded, joined
        return len(words) != 1 or _same_family(word, words[0])

    def _compound(self, word: str) -> list[_Segment]:
        """Split a compound into head + tail that are both words, at least one of them a
        known term.

        Norwegian puts the meaning-bearing part last ("trådløs|nettet" is a network), so a
        known tail alone is enough; a known head alone is accepted only when long (≥ 5),
        which keeps "pass|ord" style accidents out. Either way the other part must be a word
        too (of the catalogue, the thesaurus or the language data; the head may end in a
        linking -s/-e): "kontorstol" is no "konto|rstol".
        """
        best: list[_Segment] = []
        best_len = 0
        for cut in range(MIN_PART_LEN, len(word) - MIN_PART_LEN + 1):
            head, tail = word[:cut], word[cut:]
            tail_hits = self._part(tail) if len(tail) >= MIN_TAIL_LEN else []
            head_hits = self._part(head)
            if not head_hits and head[-1] in "se" and len(head) > MIN_PART_LEN + 1:
                head_hits = self._part(head[:-1])  # linking -s-/-e-: "eksamen|s|system"
            if head_hits and not tail_hits and (len(head) < 5 or len(tail) < 4):
                head_hits = []  # "konto|ret" is "kontoret", an inflection, not a compound
            if head_hits and not tail_hits and not self._is_word(tail):
                continue
            covered = (len(head) if head_hits else 0) + (len(tail) if tail_hits else 0)
            if covered > best_len:
                best, best_len = head_hits + tail_hits, covered
        return best

    def _known(self, word: str) -> bool:
        """Whether a ticket word is, as written, a word the index knows or a known word's
        stem (so no typo of another one: "kontor" (office) is no slip for "konto" (account)).
        Its own stem is not asked: "tonet" stems like "toner" but is a slip for it."""
        return word in self.lexicon

    def _is_word(self, part: str) -> bool:
        """Whether a compound's second part can be a word: one the index knows, as written
        or stemmed in a compounding language (the tail carries the inflection: "stol|en"),
        or one that begins as the language's words do ("rstol" cannot)."""
        lexicon = self.lexicon
        if part in lexicon or any(stem(part, lang) in lexicon for lang in self.compounding):
            return True
        onset = _onset(part)
        if len(onset) <= 1:
            return onset != part
        onsets = language_data().word_onsets
        return any(onset in onsets.get(lang, ()) for lang in self.compounding)

    def _part(self, part: str) -> list[_Segment]:
        """Postings of a compound part: the part as written or stemmed in a compounding
        language (English stems of fragments, "ecting" → "ect", match nonsense)."""
        _spend_search(len(part) + len(self.compounding) * (STEM_STEPS + len(part)))
        keys = sorted({part, *(stem(part, lang) for lang in self.compounding)})
        return [_Segment(key, "compound", part) for key in keys if self.postings.get(key)]

    def _fuzzy(self, word: str) -> list[_Segment]:
        limit = 2 if len(word) >= FUZZY2_LEN else 1
        _spend_search(len(word) * (len(word) + 1))  # the word's deletes, each looked up
        candidates: set[str] = set(self.deletes.get(word, ()))
        for variant in _deletes(word):
            candidates |= self.deletes.get(variant, set())
        out: list[_Segment] = []
        _spend_search(sum(map(len, candidates)))  # compared with the word
        for candidate in sorted(candidates):
            if (
                candidate[0] == word[0]
                and OSA.distance(word, candidate, score_cutoff=limit) <= limit
                and _plausible_slip(word, candidate)
            ):
                out += [replace(s, how="fuzzy", word=word) for s in self._direct(candidate)]
        return out

    def change_intent(self, tokens: Sequence[Token]) -> tuple[float, tuple[str, ...]]:
        """Score of the change-intent groups that occur (each once) and the cues seen."""
        return self._intent(tokens, self.change_cues)

    def private_intent(self, tokens: Sequence[Token]) -> tuple[float, tuple[str, ...]]:
        """Score of the private-matter groups that occur (each once) and the cues seen."""
        return self._intent(tokens, self.private_cues)

    def _intent(self, tokens: Sequence[Token], table: IntentCues) -> tuple[float, tuple[str, ...]]:
        groups: dict[int, str] = {}
        words = [t.text for t in tokens]
        keys = [self.keys(w) for w in words]
        for i in range(len(words)):
            for key in sorted(keys[i]):  # set order varies per process; the first cue is named
                for cue_keys, cue, group in table.cues.get(key, ()):
                    n = len(cue_keys)
                    if (
                        group not in groups
                        and i + n <= len(words)
                        and all(keys[i + j] & cue_keys[j] for j in range(1, n))
                    ):
                        groups[group] = cue
        score = sum(table.groups[g][1] for g in groups)
        positive = tuple(cue for g, cue in sorted(groups.items()) if table.groups[g][1] > 0)
        return round(score, 3), positive

    def candidates(
        self, tokens: Sequence[Token]
    ) -> tuple[list[tuple[float, int]], dict[int, list[_Hit]]]:
        """Every service with any evidence, best first: (score, service index), and hits."""
        scored, kept = self._score(tokens)
        return sorted(scored, key=self._rank), kept

    def _rank(self, item: tuple[float, int]) -> tuple[float, str]:
        """Sort key of a (score, service index): best first, equal scores by id."""
        return (-item[0], self.services[item[1]].id)

    def _score(
        self, tokens: Sequence[Token]
    ) -> tuple[list[tuple[float, int]], dict[int, list[_Hit]]]:
        """candidates(), unsorted. A large catalogue records thousands of hits per ticket,
        so this is the hot loop: per (service, term) the heaviest hit wins, the first on ties."""
        hits: dict[int, dict[str, _Hit]] = defaultdict(dict)
        idf = self.idf.get
        quality = QUALITY
        matches = self._phrase_matches(tokens)
        shortlist = (
            self._shortlist(tokens, matches) if len(self.services) > SHORTLIST_ABOVE else None
        )
        chosen = None
        if shortlist is not None:
            chosen = np.zeros(len(self.services), dtype=bool)
            chosen[list(shortlist)] = True
        phrase_hits = self._phrase_hits(matches, chosen)
        seen: set[tuple[str, bool]] = set()
        for token in tokens:
            if token.text in self.stopwords or len(token.text) < 2:
                continue
            # A repeated word makes the very same hits again; only its first one can count.
            if (token.text, token.in_subject) in seen:
                continue
            seen.add((token.text, token.in_subject))
            in_subject = token.in_subject
            if chosen is None:
                found = self._lookup(token.text)
            else:
                _, word_hits, hit_services = self._grouped(token.text)
                # The shortlisted services' hits, in the order they were found.
                picked = np.flatnonzero(chosen[hit_services])
                if isinstance(word_hits, _KeyHits):
                    found = word_hits.pick(picked)
                else:
                    found = [word_hits[i] for i in picked.tolist()]
            for posting, how, word in found:
                weight = posting.weight * idf(posting.term, 1.0) * quality[how]
                if in_subject:
                    weight *= SUBJECT_BOOST
                terms = hits[posting.service]
                current = terms.get(posting.term)
                if current is None or weight > current.weight:
                    terms[posting.term] = _Hit(weight, posting, how, word, in_subject)
        surfaces: dict[tuple[int, int], str] = {}
        phrase_quality = quality["phrase"]
        for phrase, start in phrase_hits:
            n = len(phrase.keys)
            surface = surfaces.get((start, n))
            if surface is None:
                surface = " ".join(t.text for t in tokens[start : start + n])
                surfaces[(start, n)] = surface
            posting = phrase.posting
            in_subject = tokens[start].in_subject
            weight = posting.weight * idf(posting.term, 1.0) * phrase_quality
            if in_subject:
                weight *= SUBJECT_BOOST
            terms = hits[posting.service]
            current = terms.get(posting.term)
            if current is None or weight > current.weight:
                terms[posting.term] = _Hit(weight, posting, "phrase", surface, in_subject)

        kept = {
            service: list(terms.values()) if len(terms) == 1 else _one_term_per_word(terms)
            for service, terms in hits.items()
        }
        norm = self.norm
        return [(_coordinated(kept[s]) / norm[s], s) for s in kept], kept

    def classify(
        self,
        body: str,
        subject: str = "",
        language_hint: str | None = None,
        work: Work | None = None,
    ) -> ServiceMatch:
        """The ticket's match, within a work budget (`work`, by default Work()): the
        caller's Work object afterwards tells the steps spent and whether it ran out."""
        return self.classify_with_features(body, subject, language_hint, work)[0]

    def classify_with_features(
        self,
        body: str,
        subject: str = "",
        language_hint: str | None = None,
        work: Work | None = None,
    ) -> tuple[ServiceMatch, Features]:
        """classify(), and the features its confidence was calibrated from (for
        scripts/fit_calibration.py, which fits CALIBRATION on labelled tickets)."""
        work = Work() if work is None else work
        tokens = self._affordable(ticket_tokens(subject, body, work), work)
        default = self.catalogue.languages[0] if self.catalogue.languages else "en"
        language = language_hint or guess_language(
            (t.text for t in tokens), self.catalogue.languages, default
        )
        unsorted, kept = self._score(tokens)
        known = self.known_words(tokens)
        if self.learned is not None:  # the organisation's own words: connector/learn.py
            unsorted, kept = self.learned.rescore(self, tokens, unsorted, kept)
        # Only the best two are used: the same two as candidates()' full sort (ids are unique).
        scored = heapq.nsmallest(2, unsorted, key=self._rank)
        change_score, cues = self.change_intent(tokens)
        is_change = change_score >= self.change_cues.threshold
        private_score, private_cues = self.private_intent(tokens)
        is_private = private_score >= self.private_cues.threshold
        if is_private:
            scored = self._private_first(unsorted, scored)
        outside = None if is_private else self._outside_it(tokens, scored[0][0] if scored else 0.0)
        content = self._content_words(tokens)
        if not scored or scored[0][0] < MIN_SCORE or outside is not None:
            concept, outside_evidence = outside or (None, ())
            features = _no_service_features(scored, outside is not None, is_private)
            match = ServiceMatch(
                service=None,
                score=round(scored[0][0], 3) if scored else 0.0,
                confidence=calibrated(features) if content else 0.0,
                language=language,
                evidence=outside_evidence,
                outside=_label(concept, language) if concept else None,
                change_cues=cues,
                change_score=change_score,
                change_intent=is_change,
                runner_up=self.services[scored[0][1]].id if scored else None,
                runner_up_score=round(scored[0][0], 3) if scored else 0.0,
                private_cues=private_cues,
                private_matter=is_private,
                known_words=known,
            )
            return match, features
        best_score, best = scored[0]
        runner = scored[1] if len(scored) > 1 else None
        # (A service for private matters may win on the private cues alone, with no hits.)
        hits = kept.get(best, [])
        features = _service_features(scored, hits, content, is_private)
        evidence = sorted((h.evidence for h in hits), key=lambda e: (-e.weight, e.term))[:6]
        match = ServiceMatch(
            service=self.services[best].id,
            score=round(best_score, 3),
            confidence=calibrated(features),
            language=language,
            evidence=tuple(evidence),
            runner_up=self.services[runner[1]].id if runner else None,
            runner_up_score=round(runner[0], 3) if runner else 0.0,
            change_cues=cues,
            change_score=change_score,
            change_intent=is_change,
            private_cues=private_cues,
            private_matter=is_private,
            known_words=known,
        )
        return match, features

    def _content_words(self, tokens: Sequence[Token]) -> int:
        """How many distinct words of the ticket could be evidence: no stopwords, and no
        bare numbers (a ticket of "12345 !!!" says nothing, and no answer to it is sure)."""
        return len(
            {
                t.text
                for t in tokens
                if len(t.text) >= 2 and t.text not in self.stopwords and not t.text.isdigit()
            }
        )

    def known_words(self, tokens: Sequence[Token]) -> int:
        """Distinct ticket words that are words of a catalogue language: a stopword or
        function word, or a word the catalogue or its thesaurus knows (itself or its stem).
        Typos and compounds do not count: "qwerty" is one edit from many words."""
        known: set[str] = set()
        postings = self.postings
        for token in tokens:
            word = token.text
            if word in known or len(word) < 2:
                continue
            if word in self.stopwords or any(key in postings for key in self.keys(word)):
                known.add(word)
        return len(known)

    def _affordable(self, tokens: list[Token], work: Work) -> list[Token]:
        """The tokens, from the first, that the work budget pays for. Each distinct word is
        searched once (direct keys, compound parts, typos; in the outside-IT index too) at
        its cost in steps, and every token costs its length for the passes that read all
        tokens (language, phrases, intents, scoring). Past the budget the rest is left out
        of every stage: the ticket is matched on its beginning, alike on every machine."""
        searched: set[str] = set()
        start = work.steps
        for number, token in enumerate(tokens):
            text = token.text
            work.spend(TOKEN_STEPS + len(text))
            if text not in searched and text not in self.stopwords and len(text) >= 2:
                searched.add(text)
                work.spend(self.search_steps(text))
                if self.outside is not None:
                    work.spend(self.outside.search_steps(text))
            if work.over_budget(start):
                work.exhausted = True
                return tokens[:number]
        return tokens

    def _outside_it(
        self, tokens: Sequence[Token], best: float
    ) -> tuple[Concept, tuple[Evidence, ...]] | None:
        """The matter outside IT a ticket is about, when its evidence outweighs the best
        service's OUTSIDE_RATIO times: "the coffee machine shows E12 on its display" is
        about a coffee machine, whatever service "display" belongs to."""
        if self.outside is None:
            return None
        unsorted, kept = self.outside._score(tokens)
        if not unsorted:
            return None
        score, number = min(unsorted, key=self.outside._rank)
        if score < MIN_SCORE or score <= best * OUTSIDE_RATIO:
            return None
        concept = self.outside_concepts[self.outside.services[number].id]
        evidence = sorted((h.evidence for h in kept[number]), key=lambda e: (-e.weight, e.term))
        return concept, tuple(evidence[:6])

    def _private_first(
        self, unsorted: list[tuple[float, int]], scored: list[tuple[float, int]]
    ) -> list[tuple[float, int]]:
        """A private matter is about the catalogue's unsupported service for it, when there is
        one with evidence ("my own printer at home" is private devices, not printing)."""
        services = self.services
        # The catalogue's services for private matters take the cues themselves as evidence.
        bonus = MIN_SCORE * PRIVATE_SHARE
        private = self.private_services
        scores = dict((s, score) for score, s in unsorted)
        unsorted = [(scores.get(s, 0.0) + bonus, s) for s in private] + [
            item for item in unsorted if item[1] not in private
        ]
        unsupported = [
            item
            for item in unsorted
            if not services[item[1]].supported and item[0] >= MIN_SCORE * PRIVATE_SHARE
        ]
        if not unsupported:
            return scored
        # The private cues have ruled out the supported services: the choice, and so the
        # confidence margin, is among the unsupported ones.
        ranked = heapq.nsmallest(2, unsupported, key=self._rank)
        return [(max(ranked[0][0], MIN_SCORE), ranked[0][1]), *ranked[1:]]


def _can_win(postings: Sequence[Posting], by_surface: bool = False) -> list[int]:
    """Positions of the postings that are the first of the heaviest of their service and
    term (and surface), ascending. A service's postings under one key are contiguous (they
    are added service by service) and few, so a duplicate is looked for in that run only."""
    kept: list[int] = []
    service = -1
    run = 0  # where this service's postings start in kept
    for position, posting in enumerate(postings):
        if posting.service != service:
            service, run = posting.service, len(kept)
            kept.append(position)
            continue
        for index in range(run, len(kept)):
            other = postings[kept[index]]
            if other.term == posting.term and (not by_surface or other.surface == posting.surface):
                if posting.weight > other.weight:
                    kept[index] = position
                break
        else:
            kept.append(position)
    return sorted(kept)


def _winning_phrases(phrases: Sequence[Phrase], positions: list[int]) -> array[int]:
    """Of the phrases at `positions` (one pattern's), the positions of those that can win."""
    kept = _can_win([phrases[p].posting for p in positions])
    return array("I", [positions[i] for i in kept])


def _best(
    candidates: npt.NDArray[np.intp], estimate: npt.NDArray[np.float64], count: int
) -> npt.NDArray[np.intp]:
    """The `count` candidates (ascending) with the highest estimates; of equal estimates at
    the cut, the first ones, so the choice is deterministic. A partition finds the cut
    without sorting the thousands of candidates a large catalogue has per ticket."""
    if len(candidates) <= count:
        return candidates
    cut = np.partition(estimate, len(estimate) - count)[len(estimate) - count]
    above = candidates[estimate > cut]
    at_cut = candidates[estimate == cut]
    return np.concatenate((above, at_cut[: count - len(above)]))


def _without(concept: Concept, claimed: set[str], canonical: Callable[[str], str]) -> Concept:
    """An outside concept minus the terms that an IT concept of the catalogue's services has
    too: "sick leave" is a matter for the HR system when the catalogue has one."""
    terms = {
        lang: tuple(t for t in words if canonical(t) not in claimed)
        for lang, words in concept.terms.items()
    }
    return replace(concept, terms=terms)


def _label(concept: Concept, language: str) -> str:
    return concept.label.get(language) or concept.label.get("en") or concept.id.replace("-", " ")


def _topics(concepts: Sequence[Concept]) -> dict[str, list[int]]:
    by_topic: dict[str, list[int]] = defaultdict(list)
    for index, concept in enumerate(concepts):
        if concept.topic:
            by_topic[concept.topic].append(index)
    return by_topic


def _with_siblings(
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
        by_topic = _topics(concepts)
    result = dict(linked)
    for members in by_topic.values():
        covered = sum(linked.get(m, 0.0) for m in members)
        if covered <= 0:
            continue
        share = SIBLING_LINK * min(1.0, covered / SIBLING_FULL)
        for member in members:
            result[member] = max(result.get(member, 0.0), share)
    return result


def _coordinated(hits: list[_Hit]) -> float:
    """Sum of the evidence, raised for services that several distinct words point to: a
    ticket about a printer says printer, paper and toner; a stray word says one thing."""
    return float(sum(h.weight for h in hits) * len(hits) ** COORDINATION)


def _one_term_per_word(terms: dict[str, _Hit]) -> list[_Hit]:
    """Each ticket word counts once per service, for its best term: 'skriveren' matching
    both the keyword 'skriver' and the thesaurus' 'skrivere' is one piece of evidence."""
    used: set[str] = set()
    kept = []
    for hit in sorted(terms.values(), key=lambda h: (-h.weight, h.posting.surface)):
        if hit.word not in used:
            used.add(hit.word)
            kept.append(hit)
    return kept


# The features a confidence is calibrated from: the kind of answer ("service" or "none")
# and its numbers (see _service_features and _no_service_features).
Features = tuple[str, tuple[float, ...]]

# Confidence is the probability that the answer is right: a logistic model of a few features
# of the match, one per kind of answer, fitted on the labelled tickets of tests/data/tickets.csv
# (and no other) by `scripts/fit_calibration.py tests/data/tickets.csv --partial 2`, which
# prints this table: with the whole thesaurus, and with each half of it, so that it also
# knows what evidence is worth on a catalogue the thesaurus covers less well.
CALIBRATION: dict[str, tuple[float, ...]] = {
    "service": (-1.8464, 1.0559, 1.6297, -0.2137, -0.9306, 0.9401, -0.1313),
    "none": (0.2743, -0.6727, 1.887, 0.0),
}


def _service_features(
    scored: Sequence[tuple[float, int]], hits: Sequence[_Hit], content: int, private: bool
) -> Features:
    """Of a match to a service: its score and margin over the runner-up, how many distinct
    ticket words point to it, how much of its evidence is the catalogue's own text rather
    than the thesaurus, what share of the ticket's words it explains, and whether the
    private-matter cues chose it."""
    top = scored[0][0]
    second = scored[1][0] if len(scored) > 1 else 0.0
    total = sum(h.weight for h in hits) or 1.0
    own = sum(h.weight for h in hits if not h.posting.source.startswith("thesaurus"))
    words = len({h.word for h in hits})
    return "service", (
        math.log1p(top),
        (top - second) / top if top > 0 else 0.0,
        math.log(max(words, 1)),
        own / total,
        min(1.0, words / max(content, 1)),
        1.0 if private else 0.0,
    )


def _no_service_features(
    scored: Sequence[tuple[float, int]], outside: bool, private: bool
) -> Features:
    """Of an answer that no service fits: the best service's score (how near it came), and
    whether a matter outside IT or the private-matter cues decided it."""
    top = scored[0][0] if scored else 0.0
    return "none", (math.log1p(top), 1.0 if outside else 0.0, 1.0 if private else 0.0)


def calibrated(features: Features) -> float:
    """The probability that the answer is right, by the CALIBRATION model of its kind."""
    kind, values = features
    bias, *weights = CALIBRATION[kind]
    z = bias + sum(w * v for w, v in zip(weights, values, strict=True))
    return round(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))), 4)


def ticket_tokens(subject: str, body: str, work: Work | None = None) -> list[Token]:
    subject = subject[:MAX_SUBJECT_CHARS]
    tokens = [Token(w, i, True) for i, w in enumerate(tokenize(fold(subject)))]
    offset = len(tokens) + 1
    text = clean_text(body, forwarded=is_forward(subject), work=work)
    if work is not None:
        work.spend(2 * len(subject) + len(text))  # the subject read twice, both tokenised
    body_words = tokenize(text)
    tokens += [Token(w, offset + i, False) for i, w in enumerate(body_words)]
    return tokens


def _brackets(name: str) -> list[str]:
    out, depth, current = [], 0, ""
    for ch in name:
        if ch == "(":
            depth += 1
            current = ""
        elif ch == ")" and depth:
            depth -= 1
            out.append(current.strip())
        elif depth:
            current += ch
    return [o for o in out if o]


def _strip_brackets(name: str) -> str:
    result, depth = "", 0
    for ch in name:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth:
            result += ch
    return result.strip()


SHORT_STEM = 5  # stems shorter than this are checked: the stemmer may have cut a derivation


def _same_family(word: str, term: str) -> bool:
    """Whether two words that met on a short stem are forms of one word. Snowball cuts
    derivations too, "rettigheter" (rights) → "rett", where "rette" (to correct) also lands;
    inflections of one word share all but their last few letters ("rettighetene")."""
    prefix = 0
    for a, b in zip(word, term, strict=False):
        if a != b:
            break
        prefix += 1
    return prefix >= max(len(word), len(term)) - 4


def _plausible_slip(word: str, candidate: str) -> bool:
    """A typo changes letters into neighbouring keys; a word whose letters differ from the
    candidate's in other ways is most often another word ("leder" is not "lader", "bruker"
    not "bråker"). Insertions, deletions and swaps are not judged."""
    if len(word) != len(candidate):
        return True
    differ = [i for i, (a, b) in enumerate(zip(word, candidate, strict=True)) if a != b]
    if len(differ) == 2 and differ[1] == differ[0] + 1:
        i = differ[0]
        if word[i] == candidate[i + 1] and word[i + 1] == candidate[i]:
            return True  # two letters swapped
    slips = language_data().slips
    return all(candidate[i] in slips.get(word[i], ()) for i in differ)


_VOWELS = frozenset("aeiouyæøåäöüéèáàóòú")


def _onset(word: str) -> str:
    """The letters before a word's first vowel."""
    for position, letter in enumerate(word):
        if letter in _VOWELS:
            return word[:position]
    return word


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def build_index(
    catalogue: Catalogue,
    concepts: Iterable[Concept] | None = None,
    packs: Collection[str] | None = None,
) -> CatalogueIndex:
    """Index a catalogue once; reuse the result for every ticket.

    Without `concepts`, the shipped thesaurus with the domain packs named in `packs`; with
    neither, the packs that $BPSM_DOMAIN_PACKS selects (default all)."""
    languages = tuple(dict.fromkeys([*catalogue.languages, "en"]))
    if concepts is not None:
        chosen = tuple(concepts)
    else:
        if packs is None:
            packs = parse_packs(os.environ.get(PACKS_VARIABLE))
        chosen = shipped_thesaurus(packs)
    return CatalogueIndex(catalogue=catalogue, languages=languages).build(chosen)


__all__ = [
    "CatalogueIndex",
    "Concept",
    "Features",
    "build_index",
    "calibrated",
    "domain_packs",
    "parse_packs",
    "shipped_thesaurus",
]
