"""What a ticket asks beside its service: a change (cue phrases of signal groups), a private
matter, or a matter outside IT that outweighs every service. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connector.catalogue import Catalogue
from connector.classify.words import Keys, by_second_word
from connector.text import language_data


@dataclass
class IntentCues:
    """Cue phrases of signal groups, indexed by their first word's keys."""

    threshold: float = 2.0
    cues: dict[str, list[tuple[tuple[frozenset[str], ...], str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    groups: list[tuple[str, float]] = field(default_factory=list)  # (name, weight)
    # The keys of cues: a ticket word none of whose keys is here starts no cue.
    starts: frozenset[str] = frozenset()
    # cues[key] by a key of the cue's second word: positions in cues[key], ascending
    # (one-word cues under ""). A common first word ("my", "for": dozens of cues) then
    # tests only the cues its successor fits.
    following: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)


def build_cues(catalogue: Catalogue, keys: Keys) -> tuple[IntentCues, IntentCues]:
    """Change-intent signal groups (language data + the catalogue's change_cues), and the
    private-matter groups."""
    data = language_data()
    explicit: dict[str, list[str]] = defaultdict(list)
    for source in (data.change_cues, catalogue.change_cues):
        for lang, cues in source.items():
            explicit[lang] += cues
    change = data.change_intent
    change_cues = intent_cues(
        keys, change.threshold, [("explicit", change.explicit_weight, explicit), *change.signals]
    )
    private_cues = intent_cues(
        keys, data.private_intent.threshold, list(data.private_intent.signals)
    )
    return change_cues, private_cues


def intent_cues(
    keys: Keys, threshold: float, groups: list[tuple[str, float, Mapping[str, Sequence[str]]]]
) -> IntentCues:
    table = IntentCues(threshold=threshold)
    for group, (name, weight, phrases) in enumerate(groups):
        table.groups.append((name, weight))
        for cue in (c for cues in phrases.values() for c in cues):
            cue_keys = keys.cue_keys(cue)
            for key in cue_keys[0] if cue_keys else ():
                table.cues[key].append((cue_keys, cue, group))
    table.starts = frozenset(table.cues)
    for key, entries in table.cues.items():
        table.following[key] = by_second_word(cue_keys for cue_keys, _, _ in entries)
    return table


def intent(word_keys: Sequence[frozenset[str]], table: IntentCues) -> tuple[float, tuple[str, ...]]:
    """Score of the signal groups that occur (each once) and the cues seen, in a ticket whose
    words have the index keys `word_keys` (one set per token, see token_keys)."""
    groups: dict[int, str] = {}
    cues, starts, following = table.cues, table.starts, table.following
    count = len(word_keys)
    for i, keys in enumerate(word_keys):
        if keys.isdisjoint(starts):  # most words start no cue
            continue
        for key in sorted(keys & starts):  # set order varies per process; the first is named
            by_next = following[key]
            numbers: Sequence[int] = by_next.get("", ())  # ascending: in the cues' order
            if i + 1 < count:
                more = [by_next[second] for second in word_keys[i + 1] if second in by_next]
                if more:
                    numbers = sorted(set(numbers).union(*more))
            entries = cues[key]
            for number in numbers:
                cue_keys, cue, group = entries[number]
                n = len(cue_keys)
                if (
                    group not in groups
                    and i + n <= count
                    and all(not word_keys[i + j].isdisjoint(cue_keys[j]) for j in range(2, n))
                ):
                    groups[group] = cue
    score = sum(table.groups[g][1] for g in groups)
    positive = tuple(cue for g, cue in sorted(groups.items()) if table.groups[g][1] > 0)
    return round(score, 3), positive
