"""KPIs of the audit store (and, when asked, the helpdesk), and their renderings. Pure.

`kpis` computes every figure once, in one dict; `render_text`, `render_json`, `render_csv`
and `render_html` only present that dict, so the four formats can never disagree.
`render_sweep_html` is the page of `bpsm evaluate --sweep --html`.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from connector import charts
from connector.charts import esc
from connector.events import PROCESSES, RoutingDecision, ServiceMatch, TicketTimes

NO_SERVICE = "(none)"  # a service id is a slug, so this never collides with a real one
# Why a ticket has no service: each its own row, so "(none)" is not one opaque largest bar.
NO_SERVICE_REASONS = {
    "outside": "(none: outside IT)",
    "private": "(none: private matter)",
    "no-usable-text": "(none: no usable text)",
    "no-match": "(none: no match)",
}
PILOT_OUTCOMES = ("shadow", "dry-run")  # decided, but nothing was moved
LOW_CONFIDENCE_LIST = 25  # the low-confidence tickets listed for review, newest first
BINS = 10
OUTCOMES = ("applied", "override", "shadow", "dry-run", "failed", "applying")
SLA_STATES = ("met", "breached", "pending", "due_passed_unknown", "not_due_unknown")
SERVICE_CHART_LIMIT = 30  # more bars than this is a wall, not a chart; the table has all

HostTimes = Mapping[tuple[str, str], TicketTimes | None]
Row = Mapping[str, Any]

DEFINITIONS: dict[str, str] = {
    "total": "routing decisions made in the period (one per ticket and helpdesk); the "
    "period selects by when the connector decided, not when the ticket was opened",
    "decided": "tickets whose routing finished: every outcome except 'applying' (in progress)",
    "auto_routed": "decided tickets the connector moved itself (outcome 'applied') with a "
    "confident match (not low_confidence)",
    "routed": "decided tickets outside a pilot (every outcome but 'applying', 'shadow' and "
    "'dry-run'): those routing was switched on for",
    "auto_routed_share": "auto_routed / routed",
    "would_route": "pilot tickets (outcome 'shadow' or 'dry-run': decided, nothing moved) "
    "with a confident match: what routing would have moved automatically",
    "would_route_share": "would_route / pilot tickets",
    "no_service_reasons": "tickets without a service, by why: outside IT (a matter no service "
    "covers), private matter, no usable text, no match",
    "agreement": "pilot tickets (shadow, dry-run) whose helpdesk queue was asked (--agreement): "
    "sorted = an agent has since put the ticket in one of the mapping's BPSM queues; agreed = "
    "that queue is the one the connector would have chosen; agreement = agreed / sorted",
    "weekly": "tickets per ISO week (by when the connector decided), per process, with the "
    "auto-routed and would-route shares",
    "agent_moved_first": "tickets an agent had already moved before the connector acted "
    "(outcome 'override')",
    "agent_moved_later": "applied tickets an agent later moved to another queue "
    "(moved_by_agent_at set)",
    "override_rate": "(agent_moved_first + agent_moved_later) / (applied + agent_moved_first)",
    "confidence_histogram": "tickets with a service by match confidence in ten bins [0, 0.1), "
    "…, [0.9, 1.0]; tickets without a service are counted apart (no_service)",
    "sla": "reactive tickets with response/resolution due times; 'met'/'breached'/'pending' "
    "need the helpdesk's times (--host-times): breached = answered/closed after the due time, "
    "or still not by now when the due time has passed; pending = not yet, due time ahead. "
    "Without the helpdesk's times only 'due_passed_unknown' (due time passed, outcome "
    "unknown) and 'not_due_unknown' are counted: those are not breaches",
    "breach_rate": "breached / (met + breached)",
    "time_to_first_response": "from ticket creation (else the connector's first sight of it) "
    "to the first reply to the customer, or to closing when it was closed unanswered; "
    "only tickets whose helpdesk reported times",
    "time_to_resolution": "from ticket creation to closing, for closed tickets with helpdesk times",
}


def kpis(
    routings: Sequence[Row],
    now: float,
    host_times: HostTimes | None = None,
    since: float | None = None,
    service_names: Mapping[str, str] | None = None,
    threshold: float | None = None,
    agreement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every KPI of the report, as one JSON-ready dict. Definitions (also in the output):

    - total: routing rows in the period (one per (host, ticket)).
    - decided: rows whose outcome is not 'applying'. auto_routed: decided rows with outcome
      'applied' and not low_confidence. routed: decided rows outside a pilot (not 'shadow'
      or 'dry-run'). auto_routed_share = auto_routed / routed. would_route: pilot rows with a
      confident match; would_route_share = would_route / pilot.
    - override_rate = (agent_moved_first + agent_moved_later) / (applied + agent_moved_first),
      where agent_moved_first counts outcome 'override' (an agent moved it before the
      connector could) and agent_moved_later counts 'applied' rows with moved_by_agent_at.
      Low-confidence tickets parked in a fallback queue count like any other.
    - The same figures per process (all five, zeros included), per service (NO_SERVICE for
      tickets without one) and per process × service.
    - confidence_histogram: every row by confidence, ten bins; the last includes 1.0.
    - sla: reactive rows whose decision carries due times. With host times for a ticket
      (a TicketTimes, not None): met / breached / pending; without: due_passed_unknown /
      not_due_unknown, never counted as breaches. The response clock stops at the first
      reply, or at closing when a ticket was closed unanswered.
    - times: medians (seconds) of time to first response and to resolution over tickets
      with host times, from ticket_created_at (else created_at, when the connector first
      saw the ticket).
    `rate` values are rounded to 4 places and None when their denominator is 0.
    """
    try:
        return _kpis(routings, now, host_times, since, service_names, threshold, agreement)
    finally:
        _reason.cache_clear()


