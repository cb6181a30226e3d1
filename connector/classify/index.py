"""The built index: its postings and phrases, the arrays a large catalogue reads them
from, and the word keys they are filed under. Built once by build.py and not changed after;
only the per-word memos of matching fill up as tickets come."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from connector.catalogue import Catalogue, Service
from connector.classify.intent import IntentCues
from connector.classify.thesaurus import Concept
from connector.classify.words import GROUPED_MEMO, HITS_MEMO, SEARCH_MEMO, Keys
from connector.events import Evidence
from connector.memo import SizedMemo


@dataclass(frozen=True, slots=True)
class Posting:
    service: int
    term: str  # canonical key of the term (its stems joined) — one hit per service and term
    surface: str
    source: str
    weight: float

    def __reduce__(self) -> tuple[type[Posting], tuple[int, str, str, str, float]]:
        # By its constructor: a prebuilt index holds 100,000s of these, and a frozen slots
        # dataclass's default unpickling looks its fields up for each one (10× slower).
        return (Posting, (self.service, self.term, self.surface, self.source, self.weight))


@dataclass(frozen=True, slots=True)
class ConceptPosting:
    """A thesaurus term under a key, filed once for its concept: the services that link the
    concept (IndexData.link_*) get it at their link's weight when a ticket hits it."""

    concept: int
    term: str  # canonical, as Posting.term
    surface: str
    source: str  # "thesaurus:<concept id>"

    def __reduce__(self) -> tuple[type[ConceptPosting], tuple[int, str, str, str]]:
        return (ConceptPosting, (self.concept, self.term, self.surface, self.source))


@dataclass(frozen=True, slots=True)
class ConceptPhrase:
    keys: tuple[frozenset[str], ...]
    posting: ConceptPosting

    def __reduce__(self) -> tuple[type[ConceptPhrase], tuple[Any, ...]]:
        return (ConceptPhrase, (self.keys, self.posting))


@dataclass(frozen=True, slots=True)
class Phrase:
    keys: tuple[frozenset[str], ...]  # acceptable keys at each position
    posting: Posting

    def __reduce__(self) -> tuple[type[Phrase], tuple[Any, ...]]:
        return (Phrase, (self.keys, self.posting))


@dataclass(frozen=True, slots=True, eq=False)
class PostingColumns:
    """Postings laid end to end as columns (large catalogues): a prebuilt index maps them
    from its file instead of unpickling 100,000s of Posting objects, and the processes that
    map one share its pages. A Posting is made when it is read (the few the scorer keeps)."""

    services: npt.NDArray[np.integer[Any]]
    terms: npt.NDArray[np.integer[Any]]  # numbers into term_texts
    surfaces: npt.NDArray[np.integer[Any]]  # numbers into surface_texts
    sources: npt.NDArray[np.integer[Any]]  # numbers into source_texts
    weights: npt.NDArray[np.float64]
    term_texts: list[str]
    surface_texts: list[str]
    source_texts: tuple[str, ...]

    def posting(self, at: int) -> Posting:
        return Posting(
            int(self.services[at]),
            self.term_texts[self.terms[at]],
            self.surface_texts[self.surfaces[at]],
            self.source_texts[self.sources[at]],
            float(self.weights[at]),
        )

    def postings(self, at: npt.NDArray[np.intp] | slice) -> list[Posting]:
        """The postings at `at` (positions or a slice), made column by column."""
        terms, surfaces, sources = self.term_texts, self.surface_texts, self.source_texts
        return [
            Posting(service, terms[term], surfaces[surface], sources[source], weight)
            for service, term, surface, source, weight in zip(
                self.services[at].tolist(),
                self.terms[at].tolist(),
                self.surfaces[at].tolist(),
                self.sources[at].tolist(),
                self.weights[at].tolist(),
                strict=True,
            )
        ]


