"""Round trips against a real Request Tracker 5 (tests/realhosts/rt_server.py), as ratios.

    .venv/bin/python bench/rt_roundtrip.py            # 20 samples each, about a minute

Baseline, same run: GET ticket with basic auth (median of --samples). Printed: each other
call's median as a ratio of it (token auth, a TicketSQL search, creating a ticket), plus the
absolute milliseconds for context. Moved here from a test that timed and asserted nothing.
Needs what `make test` installs for tests/realhosts (Debian's request-tracker5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.realhosts.rt_server import RTServer, TokenAuth, ensure_rt_installed  # noqa: E402


def median_ms(call: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    ensure_rt_installed()
    with RTServer() as rt:
        ticket = rt.create_ticket("General", "timing", "x")
        rt.create_user("timing-user", "timing-pw")
        rt.grant_rights(["ShowTicket"], user="timing-user", queues=["General"])
        token = TokenAuth(rt.create_auth_token("timing-user"))
        query = {"query": f"id = {ticket}", "fields": "Subject,Queue,LastUpdated,Created"}
        calls: dict[str, Callable[[], object]] = {
            "GET ticket, token auth": lambda: rt.api("GET", f"ticket/{ticket}", auth=token),
            "TicketSQL search by id": lambda: rt.get_json("tickets", params=query),
            "create a ticket": lambda: rt.create_ticket("General", "timing 2", "x"),
        }
        base = median_ms(lambda: rt.api("GET", f"ticket/{ticket}", auth=rt.root_auth), args.samples)
        print(f"baseline: GET ticket, basic auth  {base:7.1f} ms  1.00")
        for name, call in calls.items():
            ms = median_ms(call, args.samples)
            print(f"{name:<33} {ms:7.1f} ms  {ms / base:4.2f}")
        print(f"server start-up: {rt.timings}")


if __name__ == "__main__":
    main()
