"""Rewrite constraints.txt: the exact versions a fresh `pip install -e '.[dev]'` resolves to.

    .venv/bin/python scripts/constraints.py      # or: make constraints

pip resolves from scratch (--ignore-installed, --dry-run), so what else sits in the venv
(a profiler, a mutation tester) never ends up in the file. The comment header is kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "constraints.txt"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), "-e", ".[dev]"],
            cwd=ROOT,
            check=True,
        )  # fmt: skip
        resolved = json.loads(report.read_text())["install"]
    pins = sorted(
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in resolved
        if item["metadata"]["name"].lower() != "bpsm-connector"
    )
    header = [line for line in FILE.read_text().splitlines() if line.startswith("#")]
    pins.sort(key=lambda pin: pin[0].lower())
    FILE.write_text("\n".join([*header, *(f"{name}=={version}" for name, version in pins)]) + "\n")
    print(f"{FILE.name}: {len(pins)} pins")


if __name__ == "__main__":
    main()
