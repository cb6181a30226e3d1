"""Lookup: a ticket word → the postings it hits. Its direct keys (the word and its stems),
else the parts of a compound, else the words one typo away (a symmetric-delete index, so a
lookup never scans the catalogue); and the phrase patterns a ticket contains. Memoised per
word, with the steps each search took (the work budget counts them alike on every machine)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from rapidfuzz.distance import OSA

from connector.classify.index import (
    NO_SERVICES,
    NO_WEIGHTS,
    ConceptHits,
    ConceptPosting,
    Hits,
    IndexData,
    KeyHits,
    Phrase,
    PhraseList,
    PhraseMatch,
    Positions,
    Posting,
    Segment,
    Vector,
    WordHits,
    WordTable,
)
from connector.classify.weights import QUALITY
from connector.classify.words import (
    FUZZY2_LEN,
    MIN_COMPOUND_LEN,
    MIN_FUZZY_LEN,
    MIN_PART_LEN,
    MIN_TAIL_LEN,
    SHORT_STEM,
    STEM_STEPS,
    deletions,
    memo_bytes,
    onset,
    plausible_slip,
    same_family,
    search_counter,
    spend_search,
)
from connector.text import MAX_WORD_LEN, language_data, stem

# A word's hits are merged on a dense array over all services (see _grouped) when there are
# at least 1/DENSE_MERGE as many as services; fewer are sorted.
DENSE_MERGE = 16


@dataclass(frozen=True, eq=False)
class Lookup(IndexData):
    """The built index with its word lookups."""

    def _lookup(self, word: str) -> list[tuple[Posting, str, str]]:
        """(posting, how, matched word) for one ticket word; cached across tickets."""
        cached = self._token_cache.get(word)
        if cached is not None:
            return cached
        found: list[tuple[Posting, str, str]] = []
        for segment in self._segments(word):
            how, matched = segment.how, segment.word
            found += [(posting, how, matched) for posting in self._postings(segment)]
            found += [(posting, how, matched) for posting in self._concept_postings(segment)]
        return self._token_cache.put(word, found, memo_bytes(word, len(found)))

    def _concept_postings(self, segment: Segment) -> list[Posting]:
        """The segment's concept terms as postings of the services that link the concepts,
        in the order a service met them when it had its own copy of each: by its links'
        order, then the terms' (only a service's own order matters: the scorer keeps per
        service and term the first of the heaviest hits)."""
        concept_postings = self.concept_postings.get(segment.key)
        if not concept_postings:
            return []
        positions = segment.concept_chosen
        starts = self.link_starts
        found: list[tuple[int, int, Posting]] = []
        for position in range(len(concept_postings)) if positions is None else positions:
            cp = concept_postings[position]
            start, end = int(starts[cp.concept]), int(starts[cp.concept + 1])
            found += [
                (rank, position, Posting(service, cp.term, cp.surface, cp.source, weight))
                for service, weight, rank in zip(
                    self.link_services[start:end].tolist(),
                    self.link_weights[start:end].tolist(),
                    self.link_ranks[start:end].tolist(),
                    strict=True,
                )
            ]
        found.sort(key=lambda entry: (entry[0], entry[1]))
        return [posting for _, _, posting in found]

    def _segments(self, word: str) -> list[Segment]:
        return self._searched(word)[0]

    def search_steps(self, word: str) -> int:
        """The steps that searching a ticket word takes (see _searched)."""
        return self._searched(word)[1]

    def _searched(self, word: str) -> tuple[list[Segment], int]:
        """A word's segments and the steps that finding them took: the same number whether
        the memo had them or not, so that a ticket's work does not depend on the tickets
        before it."""
        cached = self._search_cache.get(word)
        if cached is not None:
            return cached
        counter = [0]
        token = search_counter.set(counter)
        try:
            found = self._search(word)
        finally:
            search_counter.reset(token)
        if len(word) > MAX_WORD_LEN:
            return found, counter[0]  # its exact form: cheaper to look up again than to keep
        chosen = sum(len(s.chosen) for s in found if s.chosen is not None)
        return self._search_cache.put(
            word, (found, counter[0]), memo_bytes(word, len(found) + chosen // 8)
        )

    def _search(self, word: str) -> list[Segment]:
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

    def _postings(self, segment: Segment) -> Sequence[Posting]:
        postings = self.postings.get(segment.key, ())
        if segment.chosen is None:
            return postings
        return [postings[i] for i in segment.chosen]

    def _grouped(self, word: str) -> WordHits:
        """A word's best weight per service, its hits and their services; cached like
        _lookup. Built with numpy: an everyday word hits thousands of services in a large
        catalogue, and a word new to the process paid a Python loop over all of them."""
        cached = self._grouped_cache.get(word)
        if cached is not None:
            return cached
        arrays = self._segment_arrays(word)
        hits: Hits
        concept = None
        if arrays is not None:
            hits, services, weights = arrays
            concept = self._concept_arrays(word)
        else:  # the concept hits are among the listed ones
            listed = hits = self._lookup(word)
            idf = self.idf.get
            services = np.fromiter((h[0].service for h in listed), np.int64, len(listed))
            weights = np.fromiter(
                (h[0].weight * idf(h[0].term, 1.0) * QUALITY[h[1]] for h in listed),
                dtype=np.float64,
                count=len(listed),
            )
        # Per service the heaviest hit; a service with no positive weight has no evidence.
        merge = not isinstance(hits, KeyHits) or len(hits.segments) > 1 or concept is not None
        count = len(services) + (len(concept.services) if concept is not None else 0)
        vector: Vector
        if not count:  # a word the index does not know (about half of a ticket's)
            vector = (NO_SERVICES, NO_WEIGHTS)
        elif merge and count * DENSE_MERGE >= len(self.services):
            # Many hits (an everyday word's concept links: thousands in a large catalogue)
            # are merged on a dense array over all services, in about a fifth of the time of
            # the stable sort below; the maxima of the same floats, services ascending (a
            # weight that is not positive leaves a service at 0, so without evidence).
            best = np.zeros(len(self.services), np.float64)
            np.maximum.at(best, services, weights)
            if concept is not None:
                np.maximum.at(best, concept.services, concept.weights)
            hit = np.flatnonzero(best > 0.0)
            vector = (hit, best[hit])
        else:
            positive = weights > 0.0
            hit_services, hit_weights = services[positive], weights[positive]
            if concept is not None:
                positive = concept.weights > 0.0
                hit_services = np.concatenate((hit_services, concept.services[positive]))
                hit_weights = np.concatenate((hit_weights, concept.weights[positive]))
            vector = self._best_per_service(hit_services, hit_weights, merge)
        size = vector[0].nbytes + vector[1].nbytes + services.nbytes
        if not isinstance(hits, KeyHits):  # a list of its own, not views of the postings
            size += memo_bytes(word, len(services))
        if concept is not None:
            size += 2 * concept.services.nbytes + memo_bytes(word, len(concept.sources))
        return self._grouped_cache.put(
            word, (vector, hits, services, concept), size + len(word) * 2
        )

    @staticmethod
    def _best_per_service(
        services: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], merge: bool
    ) -> Vector:
        """Each service's heaviest weight (all positive), services ascending. A segment lists
        its services ascending (postings are added service by service): one segment needs no
        sort, several need a stable sort that merges their runs."""
        if merge:
            order = np.argsort(services, kind="stable")
            services, weights = services[order], weights[order]
        first = np.ones(len(services), dtype=bool)
        first[1:] = services[1:] != services[:-1]
        starts = np.flatnonzero(first)
        if not len(starts):
            return services, weights
        return services[starts], np.maximum.reduceat(weights, starts)

    def _concept_arrays(self, word: str) -> ConceptHits | None:
        """A word's concept hits spread to the services that link the concepts, as arrays
        (see ConceptHits); None when it hits no concept term. Only the services and weights
        are made for every hit: slices of the link arrays, end to end."""
        sources: list[tuple[int, int, ConceptPosting, str, str]] = []
        services: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        offsets: list[int] = [0]
        entry_links: list[int] = []
        entry_terms: list[int] = []
        starts = self.link_starts
        for number, segment in enumerate(self._segments(word)):
            concept_postings = self.concept_postings.get(segment.key)
            if not concept_postings:
                continue
            positions = segment.concept_chosen
            quality = QUALITY[segment.how]
            for position in range(len(concept_postings)) if positions is None else positions:
                cp = concept_postings[position]
                start, end = int(starts[cp.concept]), int(starts[cp.concept + 1])
                services.append(self.link_services[start:end])
                # as a posting's: weight × idf × quality
                weights.append(self.link_weights[start:end] * self.idf.get(cp.term, 1.0) * quality)
                offsets.append(offsets[-1] + end - start)
                entry_links.append(start)
                entry_terms.append(self.term_ids[cp.term])
                sources.append((number, position, cp, segment.how, segment.word))
        if not sources:
            return None
        return ConceptHits(
            services=np.concatenate(services),
            weights=np.concatenate(weights),
            offsets=np.array(offsets, np.int64),
            entry_links=np.array(entry_links, np.int64),
            entry_segments=np.array([source[0] for source in sources], np.int64),
            entry_positions=np.array([source[1] for source in sources], np.int64),
            entry_terms=np.array(entry_terms, np.int64),
            link_weight_array=self.link_weights,
            link_rank_array=self.link_ranks,
            sources=tuple(sources),
        )

    def picked_hits(
        self, word: str, chosen: npt.NDArray[np.bool_]
    ) -> list[tuple[Posting, str, str]]:
        """A word's hits of the chosen services (a mask over all), in the order _lookup
        lists them: segment by segment, a service's own postings before its linked
        concepts', those by the service's links' order."""
        _, word_hits, hit_services, concept = self._grouped(word)
        picked = np.flatnonzero(chosen[hit_services])
        if not isinstance(word_hits, KeyHits):
            return [word_hits[i] for i in picked.tolist()]
        own = word_hits.pick(picked)
        if concept is None:
            return own
        selected = np.flatnonzero(chosen[concept.services])
        if not len(selected):
            return own
        # In the order the scorer meets them, and of each service's term only the first of
        # the heaviest: the scorer keeps no other (the subject boost is the word's, alike
        # for all), and a ticket's everyday word hits a term through several concepts.
        entries = concept.entries_of(selected)
        links = concept.links_of(selected, entries)
        order = np.lexsort(
            (
                concept.entry_positions[entries],
                concept.link_rank_array[links],
                concept.entry_segments[entries],
            )
        )
        selected, entries, links = selected[order], entries[order], links[order]
        services, terms = concept.services[selected], concept.entry_terms[entries]
        grouped = np.lexsort(
            (np.arange(len(selected)), -concept.weights[selected], terms, services)
        )
        services, terms = services[grouped], terms[grouped]
        first = np.ones(len(grouped), dtype=bool)
        first[1:] = (services[1:] != services[:-1]) | (terms[1:] != terms[:-1])
        kept = np.sort(grouped[first])
        selected, entries, links = selected[kept], entries[kept], links[kept]
        segments = np.searchsorted(np.asarray(word_hits.starts), picked, side="right") - 1
        keyed: list[tuple[int, int, int, int, tuple[Posting, str, str]]] = [
            (segment, 0, 0, n, hit)
            for n, (segment, hit) in enumerate(zip(segments.tolist(), own, strict=True))
        ]
        for entry, service, weight, rank in zip(
            entries.tolist(),
            concept.services[selected].tolist(),
            concept.link_weight_array[links].tolist(),
            concept.link_rank_array[links].tolist(),
            strict=True,
        ):
            number, position, cp, how, matched = concept.sources[entry]
            posting = Posting(service, cp.term, cp.surface, cp.source, weight)
            keyed.append((number, 1, rank, position, (posting, how, matched)))
        keyed.sort(key=lambda item: item[:4])
        return [item[4] for item in keyed]

    def _word_table(self, word: str) -> WordTable:
        """A word's hits that can count, in the scorer's order (see WordTable); large
        catalogues only. Memoised: a warm word costs the scorer a mask and a few gathers."""
        cached = self._table_cache.get(word)
        if cached is not None:
            return cached
        _, own, own_services, concept = self._grouped(word)
        assert isinstance(own, KeyHits)
        if not own.size and concept is None:  # no hits: the scorer reads no row of it
            return self._table_cache.put(word, _NO_ROWS, memo_bytes(word, 0))
        segments = own.segments
        # The own hits' places in the key arrays, segment by segment (as _segment_arrays).
        places: list[npt.NDArray[np.int64]] = []
        for segment in segments:
            start, end = self.key_spans.get(segment.key, (0, 0))
            at = np.arange(start, end, dtype=np.int64)
            if segment.chosen is not None:
                at = at[np.asarray(segment.chosen, dtype=np.intp)]
            places.append(at)
        counts = [len(at) for at in places]
        place = np.concatenate(places) if places else np.zeros(0, np.int64)
        word_texts = tuple(dict.fromkeys(segment.word for segment in segments))
        # Not sorted here: the scorer orders the few rows of its shortlisted services (a
        # word new to the process would otherwise sort its thousands of hits).
        table = WordTable(
            services=(
                own_services
                if concept is None
                else np.concatenate((own_services, concept.services))
            ),
            own_count=len(place),
            own_places=place,
            own_segments=np.repeat(np.arange(len(segments), dtype=np.int64), counts),
            segment_qualities=np.array([QUALITY[s.how] for s in segments], np.float64),
            segment_words=np.array([word_texts.index(s.word) for s in segments], np.int64),
            entry_surfaces=(
                np.zeros(0, np.int64)
                if concept is None
                else np.array(
                    [self.surface_ranks[cp.surface] for _, _, cp, _, _ in concept.sources],
                    np.int64,
                )
            ),
            key_terms=self.key_terms,
            key_weights=self.key_weights,
            key_surface_ranks=self.key_surface_ranks,
            word_texts=word_texts,
            segments=segments,
            own=own,
            concept=concept,
        )
        nbytes = 10 * table.services.nbytes + memo_bytes(word, len(segments))
        return self._table_cache.put(word, table, nbytes)

    def _segment_arrays(
        self, word: str
    ) -> tuple[KeyHits, npt.NDArray[np.int64], npt.NDArray[np.float64]] | None:
        """A word's hits, their services and weights, from the key arrays; None for a
        catalogue without them (up to SHORTLIST_ABOVE services)."""
        if not self.key_spans:
            return None
        segments = self._segments(word)
        lists: list[Sequence[Posting]] = []
        starts: list[int] = []
        services: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        count = 0
        for segment in segments:
            start, end = self.key_spans.get(segment.key, (0, 0))  # (0, 0): concepts only
            key_services = self.key_services[start:end]
            key_weights = self.key_weights[start:end] * QUALITY[segment.how]
            if segment.chosen is not None:
                chosen = np.asarray(segment.chosen, dtype=np.intp)
                key_services, key_weights = key_services[chosen], key_weights[chosen]
            lists.append(self.postings.get(segment.key, ()))
            starts.append(count)
            services.append(key_services)
            weights.append(key_weights)
            count += len(key_services)
        hits = KeyHits(tuple(lists), tuple(segments), tuple(starts), count)
        if len(segments) == 1:
            return hits, services[0], weights[0]
        if not segments:
            return hits, NO_SERVICES, NO_WEIGHTS
        return hits, np.concatenate(services), np.concatenate(weights)

    def _group_vector(self, key: str, group: int) -> Vector:
        """Services and weights of the phrases of one pattern group (see _group_phrases), in
        the order of its positions: views of the phrase arrays."""
        starts = self.group_starts[key]
        start, end = starts[group], starts[group + 1]
        return self.phrase_services[start:end], self.phrase_weights[start:end]

    def _phrase_matches(self, word_keys: Sequence[frozenset[str]]) -> list[PhraseMatch]:
        """The phrase patterns a ticket whose words have the index keys `word_keys` (one
        set per token) contains, without listing their phrases (a pattern linked to
        thousands of services stands for thousands of phrases)."""
        matches: list[PhraseMatch] = []
        phrase_next = self.phrase_next
        count = len(word_keys)
        for i, keys in enumerate(word_keys):
            # Only the keys that start a pattern, sorted (set order varies per process; ties
            # keep the first). Most words start none: no sort, no lookups.
            firsts = [k for k in keys if k in phrase_next]
            if not firsts:
                continue
            if len(firsts) > 1:
                firsts.sort()
            following = word_keys[i + 1] if i + 1 < count else frozenset()
            for k in firsts:
                by_next = phrase_next[k]
                numbers: Sequence[int] = by_next.get("", ())  # ascending
                more = [by_next[second] for second in following if second in by_next]
                if more:
                    numbers = sorted(set(numbers).union(*more))
                elif not numbers:
                    continue  # the common case: a stopword that starts patterns, none here
                patterns = self.phrase_groups[k]
                groups = [
                    number
                    for number in numbers
                    if i + len(pattern := patterns[number][0]) <= count
                    and all(
                        not word_keys[i + j].isdisjoint(pattern[j]) for j in range(2, len(pattern))
                    )
                ]
                if groups:
                    matches.append((i, k, groups))
        return matches

    def _phrase_hits(
        self, matches: list[PhraseMatch], chosen: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[Phrase, int]]:
        """The phrases behind the matched patterns — of the chosen services only (a mask
        over all services) when there is a shortlist — in index order at each position
        (ties keep the first)."""
        hits: list[tuple[Phrase, int]] = []
        for start, key, groups in matches:
            positions: list[int] = []
            concept_positions: list[int] = []
            for group in groups:
                _, kept, concept_kept = self.phrase_groups[key][group]
                concept_positions += concept_kept
                if chosen is None:
                    positions += kept
                    continue
                if len(kept):
                    services, _ = self._group_vector(key, group)
                    positions += np.frombuffer(kept, dtype=np.uintc)[chosen[services]].tolist()
            phrases = self.phrases.get(key, [])
            if isinstance(phrases, PhraseList):  # columns: made together
                hits += [(phrase, start) for phrase in phrases.take(sorted(positions))]
            else:
                hits += [(phrases[p], start) for p in sorted(positions)]
            if concept_positions:
                hits += [
                    (phrase, start)
                    for phrase in self._concept_phrase_hits(key, sorted(concept_positions), chosen)
                ]
        return hits

    def _concept_phrase_hits(
        self, key: str, positions: list[int], chosen: npt.NDArray[np.bool_] | None
    ) -> list[Phrase]:
        """The concept phrases at `positions` of concept_phrases[key] as phrases of the
        (chosen) services that link their concepts, in each service's links' order."""
        found: list[tuple[int, int, Phrase]] = []
        starts = self.link_starts
        for position in positions:
            concept_phrase = self.concept_phrases[key][position]
            cp = concept_phrase.posting
            start, end = starts[cp.concept], starts[cp.concept + 1]
            services = self.link_services[start:end]
            weights = self.link_weights[start:end]
            ranks = self.link_ranks[start:end]
            if chosen is not None:
                mask = chosen[services]
                services, weights, ranks = services[mask], weights[mask], ranks[mask]
            found += [
                (
                    rank,
                    position,
                    Phrase(
                        concept_phrase.keys,
                        Posting(service, cp.term, cp.surface, cp.source, weight),
                    ),
                )
                for service, weight, rank in zip(
                    services.tolist(), weights.tolist(), ranks.tolist(), strict=True
                )
            ]
        found.sort(key=lambda item: (item[0], item[1]))
        return [phrase for _, _, phrase in found]

    def _pattern_vector(self, key: str, group: int) -> Vector:
        """Services and weights × idf of the phrases of one pattern group, the services'
        own and their linked concepts', one per service and term (the heaviest): what the
        shortlist sums for a matched pattern."""
        own = self._group_vector(key, group)
        concept_kept = self.phrase_groups[key][group][2]
        if not concept_kept:
            return own
        cached = self._pattern_cache.get((key, group))
        if cached is not None:
            return cached
        starts = self.group_starts.get(key)
        services: list[npt.NDArray[np.int64]] = [own[0].astype(np.int64)]
        weights: list[npt.NDArray[np.float64]] = [own[1]]
        terms: list[npt.NDArray[np.int64]] = [
            self.phrase_terms[starts[group] : starts[group + 1]]
            if starts is not None
            else np.zeros(0, np.int64)
        ]
        links = self.link_starts
        for position in concept_kept:
            cp = self.concept_phrases[key][position].posting
            start, end = links[cp.concept], links[cp.concept + 1]
            services.append(self.link_services[start:end])
            weights.append(self.link_weights[start:end] * self.idf.get(cp.term, 1.0))
            terms.append(np.full(end - start, self.term_ids[cp.term], np.int64))
        every_service, every_weight = np.concatenate(services), np.concatenate(weights)
        every_term = np.concatenate(terms)
        order = np.lexsort((every_term, every_service))
        every_service, every_weight = every_service[order], every_weight[order]
        every_term = every_term[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (every_service[1:] != every_service[:-1]) | (every_term[1:] != every_term[:-1])
        at = np.flatnonzero(first)
        vector = (every_service[at], np.maximum.reduceat(every_weight, at))
        size = vector[0].nbytes + vector[1].nbytes + 2 * len(key) + 100
        return self._pattern_cache.put((key, group), vector, size)

    def _direct(self, word: str) -> list[Segment]:
        # Exact form first and every posting kept: the scorer keeps the best per term, and
        # the result must not depend on set iteration order (hash seeds differ per process).
        stemmed = len(self.languages) if len(word) <= MAX_WORD_LEN else 0
        spend_search(len(word) + stemmed * (STEM_STEPS + len(word)))
        out = []
        for key in sorted(self.keys(word), key=lambda k: (k != word, k)):
            kind = "exact" if key == word else "stem"
            postings = self.postings.get(key, ())
            concept_postings = self.concept_postings.get(key, ())
            if not postings and not concept_postings:
                continue
            if key != word and len(key) < SHORT_STEM:
                chosen = self._same_family_postings(word, key) if postings else ()
                concept_chosen = tuple(
                    i for i, cp in enumerate(concept_postings) if self._in_family(word, cp.surface)
                )
                if len(chosen) or concept_chosen:
                    out.append(Segment(key, kind, word, chosen, concept_chosen))
                continue
            out.append(Segment(key, kind, word))
        return out

    def _same_family_postings(self, word: str, key: str) -> Positions:
        """Positions in postings[key] (a short stem) of the terms of the word's family,
        ascending; the test is made once per distinct term, not once per posting."""
        surfaces = self.key_surfaces.get(key)
        if surfaces is None:
            return tuple(
                i for i, p in enumerate(self.postings[key]) if self._in_family(word, p.surface)
            )
        names, positions = surfaces
        family = [positions[n] for n, surface in enumerate(names) if self._in_family(word, surface)]
        if len(family) < 2:
            return family[0] if family else ()
        return np.sort(np.concatenate(family))

    def _in_family(self, word: str, surface: str) -> bool:
        words = self.word_keys.words(surface)  # the term as the ticket's words are: folded, joined
        return len(words) != 1 or same_family(word, words[0])

    def _compound(self, word: str) -> list[Segment]:
        """Split a compound into head + tail that are both words, at least one of them a
        known term.

        Norwegian puts the meaning-bearing part last ("trådløs|nettet" is a network), so a
        known tail alone is enough; a known head alone is accepted only when long (≥ 5),
        which keeps "pass|ord" style accidents out. Either way the other part must be a word
        too (of the catalogue, the thesaurus or the language data; the head may end in a
        linking -s/-e): "kontorstol" is no "konto|rstol".
        """
        best: list[Segment] = []
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
        first = onset(part)
        if len(first) <= 1:
            return first != part
        onsets = language_data().word_onsets
        return any(first in onsets.get(lang, ()) for lang in self.compounding)

    def _part(self, part: str) -> list[Segment]:
        """Postings of a compound part: the part as written or stemmed in a compounding
        language (English stems of fragments, "ecting" → "ect", match nonsense)."""
        spend_search(len(part) + len(self.compounding) * (STEM_STEPS + len(part)))
        keys = sorted({part, *(stem(part, lang) for lang in self.compounding)})
        return [
            Segment(key, "compound", part)
            for key in keys
            if self.postings.get(key) or self.concept_postings.get(key)
        ]

    def _fuzzy(self, word: str) -> list[Segment]:
        limit = 2 if len(word) >= FUZZY2_LEN else 1
        spend_search(len(word) * (len(word) + 1))  # the word's deletes, each looked up
        candidates: set[str] = set(self.deletes.get(word, ()))
        for variant in deletions(word):
            candidates |= self.deletes.get(variant, set())
        out: list[Segment] = []
        spend_search(sum(map(len, candidates)))  # compared with the word
        for candidate in sorted(candidates):
            if (
                candidate[0] == word[0]
                and OSA.distance(word, candidate, score_cutoff=limit) <= limit
                and plausible_slip(word, candidate)
            ):
                out += [replace(s, how="fuzzy", word=word) for s in self._direct(candidate)]
        return out


# The table of a word without hits (shared: the scorer picks no row of it).
_NO_ROWS = WordTable(
    services=NO_SERVICES,
    own_count=0,
    own_places=NO_SERVICES,
    own_segments=NO_SERVICES,
    segment_qualities=NO_WEIGHTS,
    segment_words=NO_SERVICES,
    entry_surfaces=NO_SERVICES,
    key_terms=NO_SERVICES,
    key_weights=NO_WEIGHTS,
    key_surface_ranks=NO_SERVICES,
    word_texts=(),
    segments=(),
    own=KeyHits((), (), (), 0),
    concept=None,
)
