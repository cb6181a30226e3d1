"""`bpsm report` on a hand-built audit store: every number below is counted by hand from SEED,
and the command must print exactly those. Also: the text/CSV/HTML renderings, --host-times
against a fake helpdesk client, and `bpsm evaluate --sweep --html`."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert

from connector.cli import main
from connector.events import RoutingDecision, SLATimes, TicketEvent, TicketTimes
from connector.hosts.base import ApplyResult, HostClient, HostError
from connector.report import kpis, render_html, render_text
from connector.runtime import Runtime
from connector.store import Store, routings

ROOT = Path(__file__).resolve().parents[1]
M, H, D = 60, 3600, 86400
# Whole seconds: durations computed from these are exact, so medians compare with ==.
T = float(int(time.time()))

# (host, ticket, process, service, outcome, low_confidence, confidence, moved later, age, SLA)
# SLA rows get response due = created + 1h, resolution due = created + 1d.
SEED: list[tuple[str, str, str, str | None, str, int, float, bool, float, bool]] = [
    ("zammad", "1", "reactive", "printing", "applied", 0, 0.95, False, 10 * D, True),  # r1
    ("zammad", "2", "reactive", "printing", "applied", 0, 0.85, True, 9 * D, True),  # r2
    ("zammad", "3", "reactive", "printing", "applied", 1, 0.20, False, 8 * D, True),  # r3
    ("zammad", "4", "reactive", "email", "applied", 0, 0.72, False, 2 * H, True),  # r4
    ("zammad", "5", "reactive", "email", "override", 0, 0.66, False, 5 * D, True),  # r5
    ("zammad", "6", "reactive", "email", "failed", 0, 0.55, False, 6 * D, True),  # r6
    ("zammad", "7", "reactive", "network", "shadow", 0, 0.91, False, 3 * D, True),  # r7
    ("zammad", "8", "relation", "mac-computers", "applied", 0, 0.88, False, 4 * D, False),  # r8
    ("zammad", "9", "relation", None, "applied", 0, 0.00, True, 4 * D, False),  # r9
    ("zammad", "10", "change", "erp", "applied", 0, 0.61, False, 7 * D, False),  # r10
    ("zammad", "11", "change", "erp", "override", 0, 0.45, False, 7 * D, False),  # r11
    ("zammad", "12", "reactive", "printing", "applying", 0, 0.99, False, 1 * M, True),  # r12
    ("demo", "1", "reactive", "printing", "dry-run", 0, 0.81, False, 3 * D, True),  # r13
    ("demo", "2", "reactive", "email", "dry-run", 1, 0.15, False, 30 * M, True),  # r14
    ("demo", "3", "reactive", "network", "dry-run", 0, 0.30, False, 5 * D, False),  # r15
    ("demo", "4", "relation", None, "dry-run", 0, 0.00, False, 26 * H, False),  # r16
    ("demo", "5", "relation", "mac-computers", "dry-run", 0, 0.70, False, 2 * D, False),  # r17
    ("demo", "6", "change", "email", "dry-run", 0, 0.50, False, 2 * D, False),  # r18
    ("zammad", "13", "reactive", "network", "applied", 0, 1.00, False, 2 * D, True),  # r19
    ("zammad", "14", "relation", "mac-computers", "applied", 1, 0.10, False, 2 * D, False),  # r20
    # r21: older than 30 days, outside the default --since.
    ("zammad", "15", "reactive", "printing", "applied", 0, 0.90, False, 40 * D, True),
]
# The webhook for zammad 1 and 2 arrived two minutes after the ticket was created.
TICKET_CREATED_EARLIER = {("zammad", "1"): 120, ("zammad", "2"): 120}


def created(host: str, ticket: str) -> float:
    return next(T - row[8] for row in SEED if row[0] == host and row[1] == ticket)


def seed_store(data_dir: Path) -> None:
    store = Store(f"sqlite:///{data_dir / 'bpsm.db'}")  # what Settings.database picks
    with store.engine.begin() as conn:
        for i, row in enumerate(SEED):
            conn.execute(insert(routings).values(**_row(i, *row)))
    store.dispose()


def _row(
    i: int,
    host: str,
    ticket: str,
    process: str,
    service: str | None,
    outcome: str,
    low: int,
    confidence: float,
    moved: bool,
    age: float,
    has_sla: bool,
) -> dict[str, Any]:
    at = T - age
    sla = None
    if has_sla:
        sla = SLATimes(
            response_due=datetime.fromtimestamp(at + H, UTC),
            resolution_due=datetime.fromtimestamp(at + D, UTC),
        )
    decision = RoutingDecision(
        process=process,  # type: ignore[arg-type]
        service=service,
        queue=f"BPSM {process}",
        tags=(),
        note="",
        language="en",
        confidence=confidence,
        low_confidence=bool(low),
        sla=sla,
    )
    earlier = TICKET_CREATED_EARLIER.get((host, ticket))
    return {
        "host": host,
        "ticket_id": ticket,
        "delivery": i + 1,
        "process": process,
        "service": service,
        "queue": decision.queue,
        "confidence": confidence,
        "low_confidence": low,
        "language": "en",
        "mode": {"shadow": "shadow", "dry-run": "dry-run"}.get(outcome, "route"),
        "outcome": outcome,
        "decision": decision.model_dump_json(),
        "match": "{}",
        "created_at": at,
        "applied_at": None if outcome == "applying" else at + 1,
        "ticket_created_at": at - earlier if earlier else None,
        "moved_by_agent_at": at + H if moved else None,
    }


def stats(
    tickets: int,
    decided: int,
    auto: int,
    share: float | None,
    applied: int,
    first: int,
    later: int,
    rate: float | None,
    pilot: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """A group's figures; `pilot` = (shadow or dry-run tickets, of them confident)."""
    return {
        "tickets": tickets,
        "decided": decided,
        "routed": decided - pilot[0],
        "auto_routed": auto,
        "auto_routed_share": share,
        "pilot": pilot[0],
        "would_route": pilot[1],
        "would_route_share": round(pilot[1] / pilot[0], 4) if pilot[0] else None,
        "applied": applied,
        "agent_moved_first": first,
        "agent_moved_later": later,
        "override_rate": rate,
    }


