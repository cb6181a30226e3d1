"""Learn the organisation's own evidence from tickets its agents sorted, and score with it.

Pure: tickets and a CatalogueIndex in, a LearnedModel out; a LearnedModel and an index in,
a scorer the classifier consults out. Reading and writing the YAML file is in learnfile.py.

What is learned, per service: the ticket words (as the classifier's index keys them: folded,
stemmed), adjacent word pairs and thesaurus concepts that the service's tickets use more
often than the other tickets do. Matching reuses the classifier's keys, so "skriveren" and
"skrivere" are one word, and at classification a learned word is also found as the tail of a
compound and one typo away, as catalogue terms are.

How much a term weighs: the share of the tickets with the term that belong to the service,
smoothed towards the share the service would get without the term (a Beta prior worth
PRIOR_STRENGTH tickets), as log-odds over that prior share, times support/(support +
SUPPORT_HALF). Two tickets that agree teach a word a little, twenty teach it fully, and a
word that every service's tickets use teaches nothing. A learned term is evidence like a
catalogue keyword: per ticket word and service the heavier of the catalogue's and the learned
evidence counts, so a handful of tickets adds to the catalogue but cannot outvote it.

It also learns which of the catalogue's own terms mislead in this organisation (_damping): a
term that made a service win tickets of other services is weighed down by a smoothed factor.
On the public sets this, more than the learned words, is what moved held-out accuracy.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as Mapping_
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.distance import OSA

from connector.catalogue import Catalogue
from connector.classify import (
    FUZZY2_LEN,
    MIN_COMPOUND_LEN,
    MIN_FUZZY_LEN,
    MIN_PART_LEN,
    MIN_SCORE,
    MIN_TAIL_LEN,
    QUALITY,
    SUBJECT_BOOST,
    CatalogueIndex,
    Concept,
    Hit,
    Posting,
    Token,
    deletions,
    plausible_slip,
    shipped_thesaurus,
    ticket_tokens,
)
from connector.events import Process, TicketEvent
from connector.mapping import Mapping

LEARNED_VERSION = 1
# The prior's worth, in tickets. With 4, an everyday word seen in 3 of a small service's 5
# tickets ("files", "webcam", "data") weighed more than a catalogue keyword and took held-out
# tickets from the services they belong to: 5-fold cross-validation lost 0.013-0.020 service
# accuracy on two of three labelled sets. With 10 (and MIN_PRECISION 0.75) no set loses and a
# word as precise as an unknown product name in three tickets still decides (test_learn.py).
PRIOR_STRENGTH = 10.0
# A term must be the organisation's (three tickets, not one writer's habit) and mostly the
# service's (three in four tickets with it are about the service): below these it decided
# more held-out tickets wrongly than rightly in cross-validation.
MIN_SUPPORT = 3
MIN_PRECISION = 0.75
SUPPORT_HALF = 3.0  # support at which a term has half its full weight
# Score units per nat of log-odds: a term seen in a handful of a service's tickets and
# rarely elsewhere then weighs about what a catalogue keyword does.
SCALE = 4.0
MAX_TERMS = 60  # per service in the file: the strongest; the rest are noise to a reviewer
MAX_EXAMPLES = 3
MIN_WORD_LEN = 3
NO_SERVICE = "-"  # tickets with no service: a class of their own when counting

Feature = tuple[str, str]  # (kind, term): ("word", key) | ("phrase", "k1 k2") | ("concept", id)


@dataclass(frozen=True)
class LabelledText:
    """One sorted ticket: what the learner needs of it."""

    ref: int | str  # row number (CSV) or decision id (audit): shown as an example
    subject: str
    body: str
    service: str | None
    process: str


@dataclass(frozen=True)
class LearnedTerm:
    term: str  # the index key (words), keys joined (phrases) or the concept id
    kind: str  # word | phrase | concept
    weight: float
    support: int  # tickets of the service (or process) with the term
    seen: int  # tickets with the term
    forms: tuple[str, ...] = ()  # ticket words it was seen as
    examples: tuple[int | str, ...] = ()


@dataclass(frozen=True)
class LearnedModel:
    """What `bpsm learn` writes: per service (and for change) its learned terms."""

    tickets: int = 0
    services: dict[str, tuple[LearnedTerm, ...]] = field(default_factory=dict)
    service_tickets: dict[str, int] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(self.services.values())


# ----- corrections --------------------------------------------------------------------------

INCOMING: tuple[Process, ...] = ("reactive", "relation", "change")


def correction_target(
    mapping: Mapping, queue: str, routed_service: str | None
) -> tuple[str, str | None] | None:
    """(process, service) an agent chose by putting a ticket in `queue`, or None when the
    queue is no BPSM queue. A service's own queue names the service; moving between reactive
    and change keeps the routed service; the relation queue does not say which (None)."""
    for service, service_queue in sorted(mapping.services.items()):
        if service_queue == queue:
            return "reactive", service
    for process in INCOMING:
        if mapping.queue_for(process) == queue:
            return process, routed_service if process != "relation" else None
    return None


def label_from_queue(
    queue: str | None,
    mapping: Mapping,
    label_map: Mapping_[str, tuple[str, str | None]],
) -> tuple[str, str | None] | None:
    """(process, service) a ticket's queue says, for `bpsm learn --from-host`: the label
    map's entry for it, else a BPSM queue of the mapping; None when the queue says nothing."""
    if queue is None:
        return None
    if queue in label_map:
        return label_map[queue]
    return correction_target(mapping, queue, None)