def _kpis(
    routings: Sequence[Row],
    now: float,
    host_times: HostTimes | None,
    since: float | None,
    service_names: Mapping[str, str] | None,
    threshold: float | None,
    agreement: Mapping[str, Any] | None,
) -> dict[str, Any]:
    times = host_times or {}
    with_service = [r for r in routings if r["service"]]
    return {
        "generated_at": _iso(now),
        "since": _iso(since) if since is not None else None,
        "total": len(routings),
        "pilot": sum(r["outcome"] in PILOT_OUTCOMES for r in routings),
        "outcomes": {o: sum(r["outcome"] == o for r in routings) for o in OUTCOMES},
        "overall": group_stats(routings),
        "by_process": {p: group_stats(_where(routings, "process", p)) for p in PROCESSES},
        "by_service": {s: group_stats(rows) for s, rows in _by_service(routings)},
        "by_process_service": _process_service(routings),
        "service_names": {
            s: service_names[s]
            for s in {str(r["service"]) for r in with_service}
            if service_names and s in service_names
        },
        "no_service_reasons": {label: n for label, n in _no_service_reasons(routings).items() if n},
        "weekly": weekly_trend(routings),
        "low_confidence": low_confidence_list(routings),
        "threshold": threshold,
        "agreement": dict(agreement) if agreement is not None else None,
        "confidence_histogram": confidence_histogram(with_service),
        "no_service": len(routings) - len(with_service),
        "sla": sla_report(routings, now, times),
        "times": time_report(routings, times),
        "host_times": {
            "requested": host_times is not None,
            "tickets": sum(times.get(_key(r)) is not None for r in routings),
        },
        "definitions": DEFINITIONS,
    }


# ----- grouping and counting -----------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _key(row: Row) -> tuple[str, str]:
    return (str(row["host"]), str(row["ticket_id"]))


def _service(row: Row) -> str:
    if row["service"]:
        return str(row["service"])
    return NO_SERVICE_REASONS[no_service_reason(row)]


def _where(rows: Iterable[Row], column: str, value: str) -> list[Row]:
    return [r for r in rows if r[column] == value]