class PostingList(Sequence[Posting]):
    """One key's postings, read from the columns: a list of Posting to its readers."""

    __slots__ = ("columns", "start", "end")

    def __init__(self, columns: PostingColumns, start: int, end: int) -> None:
        self.columns, self.start, self.end = columns, start, end

    def __len__(self) -> int:
        return self.end - self.start

    @overload
    def __getitem__(self, index: int) -> Posting: ...
    @overload
    def __getitem__(self, index: slice) -> list[Posting]: ...
    def __getitem__(self, index: int | slice) -> Posting | list[Posting]:
        if isinstance(index, slice):
            return self.columns.postings(np.arange(self.start, self.end)[index])
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.columns.posting(self.start + index % len(self))

    def take(self, positions: npt.NDArray[np.intp]) -> list[Posting]:
        """The postings at `positions`, in that order."""
        return self.columns.postings(positions + self.start)

    def __iter__(self) -> Iterator[Posting]:
        return iter(self.columns.postings(slice(self.start, self.end)))


class _SpanMap:
    """What a key → span-of-the-columns map answers without reading the columns."""

    __slots__ = ()
    spans: dict[str, tuple[int, int]]

    def __contains__(self, key: object) -> bool:
        return key in self.spans

    def __iter__(self) -> Iterator[str]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)


class PostingMap(_SpanMap, Mapping[str, Sequence[Posting]]):
    """postings[key] of a large catalogue: each key's span of the columns."""

    __slots__ = ("columns", "spans")

    def __init__(self, columns: PostingColumns, spans: dict[str, tuple[int, int]]) -> None:
        self.columns, self.spans = columns, spans

    def __getitem__(self, key: str) -> PostingList:
        start, end = self.spans[key]
        return PostingList(self.columns, start, end)

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping.get by way of a KeyError: a word new to the process asks for dozens of
        # keys that are not there (its stems, a compound's parts).
        span = self.spans.get(key)
        return default if span is None else PostingList(self.columns, *span)

    def __reduce__(self) -> tuple[type[PostingMap], tuple[Any, ...]]:
        return (PostingMap, (self.columns, self.spans))


class PhraseList(Sequence[Phrase]):
    """One key's phrases, read from the columns: each phrase's posting and the pattern
    (of phrase_groups[key]) it belongs to."""

    __slots__ = ("postings", "patterns", "groups")

    def __init__(
        self,
        postings: PostingList,
        patterns: Sequence[PatternGroup],
        groups: npt.NDArray[np.integer[Any]],
    ) -> None:
        self.postings, self.patterns, self.groups = postings, patterns, groups

    def __len__(self) -> int:
        return len(self.postings)

    @overload
    def __getitem__(self, index: int) -> Phrase: ...
    @overload
    def __getitem__(self, index: slice) -> list[Phrase]: ...
    def __getitem__(self, index: int | slice) -> Phrase | list[Phrase]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        posting = self.postings[index]
        at = self.postings.start + index % len(self)
        return Phrase(self.patterns[self.groups[at]][0], posting)

    def take(self, positions: Sequence[int]) -> list[Phrase]:
        """The phrases at `positions`, in that order."""
        at = np.asarray(positions, dtype=np.intp)
        patterns = self.patterns
        return [
            Phrase(patterns[group][0], posting)
            for group, posting in zip(
                self.groups[at + self.postings.start].tolist(),
                self.postings.take(at),
                strict=True,
            )
        ]

    def __iter__(self) -> Iterator[Phrase]:
        return iter(self.take(range(len(self))))


class PhraseMap(_SpanMap, Mapping[str, Sequence[Phrase]]):
    """phrases[key] of a large catalogue: each key's span of the phrase columns, with the
    pattern group of each phrase (its keys are the group's pattern)."""

    __slots__ = ("columns", "spans", "groups", "patterns")

    def __init__(
        self,
        columns: PostingColumns,
        spans: dict[str, tuple[int, int]],
        groups: npt.NDArray[np.integer[Any]],
        patterns: dict[str, list[PatternGroup]],
    ) -> None:
        self.columns, self.spans, self.groups, self.patterns = columns, spans, groups, patterns

    def __getitem__(self, key: str) -> PhraseList:
        start, end = self.spans[key]
        return PhraseList(PostingList(self.columns, start, end), self.patterns[key], self.groups)

    def __reduce__(self) -> tuple[type[PhraseMap], tuple[Any, ...]]:
        return (PhraseMap, (self.columns, self.spans, self.groups, self.patterns))