def service_correction(
    catalogue: Catalogue, routed_process: str, service: str
) -> tuple[str, str] | None:
    """(process, service) an agent chose by naming `service` in the helpdesk's own service
    field; None when the catalogue has no such service. The routed process stands where
    the service allows it (a change stays a change); an unsupported service is relation
    management's, and a ticket routed to relation with a supported service is reactive."""
    if not any(s.id == service for s in catalogue.services):
        return None
    if not catalogue.service(service).supported:
        return "relation", service
    return ("change" if routed_process == "change" else "reactive"), service


def label_ticket(
    event: TicketEvent,
    mapping: Mapping,
    label_map: Mapping_[str, tuple[str, str | None]],
    catalogue: Catalogue,
) -> tuple[str, str | None] | None:
    """(process, service) a ticket of the helpdesk's history says, for `bpsm learn
    --from-host`: the service its service field names (what an agent left there) with the
    process its queue says, else what its queue says (label_from_queue)."""
    by_queue = label_from_queue(event.queue, mapping, label_map)
    if event.service_label:
        process = by_queue[0] if by_queue else "reactive"
        labelled = service_correction(catalogue, process, event.service_label)
        if labelled is not None:
            return labelled
    return by_queue


def from_corrections(rows: Iterable[Mapping_[str, Any]]) -> list[LabelledText]:
    """Labelled tickets from the audit log's corrections (Store.corrections_with_text: the
    review page's and agents' queue moves): the service a person chose, the text of the
    ticket's first event. A move to the relation queue names no
    service, so it teaches no service's words; the latest correction of a ticket counts."""
    latest: dict[tuple[str, str], Mapping_[str, Any]] = {}
    for row in rows:
        latest[(str(row["host"]), str(row["ticket_id"]))] = row
    out = []
    for (host, ticket), row in latest.items():
        if row["to_service"] is None:
            continue
        event = TicketEvent.model_validate_json(row["event"])
        out.append(
            LabelledText(
                f"{host}#{ticket}", event.subject, event.body, row["to_service"], row["to_process"]
            )
        )
    return out


# ----- features -----------------------------------------------------------------------------


def concept_keys(index: CatalogueIndex, concepts: Iterable[Concept]) -> dict[str, set[str]]:
    """Index key → the IT concepts whose one-word terms have that key."""
    out: dict[str, set[str]] = defaultdict(set)
    for concept in concepts:
        if concept.scope != "it":
            continue
        for lang, terms in concept.terms.items():
            for term in terms:
                words = index.term_words(term)
                if len(words) == 1 and words[0] not in index.stopwords:
                    for key in index.term_keys(words[0], lang):
                        out[key].add(concept.id)
    return out


def _content(index: CatalogueIndex, token: Token) -> bool:
    text = token.text
    return len(text) >= MIN_WORD_LEN and text not in index.stopwords and not text.isdigit()


def _canonical(index: CatalogueIndex, word: str) -> str:
    return min(index.keys(word))


def ticket_features(
    index: CatalogueIndex, tokens: Sequence[Token], concepts: dict[str, set[str]]
) -> dict[Feature, str]:
    """The learnable features of a ticket, each with the ticket word it was seen as."""
    found: dict[Feature, str] = {}
    previous: Token | None = None
    for token in tokens:
        if not _content(index, token):
            previous = None
            continue
        keys = index.keys(token.text)
        found.setdefault(("word", min(keys)), token.text)
        for key in keys:
            for concept in concepts.get(key, ()):
                found.setdefault(("concept", concept), token.text)
        if previous is not None and previous.in_subject == token.in_subject:
            pair = f"{_canonical(index, previous.text)} {min(keys)}"
            found.setdefault(("phrase", pair), f"{previous.text} {token.text}")
        previous = token
    return found


