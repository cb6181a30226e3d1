"""k-fold cross-validation of learning: learn on k-1 folds, evaluate on the rest, beside the
zero-shot figures of the same folds, plus a learning curve. Pure (no I/O)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from connector.classify import CatalogueIndex, shipped_thesaurus, ticket_tokens
from connector.evaluate import LabelledTicket, evaluate, summarise
from connector.learn import LabelledText, LearnedScorer, concept_keys, learn, ticket_features
from connector.mapping import Mapping

SEED = 19
CURVE = (0.10, 0.25, 0.50, 1.00)
FIGURES = ("service_accuracy", "process_accuracy", "process_macro_f1")
# Headroom: a feature is the service's in the training folds when at least this many of its
# tickets have it, and at least this share of the training tickets with it are the service's.
HEADROOM_SUPPORTS = (1, 2, 3)
HEADROOM_PRECISION = 0.5


def folds(tickets: Sequence[LabelledTicket], k: int, seed: int = SEED) -> list[list[int]]:
    """Ticket positions in k folds, stratified by service: each service's tickets, shuffled
    with a fixed seed, are dealt round the folds, continuing where the last service ended."""
    by_service: dict[str, list[int]] = defaultdict(list)
    for position, ticket in enumerate(tickets):
        by_service[ticket.service or "-"].append(position)
    rng = random.Random(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    turn = 0
    for service in sorted(by_service):
        members = by_service[service]
        rng.shuffle(members)
        for position in members:
            out[turn % k].append(position)
            turn += 1
    return [sorted(fold) for fold in out]


def subsample(
    tickets: Sequence[LabelledTicket], positions: Sequence[int], share: float, seed: int = SEED
) -> list[int]:
    """About `share` of the positions, stratified by service (at least one per service)."""
    if share >= 1.0:
        return list(positions)
    by_service: dict[str, list[int]] = defaultdict(list)
    for position in positions:
        by_service[tickets[position].service or "-"].append(position)
    rng = random.Random(seed)
    chosen: list[int] = []
    for service in sorted(by_service):
        members = list(by_service[service])
        rng.shuffle(members)
        chosen += members[: max(1, round(len(members) * share))]
    return sorted(chosen)


def as_learning(tickets: Sequence[LabelledTicket]) -> list[LabelledText]:
    return [LabelledText(t.line, t.subject, t.body, t.service, t.process) for t in tickets]


def cross_validate(
    tickets: Sequence[LabelledTicket],
    index: CatalogueIndex,
    mapping: Mapping,
    k: int = 5,
    curve: Sequence[float] = CURVE,
    seed: int = SEED,
) -> dict[str, Any]:
    """Per fold and on average: zero-shot and learned figures, and the learning curve."""
    base = index.with_learned(None)
    zero = evaluate(list(tickets), base, mapping)["predictions"]
    right = [p["service"] == t.service for p, t in zip(zero, tickets, strict=True)]
    threshold = mapping.confidence_threshold
    rows: list[dict[str, Any]] = []
    for number, test in enumerate(folds(tickets, k, seed)):
        held = set(test)
        train = [p for p in range(len(tickets)) if p not in held]
        test_tickets = [tickets[p] for p in test]
        row: dict[str, Any] = {
            "fold": number + 1,
            "train": len(train),
            "test": len(test),
            "zero_shot": _figures(summarise(test_tickets, [zero[p] for p in test], threshold)),
            "curve": {},
        }
        for share in curve:
            chosen = subsample(tickets, train, share, seed)
            model = learn(base, as_learning([tickets[p] for p in chosen]))
            learned = base.with_learned(LearnedScorer.compile(base, model))
            figures = _figures(evaluate(test_tickets, learned, mapping))
            row["curve"][f"{share:.2f}"] = {"train": len(chosen), **figures}
        row["learned"] = row["curve"][f"{curve[-1]:.2f}"]
        rows.append(row)
    return {
        "k": k,
        "seed": seed,
        "n": len(tickets),
        "folds": rows,
        "mean": _means(rows, curve),
        "headroom": headroom(tickets, base, right, k, seed),
    }


def headroom(
    tickets: Sequence[LabelledTicket],
    index: CatalogueIndex,
    right: Sequence[bool],
    k: int,
    seed: int = SEED,
) -> dict[str, Any]:
    """What learning could fix at most: of each fold's zero-shot errors (`right`: the
    zero-shot answer of each ticket was its service), those whose ticket has a feature the
    learner can learn (a word, word pair or thesaurus concept, keyed as the classifier keys
    them) that the training folds' tickets of the ticket's own service have, per minimum
    number of such tickets (HEADROOM_SUPPORTS). An error with none holds nothing the sorted
    tickets taught, whatever the learner."""
    concepts = concept_keys(index, shipped_thesaurus())
    features = [
        set(ticket_features(index, ticket_tokens(t.subject, t.body), concepts)) for t in tickets
    ]
    learnable = dict.fromkeys(HEADROOM_SUPPORTS, 0)
    for test in folds(tickets, k, seed):
        held = set(test)
        seen: Counter[Any] = Counter()
        of_service: Counter[tuple[Any, str | None]] = Counter()
        for position, ticket in enumerate(tickets):
            if position not in held:
                seen.update(features[position])
                of_service.update((f, ticket.service) for f in features[position])
        for position in test:
            if right[position]:
                continue
            service = tickets[position].service
            best = max(
                (
                    of_service[(f, service)]
                    for f in features[position]
                    if of_service[(f, service)] >= HEADROOM_PRECISION * seen[f]
                ),
                default=0,
            )
            for support in HEADROOM_SUPPORTS:
                learnable[support] += best >= support
    return {"errors": sum(not r for r in right), "learnable": learnable}


def _figures(result: dict[str, Any]) -> dict[str, float]:
    return {name: float(result[name]) for name in FIGURES}


def _means(rows: list[dict[str, Any]], curve: Sequence[float]) -> dict[str, Any]:
    def mean(get: Any) -> dict[str, float]:
        return {name: round(sum(get(r)[name] for r in rows) / len(rows), 4) for name in FIGURES}

    out: dict[str, Any] = {
        "zero_shot": mean(lambda r: r["zero_shot"]),
        "learned": mean(lambda r: r["learned"]),
    }
    out["curve"] = {
        key: {
            "train": round(sum(r["curve"][key]["train"] for r in rows) / len(rows), 1),
            **mean(lambda r, key=key: r["curve"][key]),
        }
        for key in (f"{share:.2f}" for share in curve)
    }
    return out


def format_cv(result: dict[str, Any]) -> str:
    lines = [
        f"{result['k']}-fold cross-validation on {result['n']} tickets (seed {result['seed']}); "
        "zero-shot → learned",
        f"{'fold':>5} {'train':>6} {'test':>5}  {'service acc':>17}  {'process acc':>17}  "
        f"{'process macro-F1':>17}",
    ]

    def pair(zero: dict[str, float], learned: dict[str, float], name: str) -> str:
        return f"{zero[name]:.3f} → {learned[name]:.3f}".rjust(17)

    for row in result["folds"]:
        z, lr = row["zero_shot"], row["learned"]
        lines.append(
            f"{row['fold']:>5} {row['train']:>6} {row['test']:>5}  "
            + "  ".join(pair(z, lr, name) for name in FIGURES)
        )
    mean = result["mean"]
    lines.append(
        f"{'mean':>5} {'':>6} {'':>5}  "
        + "  ".join(pair(mean["zero_shot"], mean["learned"], name) for name in FIGURES)
    )
    room = result["headroom"]
    n = result["n"]
    lines += [
        "",
        f"headroom (what learning can fix at most): of {room['errors']} zero-shot errors, those "
        "with a word,",
        f"word pair or concept that training tickets of their own service share (precision ≥ "
        f"{HEADROOM_PRECISION:.0%})",
    ]
    for support, count in room["learnable"].items():
        lines.append(f"  in ≥ {support} ticket(s): {count} (+{count / n:.3f} service accuracy)")
    lines += ["", "learning curve (share of the training folds: mean figures)"]
    lines.append(f"{'share':>6} {'train':>6}  {'service acc':>11}  {'process macro-F1':>16}")
    z = mean["zero_shot"]
    lines.append(
        f"{'0 %':>6} {0:>6}  {z['service_accuracy']:>11.3f}  {z['process_macro_f1']:>16.3f}"
    )
    for key, figures in mean["curve"].items():
        lines.append(
            f"{float(key):>6.0%} {figures['train']:>6}  {figures['service_accuracy']:>11.3f}  "
            f"{figures['process_macro_f1']:>16.3f}"
        )
    return "\n".join(lines)