def isolate(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    """Only this test's settings: no helpdesk URL or database from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("BPSM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BPSM_DATA_DIR", str(data_dir))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Seeded once: the rows are only read, and each CLI run loads the catalogue (seconds).
    path = tmp_path_factory.mktemp("audit")
    seed_store(path)
    return path


@pytest.fixture
def data_dir(seeded: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate(monkeypatch, seeded)
    return seeded


@pytest.fixture(scope="module")
def k(seeded: Path) -> dict[str, Any]:
    """`bpsm report --format json` with the defaults (30 days, no helpdesk times)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, seeded)
        return report_json()


def bpsm(*args: str) -> Result:
    result = CliRunner().invoke(main, [*args, "--catalogue", str(ROOT / "catalogue.yaml")])
    assert result.exit_code == 0, result.output
    return result


def report_json(*args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bpsm("report", "--format", "json", *args).stdout)
    return data


# ----- the hand count ------------------------------------------------------------------------


def test_counts_per_process_and_service(k: dict[str, Any]) -> None:
    # r1–r20 are inside the default 30 days; r21 (40 days old) is not.
    assert k["total"] == 20
    # applied: r1 r2 r3 r4 r8 r9 r10 r19 r20; override: r5 r11; shadow: r7;
    # dry-run: r13–r18; failed: r6; applying: r12.
    assert k["outcomes"] == {
        "applied": 9,
        "override": 2,
        "shadow": 1,
        "dry-run": 6,
        "failed": 1,
        "applying": 1,
    }
    # decided = 20 - r12 = 19; routed = decided - pilot (7) = 12;
    # auto-routed = applied and confident = 9 - r3 - r20 = 7 of the 12 routed;
    # overridden = first (r5 r11) + later (r2 r9) = 4 of applied 9 + first 2 = 11.
    # pilot: r7 (shadow), r13–r18 (dry-run) = 7, of them confident all but r14 = 6.
    assert k["overall"] == stats(20, 19, 7, 0.5833, 9, 2, 2, 0.3636, pilot=(7, 6))
    assert k["pilot"] == 7
    assert k["by_process"] == {
        # r1–r7, r12–r15, r19; auto r1 r2 r4 r19 of 7 routed; moved r5 (first), r2 (later)
        # pilot r7 r13 r14 r15, r14 low-confidence
        "reactive": stats(12, 11, 4, 0.5714, 5, 1, 1, 0.3333, pilot=(4, 3)),
        # r8 r9 r16 r17 r20; auto r8 r9; applied r8 r9 r20; r9 moved later
        "relation": stats(5, 5, 2, 0.6667, 3, 0, 1, 0.3333, pilot=(2, 2)),  # r16 r17
        # r10 r11 r18; auto r10; r11 moved first
        "change": stats(3, 3, 1, 0.5, 1, 1, 0, 0.5, pilot=(1, 1)),  # r18
        "proactive": stats(0, 0, 0, None, 0, 0, 0, None),
        "improvement": stats(0, 0, 0, None, 0, 0, 0, None),
    }
    # Largest first, ties by name; "(none)" sorts before letters.
    assert list(k["by_service"]) == [
        "email",
        "printing",
        "mac-computers",
        "network",
        "(none: no match)",
        "erp",
    ]
    assert k["by_service"] == {
        "email": stats(5, 5, 1, 0.3333, 1, 1, 0, 0.5, pilot=(2, 1)),  # r4 r5 r6 r14 r18
        "printing": stats(5, 4, 2, 0.6667, 3, 0, 1, 0.3333, pilot=(1, 1)),  # r1 r2 r3 r12 r13
        "mac-computers": stats(3, 3, 1, 0.5, 2, 0, 0, 0.0, pilot=(1, 1)),  # r8 r17 r20
        "network": stats(3, 3, 1, 1.0, 1, 0, 0, 0.0, pilot=(2, 2)),  # r7 r15 r19
        # r9 r16: no match (their match rows say nothing of outside IT or private matters)
        "(none: no match)": stats(2, 2, 1, 1.0, 1, 0, 1, 1.0, pilot=(1, 1)),
        "erp": stats(2, 2, 1, 0.5, 1, 1, 0, 0.5),  # r10 r11
    }
    crossed = {(r.pop("process"), r.pop("service")): r for r in k["by_process_service"]}
    assert list(crossed) == [
        ("reactive", "printing"),
        ("reactive", "email"),
        ("reactive", "network"),
        ("relation", "mac-computers"),
        ("relation", "(none: no match)"),
        ("change", "erp"),
        ("change", "email"),
    ]
    # r4 r5 r6 r14
    assert crossed[("reactive", "email")] == stats(4, 4, 1, 0.3333, 1, 1, 0, 0.5, pilot=(1, 0))
    assert crossed[("change", "email")] == stats(1, 1, 0, None, 0, 0, 0, None, pilot=(1, 1))
    assert crossed[("reactive", "printing")] == k["by_service"]["printing"]


