"""Poison tickets: how long hostile ticket text takes to clean and classify (issue 16).

    .venv/bin/python bench/poison.py                 # every text, 3 runs each
    .venv/bin/python bench/poison.py --repeat 1 --json

Each text of the issue (100 KB of newlines, "ab. " × 25,000, "<a" × 50,000, a 4,000- and a
16,000-character "word", 50 KB of mixed made-up text), and a few more found while fixing
them, goes through what the consumer does with a ticket body: `clean_text` and
`CatalogueIndex.classify` on the repository's catalogue.yaml, with the per-word memos emptied
first (a poison text's words are new to a worker) and the index frozen out of the cyclic
collector, as the worker does. The baseline is a normal ticket of
tests/data/tickets.csv classified the same way in the same run, interleaved: each text is
printed in ms and as a ratio to it, with the work in steps (connector.text.Work) and whether
the work budget ran out. Target (issue 16): each poison text ≤ 0.5 s on the reference
machine.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.catalogue import load_catalogue  # noqa: E402 - ROOT is on sys.path above
from connector.classify import CatalogueIndex, build_index  # noqa: E402
from connector.text import Work, _stem  # noqa: E402

TARGET_MS = 500.0
LETTERS = "abcdefghijklmnopqrstuvwxyzæøå"


def _word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(length))


def _mixed(size: int) -> str:
    """Made-up words of 2-25 letters (each new to the index: every one is searched as a
    compound and a typo), sentence ends, line breaks, stray markup and mail clutter."""
    rng = random.Random(16)
    pieces: list[str] = []
    length = 0
    extras = ["ab. ", "\n", "<a", "<![ ", "<!--", "&amp;", "> ", "@"]
    while length < size:
        piece = rng.choice(extras) if rng.random() < 0.15 else _word(rng, rng.randint(2, 25))
        piece += rng.choice(" .,\n") if rng.random() < 0.3 else " "
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)[:size]


def poison_texts() -> dict[str, str]:
    rng = random.Random(4)
    return {
        "newlines 100 KB": "\n" * 100_000,
        '"ab. " x 25k': "ab. " * 25_000,
        '"<a" x 50k': "<a" * 50_000,
        "word 4k chars": _word(rng, 4_000),
        "word 16k chars": _word(rng, 16_000),
        "mixed 50 KB": _mixed(50_000),
        # Found while fixing the above: html.parser was quadratic on unfinished markup
        # once the text looked like HTML, and the address patterns of the reply markers
        # tried every "@" of a line.
        '"<p>" + "<a" x 50k': "<p>" + "<a" * 50_000,
        '"<p>" + "<!--" x 25k': "<p>" + "<!--" * 25_000,
        '"<p>" + "<a b=\'" x 16k': "<p>" + "<a b='" * 16_000,
        '"@" x 299 lines, 100 KB': ("@" * 299 + "\n") * 333,
        "mixed 100 KB": _mixed(100_000),
    }


def normal_ticket(path: Path) -> tuple[str, str]:
    """The ticket of median body length of the labelled set."""
    with path.open(encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (len(r["body"]), r["body"]))
    row = rows[len(rows) // 2]
    return row["subject"], row["body"]


def _clear(index: CatalogueIndex) -> None:
    _stem.cache_clear()  # a poison text's words are new to the stemmer's memo too
    for memo in (index, index.outside):
        if memo is not None:
            memo.clear_memos()


def _timed(run: Callable[[], Work]) -> tuple[float, Work]:
    started = time.perf_counter()
    work = run()
    return (time.perf_counter() - started) * 1000, work


def measure(index: CatalogueIndex, repeat: int, ticket: tuple[str, str]) -> list[dict[str, Any]]:
    subject, body = ticket

    def classify(text: str, subject: str = "") -> Callable[[], Work]:
        def run() -> Work:
            _clear(index)
            work = Work()
            index.classify(text, subject, work=work)
            return work

        return run

    rows = []
    for name, text in poison_texts().items():
        times, baseline = [], []
        work = Work()
        for _ in range(repeat):  # baseline and poison interleaved
            baseline.append(_timed(classify(body, subject))[0])
            elapsed, work = _timed(classify(text))
            times.append(elapsed)
        ms, base = statistics.median(times), statistics.median(baseline)
        match = index.classify(text)
        rows.append(
            {
                "text": name,
                "chars": len(text),
                "ms": round(ms, 1),
                "normal_ms": round(base, 2),
                "ratio": round(ms / base, 1),
                "steps": work.steps,
                "budget_ran_out": work.exhausted,
                "service": match.service,
                "within_target": ms <= TARGET_MS,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per text (median)")
    parser.add_argument("--catalogue", type=Path, default=ROOT / "catalogue.yaml")
    parser.add_argument("--tickets", type=Path, default=ROOT / "tests" / "data" / "tickets.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    index = build_index(load_catalogue(args.catalogue))
    gc.freeze()  # as connector/runtime.py does after building the index
    ticket = normal_ticket(args.tickets)
    normal = Work()
    index.classify(ticket[1], ticket[0], work=normal)
    rows = measure(index, args.repeat, ticket)
    summary = {
        "load": [round(load, 2), round(os.getloadavg()[0], 2)],
        "normal_ticket_chars": len(ticket[1]),
        "normal_ticket_steps": normal.steps,
        "target_ms": TARGET_MS,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        return
    print(
        f"load {summary['load'][0]}→{summary['load'][1]}; normal ticket "
        f"{len(ticket[1])} chars, {normal.steps} steps; target {TARGET_MS:.0f} ms"
    )
    print(f"{'text':<26} {'chars':>7} {'ms':>8} {'×normal':>8} {'steps':>10} budget  service")
    for r in rows:
        flag = "" if r["within_target"] else "  OVER TARGET"
        print(
            f"{r['text']:<26} {r['chars']:>7} {r['ms']:>8.1f} {r['ratio']:>8.1f} "
            f"{r['steps']:>10} {'out' if r['budget_ran_out'] else 'ok':<7} "
            f"{r['service']}{flag}"
        )


if __name__ == "__main__":
    main()
