"""Start-up of a worker on a large catalogue: from a new process to an index ready to
classify, first start (parse the YAML, build the index, keep both) against a restart (read
the kept catalogue, map the prebuilt index), each in a fresh process, on one machine.

    .venv/bin/python bench/startup.py --services 10000 --rounds 3
    .venv/bin/python bench/startup.py --services 10000 --rounds 1 --restarts 5

A restarted worker's memory is read from /proc/self/smaps_rollup: RSS, the part that is
mapped files (the prebuilt index's arrays, the page cache every process shares) and the
part already shared with another process.

Prints seconds per start and the restart as a ratio of the first start (issue 22: a worker
that loads a prebuilt index is ready in ≤ 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from synth import catalogue_of_size  # noqa: E402

CHILD = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from connector.config import load_settings
from connector.hosts import settings_models
from connector.runtime import Runtime
settings = load_settings({"BPSM_DATA_DIR": sys.argv[2], "BPSM_CATALOGUE": sys.argv[1]},
                         hosts=settings_models())
runtime = Runtime(settings)
catalogue_s = time.perf_counter() - started
runtime.index.classify("Skriveren skriver ikke ut", "Printer")
ready_s = time.perf_counter() - started
memory = {}
for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
    name, value = line.split(":", 1)
    memory[name] = int(value.split()[0]) / 1024
print(json.dumps({"catalogue_s": catalogue_s, "ready_s": ready_s, "rss_mb": memory["Rss"],
                  "shared_mb": memory["Shared_Clean"] + memory["Shared_Dirty"],
                  "file_mb": memory["Rss"] - memory["Anonymous"]}))
runtime.close()
"""


def start(catalogue: Path, data_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(catalogue), str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BPSM_")},
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=1, help="restarts per first start")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = catalogue_of_size(ROOT / "catalogue.yaml", args.services).model_dump(
            mode="json", exclude_none=True
        )
        catalogue = folder / "catalogue.yaml"
        catalogue.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
        rows = []
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for round_ in range(args.rounds):
            data_dir = folder / f"data-{round_}"
            first = start(catalogue, data_dir)  # nothing kept yet
            for _ in range(args.restarts):
                again = start(catalogue, data_dir)  # the kept catalogue and prebuilt index
                rows.append((first, again))
                print(
                    f"round {round_ + 1}: first start {first['ready_s']:.2f} s "
                    f"(catalogue {first['catalogue_s']:.2f} s), restart {again['ready_s']:.2f} s "
                    f"(catalogue {again['catalogue_s']:.2f} s), "
                    f"× {again['ready_s'] / first['ready_s']:.3f} of the first start; "
                    f"restarted worker RSS {again['rss_mb']:.0f} MB, of which "
                    f"{again['file_mb']:.0f} MB mapped files, shared now {again['shared_mb']:.0f}",
                    flush=True,
                )
        best = min(again["ready_s"] for _, again in rows)
        print(
            f"{args.services} services, load {os.getloadavg()[0]:.1f}: restart ready in "
            f"{best:.2f} s at best (target ≤ 2 s)"
        )


if __name__ == "__main__":
    main()
