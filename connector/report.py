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
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from connector import charts
from connector.charts import esc
from connector.events import PROCESSES, RoutingDecision
from connector.hosts.base import TicketTimes

NO_SERVICE = "(none)"  # a service id is a slug, so this never collides with a real one
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
    "auto_routed_share": "auto_routed / decided",
    "agent_moved_first": "tickets an agent had already moved before the connector acted "
    "(outcome 'override')",
    "agent_moved_later": "applied tickets an agent later moved to another queue "
    "(moved_by_agent_at set)",
    "override_rate": "(agent_moved_first + agent_moved_later) / (applied + agent_moved_first)",
    "confidence_histogram": "all tickets by match confidence in ten bins [0, 0.1), …, [0.9, 1.0]",
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
) -> dict[str, Any]:
    """Every KPI of the report, as one JSON-ready dict. Definitions (also in the output):

    - total: routing rows in the period (one per (host, ticket)).
    - decided: rows whose outcome is not 'applying'. auto_routed: decided rows with outcome
      'applied' and not low_confidence. auto_routed_share = auto_routed / decided.
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
    times = host_times or {}
    return {
        "generated_at": _iso(now),
        "since": _iso(since) if since is not None else None,
        "total": len(routings),
        "outcomes": {o: sum(r["outcome"] == o for r in routings) for o in OUTCOMES},
        "overall": group_stats(routings),
        "by_process": {p: group_stats(_where(routings, "process", p)) for p in PROCESSES},
        "by_service": {s: group_stats(rows) for s, rows in _by_service(routings)},
        "by_process_service": _process_service(routings),
        "confidence_histogram": confidence_histogram(routings),
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
    return str(row["service"]) if row["service"] else NO_SERVICE


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
    return {
        "tickets": len(rows),
        "decided": len(decided),
        "auto_routed": auto,
        "auto_routed_share": _rate(auto, len(decided)),
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


def _stats_lines(groups: Mapping[str, Mapping[str, Any]], heading: str) -> list[str]:
    lines = [f"{heading:<24} {'tickets':>7} {'auto-routed':>11} {'override':>9}"]
    for name, g in groups.items():
        lines.append(
            f"  {name:<22} {g['tickets']:>7} {pct(g['auto_routed_share']):>11} "
            f"{pct(g['override_rate']):>9}"
        )
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


def render_text(figures: Mapping[str, Any]) -> str:
    o = figures["overall"]
    moved = o["agent_moved_first"] + o["agent_moved_later"]
    lines = [
        f"BPSM report, {_period(figures)}",
        f"tickets: {figures['total']}  ({_outcome_line(figures) or 'none'})",
        f"auto-routed: {o['auto_routed']} of {o['decided']} decided "
        f"({pct(o['auto_routed_share'])})",
        f"override rate: {moved} of {o['applied'] + o['agent_moved_first']} applied or "
        f"overridden ({pct(o['override_rate'])})",
        "",
        *_stats_lines(figures["by_process"], "per process"),
        "",
        *_stats_lines(figures["by_service"], "per service"),
        "",
        "confidence  tickets",
        *(
            f"  {b['from']:.1f}-{b['to']:.1f}  {b['count']:>7}"
            for b in figures["confidence_histogram"]
        ),
        "",
        *_sla_lines(figures["sla"]),
        "",
        *_time_lines(figures),
    ]
    return "\n".join(lines)


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
    return charts.cards(
        [
            (str(figures["total"]), "tickets"),
            (pct(o["auto_routed_share"]), f"auto-routed ({o['auto_routed']} of {o['decided']})"),
            (pct(o["override_rate"]), "override rate"),
            (pct(sla["response"]["breach_rate"]), "response SLA breach rate" + hint),
            (pct(sla["resolution"]["breach_rate"]), "resolution SLA breach rate" + hint),
        ]
    )


def _html_charts(figures: Mapping[str, Any]) -> str:
    processes = [(p, float(g["tickets"])) for p, g in figures["by_process"].items()]
    services = [(s, float(g["tickets"])) for s, g in figures["by_service"].items()]
    caption = "Tickets per service"
    if len(services) > SERVICE_CHART_LIMIT:
        caption += f" (top {SERVICE_CHART_LIMIT} of {len(services)}; all in the table)"
        services = services[:SERVICE_CHART_LIMIT]
    bins = [(f"{b['from']:.1f}", float(b["count"])) for b in figures["confidence_histogram"]]
    return (
        '<div class="charts">'
        + charts.figure("Tickets per process", charts.hbar_chart("Tickets per process", processes))
        + charts.figure(caption, charts.hbar_chart(caption, services))
        + charts.figure(
            "Confidence of the matches (bin start)",
            charts.column_chart("Confidence histogram", bins),
        )
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
    headers = [*STATS_HEADERS, "override rate"]
    per_process = [
        [p, *_stats_row(g), pct(g["override_rate"])] for p, g in figures["by_process"].items()
    ]
    per_service = [
        [s, *_stats_row(g), pct(g["override_rate"])] for s, g in figures["by_service"].items()
    ]
    crossed = [
        [r["process"], r["service"], *_stats_row(r), pct(r["override_rate"])]
        for r in figures["by_process_service"]
    ]
    return (
        "<h2>Per process</h2>"
        + charts.table(["process", *headers], per_process)
        + "<h2>Per service</h2>"
        + charts.table(["service", *headers], per_service)
        + "<h2>Per process and service</h2>"
        + charts.table(["process", "service", *headers], crossed, text_columns=2)
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
