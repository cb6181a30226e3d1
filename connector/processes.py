"""Proactive and improvement processes, the I/O part: claim in the store, open in the host.

Both work through the host interface (`create_ticket`, `add_tags`, `is_open`), so every
helpdesk module gets them. Without a configured helpdesk (or in dry-run/shadow mode) they
record what they would have opened.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from connector.catalogue import format_duration
from connector.context import Context
from connector.hosts.base import HostError
from connector.logs import log_extra
from connector.notes import messages
from connector.proactive import due_maintenance, improvement_ticket, maintenance_ticket
from connector.store import ProcessStore

log = logging.getLogger("bpsm.processes")
CLAIM_LEASE = 600.0  # a claim older than this whose process died is taken over


@dataclass(frozen=True)
class Opened:
    host: str
    what: str  # maintenance entry key or service id
    period: str
    status: str  # opened | dry-run | already-open | failed
    ticket_id: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        ticket = f" ticket {self.ticket_id}" if self.ticket_id else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.host}: {self.what} [{self.period}] {self.status}{ticket}{detail}"


def target_hosts(context: Context) -> list[str]:
    """Configured helpdesks; with none, the demo host (records in dry-run)."""
    hosts = [name for name, s in sorted(context.settings.hosts.items()) if s.configured]
    return hosts or ["demo"]


def run_maintenance(context: Context, now: datetime | None = None) -> list[Opened]:
    now = now or datetime.now(UTC)
    store = ProcessStore(context.store)
    results = []
    for host in target_hosts(context):
        mapping = context.mapping(host)
        live = context.mode(host) == "route"
        for item, period in due_maintenance(context.catalogue, now):
            row_id, existing = store.claim_maintenance(
                host, item.key, period, CLAIM_LEASE, retake_dry_run=live
            )
            if row_id is None:
                assert existing is not None
                results.append(
                    Opened(
                        host,
                        item.key,
                        period,
                        "already-open",
                        existing.get("ticket_id"),
                        existing["status"],
                    )
                )
                continue
            if not live:
                store.finish_maintenance(row_id, "dry-run", None)
                results.append(Opened(host, item.key, period, "dry-run"))
                continue
            # The entry and period name the ticket: a run after a lost answer finds it.
            ticket = maintenance_ticket(item, period, context.catalogue, mapping).referenced(
                f"maintenance:{item.key}:{period}"
            )
            try:
                ticket_id = context.client(host).create_ticket(ticket)
            except HostError as exc:
                store.release_maintenance(row_id)
                results.append(Opened(host, item.key, period, "failed", detail=str(exc)))
                continue
            store.finish_maintenance(row_id, "opened", ticket_id)
            results.append(Opened(host, item.key, period, "opened", ticket_id))
    for result in results:
        if result.status in ("opened", "failed"):
            log.info(
                "maintenance",
                extra=log_extra(
                    {
                        "host": result.host,
                        "item": result.what,
                        "period": result.period,
                        "status": result.status,
                    }
                ),
            )
    return results


def check_improvement(context: Context, host: str, service_id: str) -> Opened | None:
    """After a reactive ticket: open an improvement if the service crossed the threshold.

    Tickets counted are those since the window start, or since the last improvement for
    the service if later (reactive_tickets), so a closed improvement does not reopen on the
    same tickets."""
    policy = context.catalogue.improvement
    store = ProcessStore(context.store)
    since = time.time() - policy.window.total_seconds()
    # Runs after every reactive ticket: count only up to the threshold (a busy service has
    # hundreds of tickets in a window, and while its improvement is open every one of them
    # crossed it again); the whole list is read only when an improvement is to be opened.
    if len(store.reactive_tickets(host, service_id, since, limit=policy.threshold)) < (
        policy.threshold
    ):
        return None
    if not _free_slot(context, store, host, service_id):
        return None
    tickets = store.reactive_tickets(host, service_id, since)
    lang = (context.catalogue.languages or ["en"])[0]
    reason = (messages().get(lang) or messages()["en"])["improvement_reason_threshold"].format(
        count=len(tickets), window=format_duration(policy.window)
    )
    return open_improvement(context, host, service_id, reason, tickets)


def _free_slot(context: Context, store: ProcessStore, host: str, service_id: str) -> bool:
    """True when no improvement is open for the service (closing finished ones first)."""
    row = store.open_improvement(host, service_id)
    if row is None:
        return True
    if row["status"] == "unsure" or (
        row["status"] == "opening" and row["claimed_at"] < time.time() - CLAIM_LEASE
    ):
        return True  # an earlier try failed or died: open_improvement takes its row over
    if row["status"] == "open" and row["ticket_id"] and context.mode(host) == "route":
        key = (host, str(row["ticket_id"]))
        seen = context.seen_open.get(key)
        if seen is not None and time.monotonic() - seen < context.settings.improvement_recheck:
            return False
        try:
            still_open = context.client(host).is_open(key[1])
        except HostError:
            return False
        if still_open is False:
            context.seen_open.pop(key, None)
            store.close_improvement(row["id"])
            return True
        context.seen_open[key] = time.monotonic()
    return False


def open_improvement(
    context: Context, host: str, service_id: str, reason: str, tickets: list[str]
) -> Opened:
    store = ProcessStore(context.store)
    service = context.catalogue.service(service_id)
    row_id = store.claim_improvement(host, service_id, reason, tickets, CLAIM_LEASE)
    if row_id is None:
        taken = store.open_improvement(host, service_id)
        return Opened(host, service_id, "-", "already-open", taken["ticket_id"] if taken else None)
    if context.mode(host) != "route":
        store.finish_improvement(row_id, "dry-run", None)
        store.close_improvement(row_id, status="dry-run")
        return Opened(host, service_id, "-", "dry-run", detail=reason)
    client = context.client(host)
    row = store.open_improvement(host, service_id)
    if row is not None and row["id"] == row_id:
        # A row taken over from an earlier try keeps that try's text: the ticket it may
        # have opened is looked for by its title and reference.
        reason, tickets = str(row["reason"]), [str(t) for t in json.loads(row["tickets"])]
    ticket = improvement_ticket(
        service, tickets, reason, context.catalogue, context.mapping(host)
    ).referenced(f"improvement:{host}:{service_id}:{row_id}")
    try:
        ticket_id = client.create_ticket(ticket)
    except HostError as exc:
        # Refused (nothing opened): free the slot. Else it may be open: keep the row.
        if exc.permanent:
            store.release_improvement(row_id)
        else:
            store.unsure_improvement(row_id)
        return Opened(host, service_id, "-", "failed", detail=str(exc))
    store.finish_improvement(row_id, "open", ticket_id)
    for linked in tickets:
        try:
            client.add_tags(linked, ("bpsm-improvement",))
        except (HostError, NotImplementedError) as exc:
            log.warning(
                "could not tag linked ticket",
                extra=log_extra({"host": host, "ticket": linked, "error": str(exc)}),
            )
    log.info(
        "improvement opened",
        extra=log_extra(
            {"host": host, "service": service_id, "ticket": ticket_id, "linked": len(tickets)}
        ),
    )
    return Opened(host, service_id, "-", "opened", ticket_id, reason)
