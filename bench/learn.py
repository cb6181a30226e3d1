"""Learning benchmark: k-fold cross-validation of `bpsm learn` and the cost of a learned file.

    .venv/bin/python bench/learn.py DATA.csv --catalogue CATALOGUE.yaml [--folds 5] [--json]

Accuracy: learn on k-1 folds, evaluate on the rest, beside the zero-shot figures of the same
folds (the same as `bpsm evaluate DATA.csv --cv 5`), with the learning curve.

Cost: every ticket classified with and without a file learned from all the tickets,
interleaved ticket by ticket (warm caches, as in a worker), best of `--repeat` rounds; the
ratio learned / without is what the issue bounds (1.2×). Learning time is printed too.

The cross-validation also prints the headroom (connector/crossval.py `headroom`): of the
zero-shot errors, those whose ticket has a word, word pair or concept that training tickets
of its own service share — what any learner of the organisation's words could fix at most.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.catalogue import load_catalogue  # noqa: E402
from connector.classify import build_index  # noqa: E402
from connector.crossval import as_learning, cross_validate, format_cv  # noqa: E402
from connector.evaluate import read_labelled  # noqa: E402
from connector.learn import LearnedScorer, learn  # noqa: E402
from connector.mapping import Mapping  # noqa: E402


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
        print(json.dumps({"cv": result, "cost": cost}))
        return
    print(format_cv(result))
    print(
        f"\nlearning from {len(tickets)} tickets: {cost['learn_seconds']:.2f} s; classification "
        f"{cost['ms_per_ticket']:.2f} ms → {cost['ms_per_ticket_learned']:.2f} ms per ticket "
        f"with the learned file ({cost['ratio']:.2f}×)"
    )


if __name__ == "__main__":
    main()
