"""Scoring: a service's score sums, over the distinct terms a ticket hits, field weight ×
rarity (BM25 idf over services) × match quality, each ticket word counting once per service,
raised for services that several words point to and normalised by the service's length. A
large catalogue scores exactly only a shortlist of the likeliest services. Then the answer:
the best service, unless the ticket is private, outside IT or about nothing in the catalogue,
with a calibrated confidence. Pure."""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from connector.classify.calibration import (
    Features,
    calibrated,
    no_service_features,
    service_features,
)
from connector.classify.index import (
    ConceptPhrase,
    Hit,
    Phrase,
    PhraseMatch,
    Posting,
    WordTable,
)
from connector.classify.intent import intent
from connector.classify.lookup import Lookup
from connector.classify.thesaurus import Concept, concept_label
from connector.classify.weights import (
    CARRIER_SHARE,
    COORDINATION,
    MIN_SCORE,
    OUTSIDE_RATIO,
    PRIVATE_SHARE,
    QUALITY,
    SHORTLIST,
    SHORTLIST_ABOVE,
    SUBJECT_BOOST,
)
from connector.classify.words import TOKEN_STEPS, Token, ticket_tokens, token_keys
from connector.events import Evidence, ServiceMatch
from connector.text import Work, guess_language


class LearnedEvidence(Protocol):
    """The organisation's learned evidence (connector/learn.py): adjusts the scores."""

    def rescore(
        self,
        index: CatalogueIndex,
        tokens: Sequence[Token],
        unsorted: list[tuple[float, int]],
        kept: dict[int, list[Hit]],
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]: ...


