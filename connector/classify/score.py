"""Scoring: a service's score sums, over the distinct terms a ticket hits, field weight ×
rarity (BM25 idf over services) × match quality, each ticket word counting once per service,
raised for services that several words point to and normalised by the service's length. A
large catalogue scores exactly only a shortlist of the likeliest services. Then the answer:
the best service, unless the ticket is private, outside IT or about nothing in the catalogue,
with a calibrated confidence. Pure."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from connector.classify.calibration import (
    Features,
    calibrated,
    no_service_features,
    service_features,
)
from connector.classify.index import Hit, PhraseMatch
from connector.classify.intent import intent
from connector.classify.lookup import Lookup
from connector.classify.thesaurus import Concept, concept_label
from connector.classify.weights import (
    COORDINATION,
    MIN_SCORE,
    OUTSIDE_RATIO,
    PRIVATE_SHARE,
    QUALITY,
    SHORTLIST,
    SHORTLIST_ABOVE,
    SUBJECT_BOOST,
)
from connector.classify.words import TOKEN_STEPS, Token, ticket_tokens
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

    def change_intent(self, tokens: Sequence[Token]) -> tuple[float, tuple[str, ...]]:
        """Score of the change-intent groups that occur (each once) and the cues seen."""
        return intent(tokens, self.change_cues, self.keys)

    def private_intent(self, tokens: Sequence[Token]) -> tuple[float, tuple[str, ...]]:
        """Score of the private-matter groups that occur (each once) and the cues seen."""
        return intent(tokens, self.private_cues, self.keys)

    def candidates(
        self, tokens: Sequence[Token]
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """Every service with any evidence, best first: (score, service index), and hits."""
        scored, kept = self.scores(tokens)
        return sorted(scored, key=self.rank), kept

    def rank(self, item: tuple[float, int]) -> tuple[float, str]:
        """Sort key of a (score, service index): best first, equal scores by id."""
        return (-item[0], self.services[item[1]].id)

    def scores(
        self, tokens: Sequence[Token]
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """candidates(), unsorted. A large catalogue records thousands of hits per ticket,
        so this is the hot loop: per (service, term) the heaviest hit wins, the first on ties."""
        hits: dict[int, dict[str, Hit]] = defaultdict(dict)
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
            else:  # the shortlisted services' hits, in the order they were found
                found = self.picked_hits(token.text, chosen)
            for posting, how, word in found:
                weight = posting.weight * idf(posting.term, 1.0) * quality[how]
                if in_subject:
                    weight *= SUBJECT_BOOST
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
            if in_subject:
                weight *= SUBJECT_BOOST
            terms = hits[posting.service]
            current = terms.get(posting.term)
            if current is None or weight > current.weight:
                terms[posting.term] = Hit(weight, posting, "phrase", surface, in_subject)

        kept = {
            service: list(terms.values()) if len(terms) == 1 else one_term_per_word(terms)
            for service, terms in hits.items()
        }
        norm = self.norm
        return [(coordinated(kept[s]) / norm[s], s) for s in kept], kept

    def _shortlist(self, tokens: Sequence[Token], matches: list[PhraseMatch]) -> set[int]:
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
            (hit, weight), _, _, _ = self._grouped(text)
            services.append(hit)
            weights.append(weight * SUBJECT_BOOST if token.in_subject else weight)
        for start, key, groups in matches:
            boost = SUBJECT_BOOST if tokens[start].in_subject else 1.0
            for group in groups:
                hit, weight = self._pattern_vector(key, group)
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
        unsorted, kept = self.scores(tokens)
        known = self.known_words(tokens)
        if self.learned is not None:  # the organisation's own words: connector/learn.py
            unsorted, kept = self.learned.rescore(self, tokens, unsorted, kept)
        # Only the best two are used: the same two as candidates()' full sort (ids are unique).
        scored = heapq.nsmallest(2, unsorted, key=self.rank)
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

    def known_words(self, tokens: Sequence[Token]) -> int:
        """Distinct ticket words that are words of a catalogue language: a stopword or
        function word, or a word the catalogue or its thesaurus knows (itself or its stem).
        Typos and compounds do not count: "qwerty" is one edit from many words."""
        known: set[str] = set()
        postings, concept_postings = self.postings, self.concept_postings
        for token in tokens:
            word = token.text
            if word in known or len(word) < 2:
                continue
            if word in self.stopwords or any(
                key in postings or key in concept_postings for key in self.keys(word)
            ):
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
        unsorted, kept = self.outside.scores(tokens)
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


def coordinated(hits: list[Hit]) -> float:
    """Sum of the evidence, raised for services that several distinct words point to: a
    ticket about a printer says printer, paper and toner; a stray word says one thing."""
    return float(sum(h.weight for h in hits) * len(hits) ** COORDINATION)


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
