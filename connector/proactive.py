"""Proactive and improvement processes, the pure part: which tickets are due, and their text.

Maintenance: one ticket per catalogue `maintenance` entry per period (day, ISO week, month,
quarter, year). Only the *current* period is ever due, so a connector that was down for a
week catches up with one ticket, not seven.
Improvement: N reactive tickets on one service within the window call for one improvement
ticket that lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.catalogue import Catalogue, Maintenance, Service, pick_text
from connector.events import NewTicket
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, messages


@dataclass(frozen=True)
class MaintenanceItem:
    service: Service
    entry: Maintenance
    key: str  # stable across runs: service id + slug of the title


def period_key(every: str, now: datetime) -> str:
    if every == "daily":
        return now.strftime("%Y-%m-%d")
    if every == "weekly":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    if every == "monthly":
        return now.strftime("%Y-%m")
    if every == "quarterly":
        return f"{now.year}-Q{(now.month - 1) // 3 + 1}"
    if every == "yearly":
        return str(now.year)
    raise ValueError(f"unknown period {every!r}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:60] or "entry"


def maintenance_items(catalogue: Catalogue) -> list[MaintenanceItem]:
    items = []
    for service in catalogue.services:
        for index, entry in enumerate(service.maintenance):
            title = pick_text(entry.title, "en")
            items.append(MaintenanceItem(service, entry, f"{service.id}:{index}:{_slug(title)}"))
    return items


def due_maintenance(catalogue: Catalogue, now: datetime) -> list[tuple[MaintenanceItem, str]]:
    """Every maintenance entry with the key of its current period."""
    return [(item, period_key(item.entry.every, now)) for item in maintenance_items(catalogue)]


def _texts(lang: str) -> dict[str, Any]:
    data = messages()
    chosen = data.get(lang) or data["en"]
    return {**data["en"], **chosen}


def maintenance_ticket(
    item: MaintenanceItem, period: str, catalogue: Catalogue, mapping: Mapping
) -> NewTicket:
    """Title in the catalogue's first language; body in each of its languages."""
    languages = catalogue.languages or ["en"]
    first = languages[0]
    title = (
        f"{pick_text(item.entry.title, first)} — {pick_text(item.service.name, first)} ({period})"
    )
    parts = [NOTE_MARKER]
    for lang in languages:
        t = _texts(lang)
        parts.append(
            t["maintenance_body"].format(
                title=pick_text(item.entry.title, lang),
                service=pick_text(item.service.name, lang),
                every=t["periods"][item.entry.every],
                period=period,
            )
        )
        if item.entry.description:
            parts.append(pick_text(item.entry.description, lang))
    return NewTicket(
        queue=mapping.queue_for("proactive"),
        title=title,
        body="\n\n".join(parts),
        language=first,
        tags=("bpsm", "proactive", item.service.id),
    )


def improvement_ticket(
    service: Service,
    tickets: list[str],
    reason: str,
    catalogue: Catalogue,
    mapping: Mapping,
    links: dict[str, str] | None = None,
) -> NewTicket:
    languages = catalogue.languages or ["en"]
    first = languages[0]
    name = pick_text(service.name, first)
    title = _texts(first)["improvement_title"].format(service=name, count=len(tickets))
    listed = "\n".join(
        f"- #{t}" + (f" {links[t]}" if links and t in links else "") for t in tickets
    )
    parts = [NOTE_MARKER]
    for lang in languages:
        parts.append(
            _texts(lang)["improvement_body"].format(
                service=pick_text(service.name, lang), count=len(tickets), reason=reason
            )
        )
    parts.append(listed or "-")
    return NewTicket(
        queue=mapping.queue_for("improvement"),
        title=title,
        body="\n\n".join(parts),
        language=first,
        tags=("bpsm", "improvement", service.id),
    )