def test_confidence_histogram(k: dict[str, Any]) -> None:
    # Tickets with a service only: r9 and r16 (no service, confidence 0) are counted apart.
    # 0.1: r14 (0.15) r20 (0.10) | 0.2: r3 | 0.3: r15 (0.30, not 0.2) |
    # 0.4: r11 | 0.5: r6 r18 | 0.6: r5 r10 | 0.7: r4 r17 (0.70) | 0.8: r2 r8 r13 |
    # 0.9: r1 r7 r12 r19 (1.0 belongs to the last bin)
    assert [b["count"] for b in k["confidence_histogram"]] == [0, 2, 1, 1, 1, 2, 2, 2, 3, 4]
    assert k["no_service"] == 2
    assert k["confidence_histogram"][3] == {"from": 0.3, "to": 0.4, "count": 1}


def test_sla_without_host_times_is_never_called_a_breach(k: dict[str, Any]) -> None:
    sla = k["sla"]
    # Reactive with due times: r1–r7, r12, r13, r14, r19 = 11 (r15 has none).
    assert sla["tickets"] == 11
    # Response due 1h after creation: passed for all but r12 (1 min old) and r14 (30 min).
    assert sla["response"] == {
        "met": 0,
        "breached": 0,
        "pending": 0,
        "due_passed_unknown": 9,
        "not_due_unknown": 2,
        "breach_rate": None,
    }
    # Resolution due 1 day after creation: not yet for r4 (2h), r12, r14.
    assert sla["resolution"]["due_passed_unknown"] == 8
    assert sla["resolution"]["not_due_unknown"] == 3
    # email: r4 r5 r6 r14; resolution due passed for r5 r6 only
    assert sla["by_service"]["email"]["tickets"] == 4
    assert sla["by_service"]["email"]["resolution"]["due_passed_unknown"] == 2
    assert k["host_times"] == {"requested": False, "tickets": 0}