def _by_service(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    """Groups by service, largest first (ties by name) so the top of a chart matters most."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_service(row), []).append(row)
    return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def _process_service(rows: Sequence[Row]) -> list[dict[str, Any]]:
    out = []
    for process in PROCESSES:
        for service, group in _by_service(_where(rows, "process", process)):
            out.append({"process": process, "service": service, **group_stats(group)})
    return out


def _match(row: Row) -> ServiceMatch | None:
    try:
        return ServiceMatch.model_validate_json(row["match"])
    except (ValidationError, KeyError, TypeError):
        return None  # an unreadable row still counts, under "no match"


def _decision(row: Row) -> RoutingDecision | None:
    try:
        return RoutingDecision.model_validate_json(row["decision"])
    except (ValidationError, KeyError, TypeError):
        return None


def no_service_reason(row: Row) -> str:
    """Why a ticket has no service, as a NO_SERVICE_REASONS key."""
    return _reason(row.get("match"), row.get("decision"))


@lru_cache(maxsize=8192)
def _reason(match_json: Any, decision_json: Any) -> str:
    # A row is grouped several times (by service, process × service, reasons): its two JSON
    # documents are parsed once per report (kpis empties the memo: it holds ticket words).
    row = {"match": match_json, "decision": decision_json}
    match, decision = _match(row), _decision(row)
    if match is not None and match.outside:
        return "outside"
    if match is not None and match.private_matter:
        return "private"
    if decision is not None and "no-usable-text" in decision.reasons:
        return "no-usable-text"
    return "no-match"


def _no_service_reasons(rows: Iterable[Row]) -> dict[str, int]:
    counts = dict.fromkeys(NO_SERVICE_REASONS.values(), 0)
    for row in rows:
        if not row["service"]:
            counts[NO_SERVICE_REASONS[no_service_reason(row)]] += 1
    return counts


def _week(ts: float) -> str:
    year, week, _ = datetime.fromtimestamp(ts, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def weekly_trend(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per ISO week, oldest first: tickets, per process, and the two routing shares."""
    weeks: dict[str, list[Row]] = {}
    for row in rows:
        weeks.setdefault(_week(float(row["created_at"])), []).append(row)
    out = []
    for week in sorted(weeks):
        group = weeks[week]
        stats = group_stats(group)
        out.append(
            {
                "week": week,
                "tickets": len(group),
                "by_process": {
                    p: n for p in PROCESSES if (n := sum(r["process"] == p for r in group))
                },
                "auto_routed_share": stats["auto_routed_share"],
                "would_route_share": stats["would_route_share"],
                "override_rate": stats["override_rate"],
            }
        )
    return out


def low_confidence_list(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The newest low-confidence tickets, with what a reviewer needs to judge them."""
    low = sorted(
        (r for r in rows if r["low_confidence"]),
        key=lambda r: float(r["created_at"]),
        reverse=True,
    )[:LOW_CONFIDENCE_LIST]
    out = []
    for row in low:
        match = _match(row)
        out.append(
            {
                "host": row["host"],
                "ticket": row["ticket_id"],
                "time": _iso(float(row["created_at"])),
                "subject": row.get("subject") or "",
                "service": row["service"],
                "process": row["process"],
                "confidence": round(float(row["confidence"]), 3),
                "runner_up": match.runner_up if match else None,
                "evidence": [e.shown for e in match.evidence] if match else [],
            }
        )
    return out


def pilot_agreement(
    rows: Sequence[Row],
    current: Mapping[tuple[str, str], str | None],
    bpsm_queues: Mapping[str, Collection[str]],
) -> dict[str, Any]:
    """How often a pilot's decisions agree with where agents have since put the tickets:
    only tickets an agent moved into one of the BPSM queues count (a ticket still in its
    inbox tells nothing yet)."""
    asked = [r for r in rows if r["outcome"] in PILOT_OUTCOMES and _key(r) in current]
    sorted_rows = [r for r in asked if current[_key(r)] in bpsm_queues.get(str(r["host"]), ())]
    by_service: dict[str, dict[str, Any]] = {}
    for row in sorted_rows:
        group = by_service.setdefault(_service(row), {"sorted": 0, "agreed": 0})
        group["sorted"] += 1
        group["agreed"] += current[_key(row)] == row["queue"]
    for group in by_service.values():
        group["agreement"] = _rate(group["agreed"], group["sorted"])
    agreed = sum(current[_key(r)] == r["queue"] for r in sorted_rows)
    return {
        "asked": len(asked),
        "sorted": len(sorted_rows),
        "not_yet_sorted": len(asked) - len(sorted_rows),
        "agreed": agreed,
        "agreement": _rate(agreed, len(sorted_rows)),
        "by_service": dict(sorted(by_service.items(), key=lambda kv: -kv[1]["sorted"])),
    }


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def group_stats(rows: Sequence[Row]) -> dict[str, Any]:
    """Counts and rates of one group of routings (see `kpis` for the definitions)."""
    decided = [r for r in rows if r["outcome"] != "applying"]
    auto = sum(r["outcome"] == "applied" and not r["low_confidence"] for r in decided)
    applied = sum(r["outcome"] == "applied" for r in rows)
    moved_first = sum(r["outcome"] == "override" for r in rows)
    moved_later = sum(
        r["outcome"] == "applied" and r["moved_by_agent_at"] is not None for r in rows
    )
    pilot = [r for r in rows if r["outcome"] in PILOT_OUTCOMES]
    would = sum(not r["low_confidence"] for r in pilot)
    routed = len(decided) - len(pilot)
    return {
        "tickets": len(rows),
        "decided": len(decided),
        "routed": routed,
        "auto_routed": auto,
        "auto_routed_share": _rate(auto, routed),
        "pilot": len(pilot),
        "would_route": would,
        "would_route_share": _rate(would, len(pilot)),
        "applied": applied,
        "agent_moved_first": moved_first,
        "agent_moved_later": moved_later,
        "override_rate": _rate(moved_first + moved_later, applied + moved_first),
    }


def _bin(confidence: float) -> int:
    # The last bin is closed ([0.9, 1.0]) so that a certain match is not a bin of its own.
    return max(0, min(int(confidence * BINS), BINS - 1))


def confidence_histogram(rows: Sequence[Row]) -> list[dict[str, Any]]:
    counts = [0] * BINS
    for row in rows:
        counts[_bin(float(row["confidence"]))] += 1
    return [
        {"from": round(i / BINS, 2), "to": round((i + 1) / BINS, 2), "count": c}
        for i, c in enumerate(counts)
    ]


# ----- SLA and times -------------------------------------------------------------------------


def _due_times(row: Row) -> tuple[float, float] | None:
    """(response_due, resolution_due) of a reactive decision; None without an SLA."""
    if row["process"] != "reactive":
        return None
    try:
        decision = RoutingDecision.model_validate_json(row["decision"])
    except ValidationError:
        return None  # an unreadable row has no SLA to judge, it must not stop the report
    if decision.sla is None:
        return None
    return decision.sla.response_due.timestamp(), decision.sla.resolution_due.timestamp()


def _responded_at(times: TicketTimes) -> float | None:
    # Closing a ticket unanswered (spam, duplicate, solved by itself) also stops the clock.
    return times.first_response_at if times.first_response_at is not None else times.closed_at


def sla_state(due: float, done_at: float | None, known: bool, now: float) -> str:
    """One of SLA_STATES for one due time; `known` = the helpdesk reported the ticket."""
    if not known:
        return "due_passed_unknown" if now > due else "not_due_unknown"
    if done_at is not None:
        return "met" if done_at <= due else "breached"
    return "breached" if now > due else "pending"


SlaItem = tuple[Row, tuple[float, float]]  # a routing and its (response, resolution) due


def _sla_counts(items: Sequence[SlaItem], now: float, times: HostTimes) -> dict[str, Any]:
    counts = {kind: dict.fromkeys(SLA_STATES, 0) for kind in ("response", "resolution")}
    for row, (response_due, resolution_due) in items:
        ticket = times.get(_key(row))
        known = ticket is not None
        responded = _responded_at(ticket) if ticket else None
        closed = ticket.closed_at if ticket else None
        counts["response"][sla_state(response_due, responded, known, now)] += 1
        counts["resolution"][sla_state(resolution_due, closed, known, now)] += 1
    return {
        kind: {**c, "breach_rate": _rate(c["breached"], c["met"] + c["breached"])}
        for kind, c in counts.items()
    }


def sla_report(rows: Sequence[Row], now: float, times: HostTimes) -> dict[str, Any]:
    items = [(r, due) for r in rows if (due := _due_times(r)) is not None]
    by_service: dict[str, list[SlaItem]] = {}
    for item in items:
        by_service.setdefault(_service(item[0]), []).append(item)
    return {
        "tickets": len(items),
        **_sla_counts(items, now, times),
        "by_service": {
            s: {"tickets": len(group), **_sla_counts(group, now, times)}
            for s, group in sorted(by_service.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        },
    }


def _start(row: Row) -> float:
    value = row["ticket_created_at"]
    return float(value if value is not None else row["created_at"])


def _median(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "median_seconds": statistics.median(values) if values else None}


def _durations(rows: Iterable[Row], times: HostTimes) -> dict[str, Any]:
    response: list[float] = []
    resolution: list[float] = []
    for row in rows:
        ticket = times.get(_key(row))
        if ticket is None:
            continue
        responded = _responded_at(ticket)
        # Clocks of two systems: a reply stamped a second "before" creation is zero, not less.
        if responded is not None:
            response.append(max(0.0, responded - _start(row)))
        if ticket.closed_at is not None:
            resolution.append(max(0.0, ticket.closed_at - _start(row)))
    return {"first_response": _median(response), "resolution": _median(resolution)}


def time_report(rows: Sequence[Row], times: HostTimes) -> dict[str, Any]:
    return {
        **_durations(rows, times),
        "by_process": {p: _durations(_where(rows, "process", p), times) for p in PROCESSES},
        "by_service": {s: _durations(group, times) for s, group in _by_service(rows)},
    }


# ----- shared formatting ---------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def duration(seconds: float | None) -> str:
    """3d 4h, 2h 05m, 12m, 40s: enough precision for a median over many tickets."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{s}s"


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def _period(figures: Mapping[str, Any]) -> str:
    start = _when(figures["since"]) if figures["since"] else "the beginning"
    return f"{start} to {_when(figures['generated_at'])}"


def _outcome_line(figures: Mapping[str, Any]) -> str:
    return ", ".join(f"{o} {n}" for o, n in figures["outcomes"].items() if n)


# ----- text ----------------------------------------------------------------------------------


def _name(figures: Mapping[str, Any], service: str) -> str:
    """A service as people know it: "Printing (printing)"; the id alone without a name."""
    name = figures.get("service_names", {}).get(service)
    return f"{name} ({service})" if name and name != service else service


def _nonzero(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Only groups with tickets: a row of zeros and dashes says nothing."""
    return {name: g for name, g in groups.items() if g["tickets"]}


def _stats_lines(
    figures: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]], heading: str
) -> list[str]:
    pilot = bool(figures.get("pilot"))
    names = {key: _name(figures, key) for key in groups}
    width = max([22, *(len(n) for n in names.values())])
    head = f"{heading:<{width + 2}} {'tickets':>7} {'auto-routed':>11}"
    lines = [head + (f" {'would route':>11}" if pilot else "") + f" {'override':>9}"]
    for key, g in _nonzero(groups).items():
        line = f"  {names[key]:<{width}} {g['tickets']:>7} {pct(g['auto_routed_share']):>11}"
        if pilot:
            line += f" {pct(g['would_route_share']):>11}"
        lines.append(line + f" {pct(g['override_rate']):>9}")
    return lines


def _sla_lines(sla: Mapping[str, Any]) -> list[str]:
    labels = [s.replace("_", " ") for s in SLA_STATES]
    widths = [len(label) + 2 for label in labels]
    header = "".join(f"{label:>{w}}" for label, w in zip(labels, widths, strict=True))
    lines = [
        f"SLA (reactive tickets with due times: {sla['tickets']})",
        f"  {'':<10}{header}{'breach rate':>13}",
    ]
    for kind in ("response", "resolution"):
        c = sla[kind]
        cells = "".join(f"{c[s]:>{w}}" for s, w in zip(SLA_STATES, widths, strict=True))
        lines.append(f"  {kind:<10}{cells}{pct(c['breach_rate']):>13}")
    return lines


def _time_lines(figures: Mapping[str, Any]) -> list[str]:
    ht = figures["host_times"]
    if not ht["requested"]:
        return ["times: not asked (add --host-times to ask the helpdesk)"]
    t = figures["times"]
    return [
        f"times (helpdesk reported {ht['tickets']} of {figures['total']} tickets)",
        f"  first response: median {duration(t['first_response']['median_seconds'])} "
        f"(n={t['first_response']['n']})",
        f"  resolution:     median {duration(t['resolution']['median_seconds'])} "
        f"(n={t['resolution']['n']})",
    ]


def _headline_lines(figures: Mapping[str, Any]) -> list[str]:
    """Auto-routed for what was really routed; in a pilot (dry-run, shadow) what routing
    would have done — "auto-routed 0 %" is no verdict on a pilot that moves nothing."""
    o = figures["overall"]
    lines = []
    if o["routed"] or not o["pilot"]:
        lines.append(
            f"auto-routed: {o['auto_routed']} of {o['routed']} routed "
            f"({pct(o['auto_routed_share'])})"
        )
    if o["pilot"]:
        lines.append(
            f"pilot (shadow / dry-run): would auto-route {o['would_route']} of {o['pilot']} "
            f"({pct(o['would_route_share'])}); the rest would go to a person"
        )
    agreement = figures.get("agreement")
    if agreement:
        lines.append(
            f"pilot agreement with agents: {agreement['agreed']} of {agreement['sorted']} "
            f"tickets agents have sorted into BPSM queues ({pct(agreement['agreement'])}); "
            f"{agreement['not_yet_sorted']} not sorted yet"
        )
    moved = o["agent_moved_first"] + o["agent_moved_later"]
    if o["applied"] + o["agent_moved_first"]:
        lines.append(
            f"override rate: {moved} of {o['applied'] + o['agent_moved_first']} applied or "
            f"overridden ({pct(o['override_rate'])})"
        )
    reasons = figures.get("no_service_reasons") or {}
    if reasons:
        shown = ", ".join(f"{k.strip('()').removeprefix('none: ')} {n}" for k, n in reasons.items())
        lines.append(f"without a service: {shown}")
    return lines


def _histogram_lines(figures: Mapping[str, Any]) -> list[str]:
    threshold = figures.get("threshold")
    lines = [
        f"confidence of {sum(b['count'] for b in figures['confidence_histogram'])} "
        f"matches with a service ({figures.get('no_service', 0)} without one apart)"
    ]
    for b in figures["confidence_histogram"]:
        mark = ""
        if threshold is not None and b["from"] <= threshold < b["to"] + (b["to"] >= 1.0):
            mark = f"  ◀ threshold {threshold:.2f}"
        lines.append(f"  {b['from']:.1f}-{b['to']:.1f}  {b['count']:>7}{mark}")
    return lines


def _weekly_lines(figures: Mapping[str, Any]) -> list[str]:
    weeks = figures.get("weekly") or []
    if not weeks:
        return []
    lines = ["per week   tickets  auto-routed  would route  override  processes"]
    for w in weeks:
        processes = ", ".join(f"{p} {n}" for p, n in w["by_process"].items())
        lines.append(
            f"  {w['week']:<8} {w['tickets']:>7} {pct(w['auto_routed_share']):>12} "
            f"{pct(w['would_route_share']):>12} {pct(w['override_rate']):>9}  {processes}"
        )
    return lines + [""]


def _low_confidence_lines(figures: Mapping[str, Any]) -> list[str]:
    items = figures.get("low_confidence") or []
    if not items:
        return []
    lines = [f"low confidence, to review (newest {len(items)})"]
    for item in items:
        service = _name(figures, item["service"]) if item["service"] else "-"
        lines.append(
            f"  {item['host']} #{item['ticket']}  {item['subject'][:40]!r}  {service}  "
            f"conf {item['confidence']:.2f}  runner-up {item['runner_up'] or '-'}  "
            f"evidence: {', '.join(item['evidence']) or '-'}"
        )
    return lines + [""]


def render_text(figures: Mapping[str, Any]) -> str:
    lines = [
        f"BPSM report, {_period(figures)}",
        f"tickets: {figures['total']}  ({_outcome_line(figures) or 'none'})",
        *_headline_lines(figures),
        "",
        *_stats_lines(figures, figures["by_process"], "per process"),
        "",
        *_stats_lines(figures, figures["by_service"], "per service"),
        "",
        *_weekly_lines(figures),
        *_histogram_lines(figures),
        "",
        *_low_confidence_lines(figures),
        *_sla_lines(figures["sla"]),
        "",
        *_time_lines(figures),
        *_correction_lines(figures.get("corrections")),
    ]
    return "\n".join(lines)


def correction_counts(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Agents' corrections (Store.corrections) per routed service: how many, and to what
    ("process/service"). A move that kept process and service (out of a fallback queue into
    the decided one) confirms the decision and is not counted."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        chosen = (row["to_process"], row["to_service"])
        if chosen == (row["from_process"], row["from_service"]):
            continue
        entry = out.setdefault(row["from_service"] or NO_SERVICE, {"corrections": 0, "to": {}})
        entry["corrections"] += 1
        target = f"{row['to_process']}/{row['to_service'] or '?'}"
        entry["to"][target] = entry["to"].get(target, 0) + 1
    return dict(sorted(out.items(), key=lambda item: (-item[1]["corrections"], item[0])))


def _correction_lines(corrections: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    if corrections is None:
        return []
    lines = ["", "corrections by agents (routed service: count → what they chose)"]
    for service, entry in corrections.items():
        targets = ", ".join(f"{t} {n}" for t, n in sorted(entry["to"].items()))
        lines.append(f"  {service:<24} {entry['corrections']:>5}  → {targets}")
    if not corrections:
        lines.append("  none")
    return lines


# ----- JSON and CSV --------------------------------------------------------------------------


def render_json(figures: Mapping[str, Any]) -> str:
    return json.dumps(figures, ensure_ascii=False, indent=2)


CSV_COLUMNS = (
    "process",
    "service",
    "tickets",
    "decided",
    "auto_routed",
    "auto_routed_share",
    "applied",
    "agent_moved_first",
    "agent_moved_later",
    "override_rate",
    "routed",
    "pilot",
    "would_route",
    "would_route_share",
)


def render_csv(figures: Mapping[str, Any]) -> str:
    """One row per process × service that has tickets; an empty rate has no denominator."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in figures["by_process_service"]:
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


# ----- HTML ----------------------------------------------------------------------------------


def _html_summary(figures: Mapping[str, Any]) -> str:
    o, sla = figures["overall"], figures["sla"]
    # Without the helpdesk's times there is no breach rate; say why instead of a bare "-".
    hint = "" if figures["host_times"]["requested"] else " (needs --host-times)"
    items = [(str(figures["total"]), "tickets")]
    if o["routed"] or not o["pilot"]:
        share = pct(o["auto_routed_share"])
        items.append((share, f"auto-routed ({o['auto_routed']} of {o['routed']})"))
    if o["pilot"]:
        items.append(
            (
                pct(o["would_route_share"]),
                f"would auto-route in the pilot ({o['would_route']} of {o['pilot']})",
            )
        )
    agreement = figures.get("agreement")
    if agreement:
        items.append(
            (
                pct(agreement["agreement"]),
                f"agreed with agents ({agreement['agreed']} of {agreement['sorted']} sorted)",
            )
        )
    items += [
        (pct(o["override_rate"]), "override rate"),
        (pct(sla["response"]["breach_rate"]), "response SLA breach rate" + hint),
        (pct(sla["resolution"]["breach_rate"]), "resolution SLA breach rate" + hint),
    ]
    return charts.cards(items)


def _html_charts(figures: Mapping[str, Any]) -> str:
    processes = [(p, float(g["tickets"])) for p, g in _nonzero(figures["by_process"]).items()]
    services = [(_name(figures, s), float(g["tickets"])) for s, g in figures["by_service"].items()]
    caption = "Tickets per service"
    if len(services) > SERVICE_CHART_LIMIT:
        caption += f" (top {SERVICE_CHART_LIMIT} of {len(services)}; all in the table)"
        services = services[:SERVICE_CHART_LIMIT]
    bins = [(f"{b['from']:.1f}", float(b["count"])) for b in figures["confidence_histogram"]]
    threshold = figures.get("threshold")
    confidence = "Confidence of the matches with a service (bin start)"
    if threshold is not None:
        confidence += f"; threshold {threshold:.2f}"
    weeks = [(w["week"], float(w["tickets"])) for w in figures.get("weekly") or []]
    return (
        '<div class="charts">'
        + charts.figure("Tickets per process", charts.hbar_chart("Tickets per process", processes))
        + charts.figure(caption, charts.hbar_chart(caption, services))
        + charts.figure(confidence, charts.column_chart("Confidence histogram", bins))
        + charts.figure("Tickets per week", charts.column_chart("Tickets per week", weeks))
        + "</div>"
    )


STATS_HEADERS = ("tickets", "decided", "auto-routed", "share", "moved first", "moved later")


def _stats_row(g: Mapping[str, Any]) -> list[object]:
    return [
        g["tickets"],
        g["decided"],
        g["auto_routed"],
        pct(g["auto_routed_share"]),
        g["agent_moved_first"],
        g["agent_moved_later"],
    ]


def _html_stats_tables(figures: Mapping[str, Any]) -> str:
    """Per process and per service, once each (the process × service cross is in the CSV
    and JSON); rows without tickets are left out."""
    pilot = bool(figures.get("pilot"))
    headers = [*STATS_HEADERS, *(["would route"] if pilot else []), "override rate"]

    def row(name: str, g: Mapping[str, Any]) -> list[object]:
        would = [pct(g["would_route_share"])] if pilot else []
        return [name, *_stats_row(g), *would, pct(g["override_rate"])]

    per_process = [row(p, g) for p, g in _nonzero(figures["by_process"]).items()]
    per_service = [row(_name(figures, s), g) for s, g in figures["by_service"].items()]
    return (
        "<h2>Per process</h2>"
        + charts.table(["process", *headers], per_process)
        + "<h2>Per service</h2>"
        + charts.table(["service", *headers], per_service)
        + _html_weekly(figures)
        + _html_low_confidence(figures)
    )


def _html_weekly(figures: Mapping[str, Any]) -> str:
    weeks = figures.get("weekly") or []
    if not weeks:
        return ""
    rows = [
        [
            w["week"],
            w["tickets"],
            ", ".join(f"{p} {n}" for p, n in w["by_process"].items()),
            pct(w["auto_routed_share"]),
            pct(w["would_route_share"]),
            pct(w["override_rate"]),
        ]
        for w in weeks
    ]
    headers = ["week", "tickets", "processes", "auto-routed", "would route", "override rate"]
    return "<h2>Per week</h2>" + charts.table(headers, rows, text_columns=3)


def _html_low_confidence(figures: Mapping[str, Any]) -> str:
    items = figures.get("low_confidence") or []
    if not items:
        return ""
    rows = [
        [
            f"{i['host']} #{i['ticket']}",
            i["subject"],
            _name(figures, i["service"]) if i["service"] else "-",
            f"{i['confidence']:.2f}",
            i["runner_up"] or "-",
            ", ".join(i["evidence"]) or "-",
        ]
        for i in items
    ]
    headers = ["ticket", "subject", "service", "confidence", "runner-up", "evidence"]
    return f"<h2>Low confidence, to review (newest {len(items)})</h2>" + charts.table(
        headers, rows, text_columns=3
    )


def _html_sla(sla: Mapping[str, Any]) -> str:
    headers = ["", *(s.replace("_", " ") for s in SLA_STATES), "breach rate"]
    rows = [
        [kind, *(sla[kind][s] for s in SLA_STATES), pct(sla[kind]["breach_rate"])]
        for kind in ("response", "resolution")
    ]
    per_service = [
        [s, g["tickets"], g["response"]["breached"], g["resolution"]["breached"]]
        + [g["response"]["due_passed_unknown"], g["resolution"]["due_passed_unknown"]]
        for s, g in sla["by_service"].items()
    ]
    return (
        f"<h2>SLA (reactive tickets with due times: {esc(sla['tickets'])})</h2>"
        + charts.table(headers, rows)
        + charts.table(
            [
                "service",
                "tickets",
                "response breached",
                "resolution breached",
                "response due passed, unknown",
                "resolution due passed, unknown",
            ],
            per_service,
        )
    )


def _html_times(figures: Mapping[str, Any]) -> str:
    ht = figures["host_times"]
    if not ht["requested"]:
        return (
            "<h2>Response and resolution times</h2><p>Not asked: run the report with "
            "<code>--host-times</code> to ask the helpdesk.</p>"
        )
    t = figures["times"]
    rows = [[p, *_time_cells(d)] for p, d in t["by_process"].items()]
    rows += [[f"service {s}", *_time_cells(d)] for s, d in t["by_service"].items()]
    return (
        f"<h2>Response and resolution times</h2><p>The helpdesk reported times for "
        f"{esc(ht['tickets'])} of {esc(figures['total'])} tickets.</p>"
        + charts.table(
            ["", "first response (median)", "n", "resolution (median)", "n"],
            [["all", *_time_cells(t)], *rows],
        )
    )


def _time_cells(d: Mapping[str, Any]) -> list[object]:
    fr, rs = d["first_response"], d["resolution"]
    return [duration(fr["median_seconds"]), fr["n"], duration(rs["median_seconds"]), rs["n"]]


def _html_definitions(figures: Mapping[str, Any]) -> str:
    items = "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in figures["definitions"].items()
    )
    return f'<h2>Definitions</h2><dl class="defs">{items}</dl>'


def render_html(figures: Mapping[str, Any]) -> str:
    body = (
        "<h1>BPSM report</h1>"
        f'<p class="meta">{esc(_period(figures))} · outcomes: '
        f"{esc(_outcome_line(figures) or 'none')}</p>"
        + _html_summary(figures)
        + _html_charts(figures)
        + _html_stats_tables(figures)
        + _html_sla(figures["sla"])
        + _html_times(figures)
        + _html_definitions(figures)
    )
    return charts.page("BPSM report", body)


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
}


# ----- threshold sweep page (bpsm evaluate --sweep --html) -----------------------------------


def render_sweep_html(
    result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], source: str
) -> str:
    """Share auto-routed vs accuracy per threshold: the chart an admin picks a threshold by."""
    series = [
        charts.Series("share routed", [(r["threshold"], r["share"]) for r in rows]),
        charts.Series("service accuracy", [(r["threshold"], r["service"]) for r in rows]),
        charts.Series("process accuracy", [(r["threshold"], r["process"]) for r in rows]),
    ]
    threshold = float(result["threshold"])
    chart = charts.line_chart(
        "Share auto-routed and its accuracy per confidence threshold",
        series,
        x_label="confidence threshold",
        marker=(threshold, f"configured {threshold:.2f}"),
    )
    table_rows = [
        [f"{r['threshold']:.1f}", pct(r["share"]), pct(r["service"]), pct(r["process"])]
        for r in rows
    ]
    body = (
        "<h1>Choosing the confidence threshold</h1>"
        f'<p class="meta">{esc(result["n"])} labelled tickets from {esc(source)}. '
        "Tickets at or above the threshold are routed automatically; accuracy is measured "
        "on those tickets only (empty where none is routed).</p>"
        + charts.cards(
            [
                (f"{threshold:.2f}", "configured threshold"),
                (pct(result["auto_routed_share"]), "routed at the configured threshold"),
                (pct(result["service_accuracy"]), "service accuracy, all tickets"),
                (pct(result["process_accuracy"]), "process accuracy, all tickets"),
            ]
        )
        + charts.figure("Share routed vs accuracy", chart)
        + charts.table(
            ["threshold", "share routed", "service accuracy", "process accuracy"], table_rows
        )
    )
    return charts.page("BPSM threshold sweep", body)
