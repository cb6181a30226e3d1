"""Consumer benchmark: the CPU a job costs beside the classification inside it.

    .venv/bin/python bench/consumer.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/consumer.py --stores sqlite --deliveries 400 --rounds 3

For each store (a fresh SQLite data folder; a fresh PostgreSQL database, created and dropped
here) the demo host's deliveries of tests/data/tickets.csv are recorded, then each is handed
to the worker (`process_delivery`: claim, classify, decide, routing row, dry-run apply, the
improvement check, finish) in this process, and its CPU time is measured. Baseline, same
run, interleaved round by round: classifying the same tickets alone (`CatalogueIndex.
classify` on the same index, warm word caches as in a running consumer). The ratio job ÷
classify is what the pipeline adds around the decision; it is measured in CPU time, so it
holds on a busy machine where wall time would not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import postgres_database  # noqa: E402

from connector.config import load_settings  # noqa: E402
from connector.context import Context  # noqa: E402
from connector.evaluate import LabelledTicket, read_labelled  # noqa: E402
from connector.events import TicketEvent  # noqa: E402
from connector.hosts import settings_models  # noqa: E402
from connector.runtime import Runtime  # noqa: E402
from connector.worker import process_delivery  # noqa: E402


def record(context: Context, tickets: list[LabelledTicket], count: int) -> list[int]:
    """`count` new deliveries of new tickets (the worker skips a ticket it has routed)."""
    run = uuid.uuid4().hex[:8]
    keys = []
    for n in range(count):
        ticket = tickets[n % len(tickets)]
        event = TicketEvent(
            host="demo",
            delivery_id=uuid.uuid4().hex,
            ticket_id=f"{run}-{n}",
            subject=ticket.subject,
            body=ticket.body,
        )
        key = context.store.record_delivery(event)
        assert key is not None
        keys.append(key)
    return keys


def cpu_ms_per(items: Sequence[Any], work: Callable[[Any], object]) -> float:
    started = time.process_time()
    for item in items:
        work(item)
    return (time.process_time() - started) / len(items) * 1000


def measure(
    store: str, url: str | None, tickets: list[LabelledTicket], args: argparse.Namespace
) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="bpsm-consumer-bench-")
    overrides: dict[str, Any] = {"data_dir": data_dir}
    if url:
        overrides["database_url"] = url
    context = Runtime(load_settings(hosts=settings_models(), **overrides)).context
    index = context.index()
    deliveries = args.deliveries
    for key in record(context, tickets, deliveries):  # warm-up: word caches, pools
        process_delivery(context, key)
    jobs, alone = [], []
    texts = [(t.body, t.subject) for t in tickets[:deliveries]] * (1 + deliveries // len(tickets))
    for _ in range(args.rounds):
        keys = record(context, tickets, deliveries)
        jobs.append(cpu_ms_per(keys, lambda key: process_delivery(context, key)))
        alone.append(cpu_ms_per(texts[:deliveries], lambda text: index.classify(*text)))
    context.store.dispose()
    ratios = [j / a for j, a in zip(jobs, alone, strict=True)]
    return {
        "store": store,
        "job_ms": round(statistics.median(jobs), 3),
        "classify_ms": round(statistics.median(alone), 3),
        "ratio": round(statistics.median(ratios), 2),
        "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tickets = read_labelled(ROOT / "tests" / "data" / "tickets.csv")
    rows = []
    for store in args.stores.split(","):
        if store == "postgres":
            with postgres_database() as url:
                rows.append(measure(store, url, tickets, args))
        else:
            rows.append(measure(store, None, tickets, args))
    if args.json:
        print(json.dumps(rows))
        return
    print(
        f"bench/consumer.py  {time.strftime('%Y-%m-%d %H:%M')}  {args.deliveries} deliveries"
        f" × {args.rounds} rounds, CPU time per delivery (median of rounds)"
    )
    print(f"{'store':10} {'job ms':>8} {'classify ms':>12} {'job ÷ classify':>15}  (rounds)")
    for row in rows:
        low, high = row["ratio_range"]
        print(
            f"{row['store']:10} {row['job_ms']:>8.3f} {row['classify_ms']:>12.3f}"
            f" {row['ratio']:>15.2f}  ({low:.2f}–{high:.2f})"
        )


if __name__ == "__main__":
    main()