def test_since_limits_the_period(data_dir: Path) -> None:
    assert report_json("--since", "1d")["total"] == 3  # r4 (2h), r12 (1 min), r14 (30 min)
    assert report_json("--since", "8w")["total"] == 21  # r21 (40 days) too


def test_bad_since_is_a_usage_error(data_dir: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--since", "soon"])
    assert result.exit_code == 2
    assert "--since" in result.output


# ----- --host-times --------------------------------------------------------------------------

# Helpdesk times relative to the connector's created_at: (first response, closed); a ticket
# missing here is one the helpdesk cannot tell about (None).
HELPDESK = {
    "1": (30 * M, 5 * H),  # response met, resolution met
    "2": (2 * H, 3 * D),  # both breached
    "3": (None, None),  # still open 8 days on: both breached
    "4": (None, None),  # response due 1h ago: breached; resolution due in 22h: pending
    "5": (None, 4 * H),  # closed unanswered after 4h: response breached, resolution met
    "7": (10 * M, None),  # response met; resolution due 2 days ago: breached
    "8": (1 * H, 2 * H),  # relation (no SLA), counts for the medians
    "10": (3 * H, None),  # change (no SLA)
    "12": (None, None),  # both due in the future: pending
    "13": (20 * M, 20 * H),  # both met
}


class TimesClient(HostClient):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        raise AssertionError("a report never writes to the helpdesk")

    def ticket_times(self, ticket_id: str) -> TicketTimes | None:
        self.asked.append(ticket_id)
        if ticket_id not in HELPDESK:
            return None
        at = created("zammad", ticket_id)
        first, closed = HELPDESK[ticket_id]
        return TicketTimes(
            first_response_at=None if first is None else at + first,
            closed_at=None if closed is None else at + closed,
        )


def use_client(monkeypatch: pytest.MonkeyPatch, client: HostClient) -> None:
    monkeypatch.setenv("BPSM_ZAMMAD_URL", "http://zammad.invalid")  # configured; demo is not
    monkeypatch.setattr(Runtime, "client", lambda self, name: client)


def test_host_times_give_breaches_and_medians(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = TimesClient()
    use_client(monkeypatch, client)
    k = report_json("--host-times")
    # Only zammad is configured, and only tickets inside the period are asked (not 15).
    assert sorted(client.asked, key=int) == [str(n) for n in range(1, 15)]
    assert k["host_times"] == {"requested": True, "tickets": 10}
    sla = k["sla"]
    # met r1 r7 r19 | breached r2 r3 r4 r5 | pending r12 | unknown: r6 (helpdesk: None)
    # and r13 (demo) passed, r14 (demo) not due
    assert sla["response"] == {
        "met": 3,
        "breached": 4,
        "pending": 1,
        "due_passed_unknown": 2,
        "not_due_unknown": 1,
        "breach_rate": 0.5714,
    }
    # met r1 r5 r19 | breached r2 r3 r7 | pending r4 r12 | unknown as above
    assert sla["resolution"] == {
        "met": 3,
        "breached": 3,
        "pending": 2,
        "due_passed_unknown": 2,
        "not_due_unknown": 1,
        "breach_rate": 0.5,
    }
    # First response, from ticket creation (r1, r2 were created 120 s before the connector
    # saw them): r1 1920, r2 7320, r5 14400 (closed unanswered), r7 600, r19 1200,
    # r8 3600, r10 10800 → median 3600.
    times = k["times"]
    assert times["first_response"] == {"n": 7, "median_seconds": 3600}
    # Resolution: r8 7200, r5 14400, r1 18120, r19 72000, r2 259320 → median 18120.
    assert times["resolution"] == {"n": 5, "median_seconds": 18120}
    # Reactive only: 600 1200 1920 7320 14400; 14400 18120 72000 259320 → (18120+72000)/2
    assert times["by_process"]["reactive"] == {
        "first_response": {"n": 5, "median_seconds": 1920},
        "resolution": {"n": 4, "median_seconds": 45060},
    }
    assert times["by_process"]["change"]["resolution"] == {"n": 0, "median_seconds": None}


class NoTimesClient(HostClient):
    def apply(self, event: TicketEvent, decision: RoutingDecision, mode: str) -> ApplyResult:
        raise AssertionError("a report never writes to the helpdesk")


class DownClient(TimesClient):
    def ticket_times(self, ticket_id: str) -> TicketTimes | None:
        self.asked.append(ticket_id)
        raise HostError("503 Service Unavailable")


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (NoTimesClient(), "zammad: the connector cannot read ticket times from it"),
        (DownClient(), "zammad: stopped asking for ticket times: 503 Service Unavailable"),
    ],
)
def test_host_without_times_is_skipped(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, client: HostClient, message: str
) -> None:
    use_client(monkeypatch, client)
    result = bpsm("report", "--format", "json", "--host-times")
    assert message in result.stderr
    if isinstance(client, DownClient):
        assert client.asked == ["1"]  # a host that is down is not asked 13 more times
    k = json.loads(result.stdout)
    assert k["host_times"] == {"requested": True, "tickets": 0}
    assert k["sla"]["response"]["breached"] == 0
    assert k["sla"]["response"]["due_passed_unknown"] == 9