@dataclass(slots=True)
class Hit:
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
ConceptTerm = tuple[str, str, list[Any], tuple[frozenset[str], ...] | None]


# Services hit and one weight each, as arrays: the shortlist adds up thousands of them per
# ticket, which numpy does in microseconds where a Python loop takes milliseconds.
Vector = tuple[npt.NDArray[np.integer[Any]], npt.NDArray[np.float64]]


class Hits(Protocol):
    def __getitem__(self, index: int, /) -> tuple[Posting, str, str]: ...


# The integer type of a service array (int64 for postings, int32 for the many phrases).
ServiceInt = TypeVar("ServiceInt", np.int32, np.int64)

# Positions in a key's postings: a tuple, or an array in a large catalogue.
Positions = Sequence[int] | npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True, eq=False)
class Segment:
    """Hits of a ticket word that share a key: postings[key] (or, for a short stem, those at
    `chosen`, ascending), each matched as `how` by `word` (the ticket word, or a compound's
    part)."""

    key: str
    how: str
    word: str
    chosen: Positions | None = None
    concept_chosen: tuple[int, ...] | None = None  # the same, in concept_postings[key]


@dataclass(frozen=True, slots=True)
class KeyHits:
    """A word's hits in the order _lookup lists them, read from the postings on demand: the
    scorer only needs the shortlisted services' few among thousands."""

    lists: tuple[Sequence[Posting], ...]  # postings[key] of each segment
    segments: tuple[Segment, ...]
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
                    offsets = np.asarray(segment.chosen, dtype=np.intp)[offsets]
                postings, how, word = self.lists[part], segment.how, segment.word
                if isinstance(postings, PostingList):  # columns: made together
                    out += [(posting, how, word) for posting in postings.take(offsets)]
                else:
                    out += [(postings[i], how, word) for i in offsets.tolist()]
            first = end
        return out


# The services and weights of a word that hits nothing, shared and read-only.
NO_SERVICES: npt.NDArray[np.int64] = np.zeros(0, np.int64)
NO_WEIGHTS: npt.NDArray[np.float64] = np.zeros(0, np.float64)
NO_SERVICES.flags.writeable = False
NO_WEIGHTS.flags.writeable = False

# A word's best weight per service (the shortlist's input), its hits, and each hit's service.
PatternGroup = tuple[tuple[frozenset[str], ...], "array[int]", tuple[int, ...]]


@dataclass(frozen=True, slots=True, eq=False)
class ConceptHits:
    """A word's hits of concept terms, spread to the services that link the concepts: per
    hit its service and weight (× idf × quality). The hits are the entries' link slices end
    to end (entry e: rows offsets[e]:offsets[e + 1], links entry_links[e] onwards); a
    hit's other columns (term, link weight and rank, segment, position) are read through its
    entry and link for the few rows asked for, not made for the thousands an everyday word
    has in a large catalogue."""

    services: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]  # len(sources) + 1
    entry_links: npt.NDArray[np.int64]  # each entry's first link (link_starts[concept])
    # The segment number, position in concept_postings[key] and term number of each entry:
    # the order the scorer meets the hits in, and what it keeps one of.
    entry_segments: npt.NDArray[np.int64]
    entry_positions: npt.NDArray[np.int64]
    entry_terms: npt.NDArray[np.int64]
    link_weight_array: npt.NDArray[np.float64]  # the index's link_weights and link_ranks
    link_rank_array: npt.NDArray[np.int32]
    # (segment number, position, posting, how, matched word) of each entry
    sources: tuple[tuple[int, int, ConceptPosting, str, str], ...]

    def entries_of(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """The entry of each row."""
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def links_of(
        self, rows: npt.NDArray[np.intp], entries: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.int64]:
        """The link of each row (of entries `entries`)."""
        return self.entry_links[entries] + (rows - self.offsets[entries])

    def every_entry(self) -> npt.NDArray[np.intp]:
        """The entry of every row."""
        return np.repeat(np.arange(len(self.sources)), np.diff(self.offsets))


# A word's best weight per service (the shortlist's input), its own hits, each own hit's
# service, and its concept hits (None when there are none, or they are in the own hits).
WordHits = tuple[Vector, Hits, npt.NDArray[np.int64], ConceptHits | None]


# The columns of a word's rows that the scorer reads for its shortlisted services: term
# number, weight × idf × quality, surface rank, matched word, segment (its how), kind (0
# own, 1 concept), link rank, position (see WordTable).
TableColumns = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
]