# ----- learning -----------------------------------------------------------------------------


def learn(
    index: CatalogueIndex,
    tickets: Sequence[LabelledText],
    concepts: Sequence[Concept] | None = None,
    sources: Sequence[str] = (),
) -> LearnedModel:
    """Count each feature's tickets per service and weigh it (see the module docstring)."""
    concept_map = concept_keys(index, shipped_thesaurus() if concepts is None else concepts)
    known = {s.id for s in index.services}
    per_ticket: list[tuple[str, dict[Feature, str]]] = []
    for ticket in tickets:
        label = ticket.service if ticket.service in known else NO_SERVICE
        tokens = ticket_tokens(ticket.subject, ticket.body)
        per_ticket.append((label, ticket_features(index, tokens, concept_map)))
    classes = Counter(label for label, _ in per_ticket)
    total = len(per_ticket)
    seen: Counter[Feature] = Counter()
    support: dict[Feature, Counter[str]] = defaultdict(Counter)
    forms: dict[Feature, Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[Feature, str], list[int | str]] = defaultdict(list)
    for (label, features), ticket in zip(per_ticket, tickets, strict=True):
        for feature, form in features.items():
            seen[feature] += 1
            support[feature][label] += 1
            forms[feature][form] += 1
            refs = examples[(feature, label)]
            if len(refs) < MAX_EXAMPLES:
                refs.append(ticket.ref)
    # Prior share of each class: its share of the tickets, smoothed (a class seen once is
    # not certain to be rare).
    prior = {c: (n + 1) / (total + len(classes)) for c, n in classes.items()}
    by_service: dict[str, list[LearnedTerm]] = defaultdict(list)
    for feature, counts in support.items():
        for label, n in counts.items():
            if label == NO_SERVICE or n < MIN_SUPPORT:
                continue
            if n / seen[feature] < MIN_PRECISION:
                continue
            weight = term_weight(n, seen[feature], prior[label])
            if weight <= 0:
                continue
            kind, term = feature
            by_service[label].append(
                LearnedTerm(
                    term=term,
                    kind=kind,
                    weight=round(weight, 3),
                    support=n,
                    seen=seen[feature],
                    forms=tuple(f for f, _ in forms[feature].most_common(4)),
                    examples=tuple(examples[(feature, label)]),
                )
            )
    if DAMP_PRIOR > 0:
        for service, damped in _damping(index, tickets).items():
            by_service[service] += damped
    services = {
        service: tuple(sorted(terms, key=lambda t: (-t.weight, t.kind, t.term))[:MAX_TERMS])
        for service, terms in sorted(by_service.items())
        if terms
    }
    return LearnedModel(
        tickets=total,
        services=services,
        service_tickets={s: classes[s] for s in services},
        sources=tuple(sources),
    )


DAMP_PRIOR = 3.0  # tickets' worth of trust in the catalogue's own terms
MIN_WRONG = 2


def _damping(
    index: CatalogueIndex, tickets: Sequence[LabelledText]
) -> dict[str, list[LearnedTerm]]:
    """How far the catalogue's own terms can be trusted in this organisation's tickets: per
    (service, term), the tickets of the service the term hit (c) against the tickets it
    helped the service win (w), each smoothed by DAMP_PRIOR tickets' worth of trust in the
    catalogue: factor (c + prior) / (w + prior), kept when the term won MIN_WRONG more
    tickets than were the service's. (Raising terms whose service loses its own tickets
    was tried too: it changed no held-out figure.)"""
    right: Counter[tuple[str, str]] = Counter()
    won: Counter[tuple[str, str]] = Counter()
    surface: dict[tuple[str, str], str] = {}
    examples: dict[tuple[str, str], list[int | str]] = defaultdict(list)
    plain = index.with_learned(None)
    numbers = {s.id: n for n, s in enumerate(index.services)}
    for ticket in tickets:
        match = plain.classify(ticket.body, ticket.subject)
        _, kept = plain.scores(ticket_tokens(ticket.subject, ticket.body))
        for service, counter in ((ticket.service, right), (match.service, won)):
            if service is None or service not in numbers:
                continue
            for hit in kept.get(numbers[service], []):
                key = (service, hit.posting.term)
                counter[key] += 1
                surface.setdefault(key, hit.posting.surface)
                if ticket.service != match.service and len(examples[key]) < MAX_EXAMPLES:
                    examples[key].append(ticket.ref)
    out: dict[str, list[LearnedTerm]] = defaultdict(list)
    for key in sorted(set(right) | set(won)):
        c, w = right[key], won[key]
        if w - c < MIN_WRONG:
            continue
        factor = (c + DAMP_PRIOR) / (w + DAMP_PRIOR)
        out[key[0]].append(
            LearnedTerm(
                term=key[1],
                kind="catalogue",
                weight=round(factor, 3),
                support=c,
                seen=w,
                forms=(surface[key],),
                examples=tuple(examples[key]),
            )
        )
    return out


