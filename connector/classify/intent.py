"""What a ticket asks beside its service: a change (cue phrases of signal groups), a private
matter, or a matter outside IT that outweighs every service. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from connector.catalogue import Catalogue
from connector.classify.words import Keys, Token
from connector.text import language_data


@dataclass
class IntentCues:
    """Cue phrases of signal groups, indexed by their first word's keys."""

    threshold: float = 2.0
    cues: dict[str, list[tuple[tuple[frozenset[str], ...], str, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    groups: list[tuple[str, float]] = field(default_factory=list)  # (name, weight)


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
    return table


def intent(
    tokens: Sequence[Token], table: IntentCues, keys_of: Callable[[str], frozenset[str]]
) -> tuple[float, tuple[str, ...]]:
    """Score of the signal groups that occur (each once) and the cues seen."""
    groups: dict[int, str] = {}
    words = [t.text for t in tokens]
    keys = [keys_of(w) for w in words]
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
