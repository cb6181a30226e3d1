"""Confidence: the features of a match and the calibrated probability that it is right."""

from __future__ import annotations

import math
from collections.abc import Sequence

from connector.classify.index import Hit

# The features a confidence is calibrated from: the kind of answer ("service" or "none")
# and its numbers (see service_features and no_service_features).
Features = tuple[str, tuple[float, ...]]

# Confidence is the probability that the answer is right: a logistic model of a few features
# of the match, one per kind of answer, fitted on the labelled tickets of tests/data/tickets.csv
# (and no other) by `scripts/fit_calibration.py tests/data/tickets.csv --partial 2`, which
# prints this table: with the whole thesaurus, and with each half of it, so that it also
# knows what evidence is worth on a catalogue the thesaurus covers less well.
CALIBRATION: dict[str, tuple[float, ...]] = {
    "service": (-1.8361, 1.0497, 1.7371, -0.2368, -0.8454, 0.7405, -0.3217),
    "none": (0.0396, -0.6785, 2.202, 0.0),
}


def service_features(
    scored: Sequence[tuple[float, int]], hits: Sequence[Hit], content: int, private: bool
) -> Features:
    """Of a match to a service: its score and margin over the runner-up, how many distinct
    ticket words point to it, how much of its evidence is the catalogue's own text rather
    than the thesaurus, what share of the ticket's words it explains, and whether the
    private-matter cues chose it."""
    top = scored[0][0]
    second = scored[1][0] if len(scored) > 1 else 0.0
    total = sum(h.weight for h in hits) or 1.0
    own = sum(h.weight for h in hits if not h.posting.source.startswith("thesaurus"))
    words = len({h.word for h in hits})
    return "service", (
        math.log1p(top),
        (top - second) / top if top > 0 else 0.0,
        math.log(max(words, 1)),
        own / total,
        min(1.0, words / max(content, 1)),
        1.0 if private else 0.0,
    )


def no_service_features(
    scored: Sequence[tuple[float, int]], outside: bool, private: bool
) -> Features:
    """Of an answer that no service fits: the best service's score (how near it came), and
    whether a matter outside IT or the private-matter cues decided it."""
    top = scored[0][0] if scored else 0.0
    return "none", (math.log1p(top), 1.0 if outside else 0.0, 1.0 if private else 0.0)


def calibrated(features: Features) -> float:
    """The probability that the answer is right, by the CALIBRATION model of its kind."""
    kind, values = features
    bias, *weights = CALIBRATION[kind]
    z = bias + sum(w * v for w, v in zip(weights, values, strict=True))
    return round(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))), 4)