def term_weight(support: int, seen: int, prior: float) -> float:
    """Log-odds of the smoothed share over the prior share, times the support factor."""
    share = (support + PRIOR_STRENGTH * prior) / (seen + PRIOR_STRENGTH)
    lift = math.log(share / prior)
    return SCALE * lift * support / (support + SUPPORT_HALF)


def _surface(term: LearnedTerm) -> str:
    """How evidence names a learned term: a word or phrase as tickets wrote it, a concept by
    its id (its forms are other words: "find" matched the concept, not "macbook")."""
    if term.kind == "concept" or not term.forms:
        return term.term
    return term.forms[0]


# ----- scoring ------------------------------------------------------------------------------


@dataclass
class LearnedScorer:
    """A LearnedModel compiled against one index: what classify() consults per ticket."""

    model: LearnedModel
    # feature → (service number, term) of each service that learned it
    terms: dict[Feature, list[tuple[int, LearnedTerm]]] = field(default_factory=dict)
    word_keys: dict[str, set[str]] = field(default_factory=dict)  # key → learned word terms
    concepts: dict[str, set[str]] = field(default_factory=dict)
    deletes: dict[str, set[str]] = field(default_factory=dict)  # for typos of learned forms
    form_terms: dict[str, set[str]] = field(default_factory=dict)  # form → its word terms
    # (service number, catalogue term) → factor on its weight (see _damping)
    damp: dict[tuple[int, str], float] = field(default_factory=dict)
    _word_cache: dict[str, tuple[tuple[Feature, str], ...]] = field(default_factory=dict)

    @classmethod
    def compile(
        cls,
        index: CatalogueIndex,
        model: LearnedModel,
        concepts: Sequence[Concept] | None = None,
    ) -> LearnedScorer:
        numbers = {s.id: n for n, s in enumerate(index.services)}
        scorer = cls(model)
        wanted: set[str] = set()
        for service, learned in model.services.items():
            if service not in numbers:
                continue  # a service since removed from the catalogue
            for term in learned:
                if term.kind == "catalogue":
                    scorer.damp[(numbers[service], term.term)] = term.weight
                    continue
                if term.weight <= 0:
                    continue
                feature = (term.kind, term.term)
                scorer.terms.setdefault(feature, []).append((numbers[service], term))
                if term.kind == "word":
                    for form in (term.term, *term.forms):
                        for key in index.keys(form):
                            scorer.word_keys.setdefault(key, set()).add(term.term)
                        scorer.form_terms.setdefault(form, set()).add(term.term)
                        if len(form) >= MIN_FUZZY_LEN:
                            for variant in (form, *deletions(form)):
                                scorer.deletes.setdefault(variant, set()).add(form)
                elif term.kind == "concept":
                    wanted.add(term.term)
                elif term.kind == "catalogue":
                    scorer.damp[(numbers[service], term.term)] = term.weight
                    continue
        if wanted:
            chosen = shipped_thesaurus() if concepts is None else concepts
            scorer.concepts = concept_keys(index, [c for c in chosen if c.id in wanted])
        return scorer

    def _word_features(self, index: CatalogueIndex, word: str) -> tuple[tuple[Feature, str], ...]:
        """(feature, how) of one ticket word: its keys, else a compound's tail, else a typo."""
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        keys = index.keys(word)
        found: list[tuple[Feature, str]] = []
        direct = sorted({t for k in keys for t in self.word_keys.get(k, ())})
        found += [(("word", t), "exact" if t == min(keys) else "stem") for t in direct]
        if not direct and len(word) >= MIN_COMPOUND_LEN:
            found += [(("word", t), "compound") for t in self._compound(index, word)]
        if not direct and not found and len(word) >= MIN_FUZZY_LEN and not word.isdigit():
            found += [(("word", t), "fuzzy") for t in self._fuzzy(word)]
        for key in sorted(keys):
            found += [(("concept", c), "stem") for c in sorted(self.concepts.get(key, ()))]
        if len(self._word_cache) > 100_000:
            self._word_cache.clear()
        result = self._word_cache[word] = tuple(dict.fromkeys(found))
        return result

    def _compound(self, index: CatalogueIndex, word: str) -> list[str]:
        """Learned words that are the tail of the word ("eksamens|portalen")."""
        for cut in range(MIN_PART_LEN, len(word) - MIN_TAIL_LEN + 1):
            tail = word[cut:]
            hits = sorted({t for k in index.keys(tail) for t in self.word_keys.get(k, ())})
            if hits:
                return hits
        return []

    def _fuzzy(self, word: str) -> list[str]:
        limit = 2 if len(word) >= FUZZY2_LEN else 1
        candidates = set(self.deletes.get(word, ()))
        for variant in deletions(word):
            candidates |= self.deletes.get(variant, set())
        out: set[str] = set()
        for form in sorted(candidates):
            if (
                form[0] == word[0]
                and OSA.distance(word, form, score_cutoff=limit) <= limit
                and plausible_slip(word, form)
            ):
                out |= self.form_terms.get(form, set())
        return sorted(out)

    def hits(self, index: CatalogueIndex, tokens: Sequence[Token]) -> dict[int, dict[str, Hit]]:
        """Per service, per ticket word (or word pair), its heaviest learned hit."""
        out: dict[int, dict[str, Hit]] = defaultdict(dict)
        seen: set[tuple[str, bool]] = set()
        previous: Token | None = None
        for token in tokens:
            if not _content(index, token):
                previous = None
                continue
            matched: list[tuple[Feature, str, str]] = []
            if (token.text, token.in_subject) not in seen:
                seen.add((token.text, token.in_subject))
                matched += [
                    (f, how, token.text) for f, how in self._word_features(index, token.text)
                ]
            if previous is not None and previous.in_subject == token.in_subject:
                pair = f"{_canonical(index, previous.text)} {_canonical(index, token.text)}"
                matched.append((("phrase", pair), "phrase", f"{previous.text} {token.text}"))
            previous = token
            for feature, how, word in matched:
                for service, term in self.terms.get(feature, ()):
                    weight = term.weight * QUALITY[how]
                    if token.in_subject:
                        weight *= SUBJECT_BOOST
                    current = out[service].get(word)
                    if current is None or weight > current.weight:
                        posting = Posting(
                            service,
                            f"learned:{term.kind}:{term.term}",
                            _surface(term),
                            f"learned:{term.support}",
                            term.weight,
                        )
                        out[service][word] = Hit(weight, posting, how, word, token.in_subject)
        return out

    def rescore(
        self,
        index: CatalogueIndex,
        tokens: Sequence[Token],
        unsorted: list[tuple[float, int]],
        kept: dict[int, list[Hit]],
    ) -> tuple[list[tuple[float, int]], dict[int, list[Hit]]]:
        """The scores with learned evidence: per service and ticket word, the heavier of the
        catalogue's hit and the learned one; learned words the catalogue has no hit for join
        the service's evidence and its coordination, as a matched keyword would."""
        learned = self.hits(index, tokens)
        if not learned and not self.damp:
            return unsorted, kept
        kept = dict(kept)
        changed_any = False
        if self.damp:
            damp = self.damp
            for service, hits in list(kept.items()):
                if any((service, h.posting.term) in damp for h in hits):
                    hits = [
                        h
                        if (service, h.posting.term) not in damp
                        else Hit(
                            h.weight * damp[(service, h.posting.term)],
                            h.posting,
                            h.how,
                            h.word,
                            h.in_subject,
                        )
                        for h in hits
                    ]
                    kept[service] = hits
                    changed_any = True
        for service, by_word in learned.items():
            base = kept.get(service, [])
            own = {hit.word: i for i, hit in enumerate(base)}
            merged = list(base)
            changed = False
            for word, hit in by_word.items():
                at = own.get(word)
                if at is None:
                    merged.append(hit)
                    changed = True
                elif hit.weight > merged[at].weight:
                    merged[at] = hit
                    changed = True
            if changed:
                kept[service] = merged
                changed_any = True
        # Scored again from the hits, so that carrier words weigh as in classify (score.py
        # carried()): a learned word may be the rival's evidence that discounts them.
        rescored = index.scored(kept) if changed_any else list(unsorted)
        before = max((score for score, _ in unsorted), default=0.0)
        if before >= MIN_SCORE and rescored:
            # Damping says which service a catalogue word points to, not that the ticket is
            # about nothing in the catalogue: the winner keeps the evidence of an IT matter
            # (as a private matter's unsupported service does in classify).
            score, service = min(rescored, key=index.rank)
            if score < MIN_SCORE:
                rescored = [(s, n) for s, n in rescored if n != service] + [(MIN_SCORE, service)]
        return rescored, kept