# ----- renderings ----------------------------------------------------------------------------


def test_text_report(data_dir: Path) -> None:
    out = bpsm("report").stdout
    assert "tickets: 20  (applied 9, override 2, shadow 1, dry-run 6, failed 1, applying 1)" in out
    assert "auto-routed: 7 of 12 routed (58.3%)" in out
    assert "pilot (shadow / dry-run): would auto-route 6 of 7 (85.7%)" in out
    assert "override rate: 4 of 11 applied or overridden (36.4%)" in out
    assert "without a service: no match 2" in out
    assert "  reactive                    12       57.1%       75.0%     33.3%" in out
    # Service names from the catalogue; no rows of zeros (nothing is proactive here).
    assert "  Printing and scanning (printing)" in out and "proactive" not in out
    # Weekly trend and the threshold's place in the histogram (the default mapping: 0.6).
    assert "per week" in out and "0.6-0.7        2  ◀ threshold 0.60" in out
    assert "low confidence, to review (newest 3)" in out
    assert "times: not asked" in out


def test_csv_report(data_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(bpsm("report", "--format", "csv").stdout)))
    assert len(rows) == 7  # process × service pairs with tickets
    assert rows[0] == {
        "process": "reactive",
        "service": "printing",
        "tickets": "5",
        "decided": "4",
        "auto_routed": "2",
        "auto_routed_share": "0.6667",
        "applied": "3",
        "agent_moved_first": "0",
        "agent_moved_later": "1",
        "override_rate": "0.3333",
        "routed": "3",
        "pilot": "1",
        "would_route": "1",
        "would_route_share": "1.0",
    }
    assert rows[-1]["override_rate"] == ""  # change/email: nothing applied, no rate


