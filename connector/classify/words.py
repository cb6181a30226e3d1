"""Words: a ticket's tokens, the index keys of words and terms, and the tests a lookup
makes of a word (same word family, plausible typo, compound parts). Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from connector.classify.weights import BODY_END_WEIGHT
from connector.memo import SizedMemo
from connector.text import (
    MAX_SUBJECT_CHARS,
    MAX_WORD_LEN,
    Work,
    clean_text,
    fold,
    is_forward,
    language_data,
    stem,
    tokenize,
)

MIN_FUZZY_LEN = 5
FUZZY2_LEN = 11  # words this long may be two edits off
MIN_COMPOUND_LEN = 6
MIN_PART_LEN = 3
COMPOUNDING = frozenset({"nb", "nn", "no", "da", "sv", "de", "nl", "fi", "is"})
MIN_TAIL_LEN = 5
# Memory of the per-word memos (bytes, estimated: see memo_bytes) and their entries.
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
search_counter: ContextVar[list[int] | None] = ContextVar("_search_steps", default=None)


def spend_search(steps: int) -> None:
    counter = search_counter.get()
    if counter is not None:
        counter[0] += steps


def memo_bytes(word: str, items: int) -> int:
    """Rough memory of a memo entry: the word, and `items` hits or keys (~80 bytes each)."""
    return 100 + 2 * len(word) + 80 * items


@dataclass(frozen=True, slots=True)  # slots: made ~30 times per ticket, twice as fast
class Token:
    text: str
    position: int
    in_subject: bool
    # How much the word's evidence counts for where it sits in the body (1 in the subject,
    # which SUBJECT_BOOST weighs instead): see body_weights.
    weight: float = 1.0


def body_weights(count: int) -> list[float]:
    """The weights of a body's `count` words by place: 1 for the first, falling linearly to
    BODY_END_WEIGHT for the last. By word rather than by sentence: no punctuation to trust,
    and a long first sentence still weighs its start above its end."""
    if count < 2:
        return [1.0] * count
    step = (1.0 - BODY_END_WEIGHT) / (count - 1)
    return [1.0 - step * i for i in range(count)]


def ticket_tokens(subject: str, body: str, work: Work | None = None) -> list[Token]:
    subject = subject[:MAX_SUBJECT_CHARS]
    tokens = [Token(w, i, True) for i, w in enumerate(tokenize(fold(subject)))]
    offset = len(tokens) + 1
    text = clean_text(body, forwarded=is_forward(subject), work=work)
    if work is not None:
        work.spend(2 * len(subject) + len(text))  # the subject read twice, both tokenised
    body_words = tokenize(text)
    weights = body_weights(len(body_words))
    tokens += [Token(w, offset + i, False, weights[i]) for i, w in enumerate(body_words)]
    return tokens


def token_keys(
    tokens: Sequence[Token], keys_of: Callable[[str], frozenset[str]]
) -> list[frozenset[str]]:
    """The index keys of each token's word (keys_of: an index's Keys.keys): made once per
    ticket and shared by the passes that read them all (phrases, intents, known words),
    which each asked for them again."""
    return [keys_of(token.text) for token in tokens]


def by_second_word(patterns: Iterable[Sequence[frozenset[str]]]) -> dict[str, tuple[int, ...]]:
    """The patterns' positions by each key of their second word ("" for one-word patterns):
    patterns filed under a first word are then tested only when the next ticket word can
    continue them (phrase groups and intent cues)."""
    by_next: dict[str, list[int]] = defaultdict(list)
    for number, pattern in enumerate(patterns):
        for second in pattern[1] if len(pattern) > 1 else ("",):
            by_next[second].append(number)
    return {second: tuple(numbers) for second, numbers in by_next.items()}


def brackets(name: str) -> list[str]:
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


def strip_brackets(name: str) -> str:
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


def same_family(word: str, term: str) -> bool:
    """Whether two words that met on a short stem are forms of one word. Snowball cuts
    derivations too, "rettigheter" (rights) → "rett", where "rette" (to correct) also lands;
    inflections of one word share all but their last few letters ("rettighetene")."""
    prefix = 0
    for a, b in zip(word, term, strict=False):
        if a != b:
            break
        prefix += 1
    return prefix >= max(len(word), len(term)) - 4


def plausible_slip(word: str, candidate: str) -> bool:
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


def onset(word: str) -> str:
    """The letters before a word's first vowel."""
    for position, letter in enumerate(word):
        if letter in _VOWELS:
            return word[:position]
    return word


def deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


@dataclass(frozen=True, eq=False)
class Keys:
    """The index keys of words and of catalogue and thesaurus terms, memoised: building
    reads every thesaurus term once per concept and matching asks for a word's keys several
    times per ticket. Shared by the builder and the index it builds."""

    languages: tuple[str, ...]
    exact_only: frozenset[str] = frozenset()  # language data: terms not matched by stem
    memo: SizedMemo[str, frozenset[str]] = field(default_factory=lambda: SizedMemo(*KEYS_MEMO))
    _words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _canonical: dict[str, str] = field(default_factory=dict)
    _term_keys: dict[tuple[str, str | None], frozenset[str]] = field(default_factory=dict)
    _phrase_keys: dict[tuple[str, str | None], tuple[frozenset[str], ...]] = field(
        default_factory=dict
    )

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (a prebuilt index file) without the memos of building: they fill again
        # as words come, and unpickling their 100,000s of entries took a tenth of a restart.
        state = dict(self.__dict__)
        state.update(_words={}, _canonical={}, _term_keys={}, _phrase_keys={})
        return state

    def keys(self, word: str) -> frozenset[str]:
        """All index keys of one folded word: itself and its stem in each language."""
        if len(word) > MAX_WORD_LEN:
            return frozenset((word,))  # no word: its exact form only, see MAX_WORD_LEN
        found = self.memo.get(word)
        if found is None:
            found = frozenset([word, *(stem(word, lang) for lang in self.languages)])
            self.memo.put(word, found, memo_bytes(word, len(found)))
        return found

    def words(self, term: str) -> tuple[str, ...]:
        """tokenize(term), memoised (catalogue and thesaurus terms)."""
        words = self._words.get(term)
        if words is None:
            words = self._words[term] = tuple(tokenize(term))
        return words

    def cue_keys(self, term: str) -> tuple[frozenset[str], ...]:
        """The keys of each word of a cue phrase, as a ticket's words are keyed."""
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
        found = self._term_keys.get((word, lang))
        if found is None:
            found = self._term_keys[(word, lang)] = frozenset((word, stem(word, lang)))
        return found

    def phrase_keys(
        self, term: str, lang: str | None, words: tuple[str, ...]
    ) -> tuple[frozenset[str], ...]:
        """The term keys of each word of a multi-word term."""
        keys = self._phrase_keys.get((term, lang))
        if keys is None:
            keys = tuple(self.term_keys(w, lang) for w in words)
            self._phrase_keys[(term, lang)] = keys
        return keys

    def canonical(self, term: str) -> str:
        """A term as the index files it: its words' smallest keys, joined."""
        canonical = self._canonical.get(term)
        if canonical is None:
            canonical = " ".join(min(self.keys(w)) for w in self.words(term))
            self._canonical[term] = canonical
        return canonical