@dataclass(frozen=True, eq=False)
class CatalogueIndex(Lookup):
    """Everything needed to classify a ticket, built once per catalogue (build_index)."""

    # Matters outside IT that no service takes (see build.py), as services of their own in
    # a small index of their own; None when there are none.
    outside: CatalogueIndex | None = None
    learned: LearnedEvidence | None = None  # see with_learned

    def with_learned(self, learned: LearnedEvidence | None) -> CatalogueIndex:
        """This index plus learned evidence (None: without), sharing everything else: a
        learned file is swapped in without rebuilding the index."""
        return replace(self, learned=learned)

    def change_intent(
        self, tokens: Sequence[Token], keys: Sequence[frozenset[str]] | None = None
    ) -> tuple[float, tuple[str, ...]]:
        """Score of the change-intent groups that occur (each once) and the cues seen
        (`keys`: the tokens' token_keys, when the caller has them)."""
        return intent(token_keys(tokens, self.keys) if keys is None else keys, self.change_cues)

    def private_intent(
        self, tokens: Sequence[Token], keys: Sequence[frozenset[str]] | None = None
    ) -> tuple[float, tuple[str, ...]]:
        """Score of the private-matter groups that occur (each once) and the cues seen."""
        return intent(token_keys(tokens, self.keys) if keys is None else keys, self.private_cues)

    def candidates(
        self, tokens: Sequence[Token]
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """Every service with any evidence, best first: (score, service index), and hits."""
        scored, kept = self.scores(tokens)
        return sorted(scored, key=self.rank), kept

    def rank(self, item: tuple[float, int]) -> tuple[float, str]:
        """Sort key of a (score, service index): best first, equal scores by id."""
        return (-item[0], self.services[item[1]].id)

    def best_two(self, unsorted: list[tuple[float, int]]) -> list[tuple[float, int]]:
        """The first two of candidates()' order: ranking (which reads each service's id)
        only the candidates that score at least the second-highest score."""
        if len(unsorted) > 2:
            cut = heapq.nlargest(2, [score for score, _ in unsorted])[1]
            unsorted = [item for item in unsorted if item[0] >= cut]
        return heapq.nsmallest(2, unsorted, key=self.rank)

    def scores(
        self, tokens: Sequence[Token], keys: Sequence[frozenset[str]] | None = None
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """candidates(), unsorted (`keys`: the tokens' token_keys, when the caller has them).
        A large catalogue records thousands of hits per ticket, so this is the hot loop: per
        (service, term) the heaviest hit wins, the first on ties."""
        hits: dict[int, dict[str, Hit]] = defaultdict(dict)
        idf = self.idf.get
        quality = QUALITY
        matches = self._phrase_matches(token_keys(tokens, self.keys) if keys is None else keys)
        shortlist = (
            self._shortlist(tokens, matches) if len(self.services) > SHORTLIST_ABOVE else None
        )
        chosen = None
        if shortlist is not None:
            chosen = np.zeros(len(self.services), dtype=bool)
            chosen[list(shortlist)] = True
            return self._shortlisted_scores(tokens, matches, chosen)
        phrase_hits = self._phrase_hits(matches, chosen)
        seen: set[tuple[str, bool]] = set()
        stopwords = self.stopwords
        for token in tokens:
            text, in_subject = token.text, token.in_subject
            # A repeated word makes the very same hits again; only its first one can count
            # (and weighs the most: body_weights fall with place).
            if text in stopwords or len(text) < 2 or (text, in_subject) in seen:
                continue
            seen.add((text, in_subject))
            boost = salience(token)
            # (With a shortlist: the shortlisted services' hits, in the order they were found.)
            found = self._lookup(text) if chosen is None else self.picked_hits(text, chosen)
            for posting, how, word in found:
                weight = posting.weight * idf(posting.term, 1.0) * quality[how]
                weight *= boost
                terms = hits[posting.service]
                current = terms.get(posting.term)
                if current is None or weight > current.weight:
                    terms[posting.term] = Hit(weight, posting, how, word, in_subject)
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
            weight *= salience(tokens[start])
            terms = hits[posting.service]
            current = terms.get(posting.term)
            if current is None or weight > current.weight:
                terms[posting.term] = Hit(weight, posting, "phrase", surface, in_subject)

        kept = {
            service: list(terms.values()) if len(terms) == 1 else one_term_per_word(terms)
            for service, terms in hits.items()
        }
        return self.scored(kept), kept

    def scored(self, kept: Mapping[int, list[Hit]]) -> list[tuple[float, int]]:
        """Each service's score from its kept hits: coordinated and normalised, with carrier
        words weighing as carried() says (also for LearnedEvidence.rescore's new hits)."""
        norm = self.norm
        scored = [(coordinated(kept[s]) / norm[s], s) for s in kept]
        carrier = self.carrier_words({h.word for hits in kept.values() for h in hits})
        if not carrier:
            return scored
        evidence = {
            s: ([h.weight for h in hits], [h.word in carrier for h in hits])
            for s, hits in kept.items()
        }
        return carried(scored, evidence, norm)

    def carrier_words(self, words: Iterable[str]) -> set[str]:
        """The carrier words among the hits' words (a phrase's words joined by spaces):
        carrier words or phrases of the language data, and phrases of carrier words and
        stopwords only ("can't log in")."""
        carriers, stopwords = self.carriers, self.stopwords
        found: set[str] = set()
        for text in words:
            if text in carriers:
                found.add(text)
            elif " " in text:
                parts = text.split(" ")
                if any(p in carriers for p in parts) and all(
                    p in carriers or p in stopwords for p in parts
                ):
                    found.add(text)
        return found

    def _shortlisted_scores(
        self, tokens: Sequence[Token], matches: list[PhraseMatch], chosen: npt.NDArray[np.bool_]
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """scores() of the shortlisted services (`chosen`, a mask over all), the same rules
        in numpy over the words' hit tables: per (service, term) the first of the heaviest
        hits, then per (service, ticket word) the best term (by weight, then surface), then
        coordination and the length norm. Hit objects are made only for the services whose
        evidence is asked for (the winner's, in classify)."""
        rows = Rows()
        self._tickets[0] += 1
        ticket = self._tickets[0]
        seen: set[tuple[str, bool]] = set()
        for token in tokens:
            if token.text in self.stopwords or len(token.text) < 2:
                continue
            if (token.text, token.in_subject) in seen:
                continue
            seen.add((token.text, token.in_subject))
            table = self._word_table(token.text)
            picked = np.flatnonzero(chosen[table.services])
            if not len(picked):
                continue
            local = np.array([rows.word(w) for w in table.word_texts], np.int64)
            terms, weight, surfaces, words, hows, kinds, ranks, positions = table.columns(
                picked, ticket
            )
            rows.add(
                table.services[picked],
                terms,
                weight * salience(token),
                surfaces,
                local[words],
                partial(_table_hit, table, picked, token.in_subject),
                (hows, kinds, ranks, positions),
            )
        self._phrase_rows(tokens, matches, chosen, rows)
        return rows.scores(self.norm, self.carrier_words(rows.words))

    def _phrase_rows(
        self,
        tokens: Sequence[Token],
        matches: list[PhraseMatch],
        chosen: npt.NDArray[np.bool_],
        rows: Rows,
    ) -> None:
        """The chosen services' phrase hits as rows, in the order _phrase_hits lists them:
        at each match the services' own phrases by position, then the linked concepts'
        phrases by link rank and position."""
        texts: dict[tuple[int, int], int] = {}

        def word(start: int, n: int) -> int:
            number = texts.get((start, n))
            if number is None:
                number = texts[(start, n)] = rows.word(
                    " ".join(t.text for t in tokens[start : start + n])
                )
            return number

        idf = self.idf.get
        quality = QUALITY["phrase"]
        for start, key, groups in matches:
            in_subject = tokens[start].in_subject
            boost = salience(tokens[start])
            patterns = self.phrase_groups[key]
            starts = self.group_starts[key]
            places: list[npt.NDArray[np.intp]] = []
            positions: list[npt.NDArray[Any]] = []
            lengths: list[int] = []
            concept_positions: list[int] = []
            for group in groups:
                pattern, kept, concept_kept = patterns[group]
                concept_positions += concept_kept
                if not len(kept):
                    continue
                first = starts[group]
                picked = np.flatnonzero(chosen[self.phrase_services[first : starts[group + 1]]])
                if len(picked):
                    places.append(first + picked)
                    positions.append(np.frombuffer(kept, dtype=np.uintc)[picked])
                    lengths.append(len(pattern))
            if places:
                order = np.argsort(np.concatenate(positions), kind="stable")
                place = np.concatenate(places)[order]
                words = np.repeat(
                    np.array([word(start, n) for n in lengths], np.int64),
                    [len(p) for p in places],
                )[order]
                rows.add(
                    self.phrase_services[place].astype(np.int64),
                    self.phrase_terms[place],
                    self.phrase_weights[place] * quality * boost,
                    self.phrase_surface_ranks[place],
                    words,
                    partial(
                        _own_phrase_hit,
                        self.phrases[key],
                        np.concatenate(positions)[order],
                        word,
                        start,
                        in_subject,
                        rows,
                    ),
                )
            if concept_positions:
                self._concept_phrase_rows(
                    key,
                    sorted(concept_positions),
                    chosen,
                    start,
                    tokens[start],
                    word,
                    rows,
                    idf,
                )

    def _concept_phrase_rows(
        self,
        key: str,
        positions: list[int],
        chosen: npt.NDArray[np.bool_],
        start: int,
        token: Token,
        word: Callable[[int, int], int],
        rows: Rows,
        idf: Callable[[str, float], float],
    ) -> None:
        """The concept phrases at `positions` of concept_phrases[key], spread to the chosen
        services that link their concepts, by link rank and position (_concept_phrase_hits)."""
        boost = salience(token)
        in_subject = token.in_subject
        quality = QUALITY["phrase"]
        links: list[npt.NDArray[np.int64]] = []
        entries: list[int] = []
        weights: list[npt.NDArray[np.float64]] = []
        concept_phrases = self.concept_phrases[key]
        for position in positions:
            cp = concept_phrases[position].posting
            first, end = self.link_starts[cp.concept], self.link_starts[cp.concept + 1]
            picked = first + np.flatnonzero(chosen[self.link_services[first:end]])
            if len(picked):
                links.append(picked)
                entries.append(position)
                weights.append(self.link_weights[picked] * idf(cp.term, 1.0) * quality * boost)
        if not links:
            return
        counts = [len(link) for link in links]
        link = np.concatenate(links)
        position_of = np.repeat(np.array(entries, np.int64), counts)
        order = np.lexsort((position_of, self.link_ranks[link]))
        postings = [concept_phrases[p].posting for p in entries]
        every = np.repeat(np.arange(len(entries)), counts)[order]
        rows.add(
            self.link_services[link][order],
            np.repeat(np.array([self.term_ids[cp.term] for cp in postings], np.int64), counts)[
                order
            ],
            np.concatenate(weights)[order],
            np.repeat(
                np.array([self.surface_ranks[cp.surface] for cp in postings], np.int64), counts
            )[order],
            np.repeat(
                np.array([word(start, len(concept_phrases[p].keys)) for p in entries], np.int64),
                counts,
            )[order],
            partial(
                _concept_phrase_hit,
                [(concept_phrases[p], word(start, len(concept_phrases[p].keys))) for p in entries],
                every,
                link[order],
                self.link_services,
                self.link_weights,
                in_subject,
                rows,
            ),
        )

    def _shortlist(self, tokens: Sequence[Token], matches: list[PhraseMatch]) -> set[int]:
        """The SHORTLIST services most likely to win, by an estimate of their score: each
        word's and phrase's best term per service, summed, then coordinated and normalised
        like the score. On a catalogue of thousands of services an everyday word hits
        hundreds of them; exact scoring is then done for the shortlist only. Catalogues of
        up to SHORTLIST_ABOVE services never take this path, so their results are exact.
        A ticket with carrier words shortlists the best by both estimates, with the carriers
        weighing fully and weighing CARRIER_SHARE: which applies is known only once scored."""
        services: list[npt.NDArray[np.integer[Any]]] = []
        weights: list[npt.NDArray[np.float64]] = []
        carrier: list[bool] = []
        seen: set[str] = set()
        for token in tokens:
            text = token.text
            if text in seen or text in self.stopwords or len(text) < 2:
                continue
            seen.add(text)
            (hit, weight), _, _, _ = self._grouped(text)
            services.append(hit)
            weights.append(weight * salience(token))
            carrier.append(text in self.carriers)
        for start, key, groups in matches:
            boost = salience(tokens[start])
            for group in groups:
                pattern, _, _ = self.phrase_groups[key][group]
                hit, weight = self._pattern_vector(key, group)
                services.append(hit)
                weights.append(weight * boost)
                surface = " ".join(t.text for t in tokens[start : start + len(pattern)])
                carrier.append(bool(self.carrier_words((surface,))))
        if not services:
            return set()
        shortlist = self._best_estimated(services, weights)
        if any(carrier) and not all(carrier):
            shares = [CARRIER_SHARE if c else 1.0 for c in carrier]
            shortlist |= self._best_estimated(
                services, [w * share for w, share in zip(weights, shares, strict=True)]
            )
        return shortlist

    def _best_estimated(
        self,
        services: list[npt.NDArray[np.integer[Any]]],
        weights: list[npt.NDArray[np.float64]],
    ) -> set[int]:
        """The SHORTLIST services of the best estimates from the words' and phrases' hits."""
        every = np.concatenate(services)
        size = len(self.services)
        total = np.bincount(every, weights=np.concatenate(weights), minlength=size)
        words = np.bincount(every, minlength=size)
        candidates = np.flatnonzero(words)
        # The final score's form: coordination and length norm.
        norm = self.norm_array[candidates]
        estimate = total[candidates] * words[candidates] ** COORDINATION / norm
        return set(best_candidates(candidates, estimate, SHORTLIST).tolist())

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
        keys = token_keys(tokens, self.keys)
        unsorted, kept = self.scores(tokens, keys)
        known = self.known_words(tokens, keys)
        if self.learned is not None:  # the organisation's own words: connector/learn.py
            unsorted, kept = self.learned.rescore(self, tokens, unsorted, kept)
        # Only the best two are used: the same two as candidates()' full sort (ids are unique).
        scored = self.best_two(unsorted)
        change_score, cues = self.change_intent(tokens, keys)
        is_change = change_score >= self.change_cues.threshold
        private_score, private_cues = self.private_intent(tokens, keys)
        is_private = private_score >= self.private_cues.threshold
        if is_private:
            scored = self._private_first(unsorted, scored)
        outside = (
            None if is_private else self._outside_it(tokens, scored[0][0] if scored else 0.0, keys)
        )
        content = self._content_words(tokens)
        if not scored or scored[0][0] < MIN_SCORE or outside is not None:
            concept, outside_evidence = outside or (None, ())
            features = no_service_features(scored, outside is not None, is_private)
            match = ServiceMatch(
                service=None,
                score=round(scored[0][0], 3) if scored else 0.0,
                confidence=calibrated(features) if content else 0.0,
                language=language,
                evidence=outside_evidence,
                outside=concept_label(concept, language) if concept else None,
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
        features = service_features(scored, hits, content, is_private)
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

    def known_words(
        self, tokens: Sequence[Token], keys: Sequence[frozenset[str]] | None = None
    ) -> int:
        """Distinct ticket words that are words of a catalogue language: a stopword or
        function word, or a word the catalogue or its thesaurus knows (itself or its stem).
        Typos and compounds do not count: "qwerty" is one edit from many words. (`keys`:
        the tokens' token_keys, when the caller has them.)"""
        known: set[str] = set()
        seen: set[str] = set()  # each distinct word is tested once
        postings, concept_postings = self.postings, self.concept_postings
        stopwords = self.stopwords
        for token, word_keys in zip(
            tokens, token_keys(tokens, self.keys) if keys is None else keys, strict=True
        ):
            word = token.text
            if word in seen or len(word) < 2:
                continue
            seen.add(word)
            if word in stopwords:
                known.add(word)
                continue
            for key in word_keys:  # a loop, not any(): no generator per word
                if key in postings or key in concept_postings:
                    known.add(word)
                    break
        return len(known)

    def _affordable(self, tokens: list[Token], work: Work) -> list[Token]:
        """The tokens, from the first, that the work budget pays for. Each distinct word is
        searched once (direct keys, compound parts, typos; in the outside-IT index too) at
        its cost in steps, and every token costs its length for the passes that read all
        tokens (language, phrases, intents, scoring). Past the budget the rest is left out
        of every stage: the ticket is matched on its beginning, alike on every machine."""
        searched: set[str] = set()
        stopwords, outside = self.stopwords, self.outside
        # Counted here and stored once (as Work.spend and Work.over_budget would, per token).
        steps = work.steps
        limit = None if work.budget is None else steps + work.budget
        for number, token in enumerate(tokens):
            text = token.text
            steps += TOKEN_STEPS + len(text)
            if text not in searched and text not in stopwords and len(text) >= 2:
                searched.add(text)
                steps += self.search_steps(text)
                if outside is not None:
                    steps += outside.search_steps(text)
            if limit is not None and steps > limit:
                work.steps = steps
                work.exhausted = True
                return tokens[:number]
        work.steps = steps
        return tokens

    def _outside_it(
        self, tokens: Sequence[Token], best: float, keys: Sequence[frozenset[str]] | None = None
    ) -> tuple[Concept, tuple[Evidence, ...]] | None:
        """The matter outside IT a ticket is about, when its evidence outweighs the best
        service's OUTSIDE_RATIO times: "the coffee machine shows E12 on its display" is
        about a coffee machine, whatever service "display" belongs to."""
        if self.outside is None:
            return None
        # A word's keys depend on the languages only: the tokens' keys serve the outside
        # index too when it has the same ones (as it has unless a concept adds a language).
        same = keys is not None and self.outside.languages == self.languages
        unsorted, kept = self.outside.scores(tokens, keys if same else None)
        if not unsorted:
            return None
        score, number = min(unsorted, key=self.outside.rank)
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
        ranked = heapq.nsmallest(2, unsupported, key=self.rank)
        return [(max(ranked[0][0], MIN_SCORE), ranked[0][1]), *ranked[1:]]


def carried(
    scored: list[tuple[float, int]],
    evidence: dict[int, tuple[list[float], list[bool]]],
    norm: Sequence[float],
) -> list[tuple[float, int]]:
    """The scores with carrier words weighing CARRIER_SHARE, once a service with evidence of
    other words scores at least MIN_SCORE. `evidence`: per service its hits' weights, summed
    in that order (as coordinated() sums them), and whether each hit's word is a carrier."""
    rival = max((score for score, s in scored if not all(evidence[s][1])), default=0.0)
    if rival < MIN_SCORE:  # the carriers are all the ticket speaks of: "my PC won't start"
        return scored
    result = []
    for score, s in scored:
        weights, carrier = evidence[s]
        if any(carrier):
            total = sum(
                w * CARRIER_SHARE if c else w for w, c in zip(weights, carrier, strict=True)
            )
            score = coordinate(total, len(weights)) / norm[s]
        result.append((score, s))
    return result


def salience(token: Token) -> float:
    """How much a ticket word's evidence counts for where it sits: SUBJECT_BOOST in the
    subject, its place's weight in the body (body_weights)."""
    return SUBJECT_BOOST if token.in_subject else token.weight


def _table_hit(
    table: WordTable, picked: npt.NDArray[np.intp], in_subject: bool, offset: int, weight: float
) -> Hit:
    posting, how, word = table.hit(int(picked[offset]))
    return Hit(weight, posting, how, word, in_subject)


def _own_phrase_hit(
    phrases: Sequence[Phrase],
    positions: npt.NDArray[np.intp],
    word: Callable[[int, int], int],
    start: int,
    in_subject: bool,
    rows: Rows,
    offset: int,
    weight: float,
) -> Hit:
    phrase = phrases[int(positions[offset])]
    text = rows.words[word(start, len(phrase.keys))]
    return Hit(weight, phrase.posting, "phrase", text, in_subject)


def _concept_phrase_hit(
    sources: list[tuple[ConceptPhrase, int]],
    entries: npt.NDArray[np.intp],
    links: npt.NDArray[np.int64],
    link_services: npt.NDArray[np.int64],
    link_weights: npt.NDArray[np.float64],
    in_subject: bool,
    rows: Rows,
    offset: int,
    weight: float,
) -> Hit:
    concept_phrase, word = sources[int(entries[offset])]
    cp = concept_phrase.posting
    link = int(links[offset])
    posting = Posting(
        int(link_services[link]), cp.term, cp.surface, cp.source, float(link_weights[link])
    )
    return Hit(weight, posting, "phrase", rows.words[word], in_subject)


@dataclass(eq=False)
class Rows:
    """A ticket's hits of the shortlisted services as arrays, in the order the scorer meets
    them, part by part (a word's table, a match's phrases), each part with the function
    that makes a row's Hit (offset in the part, weight)."""

    parts: list[tuple[Any, ...]] = field(default_factory=list)
    makers: list[Callable[[int, float], Hit]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    word_ids: dict[str, int] = field(default_factory=dict)

    def word(self, text: str) -> int:
        number = self.word_ids.get(text)
        if number is None:
            number = self.word_ids[text] = len(self.words)
            self.words.append(text)
        return number

    def add(
        self,
        services: npt.NDArray[np.int64],
        terms: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64],
        surfaces: npt.NDArray[np.int64],
        words: npt.NDArray[np.int64],
        maker: Callable[[int, float], Hit],
        order: tuple[npt.NDArray[np.int64], ...] | None = None,
    ) -> None:
        """A part's rows; `order`: the keys of the order they are met in (segment, kind,
        rank, position), when they are not listed in it."""
        count = len(services)
        if count:
            if order is None:
                zero = np.zeros(count, np.int64)
                order = (zero, zero, zero, np.arange(count, dtype=np.int64))
            part = np.full(count, len(self.parts), np.int64)
            self.parts.append((services, terms, weights, surfaces, words, part, *order))
            self.makers.append(maker)

    def scores(
        self,
        norm: Sequence[float],
        carrier: set[str],
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """Per (service, term) the first of the heaviest rows, per (service, word) the best
        of those by weight, then surface; each service's score from them, summed heaviest
        first (as coordinated() sums one_term_per_word's list), with `carrier` words (of
        self.words) weighing less as carried() says."""
        if not self.parts:
            return [], {}
        service, term, weight, surface, word, part, segment, kind, rank, position = (
            np.concatenate(c) for c in zip(*self.parts, strict=True)
        )
        # Of equal weights the first met: by part, then the order keys within one.
        grouped = np.lexsort((position, rank, kind, segment, part, -weight, term, service))
        s, t = service[grouped], term[grouped]
        first = np.ones(len(grouped), dtype=bool)
        first[1:] = (s[1:] != s[:-1]) | (t[1:] != t[:-1])
        kept = grouped[first]
        s, w = service[kept], word[kept]
        best = np.lexsort((surface[kept], -weight[kept], w, s))
        first = np.ones(len(best), dtype=bool)
        first[1:] = (s[best[1:]] != s[best[:-1]]) | (w[best[1:]] != w[best[:-1]])
        rows = kept[best[first]]
        rows = rows[np.lexsort((surface[rows], -weight[rows], service[rows]))]
        row_services = service[rows]
        starts = np.flatnonzero(np.r_[True, row_services[1:] != row_services[:-1]])
        ends = [*starts[1:].tolist(), len(rows)]
        hit_weights = weight[rows].tolist()
        scored: list[tuple[float, int]] = []
        spans: dict[int, tuple[int, int]] = {}
        for number, start, end in zip(
            row_services[starts].tolist(), starts.tolist(), ends, strict=True
        ):
            total = sum(hit_weights[start:end])
            scored.append((coordinate(total, end - start) / norm[number], number))
            spans[number] = (start, end)
        if carrier:
            is_carrier = [w in carrier for w in self.words]
            row_carrier = [is_carrier[w] for w in word[rows].tolist()]
            scored = carried(
                scored,
                {
                    s: (hit_weights[start:end], row_carrier[start:end])
                    for s, (start, end) in spans.items()
                },
                norm,
            )
        bounds = np.cumsum([0, *(len(part[0]) for part in self.parts)]).tolist()
        return scored, KeptHits(spans, partial(self._hit, rows.tolist(), hit_weights, bounds))

    def _hit(self, rows: list[int], weights: list[float], bounds: list[int], at: int) -> Hit:
        row = rows[at]
        part = bisect_right(bounds, row) - 1
        return self.makers[part](row - bounds[part], weights[at])


class KeptHits(dict[int, list[Hit]]):
    """A large catalogue's kept hits per service, made when asked for: classify shows the
    winner's only, and making every shortlisted service's cost more than scoring them.
    Every way of reading it (get, [], items, values, iteration, dict(...)) gives the Hits."""

    def __init__(self, spans: dict[int, tuple[int, int]], hit: Callable[[int], Hit]) -> None:
        super().__init__({service: [] for service in spans})  # filled when read
        self._spans = spans
        self._hit = hit

    def __getitem__(self, service: int) -> list[Hit]:
        hits = super().__getitem__(service)
        if not hits:  # every service here has hits
            start, end = self._spans[service]
            hits = [self._hit(at) for at in range(start, end)]
            super().__setitem__(service, hits)
        return hits

    def get(self, service: int, default: Any = None) -> Any:
        return self[service] if service in self else default  # noqa: SIM401 - made on demand

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().keys()))

    def items(self) -> Any:
        return [(service, self[service]) for service in self]

    def values(self) -> Any:
        return [self[service] for service in self]

    def __eq__(self, other: object) -> bool:
        return dict(self.items()) == other

    __hash__ = None


def coordinated(hits: list[Hit]) -> float:
    """Sum of the evidence, raised for services that several distinct words point to: a
    ticket about a printer says printer, paper and toner; a stray word says one thing."""
    return coordinate(sum(h.weight for h in hits), len(hits))


def coordinate(total: float, words: int) -> float:
    """coordinated() of evidence summing to `total` from `words` distinct words (for
    callers that hold the weights, not the hits)."""
    return float(total * words**COORDINATION)


def one_term_per_word(terms: dict[str, Hit]) -> list[Hit]:
    """Each ticket word counts once per service, for its best term: 'skriveren' matching
    both the keyword 'skriver' and the thesaurus' 'skrivere' is one piece of evidence."""
    used: set[str] = set()
    kept = []
    for hit in sorted(terms.values(), key=lambda h: (-h.weight, h.posting.surface)):
        if hit.word not in used:
            used.add(hit.word)
            kept.append(hit)
    return kept


def best_candidates(
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