class StrictParser(HTMLParser):
    """Collects start tags and fails on a close tag that does not match the open one."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect", "circle", "polyline"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def test_html_report_is_self_contained(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = bpsm("report", "--format", "html", "--output", str(target))
    assert result.stdout == ""
    parsed = parse_html(target.read_text(encoding="utf-8"))
    # per process, per service, confidence, per week
    assert parsed.tags.count("svg") == 4
    assert "script" not in parsed.tags
    # No external assets: the only URL is the SVG namespace.
    urls = [v for _, v in parsed.attrs if v and ("http" in v or v.startswith("//"))]
    assert set(urls) == {"http://www.w3.org/2000/svg"}
    text = " ".join(parsed.text)
    assert "Tickets per process" in text and "58.3%" in text and "85.7%" in text
    # Once per service (the process × service cross is in CSV and JSON), by name.
    assert "Per process and service" not in text
    assert text.count("Printing and scanning (printing)") == 3  # chart, table, review list


def test_html_escapes_what_comes_from_the_store() -> None:
    row = {
        "host": "x",
        "ticket_id": "1",
        "process": "reactive",
        "service": "<script>alert(1)</script>",
        "outcome": "applied",
        "low_confidence": 0,
        "confidence": 0.5,
        "moved_by_agent_at": None,
        "decision": "not json",  # an unreadable decision: no SLA, no crash
        "created_at": T,
        "ticket_created_at": None,
    }
    page = render_html(kpis([row], T))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "script" not in parse_html(page).tags


# ----- bpsm evaluate --sweep --html ----------------------------------------------------------

LABELLED = """subject,body,service,process
Printer jam,The printer on the 2nd floor keeps jamming,printing,reactive
Mailbox,Outlook does not sync my mailbox,email,reactive
Mac,Can I use my own MacBook with macOS at work?,mac-computers,relation
Lunch,What is for lunch in the canteen today?,,relation
"""


def test_evaluate_sweep_html(tmp_path: Path) -> None:
    data = tmp_path / "labelled.csv"
    data.write_text(LABELLED, encoding="utf-8")
    target = tmp_path / "sweep.html"
    result = bpsm("evaluate", str(data), "--sweep", "--html", str(target))
    assert "threshold  routed  service-acc  process-acc" in result.stdout
    parsed = parse_html(target.read_text(encoding="utf-8"))
    assert parsed.tags.count("svg") == 1
    assert parsed.tags.count("polyline") >= 3  # share, service and process accuracy
    assert parsed.tags.count("tr") == 1 + 11  # header + thresholds 0.0 … 1.0
    assert "configured 0.60" in " ".join(parsed.text)


def test_evaluate_html_alone_keeps_stdout_unchanged(tmp_path: Path) -> None:
    data = tmp_path / "labelled.csv"
    data.write_text(LABELLED, encoding="utf-8")
    target = tmp_path / "sweep.html"
    result = bpsm("evaluate", str(data), "--json", "--html", str(target))
    assert "sweep" not in json.loads(result.stdout)  # the page, not the JSON, got the sweep
    assert "<svg" in target.read_text(encoding="utf-8")


# ----- a pilot: what routing would have done -------------------------------------------------

PILOT = [
    # subject, body, outcome
    ("Skriver", "Skriveren i 3. etasje skriver ikke ut.", "dry-run"),
    ("VPN", "I cannot connect to the VPN from home since this morning.", "dry-run"),
    ("asdf", "qwerty", "dry-run"),
    ("Coffee", "The coffee machine in the canteen shows E12 and gives no coffee.", "shadow"),
    ("Help", "Can you help me install a game on my son's own laptop at home?", "shadow"),
]


def pilot_rows(example_index: Any) -> list[dict[str, Any]]:
    """Audit rows as the worker writes them, from real classifications in a pilot."""
    from connector.mapping import Mapping
    from connector.route import decide

    rows = []
    for i, (subject, body, outcome) in enumerate(PILOT):
        event = TicketEvent(host="demo", delivery_id=str(i), ticket_id=str(i), subject=subject)
        match = example_index.classify(body, subject)
        decision = decide(event, match, example_index.catalogue, Mapping())
        rows.append(
            {
                "id": i + 1,
                "host": "demo",
                "ticket_id": str(i),
                "process": decision.process,
                "service": decision.service,
                "queue": decision.queue,
                "confidence": decision.confidence,
                "low_confidence": int(decision.low_confidence),
                "outcome": outcome,
                "decision": decision.model_dump_json(),
                "match": match.model_dump_json(),
                "created_at": T - i * H,
                "ticket_created_at": None,
                "moved_by_agent_at": None,
                "subject": subject,
            }
        )
    return rows


def test_a_pilot_reports_what_routing_would_do(example_index: Any) -> None:
    rows = pilot_rows(example_index)
    figures = kpis(rows, T, threshold=0.25)
    o = figures["overall"]
    confident = sum(not r["low_confidence"] for r in rows)
    assert o["pilot"] == 5 and o["routed"] == 0 and o["auto_routed_share"] is None
    assert o["would_route"] == confident > 0
    text = render_text(figures)
    # The headline is the pilot's, never "auto-routed 0 of 5 (0.0%)".
    assert "auto-routed:" not in text
    assert f"would auto-route {confident} of 5" in text


def test_tickets_without_a_service_are_split_by_why(example_index: Any) -> None:
    rows = pilot_rows(example_index)
    reasons = kpis(rows, T)["no_service_reasons"]
    assert reasons.get("(none: no usable text)") == 1  # asdf qwerty
    assert reasons.get("(none: outside IT)") == 1  # the coffee machine
    assert "(none)" not in kpis(rows, T)["by_service"]


def test_low_confidence_list_shows_subject_and_evidence(example_index: Any) -> None:
    items = kpis(pilot_rows(example_index), T)["low_confidence"]
    # The vague ticket is flagged (so may be one below the calibrated default threshold 0.6);
    # the clear printer and VPN tickets are not.
    subjects = [i["subject"] for i in items]
    assert "asdf" in subjects and "Skriver" not in subjects and "VPN" not in subjects
    assert items[subjects.index("asdf")]["service"] is None


def test_shadow_pilot_would_route_and_agrees_with_the_agents(tmp_path: Path, monkeypatch) -> None:
    """A Zammad pilot in shadow mode: nothing is moved; agents then sort two tickets into
    BPSM queues (one where the connector would have put it, one elsewhere) and leave one;
    `bpsm report --agreement` asks Zammad and counts 1 agreed of 2 sorted."""
    from tests.e2e import zammad_connector, zammad_with_bpsm_groups

    secret = "a-webhook-secret-of-the-pilot"
    env = {"BPSM_MODE": "shadow"}
    with zammad_with_bpsm_groups() as zammad:
        data = tmp_path / "data"
        with zammad_connector(data, zammad, secret, env) as service:
            tickets = [
                zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming."),
                zammad.create_ticket_as_customer("VPN", "I cannot connect to the VPN from home."),
                zammad.create_ticket_as_customer("Skriver", "Skriveren skriver ikke ut noe."),
            ]
            routings = [service.wait_routed("zammad", t) for t in tickets]
            settings = service.runtime.settings
        assert {r["outcome"] for r in routings} == {"shadow"}
        assert all(zammad.ticket(t)["group"] == "Users" for t in tickets)  # nothing moved
        zammad.move_ticket_as_agent(tickets[0], routings[0]["queue"])  # where bpsm said
        zammad.move_ticket_as_agent(tickets[1], "BPSM Change")  # elsewhere
        cli_env = {
            **env,
            "BPSM_ZAMMAD_URL": zammad.base_url,
            "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
            "BPSM_ZAMMAD_WEBHOOK_SECRET": secret,
            "BPSM_DATA_DIR": str(settings.data_dir),
        }
        for name, value in cli_env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("BPSM_MAPPINGS_DIR", str(ROOT / "mappings"))
        figures = report_json("--agreement")
    assert figures["overall"]["would_route"] == 3 and figures["overall"]["would_route_share"] == 1.0
    agreement = figures["agreement"]
    assert (agreement["asked"], agreement["sorted"], agreement["agreed"]) == (3, 2, 1)
    assert agreement["not_yet_sorted"] == 1 and agreement["agreement"] == 0.5