# A word's rows are read through its segments and concept entries in the first ticket that
# scores it (a word new to the process would otherwise make ten columns of its thousands of
# hits for the few of the shortlist); a later ticket that scores it makes the full columns
# once, and gathers from them as every later one does (see WordTable.columns).


@dataclass(frozen=True, slots=True, eq=False)
class WordTable:
    """A word's hits as rows, with the keys of the order the scorer meets them in (segment,
    own before concept, link rank, position): first its own hits (rows below own_count,
    in the order of `own`), then its concept hits (the rows of `concept`). Each row:
    service, term number, weight × idf × quality, rank of the term's surface (the order
    one_term_per_word breaks ties by), the matched word (an entry of `word_texts`); see
    columns()."""

    services: npt.NDArray[np.int64]
    own_count: int
    own_places: npt.NDArray[np.int64]  # each own row's place in the key arrays
    own_segments: npt.NDArray[np.int64]  # ...and its segment
    segment_qualities: npt.NDArray[np.float64]  # QUALITY of each segment's how
    segment_words: npt.NDArray[np.int64]  # each segment's word, an entry of word_texts
    entry_surfaces: npt.NDArray[np.int64]  # each concept entry's surface rank
    key_terms: npt.NDArray[np.int64]  # the index's key arrays (not copied)
    key_weights: npt.NDArray[np.float64]
    key_surface_ranks: npt.NDArray[np.int64]
    word_texts: tuple[str, ...]
    segments: tuple[Segment, ...]
    own: Hits
    concept: ConceptHits | None
    # [the first ticket that read rows, the full columns once made]
    _state: list[Any] = field(default_factory=lambda: [None, None])

    def columns(self, picked: npt.NDArray[np.intp], ticket: int) -> TableColumns:
        """The columns of the rows at `picked` (ascending), for the ticket numbered `ticket`:
        read through the entries in the first ticket, from full columns in later ones."""
        state = self._state
        full: TableColumns | None = state[1]
        if full is None:
            if state[0] is None:
                state[0] = ticket
            if state[0] == ticket:
                return self._rows(picked)
            full = state[1] = self._rows(None)
        terms, weights, surfaces, words, hows, kinds, ranks, positions = full
        return (
            terms[picked],
            weights[picked],
            surfaces[picked],
            words[picked],
            hows[picked],
            kinds[picked],
            ranks[picked],
            positions[picked],
        )

    def _rows(self, picked: npt.NDArray[np.intp] | None) -> TableColumns:
        """The columns of the rows at `picked` (None: of every row), read through each own
        row's place in the key arrays and each concept row's entry and link."""
        own_count = self.own_count
        if picked is None:
            own_rows = np.arange(own_count, dtype=np.int64)
            concept_rows = np.arange(len(self.services) - own_count, dtype=np.int64)
        else:
            split = int(np.searchsorted(picked, own_count))
            own_rows, concept_rows = picked[:split], picked[split:] - own_count
        place = self.own_places[own_rows]
        own_segments = self.own_segments[own_rows]
        terms = self.key_terms[place]
        weights = self.key_weights[place] * self.segment_qualities[own_segments]
        surfaces = self.key_surface_ranks[place]
        hows = own_segments
        kinds = np.zeros(len(own_rows), np.int64)
        ranks = kinds
        positions = own_rows.astype(np.int64, copy=False)
        concept = self.concept
        if concept is not None and len(concept_rows):
            entries = concept.entries_of(concept_rows)
            links = concept.links_of(concept_rows, entries)
            terms = np.concatenate((terms, concept.entry_terms[entries]))
            weights = np.concatenate((weights, concept.weights[concept_rows]))
            surfaces = np.concatenate((surfaces, self.entry_surfaces[entries]))
            hows = np.concatenate((hows, concept.entry_segments[entries]))
            kinds = np.concatenate((kinds, np.ones(len(concept_rows), np.int64)))
            ranks = np.concatenate((ranks, concept.link_rank_array[links].astype(np.int64)))
            positions = np.concatenate((positions, concept.entry_positions[entries]))
        words = self.segment_words[hows]
        return terms, weights, surfaces, words, hows, kinds, ranks, positions

    def hit(self, row: int) -> tuple[Posting, str, str]:
        """The (posting, how, matched word) of one row, made on demand (the winner's)."""
        if row < self.own_count:
            return self.own[row]
        concept = self.concept
        assert concept is not None
        at = row - self.own_count
        rows = np.array([at], np.intp)
        entries = concept.entries_of(rows)
        entry, link = int(entries[0]), int(concept.links_of(rows, entries)[0])
        _, _, cp, how, matched = concept.sources[entry]
        weight = float(concept.link_weight_array[link])
        return (
            Posting(int(concept.services[at]), cp.term, cp.surface, cp.source, weight),
            how,
            matched,
        )


