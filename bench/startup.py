"""Start-up of a worker on a large catalogue: from a new process to an index ready to
classify, first start (parse the YAML, build the index, keep both) against a restart (read
the kept catalogue, map the prebuilt index), each in a fresh process, on one machine.

    .venv/bin/python bench/startup.py --services 10000 --rounds 3

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
print(json.dumps({"catalogue_s": catalogue_s, "ready_s": time.perf_counter() - started}))
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = catalogue_of_size(ROOT / "catalogue.yaml", args.services).model_dump(
            mode="json", exclude_none=True
        )
        catalogue = folder / "catalogue.yaml"
        catalogue.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
        rows = []
        for round_ in range(args.rounds):
            data_dir = folder / f"data-{round_}"
            first = start(catalogue, data_dir)  # nothing kept yet
            again = start(catalogue, data_dir)  # the kept catalogue and the prebuilt index
            rows.append((first, again))
            print(
                f"round {round_ + 1}: first start {first['ready_s']:.2f} s "
                f"(catalogue {first['catalogue_s']:.2f} s), restart {again['ready_s']:.2f} s "
                f"(catalogue {again['catalogue_s']:.2f} s), "
                f"× {again['ready_s'] / first['ready_s']:.3f} of the first start",
                flush=True,
            )
        best = min(again["ready_s"] for _, again in rows)
        print(
            f"{args.services} services, load {os.getloadavg()[0]:.1f}: restart ready in "
            f"{best:.2f} s at best (target ≤ 2 s)"
        )


if __name__ == "__main__":
    main()
