"""Evaluate the classifier + router on labelled tickets (CSV: subject,body,service,process)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.catalogue import Catalogue
from connector.classify import CatalogueIndex
from connector.events import Evidence, TicketEvent
from connector.mapping import Mapping
from connector.route import decide
from connector.yamlsource import Problem

COLUMNS = ("subject", "body", "service", "process")
INCOMING = ("reactive", "relation", "change")
# Confidence bands of the reliability table: 0-0.1, 0.1-0.2, … 0.9-1.
BANDS = 10
# Service accuracies for which the report names the largest share one threshold routes.
TARGETS = (0.90, 0.95)


@dataclass(frozen=True)
class LabelledTicket:
    line: int
    subject: str
    body: str
    service: str | None
    process: str


class DataError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def read_labelled(path: str | Path, catalogue: Catalogue | None = None) -> list[LabelledTicket]:
    """Read the CSV; every bad row is reported with its line number, all at once."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        raise DataError([Problem(name, 0, "", f"cannot read: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError([Problem(name, line, "", "not valid UTF-8")]) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            [
                Problem(
                    name,
                    1,
                    "",
                    f"missing column(s): {', '.join(missing)} "
                    f"(expected header: {','.join(COLUMNS)})",
                )
            ]
        )
    known = {s.id for s in catalogue.services} if catalogue else None
    rows, problems = [], []
    line = reader.line_num
    for row in reader:
        start = line + 1
        line = reader.line_num
        if None in row or any(row.get(c) is None for c in COLUMNS):
            problems.append(Problem(name, start, "", "wrong number of fields"))
            continue
        service = row["service"].strip() or None
        process = row["process"].strip()
        if process not in INCOMING:
            problems.append(
                Problem(name, start, "process", f"{process!r} is not one of {', '.join(INCOMING)}")
            )
            continue
        if known is not None and service is not None and service not in known:
            problems.append(
                Problem(name, start, "service", f"{service!r} is not a service id in the catalogue")
            )
            continue
        rows.append(LabelledTicket(start, row["subject"], row["body"], service, process))
    if problems:
        raise DataError(problems)
    if not rows:
        raise DataError([Problem(name, 1, "", "no tickets in the file")])
    return rows


def _f1(tp: int, fp: int, fn: int) -> float:
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def evaluate(
    tickets: list[LabelledTicket],
    index: CatalogueIndex,
    mapping: Mapping,
    threshold: float | None = None,
) -> dict[str, Any]:
    threshold = mapping.confidence_threshold if threshold is None else threshold
    predictions = []
    for ticket in tickets:
        event = TicketEvent(
            host="eval",
            delivery_id=str(ticket.line),
            ticket_id=str(ticket.line),
            subject=ticket.subject,
            body=ticket.body,
        )
        match = index.classify(ticket.body, ticket.subject)
        decision = decide(event, match, index.catalogue, mapping)
        predictions.append(
            {
                "service": decision.service,
                "process": decision.process,
                "confidence": match.confidence,
                # Why, for `bpsm evaluate --errors`: what a catalogue author needs to mend it.
                "runner_up": match.runner_up,
                "evidence": [_shown(e) for e in match.evidence[:3]],
                "outside": match.outside,
            }
        )
    return summarise(tickets, predictions, threshold)


def _shown(evidence: Evidence) -> str:
    if evidence.learned_from is None:
        return evidence.shown
    return f"{evidence.shown} (learned from {evidence.learned_from} tickets)"