# A phrase pattern found in the ticket: (start token, first-word key, group numbers).
PhraseMatch = tuple[int, str, list[int]]


@dataclass(frozen=True, eq=False)
class IndexData:
    """Everything built from a catalogue and a thesaurus that classifying reads (see
    build.py), and the memos of the per-word lookups."""

    catalogue: Catalogue
    languages: tuple[str, ...]
    word_keys: Keys
    services: tuple[Service, ...] = ()
    # The services' own terms (name, keywords, description) under each key.
    # (Large catalogues: PostingMap and PhraseMap, columns of arrays read on demand.)
    postings: Mapping[str, Sequence[Posting]] = field(default_factory=dict)
    phrases: Mapping[str, Sequence[Phrase]] = field(default_factory=dict)
    # The linked thesaurus concepts' terms under each key, once per concept (not once per
    # service that links it: memory and build time no longer grow with services × terms).
    concept_postings: dict[str, list[ConceptPosting]] = field(default_factory=dict)
    concept_phrases: dict[str, list[ConceptPhrase]] = field(default_factory=dict)
    # Which services link each concept, as CSR arrays: concept c's links are the slice
    # link_starts[c]:link_starts[c + 1], services ascending, each with the weight of its
    # thesaurus terms (FIELD_WEIGHT["thesaurus"] × link strength) and the link's rank among
    # the service's concepts (the order the scorer meets equal hits in: first one wins).
    link_starts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, np.int64))
    link_services: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    link_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    link_ranks: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    term_ids: dict[str, int] = field(default_factory=dict)  # canonical term → number
    idf: dict[str, float] = field(default_factory=dict)
    # Per service: BM25's length norm over the number of terms it has (and as an array).
    norm: tuple[float, ...] = ()
    norm_array: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    deletes: dict[str, frozenset[str]] = field(default_factory=dict)
    change_cues: IntentCues = field(default_factory=IntentCues)
    private_cues: IntentCues = field(default_factory=IntentCues)
    stopwords: frozenset[str] = frozenset()
    # The language data's carrier words (device, channel, login), as ticket tokens; a
    # phrase's joined by spaces. See CARRIER_SHARE.
    carriers: frozenset[str] = frozenset()
    it_vocabulary: frozenset[str] = frozenset()
    # Every word of the catalogue, the thesaurus and the language data, with its stems in
    # the compounding languages: the parts a compound may be split into (see _compound).
    lexicon: frozenset[str] = frozenset()
    outside_concepts: dict[str, Concept] = field(default_factory=dict)
    compounding: tuple[str, ...] = ()  # languages that write compounds as one word
    # Unsupported services whose name or keywords say they are for private matters.
    private_services: frozenset[int] = frozenset()
    # Large catalogues only: every key's postings as arrays, services and weight × idf,
    # laid end to end; a key's span in them.
    key_services: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    key_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    key_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    # ...and for a short stem (see _direct): its distinct term surfaces, each with the
    # positions of its postings.
    key_surfaces: dict[str, tuple[list[str], list[npt.NDArray[np.intp]]]] = field(
        default_factory=dict
    )
    # ...and every phrase pattern's phrases the same way (int32 services: 19 M phrases at
    # 10,000 services), one slice per pattern: a key's patterns start at group_starts[key].
    phrase_services: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    phrase_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    phrase_terms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    # The term number and surface rank of each entry of key_services (large catalogues),
    # and every term surface's rank in sorted order (one_term_per_word's tie-break).
    key_terms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    phrase_surface_ranks: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )
    key_surface_ranks: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    surface_ranks: dict[str, int] = field(default_factory=dict)
    group_starts: dict[str, array[int]] = field(default_factory=dict)
    # phrases[key] and concept_phrases[key] grouped by pattern: (pattern, positions of its
    # phrases in phrases[key], positions of its concept phrases in concept_phrases[key])
    phrase_groups: dict[str, list[PatternGroup]] = field(default_factory=dict)
    # phrase_groups[key] by a key of the pattern's second word: the group numbers, ascending
    # (one-word patterns under ""). A word then tests only the patterns its successor fits.
    phrase_next: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    # Memos of matching: a word's hits (small catalogues), its hits as arrays (large ones),
    # and its segments (see lookup.py) with the steps finding them took.
    _token_cache: SizedMemo[str, list[tuple[Posting, str, str]]] = field(
        default_factory=lambda: SizedMemo(*HITS_MEMO)
    )
    _grouped_cache: SizedMemo[str, WordHits] = field(
        default_factory=lambda: SizedMemo(*GROUPED_MEMO)
    )
    _search_cache: SizedMemo[str, tuple[list[Segment], int]] = field(
        default_factory=lambda: SizedMemo(*SEARCH_MEMO)
    )
    # A pattern group's concept phrases spread to their services (large catalogues).
    _pattern_cache: SizedMemo[tuple[str, int], Vector] = field(
        default_factory=lambda: SizedMemo(*SEARCH_MEMO)
    )
    # A word's WordTable (large catalogues).
    _table_cache: SizedMemo[str, WordTable] = field(
        default_factory=lambda: SizedMemo(*GROUPED_MEMO)
    )

    # The number of the last ticket scored (see WordTable.columns); a list, to count in.
    _tickets: list[int] = field(default_factory=lambda: [0])

    # All index keys of one folded word (Keys.keys): itself and its stem in each language.
    # The memoised function itself, not a method that calls it: matching asks for the keys
    # of every ticket word in several passes.
    keys: Callable[[str], frozenset[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", self.word_keys.keys)

    def term_keys(self, word: str, lang: str | None) -> frozenset[str]:
        """Index keys of a catalogue or thesaurus word (see Keys.term_keys)."""
        return self.word_keys.term_keys(word, lang)

    def term_words(self, term: str) -> tuple[str, ...]:
        """A catalogue or thesaurus term's words, as a ticket's are: folded, tokenised."""
        return self.word_keys.words(term)

    def is_it_word(self, word: str) -> bool:
        """True when the thesaurus knows the word (in any of its forms) as an IT term."""
        return not self.keys(word).isdisjoint(self.it_vocabulary)

    def clear_memos(self) -> None:
        """Forget every word looked up (the bench's cold state; the stem memo stays)."""
        for memo in (
            self._token_cache,
            self._grouped_cache,
            self._search_cache,
            self._pattern_cache,
            self._table_cache,
        ):
            memo.clear()
        self.word_keys.memo.clear()


def can_win(postings: Sequence[Posting], by_surface: bool = False) -> list[int]:
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


def winning_phrases(phrases: Sequence[Phrase], positions: list[int]) -> array[int]:
    """Of the phrases at `positions` (one pattern's), the positions of those that can win."""
    kept = can_win([phrases[p].posting for p in positions])
    return array("I", [positions[i] for i in kept])
