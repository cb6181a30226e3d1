"""Warm classification cost of two versions of the code, side by side on this machine.

    .venv/bin/python bench/side_by_side.py 6e94bf4          # that commit against the checkout

Each version classifies the labelled tickets with the example catalogue in its own process
(a git worktree of REV in a temporary folder, the checkout itself for the other), warm word
caches, best of --repeat passes, interleaved so that the machine's load falls on both alike.
Prints ms per ticket of each and the ratio now / then.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside each version's folder: only what every version of the package has.
MEASURE = """
import csv, json, sys, time
from connector.catalogue import load_catalogue
from connector.classify import build_index
index = build_index(load_catalogue("catalogue.yaml"))
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
for r in rows:
    index.classify(r["body"], r["subject"])
best = float("inf")
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    for r in rows:
        index.classify(r["body"], r["subject"])
    best = min(best, (time.perf_counter() - started) / len(rows) * 1000)
print(json.dumps(best))
"""


def measure(folder: Path, tickets: Path, repeat: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tickets), str(repeat)],
        cwd=folder,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the version to compare with (a commit, tag or branch)")
    parser.add_argument("--tickets", type=Path, default=ROOT / "tests" / "data" / "tickets.csv")
    parser.add_argument("--repeat", type=int, default=3, help="passes per run (best counts)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        then_dir = Path(temporary) / "then"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(then_dir), args.rev],
            cwd=ROOT,
            check=True,
        )
        try:
            then, now = [], []
            for _ in range(args.rounds):
                then.append(measure(then_dir, args.tickets, args.repeat))
                now.append(measure(ROOT, args.tickets, args.repeat))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(then_dir)], cwd=ROOT, check=True
            )
    print(f"{args.rev}: {min(then):.3f} ms/ticket   checkout: {min(now):.3f} ms/ticket")
    print(f"now / then: ×{min(now) / min(then):.2f} (warm, best of {args.rounds}×{args.repeat})")


if __name__ == "__main__":
    main()
