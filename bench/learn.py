"""Learning benchmark: k-fold cross-validation of `bpsm learn` and the cost of a learned file.

    .venv/bin/python bench/learn.py DATA.csv --catalogue CATALOGUE.yaml [--folds 5] [--json]

Accuracy: learn on k-1 folds, evaluate on the rest, beside the zero-shot figures of the same
folds (the same as `bpsm evaluate DATA.csv --cv 5`), with the learning curve.

Cost: every ticket classified with and without a file learned from all the tickets,
interleaved ticket by ticket (warm caches, as in a worker), best of `--repeat` rounds; the
ratio learned / without is what the issue bounds (1.2×). Learning time is printed too.

Headroom: of the zero-shot errors of each fold, how many tickets hold any feature the learner
can learn (a word, word pair or thesaurus concept, keyed as the classifier keys them) that at
least SUPPORT of the training folds' tickets of the ticket's own service have, in at least
PRECISION of the training tickets that have it. Those are the errors any learner of the
organisation's words could fix; the others hold nothing the sorted tickets taught.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.catalogue import load_catalogue  # noqa: E402
from connector.classify import (  # noqa: E402
    CatalogueIndex,
    build_index,
    shipped_thesaurus,
    ticket_tokens,
)
from connector.crossval import as_learning, cross_validate, folds, format_cv  # noqa: E402
from connector.evaluate import LabelledTicket, read_labelled  # noqa: E402
from connector.learn import LearnedScorer, concept_keys, learn, ticket_features  # noqa: E402
from connector.mapping import Mapping  # noqa: E402

SUPPORTS = (1, 2, 3)
PRECISION = 0.5


def headroom(tickets: list[LabelledTicket], index: CatalogueIndex, k: int) -> dict[str, Any]:
    """Zero-shot errors, and per minimum support those with a learnable feature (above)."""
    concepts = concept_keys(index, shipped_thesaurus())
    features = [
        set(ticket_features(index, ticket_tokens(t.subject, t.body), concepts)) for t in tickets
    ]
    wrong = [index.classify(t.body, t.subject).service != t.service for t in tickets]
    errors, learnable = 0, dict.fromkeys(SUPPORTS, 0)
    for test in folds(tickets, k):
        held = set(test)
        seen: dict[object, int] = {}
        by_service: dict[tuple[object, str | None], int] = {}
        for position, ticket in enumerate(tickets):
            if position in held:
                continue
            for feature in features[position]:
                seen[feature] = seen.get(feature, 0) + 1
                key = (feature, ticket.service)
                by_service[key] = by_service.get(key, 0) + 1
        for position in test:
            if not wrong[position]:
                continue
            errors += 1
            service = tickets[position].service
            for support in SUPPORTS:
                if any(
                    by_service.get((f, service), 0) >= support
                    and by_service[(f, service)] / seen[f] >= PRECISION
                    for f in features[position]
                ):
                    learnable[support] += 1
    return {"tickets": len(tickets), "errors": errors, "learnable": learnable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--catalogue", default=str(ROOT / "catalogue.yaml"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    index = build_index(load_catalogue(args.catalogue))
    tickets = read_labelled(args.data, index.catalogue)
    result = cross_validate(tickets, index, Mapping(), k=args.folds)
    room = headroom(tickets, index, args.folds)
    start = time.perf_counter()
    model = learn(index, as_learning(tickets))
    learn_seconds = time.perf_counter() - start
    learned = index.with_learned(LearnedScorer.compile(index, model))
    for t in tickets:  # warm both: the per-word caches are shared
        learned.classify(t.body, t.subject)
    plain_total, learned_total = float("inf"), float("inf")
    for _ in range(args.repeat):
        plain, with_learned = 0.0, 0.0
        for t in tickets:
            start = time.perf_counter()
            index.classify(t.body, t.subject)
            middle = time.perf_counter()
            learned.classify(t.body, t.subject)
            plain += middle - start
            with_learned += time.perf_counter() - middle
        plain_total, learned_total = min(plain_total, plain), min(learned_total, with_learned)
    cost = {
        "learn_seconds": round(learn_seconds, 3),
        "ms_per_ticket": round(1000 * plain_total / len(tickets), 3),
        "ms_per_ticket_learned": round(1000 * learned_total / len(tickets), 3),
        "ratio": round(learned_total / plain_total, 3),
    }
    if args.json:
        print(json.dumps({"cv": result, "cost": cost, "headroom": room}))
        return
    print(format_cv(result))
    print(
        f"\nlearning from {len(tickets)} tickets: {cost['learn_seconds']:.2f} s; classification "
        f"{cost['ms_per_ticket']:.2f} ms → {cost['ms_per_ticket_learned']:.2f} ms per ticket "
        f"with the learned file ({cost['ratio']:.2f}×)"
    )
    n = room["tickets"]
    print(f"\nheadroom: {room['errors']} zero-shot errors over the folds; with a learnable feature")
    for support, count in room["learnable"].items():
        print(
            f"  seen in ≥ {support} training ticket(s) of the right service, precision "
            f"≥ {PRECISION:.0%}: {count} (at most +{count / n:.3f} service accuracy)"
        )


if __name__ == "__main__":
    main()
