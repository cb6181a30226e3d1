"""Building: a catalogue and a thesaurus → the frozen index (index.py). The builder holds
everything that is only needed while building; build() hands the index what classifying
reads.

Each service gets weighted terms: its name (strongest), keywords, description words, and the
terms of every thesaurus concept that its name or keywords mention (the shipped IT thesaurus
knows that "AnyConnect" and "hjemmekontor" are about VPN, so a catalogue that lists only "VPN"
still catches them), with their topic siblings. Every term is filed under its Snowball stems
in its language, multi-word terms as phrases."""

from __future__ import annotations

import gc
import math
import os
import re
from array import array
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from connector.catalogue import Catalogue, Service
from connector.classify.index import (
    ConceptPhrase,
    ConceptPosting,
    PatternGroup,
    Phrase,
    PhraseMap,
    Posting,
    PostingColumns,
    PostingMap,
    ServiceInt,
    can_win,
    winning_phrases,
)
from connector.classify.intent import build_cues
from connector.classify.score import CatalogueIndex
from connector.classify.thesaurus import (
    PACKS_VARIABLE,
    Concept,
    parse_packs,
    shipped_thesaurus,
    topics,
    with_siblings,
    without_claimed,
)
from connector.classify.weights import (
    DESCRIPTION_LINK,
    DESCRIPTION_MIN_HITS,
    DESCRIPTION_PHRASE,
    FIELD_WEIGHT,
    IDF_SCALE,
    LENGTH_NORM,
    NON_IT_KEYWORD,
    PART_SHARE,
    PLAIN_DESCRIPTION,
    PLAIN_PART_SHARE,
    SHORTLIST_ABOVE,
    STEM_LINK,
)
from connector.classify.words import (
    COMPOUNDING,
    MIN_FUZZY_LEN,
    SHORT_STEM,
    Keys,
    brackets,
    by_second_word,
    deletions,
    strip_brackets,
)
from connector.text import language_data, stem, tokenize

_CLAUSE = re.compile(r"[,.;:()!?]+\s|[;:()]")

# (term, source, weight, add parts, language) of a service's own catalogue text
Term = tuple[str, str, float, bool, str | None]


@dataclass
class ConceptLinks:
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