def summarise(
    tickets: list[LabelledTicket], predictions: list[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    n = len(tickets)
    service_ok = [p["service"] == t.service for t, p in zip(tickets, predictions, strict=True)]
    process_ok = [p["process"] == t.process for t, p in zip(tickets, predictions, strict=True)]
    labels = sorted({t.process for t in tickets})
    confusion: dict[str, Counter[str]] = {label: Counter() for label in INCOMING}
    for t, p in zip(tickets, predictions, strict=True):
        confusion[t.process][p["process"]] += 1
    f1 = {}
    for label in labels:
        tp = confusion[label][label]
        fn = sum(confusion[label].values()) - tp
        fp = sum(confusion[other][label] for other in INCOMING if other != label)
        f1[label] = round(_f1(tp, fp, fn), 4)
    routed = [i for i, p in enumerate(predictions) if p["confidence"] >= threshold]
    confidences = [float(p["confidence"]) for p in predictions]
    bands = reliability(confidences, service_ok)
    return {
        "n": n,
        "service_accuracy": round(sum(service_ok) / n, 4),
        "process_accuracy": round(sum(process_ok) / n, 4),
        "process_macro_f1": round(sum(f1.values()) / len(f1), 4) if f1 else 0.0,
        "process_f1": f1,
        "confusion": {a: {b: confusion[a][b] for b in INCOMING} for a in INCOMING},
        "threshold": threshold,
        "auto_routed_share": round(len(routed) / n, 4),
        "auto_routed_accuracy": {
            "service": round(sum(service_ok[i] for i in routed) / len(routed), 4)
            if routed
            else None,
            "process": round(sum(process_ok[i] for i in routed) / len(routed), 4)
            if routed
            else None,
        },
        "ece": expected_calibration_error(bands, n),
        "reliability": bands,
        "routable": {
            f"{target:.2f}": largest_share(confidences, service_ok, target) for target in TARGETS
        },
        "predictions": predictions,
    }


def reliability(confidences: list[float], correct: list[bool]) -> list[dict[str, Any]]:
    """Per confidence band (BANDS of equal width, 1.0 in the last): how many tickets, their
    mean confidence and how often their service was right. A calibrated classifier's two
    figures agree in every band."""
    members: list[list[int]] = [[] for _ in range(BANDS)]
    for i, confidence in enumerate(confidences):
        members[min(int(confidence * BANDS), BANDS - 1)].append(i)
    return [
        {
            "low": band / BANDS,
            "high": (band + 1) / BANDS,
            "n": len(rows),
            "confidence": round(sum(confidences[i] for i in rows) / len(rows), 4),
            "accuracy": round(sum(correct[i] for i in rows) / len(rows), 4),
        }
        for band, rows in enumerate(members)
        if rows
    ]


def expected_calibration_error(bands: list[dict[str, Any]], n: int) -> float:
    """Mean gap between confidence and accuracy over the bands, weighted by their size."""
    if not n:
        return 0.0
    gap = sum(float(b["n"]) * abs(float(b["accuracy"]) - float(b["confidence"])) for b in bands)
    return round(gap / n, 4)


def largest_share(confidences: list[float], correct: list[bool], target: float) -> dict[str, Any]:
    """The largest share of tickets one confidence threshold routes with a service accuracy
    of at least `target`, and that threshold (None when no threshold reaches it). Every
    distinct confidence is tried as the threshold, not only the sweep's tenths."""
    order = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    best: dict[str, Any] = {"share": 0.0, "threshold": None}
    right = 0
    for rank, i in enumerate(order, start=1):
        right += correct[i]
        # A threshold takes every ticket of equal confidence: cut only between distinct ones.
        if rank < len(order) and confidences[order[rank]] == confidences[i]:
            continue
        if right / rank >= target:
            best = {"share": round(rank / len(order), 4), "threshold": confidences[i]}
    return best


def sweep(
    tickets: list[LabelledTicket], predictions: list[dict[str, Any]], steps: int = 10
) -> list[dict[str, Any]]:
    """Share auto-routed and its accuracy for thresholds 0, 0.1, … 1."""
    rows = []
    for k in range(steps + 1):
        summary = summarise(tickets, predictions, k / steps)
        rows.append(
            {
                "threshold": k / steps,
                "share": summary["auto_routed_share"],
                **summary["auto_routed_accuracy"],
            }
        )
    return rows


def format_errors(tickets: list[LabelledTicket], predictions: list[dict[str, Any]]) -> str:
    """Each ticket whose service or process is wrong: labelled → predicted, the runner-up and
    the words that decided it, so a catalogue author sees which keyword is missing or wins
    where it should not."""
    lines = []
    for ticket, p in zip(tickets, predictions, strict=True):
        if p["service"] == ticket.service and p["process"] == ticket.process:
            continue
        why = ", ".join(p.get("evidence") or []) or "no evidence"
        if p.get("outside"):
            why = f"outside IT ({p['outside']}): {why}"
        lines.append(
            f"line {ticket.line}: {ticket.service or '-'}/{ticket.process} → "
            f"{p['service'] or '-'}/{p['process']}  (runner-up {p.get('runner_up') or '-'}; "
            f"on {why})  {ticket.subject[:60]!r}"
        )
    header = f"misrouted: {len(lines)} of {len(tickets)} (labelled → predicted service/process)"
    return "\n".join([header, *lines])


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"tickets:           {result['n']}",
        f"service accuracy:  {result['service_accuracy']:.3f}",
        f"process accuracy:  {result['process_accuracy']:.3f}",
        f"process macro-F1:  {result['process_macro_f1']:.3f}  "
        + "  ".join(f"{k}={v:.2f}" for k, v in result["process_f1"].items()),
        f"auto-routed (confidence ≥ {result['threshold']:.2f}): {result['auto_routed_share']:.1%}",
        *(
            f"largest share routed at ≥ {float(target):.0%} service accuracy: "
            + (
                f"{best['share']:.1%} (threshold {best['threshold']:.2f})"
                if best["threshold"] is not None
                else "none"
            )
            for target, best in result["routable"].items()
        ),
        "",
        f"calibration (expected calibration error {result['ece']:.3f})",
        f"{'confidence':>10} {'tickets':>8} {'mean conf.':>10} {'service acc.':>12}",
        *(
            f"{b['low']:>4.1f}–{b['high']:<4.1f} {b['n']:>8} {b['confidence']:>10.3f}"
            f" {b['accuracy']:>12.3f}"
            for b in result["reliability"]
        ),
        "",
        "confusion (rows: labelled, columns: predicted)",
        f"{'':>10} " + " ".join(f"{p:>9}" for p in INCOMING),
    ]
    for label in INCOMING:
        row = result["confusion"][label]
        lines.append(f"{label:>10} " + " ".join(f"{row[p]:>9}" for p in INCOMING))
    return "\n".join(lines)
