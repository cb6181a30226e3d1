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
    Hits,
    IndexData,
    KeyHits,
    Phrase,
    PhraseMatch,
    Positions,
    Posting,
    Segment,
    Vector,
    WordHits,
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
    Token,
    deletions,
    memo_bytes,
    onset,
    plausible_slip,
    same_family,
    search_counter,
    spend_search,
)
from connector.text import MAX_WORD_LEN, language_data, stem


@dataclass(frozen=True, eq=False)
class Lookup(IndexData):
    """The built index with its word lookups."""

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
        return self._token_cache.put(word, found, memo_bytes(word, len(found)))

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
        if not isinstance(hits, KeyHits) or len(hits.segments) > 1:
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
        if not isinstance(hits, KeyHits):  # a list of its own, not views of the postings
            size += memo_bytes(word, len(services))
        return self._grouped_cache.put(word, (vector, hits, services), size + len(word) * 2)

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
            start, end = self.key_spans[segment.key]
            key_services = self.key_services[start:end]
            key_weights = self.key_weights[start:end] * QUALITY[segment.how]
            if segment.chosen is not None:
                chosen = np.asarray(segment.chosen)
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

    def _phrase_matches(self, tokens: Sequence[Token]) -> list[PhraseMatch]:
        """The phrase patterns the ticket contains, without listing their phrases (a pattern
        linked to thousands of services stands for thousands of phrases)."""
        matches: list[PhraseMatch] = []
        words = [t.text for t in tokens]
        word_keys = [self.keys(w) for w in words]
        for i, keys in enumerate(word_keys):
            following = word_keys[i + 1] if i + 1 < len(words) else frozenset()
            for k in sorted(keys):  # set order varies per process; ties keep the first
                by_next = self.phrase_next.get(k)
                if by_next is None:
                    continue
                numbers = set(by_next.get("", ()))
                for second in following:
                    numbers.update(by_next.get(second, ()))
                patterns = self.phrase_groups[k]
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
        self, matches: list[PhraseMatch], chosen: npt.NDArray[np.bool_] | None = None
    ) -> list[tuple[Phrase, int]]:
        """The phrases behind the matched patterns — of the chosen services only (a mask
        over all services) when there is a shortlist — in index order at each position
        (ties keep the first)."""
        hits: list[tuple[Phrase, int]] = []
        for start, key, groups in matches:
            positions: list[int] = []
            for group in groups:
                kept = self.phrase_groups[key][group][1]
                if chosen is None:
                    positions += kept
                    continue
                services, _ = self._group_vector(key, group)
                positions += np.frombuffer(kept, dtype=np.uintc)[chosen[services]].tolist()
            phrases = self.phrases[key]
            hits += [(phrases[p], start) for p in sorted(positions)]
        return hits

    def _direct(self, word: str) -> list[Segment]:
        # Exact form first and every posting kept: the scorer keeps the best per term, and
        # the result must not depend on set iteration order (hash seeds differ per process).
        stemmed = len(self.languages) if len(word) <= MAX_WORD_LEN else 0
        spend_search(len(word) + stemmed * (STEM_STEPS + len(word)))
        out = []
        for key in sorted(self.keys(word), key=lambda k: (k != word, k)):
            kind = "exact" if key == word else "stem"
            postings = self.postings.get(key, ())
            if not postings:
                continue
            if key != word and len(key) < SHORT_STEM:
                chosen = self._same_family_postings(word, key)
                if len(chosen):
                    out.append(Segment(key, kind, word, chosen))
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
        return [Segment(key, "compound", part) for key in keys if self.postings.get(key)]

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