@dataclass(eq=False)
class IndexBuilder:
    """Builds one index (build): the postings, phrases and deletes as they grow, and the
    memos of building."""

    catalogue: Catalogue
    languages: tuple[str, ...]
    keyword_parts: bool = True  # words of a multi-word keyword also count alone (PART_SHARE)
    services: list[Service] = field(default_factory=list)
    postings: dict[str, list[Posting]] = field(default_factory=lambda: defaultdict(list))
    phrases: dict[str, list[Phrase]] = field(default_factory=lambda: defaultdict(list))
    concept_postings: dict[str, list[ConceptPosting]] = field(
        default_factory=lambda: defaultdict(list)
    )
    concept_phrases: dict[str, list[ConceptPhrase]] = field(
        default_factory=lambda: defaultdict(list)
    )
    link_starts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, np.int64))
    link_services: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    link_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    link_ranks: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    term_ids: dict[str, int] = field(default_factory=dict)
    deletes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    idf: dict[str, float] = field(default_factory=dict)
    stopwords: frozenset[str] = frozenset()
    it_vocabulary: frozenset[str] = frozenset()
    lexicon: frozenset[str] = frozenset()
    compounding: tuple[str, ...] = ()
    word_keys: Keys = field(init=False)
    outside: CatalogueIndex | None = None
    outside_concepts: dict[str, Concept] = field(default_factory=dict)
    _deleted_words: set[str] = field(default_factory=set)
    # _term_links per (term, language): many services share their terms' words
    _links_memo: dict[tuple[str, str | None], dict[int, float]] = field(default_factory=dict)
    _it_words: dict[str, bool] = field(default_factory=dict)  # is_it_word's answers
    _term_count: int = 0  # entries in postings + phrases
    phrase_groups: dict[str, list[PatternGroup]] = field(default_factory=dict)
    phrase_next: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    key_services: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    key_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    key_spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    key_surfaces: dict[str, tuple[list[str], list[npt.NDArray[np.intp]]]] = field(
        default_factory=dict
    )
    phrase_services: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    phrase_weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    phrase_terms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    key_terms: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    phrase_surface_ranks: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )
    key_surface_ranks: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    surface_ranks: dict[str, int] = field(default_factory=dict)
    group_starts: dict[str, array[int]] = field(default_factory=dict)
    # Large catalogues: postings and phrases as columns (index.PostingMap, PhraseMap).
    posting_map: PostingMap | None = None
    phrase_map: PhraseMap | None = None

    def __post_init__(self) -> None:
        self.word_keys = Keys(self.languages, language_data().exact_only)

    def keys(self, word: str) -> frozenset[str]:
        return self.word_keys.keys(word)

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
        words = self.word_keys.words(term)
        if not words:
            return
        canonical = self.word_keys.canonical(term)
        posting = Posting(service, canonical, term, source, weight)
        if len(words) == 1:
            if words[0] in self.stopwords:
                return
            word_keys = self.word_keys.term_keys(words[0], lang)
            for key in word_keys:
                self.postings[key].append(posting)
            self._term_count += len(word_keys)
            self._add_deletes(words[0])
            return
        keys = self.word_keys.phrase_keys(term, lang, words)
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

    def _compile_concept(self, concept: int, terms: list[tuple[str, str]], label: str) -> int:
        """File a thesaurus concept's terms as _add_term files a service's, under the concept
        instead of a service; the number of entries they make (what a link adds to a
        service's length)."""
        count = 0
        for term, lang in terms:
            words = self.word_keys.words(term)
            if not words:
                continue
            posting = ConceptPosting(concept, self.word_keys.canonical(term), term, label)
            if len(words) == 1:
                if words[0] in self.stopwords:
                    continue
                keys = self.word_keys.term_keys(words[0], lang)
                for key in keys:
                    self.concept_postings[key].append(posting)
                count += len(keys)
                self._add_deletes(words[0])
                continue
            pattern = self.word_keys.phrase_keys(term, lang, words)
            phrase = ConceptPhrase(pattern, posting)
            for key in pattern[0]:
                self.concept_phrases[key].append(phrase)
            count += len(pattern[0])
            for word in words:
                self._add_deletes(word)
        return count

    def _link_arrays(self, links: list[tuple[int, int, float, int]], concepts: int) -> None:
        """The links as CSR arrays by concept, services ascending (see IndexData.link_*)."""
        if not links:
            self.link_starts = np.zeros(concepts + 1, np.int64)
            return
        concept, service, weight, rank = (np.array(column) for column in zip(*links, strict=True))
        order = np.lexsort((service, concept))
        self.link_services = service[order].astype(np.int64)
        self.link_weights = weight[order].astype(np.float64)
        self.link_ranks = rank[order].astype(np.int32)
        self.link_starts = np.searchsorted(concept[order], np.arange(concepts + 1)).astype(np.int64)

    def _keyword_weight(self, keyword: str) -> float:
        """Keywords the thesaurus knows as IT terms weigh fully; others (places, units,
        "home care") are often the ticket's context rather than its subject."""
        it = any(self.is_it_word(w) for w in self.word_keys.words(keyword))
        return FIELD_WEIGHT["keyword"] * (1.0 if it else NON_IT_KEYWORD)

    def _own_concept_word(
        self, concept_words: Mapping[str, set[int]], linked: Collection[int], word: str
    ) -> bool:
        """True when one of the `linked` concepts lists the word (any form)."""
        return any(not concept_words.get(k, set()).isdisjoint(linked) for k in self.keys(word))

    def is_it_word(self, word: str) -> bool:  # as the index's (IndexData.is_it_word)
        """True when the thesaurus knows the word (in any of its forms) as an IT term."""
        known = self._it_words.get(word)
        if known is None:  # descriptions repeat their words across services
            known = self._it_words[word] = not self.keys(word).isdisjoint(self.it_vocabulary)
        return known

    def _add_deletes(self, word: str) -> None:
        if word in self._deleted_words:
            return  # sets: adding the same word's variants again changes nothing
        self._deleted_words.add(word)
        if len(word) >= MIN_FUZZY_LEN and not word.isdigit():
            for variant in deletions(word):
                self.deletes[variant].add(word)
            self.deletes[word].add(word)

    def _service_terms(self, service: Service) -> list[Term]:
        """(term, source, weight, add_parts, language) for a service's catalogue text."""
        terms: list[Term] = []
        name_weight = FIELD_WEIGHT["name"]
        for lang, name in service.name.items():
            terms.append((strip_brackets(name), "name", name_weight, True, lang))
            terms += [(inner, "name", name_weight, True, lang) for inner in brackets(name)]
        for lang, words in service.keywords.items():
            terms += [
                (w, "keyword", self._keyword_weight(w), self.keyword_parts, lang) for w in words
            ]
        trouble = language_data().trouble_words
        for lang, text in service.description.items():
            # Descriptions are prose: their IT words carry signal, and so do the words of
            # the organisation's own domain the thesaurus does not know ("specimen labels");
            # how specific a word is to the service is left to its idf over services. Not
            # the words of any trouble report ("feil", "faults"): every ticket has them.
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
                if len(w) > 2 and w not in self.stopwords and not w.isdigit() and w not in trouble
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

    def _linked_concepts(self, terms: list[Term], links: ConceptLinks) -> dict[int, float]:
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

    def _term_links(self, term: str, lang: str | None, links: ConceptLinks) -> dict[int, float]:
        """The concepts one catalogue term links (see _linked_concepts), with the strength.
        (The caller only reads the dict: it is shared by every service with the term.)"""
        memo = self._links_memo.get((term, lang))
        if memo is not None:
            return memo
        self._links_memo[(term, lang)] = found = self._find_links(term, lang, links)
        return found

    def _find_links(self, term: str, lang: str | None, links: ConceptLinks) -> dict[int, float]:
        words = self.word_keys.words(term)
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
        concept_terms: list[list[tuple[str, str]]] = [
            [(t, lang) for lang, words in c.terms.items() for t in words] for c in concepts
        ]
        concept_words: dict[str, set[int]] = defaultdict(set)  # word key → concepts
        links = ConceptLinks()
        it_vocabulary: set[str] = set()
        for index, terms in enumerate(concept_terms):
            for term, term_lang in terms:
                words = self.word_keys.words(term)
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
        by_topic = topics(concepts)
        labels = [f"thesaurus:{c.id}" for c in concepts]
        entries: dict[int, int] = {}  # per compiled concept: entries a link adds to a service
        service_links: list[tuple[int, int, float, int]] = []  # concept, service, weight, rank
        sizes = []
        taken: set[int] = set()  # concepts linked to some service, if only as a sibling
        for number, service in enumerate(self.services):
            own = self._service_terms(service)
            before = self._term_count
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
            extended = with_siblings(linked, concepts, by_topic)
            taken.update(extended)
            size = self._term_count - before
            for rank, (concept, strength) in enumerate(extended.items()):
                # The concept's terms are filed once, the first time a service links it;
                # the service gets them through its link (as if it had each term itself).
                if concept not in entries:
                    entries[concept] = self._compile_concept(
                        concept, concept_terms[concept], labels[concept]
                    )
                size += entries[concept]
                service_links.append((concept, number, FIELD_WEIGHT["thesaurus"] * strength, rank))
            sizes.append(size)
        self._link_arrays(service_links, len(concepts))
        self._compute_idf()
        self._drop_dominated()
        self._group_phrases()
        if len(self.services) > SHORTLIST_ABOVE:
            self._build_key_arrays()
        average = sum(sizes) / len(sizes) if sizes else 1.0
        norm = tuple(
            1 - LENGTH_NORM + LENGTH_NORM * (s / average if average else 1.0) for s in sizes
        )
        change_cues, private_cues = build_cues(self.catalogue, self.word_keys)
        private_services = frozenset(
            number
            for number, service in enumerate(self.services)
            if not service.supported and self._names_private(service)
        )
        claimed = {
            self.word_keys.canonical(term)
            for i in taken
            if concepts[i].scope == "it"
            for term, _ in concept_terms[i]
        }
        self._build_outside(
            [
                without_claimed(c, claimed, self.word_keys.canonical)
                for i, c in enumerate(concepts)
                if c.scope == "outside" and i not in taken
            ]
        )
        return CatalogueIndex(
            catalogue=self.catalogue,
            languages=self.languages,
            word_keys=self.word_keys,
            services=tuple(self.services),
            postings=dict(self.postings) if self.posting_map is None else self.posting_map,
            phrases=dict(self.phrases) if self.phrase_map is None else self.phrase_map,
            concept_postings=dict(self.concept_postings),
            concept_phrases=dict(self.concept_phrases),
            link_starts=self.link_starts,
            link_services=self.link_services,
            link_weights=self.link_weights,
            link_ranks=self.link_ranks,
            term_ids=self.term_ids,
            idf=self.idf,
            norm=norm,
            norm_array=np.array(norm, dtype=np.float64),
            deletes={variant: frozenset(words) for variant, words in self.deletes.items()},
            change_cues=change_cues,
            private_cues=private_cues,
            stopwords=self.stopwords,
            carriers=language_data().carrier_words,
            it_vocabulary=self.it_vocabulary,
            lexicon=self.lexicon,
            outside_concepts=self.outside_concepts,
            compounding=self.compounding,
            private_services=private_services,
            key_services=self.key_services,
            key_weights=self.key_weights,
            key_spans=self.key_spans,
            key_surfaces=self.key_surfaces,
            phrase_services=self.phrase_services,
            phrase_weights=self.phrase_weights,
            phrase_terms=self.phrase_terms,
            key_terms=self.key_terms,
            phrase_surface_ranks=self.phrase_surface_ranks,
            key_surface_ranks=self.key_surface_ranks,
            surface_ranks=self.surface_ranks,
            group_starts=self.group_starts,
            phrase_groups=self.phrase_groups,
            phrase_next=self.phrase_next,
            outside=self.outside,
        )

    def _lexicon(self, concept_terms: list[list[tuple[str, str]]]) -> frozenset[str]:
        data = language_data()
        words: set[str] = set(data.all_stopwords)
        for function_words in data.function_words.values():
            words |= function_words
        for terms in concept_terms:
            for term, _ in terms:
                words.update(self.word_keys.words(term))
        for service in self.services:
            for texts in (service.name, service.description):
                for text in texts.values():
                    words.update(tokenize(text))
            for keywords in service.keywords.values():
                for keyword in keywords:
                    words.update(self.word_keys.words(keyword))
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
        self.outside = IndexBuilder(
            catalogue=catalogue, languages=tuple(languages), keyword_parts=False
        ).build(())
        self.outside_concepts = {c.id: c for c in concepts}

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
            kept = can_win(postings, by_surface=len(key) < SHORT_STEM)
            if len(kept) < len(postings):
                self.postings[key] = [postings[position] for position in kept]

    def _group_phrases(self) -> None:
        """Phrases under one key share a handful of patterns (the same thesaurus phrase is
        linked to many services); matching tests each pattern once instead of each phrase."""
        self.phrase_groups = {}
        for key in dict.fromkeys([*self.phrases, *self.concept_phrases]):
            phrases = self.phrases.get(key, [])
            groups: dict[tuple[frozenset[str], ...], list[int]] = defaultdict(list)
            for position, phrase in enumerate(phrases):
                groups[phrase.keys].append(position)
            concept_groups: dict[tuple[frozenset[str], ...], list[int]] = defaultdict(list)
            for position, concept_phrase in enumerate(self.concept_phrases.get(key, [])):
                concept_groups[concept_phrase.keys].append(position)
            # A pattern's phrases are hit together, so only those that can win are listed.
            self.phrase_groups[key] = [
                (
                    pattern,
                    winning_phrases(phrases, groups.get(pattern, [])),
                    tuple(concept_groups.get(pattern, ())),
                )
                for pattern in dict.fromkeys([*groups, *concept_groups])
            ]
        self.phrase_next = {}
        for key, patterns in self.phrase_groups.items():
            self.phrase_next[key] = by_second_word(pattern for pattern, _, _ in patterns)

    def _build_key_arrays(self) -> None:
        """Every key's postings as arrays, once: a word new to a worker then costs a few
        array operations in _grouped instead of a Python loop over the thousands of postings
        an everyday word has in a large catalogue (the cold path of bench/classify.py)."""
        self._rank_surfaces()
        term_ids, surface_ranks = self.term_ids, self.surface_ranks
        filled = [(key, postings) for key, postings in self.postings.items() if postings]
        # One pass over all postings, key after key: four arrays, not four per key.
        everything = [p for _, postings in filled for p in postings]
        self.key_services, self.key_weights = self._posting_arrays(everything, np.int64)
        count = len(everything)
        self.key_terms = np.fromiter((term_ids[p.term] for p in everything), np.int64, count)
        self.key_surface_ranks = np.fromiter(
            (surface_ranks[p.surface] for p in everything), np.int64, count
        )
        offset = 0
        for key, postings in filled:
            self.key_spans[key] = (offset, offset + len(postings))
            offset += len(postings)
            if len(key) < SHORT_STEM:
                positions: dict[str, list[int]] = defaultdict(list)
                for position, posting in enumerate(postings):
                    positions[posting.surface].append(position)
                self.key_surfaces[key] = (
                    list(positions),
                    [np.array(p, dtype=np.intp) for p in positions.values()],
                )
        self._build_phrase_arrays()
        self._build_columns()

    def _build_columns(self) -> None:
        """The postings and phrases as columns (index.PostingMap, PhraseMap), in the order
        of the lists they replace: a prebuilt index then holds no Posting objects, which
        made most of its load time (unpickling) and of a process's own memory."""
        term_texts, surface_texts = list(self.term_ids), list(self.surface_ranks)
        phrase_postings = [ph.posting for phrases in self.phrases.values() for ph in phrases]
        everything = [p for postings in self.postings.values() for p in postings]
        source_texts = tuple(sorted({p.source for p in (*everything, *phrase_postings)}))
        source_ids = {source: number for number, source in enumerate(source_texts)}

        def column(
            postings: list[Posting], read: Callable[[Posting], float], kind: type
        ) -> npt.NDArray[Any]:
            return np.fromiter(map(read, postings), kind, len(postings))

        self.posting_map = PostingMap(
            PostingColumns(
                services=self.key_services,
                terms=self.key_terms,
                surfaces=self.key_surface_ranks,
                sources=column(everything, lambda p: source_ids[p.source], np.int16),
                weights=column(everything, lambda p: p.weight, np.float64),
                term_texts=term_texts,
                surface_texts=surface_texts,
                source_texts=source_texts,
            ),
            self.key_spans,
        )
        term_ids, surface_ranks = self.term_ids, self.surface_ranks
        spans: dict[str, tuple[int, int]] = {}
        groups: list[int] = []
        offset = 0
        for key, phrases in self.phrases.items():
            spans[key] = (offset, offset + len(phrases))
            offset += len(phrases)
            number = {pattern: n for n, (pattern, _, _) in enumerate(self.phrase_groups[key])}
            groups += [number[phrase.keys] for phrase in phrases]
        self.phrase_map = PhraseMap(
            PostingColumns(
                services=column(phrase_postings, lambda p: p.service, np.int32),
                terms=column(phrase_postings, lambda p: term_ids[p.term], np.int32),
                surfaces=column(phrase_postings, lambda p: surface_ranks[p.surface], np.int32),
                sources=column(phrase_postings, lambda p: source_ids[p.source], np.int16),
                weights=column(phrase_postings, lambda p: p.weight, np.float64),
                term_texts=term_texts,
                surface_texts=surface_texts,
                source_texts=source_texts,
            ),
            spans,
            np.array(groups, np.int32),
            self.phrase_groups,
        )

    def _rank_surfaces(self) -> None:
        """Every term surface's rank in sorted order: the scorer sorts a service's hits by
        weight, then surface, and compares ranks instead of strings."""
        surfaces: set[str] = set()
        for postings in self.postings.values():
            surfaces.update(p.surface for p in postings)
        for phrases in self.phrases.values():
            surfaces.update(ph.posting.surface for ph in phrases)
        for concept_postings in self.concept_postings.values():
            surfaces.update(cp.surface for cp in concept_postings)
        for concept_phrases in self.concept_phrases.values():
            surfaces.update(cph.posting.surface for cph in concept_phrases)
        self.surface_ranks = {surface: rank for rank, surface in enumerate(sorted(surfaces))}

    def _build_phrase_arrays(self) -> None:
        """Every phrase pattern's phrases (those that can win) as arrays, one slice per
        pattern: a pattern linked to thousands of services then gives its vector as a view
        (_group_vector) instead of a loop over its phrases, which made a worker's first
        tickets 5-10 times slower than later ones, or a gather per ticket."""
        postings: list[Posting] = []
        offset = 0
        for key, groups in self.phrase_groups.items():
            phrases = self.phrases.get(key, [])
            starts = self.group_starts[key] = array("Q", [offset])
            for _, positions, _ in groups:
                offset += len(positions)
                starts.append(offset)
            postings += [phrases[p].posting for _, positions, _ in groups for p in positions]
        # One pass over all patterns' postings: four arrays, not four per key.
        self.phrase_services, self.phrase_weights = self._posting_arrays(postings, np.int32)
        term_ids, surface_ranks = self.term_ids, self.surface_ranks
        count = len(postings)
        self.phrase_terms = np.fromiter((term_ids[p.term] for p in postings), np.int64, count)
        self.phrase_surface_ranks = np.fromiter(
            (surface_ranks[p.surface] for p in postings), np.int64, count
        )

    def _posting_arrays(
        self, postings: Sequence[Posting], service_type: type[ServiceInt]
    ) -> tuple[npt.NDArray[ServiceInt], npt.NDArray[np.float64]]:
        """The postings' services and weights × idf, as the arrays the shortlist sums."""
        idf = self.idf.get
        count = len(postings)
        return (
            np.fromiter((p.service for p in postings), service_type, count),
            np.fromiter((p.weight * idf(p.term, 1.0) for p in postings), np.float64, count),
        )

    def _compute_idf(self) -> None:
        """Per term, BM25 idf over the services that have it, themselves or by a link."""
        services_with: dict[str, set[int]] = defaultdict(set)
        for postings in self.postings.values():
            for p in postings:
                services_with[p.term].add(p.service)
        for phrases in self.phrases.values():
            for ph in phrases:
                services_with[ph.posting.term].add(ph.posting.service)
        concepts_with: dict[str, set[int]] = defaultdict(set)
        for concept_postings in self.concept_postings.values():
            for cp in concept_postings:
                concepts_with[cp.term].add(cp.concept)
        for concept_phrases in self.concept_phrases.values():
            for cph in concept_phrases:
                concepts_with[cph.posting.term].add(cph.posting.concept)
        counts = {term: len(s) for term, s in services_with.items()}
        starts, linked = self.link_starts, self.link_services
        for term, concepts in concepts_with.items():
            rows = [linked[starts[c] : starts[c + 1]] for c in concepts]
            own = services_with.get(term)
            if not own and len(rows) == 1:
                # A concept links each service once: one concept's row needs no unique().
                counts[term] = len(rows[0])
                continue
            if own:
                rows.append(np.fromiter(own, np.int64, len(own)))
            counts[term] = len(np.unique(np.concatenate(rows)))
        n = len(self.services)
        # BM25 idf, rescaled so a term unique to one service weighs IDF_SCALE whatever the
        # catalogue's size: score thresholds then mean the same for 5 or 10,000 services.
        rarest = math.log(1 + (n - 0.5) / 1.5) if n > 1 else 1.0
        self.idf = {
            term: IDF_SCALE * math.log(1 + (n - count + 0.5) / (count + 0.5)) / rarest
            for term, count in counts.items()
        }
        self.term_ids = {term: number for number, term in enumerate(self.idf)}


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
    return IndexBuilder(catalogue=catalogue, languages=languages).build(chosen)
