"""The worker: one delivery → classify → route → host.apply, exactly once in effect.

Exactly-once comes from four pieces: the claim (a lease on the delivery row, renewed while
the job runs, its token fencing every later update, one claimed delivery per ticket), the
routing row (unique per host and ticket: the first decision wins), the lease check before
every helpdesk write (connector.lease) and idempotent host writes (each client looks for the
connector's marker before adding a note). Failures are classified: a permanent HostError
(ticket deleted, group missing, no rights) goes to dead letters at once; anything else is
retried with exponential backoff and jitter until the retry budget is spent.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass

from connector.context import Context
from connector.events import RoutingDecision, ServiceMatch, TicketEvent
from connector.hosts.base import HostError
from connector.learn import correction_target, service_correction
from connector.lease import LeaseGuard, LeaseLost, guarding
from connector.logs import log_extra
from connector.metrics import APPLY_SECONDS, DEAD, DECISIONS, RETRIES
from connector.processes import check_improvement
from connector.replies import relation_reply
from connector.route import correct, decide
from connector.store import Delivery, NewRouting, RoutingRow, TicketBusy

log = logging.getLogger("bpsm.worker")


def backoff(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with "equal jitter": between half and all of base·2^(attempt-1)
    (capped). Tickets failing together in an outage then come back spread out instead of
    in lockstep, and none sooner than half the plain delay. A Retry-After is a floor."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    jittered = delay / 2 + (rng or random).uniform(0.0, delay / 2)
    return float(max(jittered, retry_after or 0.0))


# A delivery whose ticket another job is working on waits this long (at most) before its
# next try; the other job is usually a twin event of the same ticket and short.
BUSY_TICKET_DELAY = 2.0


@dataclass(frozen=True)
class Handled:
    """What one job did (for logs and tests), and when the job queue must run the delivery
    again: `retry_in` seconds from now, or never (None)."""

    outcome: str
    retry_in: float | None = None


def process_delivery(context: Context, delivery_pk: int) -> Handled:
    """Handle one delivery; the caller (the job queue) plans the retry it asks for."""
    lease = context.settings.lease_seconds
    try:
        delivery = context.store.claim(delivery_pk, lease)
    except TicketBusy:
        return Handled("ticket-busy", min(BUSY_TICKET_DELAY, lease / 2))
    if delivery is None:
        return Handled("not-claimed")
    fields = {
        "host": delivery.host,
        "delivery": delivery.delivery_id,
        "ticket": delivery.ticket_id,
        "attempt": delivery.attempts,
    }
    guard = LeaseGuard(
        lambda: context.store.renew(delivery.id, delivery.lease_token, lease),
        lease,
        f"delivery {delivery.id}",
    )
    try:
        with guarding(guard):
            return _run(context, delivery, guard, fields)
    except LeaseLost as exc:
        # Another consumer has the job now; it does the rest (and looks before it writes).
        log.warning(
            "lease lost; job left to its new holder", extra=log_extra({**fields, "error": str(exc)})
        )
        return Handled("lease-lost")


def _run(
    context: Context, delivery: Delivery, guard: LeaseGuard, fields: dict[str, object]
) -> Handled:
    try:
        outcome = route_delivery(context, delivery)
    except LeaseLost:
        raise
    except HostError as exc:
        return _failed(context, delivery, guard, str(exc), exc.permanent, exc.retry_after, fields)
    except Exception as exc:  # a bug or an unexpected answer: keep the ticket, retry later
        log.error(
            "unexpected error",
            extra=log_extra({**fields, "error": repr(exc), "trace": traceback.format_exc(limit=5)}),
        )
        return _failed(context, delivery, guard, f"unexpected error: {exc!r}", False, None, fields)
    if not context.store.finish(delivery.id, outcome, delivery.lease_token):
        raise LeaseLost(f"delivery {delivery.id}: lease lost before it was finished")
    log.info("delivery done", extra=log_extra({**fields, "outcome": outcome}))
    return Handled(outcome)


def _failed(
    context: Context,
    delivery: Delivery,
    guard: LeaseGuard,
    reason: str,
    permanent: bool,
    retry_after: float | None,
    fields: dict[str, object],
) -> Handled:
    settings = context.settings
    guard.check()
    if permanent or delivery.attempts >= settings.retry_budget:
        if not context.store.dead_letter(delivery, reason):
            raise LeaseLost(f"delivery {delivery.id}: lease lost before the dead letter")
        context.store.complete_routing(delivery, "failed", 0.0, fenced=False)
        DEAD.labels(delivery.host).inc()
        log.warning("dead letter", extra=log_extra({**fields, "reason": reason}))
        return Handled("dead-letter")
    delay = backoff(
        delivery.attempts, settings.retry_base_delay, settings.retry_max_delay, retry_after
    )
    if not context.store.postpone(delivery.id, delivery.lease_token, delay, reason):
        raise LeaseLost(f"delivery {delivery.id}: lease lost before the retry was planned")
    RETRIES.labels(delivery.host).inc()
    log.warning(
        "retry later", extra=log_extra({**fields, "reason": reason, "delay": round(delay, 2)})
    )
    return Handled("retry", delay)


def apply_correction(context: Context, delivery: Delivery) -> str:
    """Apply a correction made in the review page, once: the correction row says whether it
    was applied, and the host's writes are idempotent like a routing's."""
    correction_id = int(delivery.delivery_id.removeprefix("correction:"))
    correction = context.store.correction(correction_id)
    existing = context.store.routing(delivery.host, delivery.ticket_id)
    if correction is None or existing is None:
        raise HostError(f"correction {correction_id} or its routing is gone", permanent=True)
    if correction["status"] != "pending":
        return "already-corrected"
    original = RoutingDecision.model_validate_json(existing["decision"])
    decision = correct(
        delivery.event,
        correction["to_service"],
        correction["to_process"],
        context.catalogue,
        context.mapping(delivery.host),
        actor=correction["actor"],
        language=original.language,
    )
    mode = existing["mode"]
    outcome = "dry-run"
    if mode != "dry-run":
        outcome = context.client(delivery.host).apply(delivery.event, decision, mode).outcome
    context.store.finish_correction(
        correction_id,
        outcome,
        {
            "process": decision.process,
            "service": decision.service,
            "queue": decision.queue,
            "decision": decision.model_dump_json(),
        },
    )
    log.info(
        "corrected",
        extra=log_extra(
            {
                "host": delivery.host,
                "ticket": delivery.ticket_id,
                "bpsm_process": decision.process,
                "service": decision.service,
                "outcome": outcome,
            }
        ),
    )
    return "corrected"


def _relation_reply(
    context: Context, delivery: Delivery, decision: RoutingDecision, draft_only: bool
) -> None:
    """Relation management answers the customer (mapping `relation.reply`)."""
    policy = context.mapping(delivery.host).relation.reply
    if decision.process != "relation" or policy == "off":
        return
    text = relation_reply(
        delivery.event, decision, context.index().catalogue, context.mapping(delivery.host)
    )
    try:
        context.client(delivery.host).reply(
            delivery.event, text, send=policy == "send" and not draft_only
        )
    except NotImplementedError:
        log.warning("host cannot post replies", extra=log_extra({"host": delivery.host}))
        return
    if not context.store.mark_replied(delivery):
        raise LeaseLost(f"delivery {delivery.id}: lease lost after the reply")


def _improvement(context: Context, host: str, service: str) -> None:
    """A reactive ticket may complete the set that calls for an improvement ticket; a
    failure here must not fail the routing, which is done (the next ticket retries)."""
    try:
        opened = check_improvement(context, host, service)
    except Exception as exc:
        log.warning(
            "improvement check failed",
            extra=log_extra({"host": host, "service": service, "error": repr(exc)}),
        )
        return
    if opened is not None:
        log.info(
            "improvement",
            extra=log_extra(
                {
                    "host": host,
                    "service": service,
                    "status": opened.status,
                    "ticket": opened.ticket_id,
                }
            ),
        )


def _agent_choices(
    context: Context, host: str, routing: RoutingRow, event: TicketEvent
) -> list[tuple[str, str | None]]:
    """(process, service) an agent chose for a routed ticket, as this event shows it: a move
    to another BPSM queue, and a service named in the helpdesk's own service field. Other
    queues (the source queue of a dry run, a team's own queue) say nothing."""
    chosen: list[tuple[str, str | None]] = []
    in_queue = (
        correction_target(context.mapping(host), event.queue, routing["service"])
        if event.queue
        else None
    )
    if in_queue is not None and event.queue != routing["queue"]:
        chosen.append(in_queue)
    if event.service_label and event.service_label != routing["service"]:
        # The process of the queue the ticket is in now (an agent may have moved it too).
        process = in_queue[0] if in_queue is not None else routing["process"]
        named = service_correction(context.catalogue, process, event.service_label)
        if named is not None:
            chosen.append(named)
    return chosen


def _record_agent_choices(
    context: Context, host: str, routing: RoutingRow, event: TicketEvent
) -> None:
    """Record what an agent chose for a routed ticket: their decision, for `bpsm learn
    --from-audit` and `bpsm report` (each choice once, however often the event comes)."""
    for process, service in _agent_choices(context, host, routing, event):
        if context.store.record_agent_move(routing, process, service, event.actor or "agent"):
            log.info(
                "correction",
                extra=log_extra(
                    {
                        "host": host,
                        "ticket": routing["ticket_id"],
                        "from_process": routing["process"],
                        "from_service": routing["service"],
                        "bpsm_process": process,
                        "service": service,
                    }
                ),
            )


def routing_record(
    event: TicketEvent, match: ServiceMatch, decision: RoutingDecision, mode: str
) -> NewRouting:
    """The audit row of one decision (the store adds host, ticket, delivery and times)."""
    return {
        "process": decision.process,
        "service": decision.service,
        "queue": decision.queue,
        "confidence": decision.confidence,
        "low_confidence": int(decision.low_confidence),
        "language": decision.language,
        "mode": mode,
        "decision": decision.model_dump_json(),
        "match": match.model_dump_json(),
        "ticket_created_at": event.created_at.timestamp() if event.created_at else None,
    }


def route_delivery(context: Context, delivery: Delivery) -> str:
    event = delivery.event
    if event.kind == "correction":
        return apply_correction(context, delivery)
    existing = context.store.routing(delivery.host, delivery.ticket_id)
    if existing and existing["outcome"] != "applying":
        if event.queue and existing["outcome"] == "applied" and event.queue != existing["queue"]:
            context.store.mark_moved_by_agent(delivery.host, delivery.ticket_id)
        _record_agent_choices(context, delivery.host, existing, event)
        return "already-routed"
    if event.kind == "agent_update" and existing is None:
        return "not-routed"  # put in a BPSM queue by a person: theirs, not ours to route
    mapping = context.mapping(delivery.host)
    if existing is None:
        match = context.index().classify(event.body, event.subject, event.language_hint)
        decision = decide(event, match, context.index().catalogue, mapping)
        existing = context.store.begin_routing(
            delivery, routing_record(event, match, decision, context.mode(delivery.host))
        )
    if existing["delivery"] != delivery.id:
        # Another event of the same ticket owns the routing; it finishes it (or, if its
        # worker died, its lease expires and it is retried).
        return "duplicate-ticket"
    decision = RoutingDecision.model_validate_json(existing["decision"])
    ServiceMatch.model_validate_json(existing["match"])  # fail loudly on a corrupt row
    mode = existing["mode"]
    started = time.perf_counter()
    if mode == "dry-run":
        outcome = "dry-run"
    else:
        result = context.client(delivery.host).apply(event, decision, mode)
        outcome = result.outcome
        # Before completing the routing: a failed reply retries the (idempotent) apply.
        if outcome in ("applied", "shadow") and existing.get("replied_at") is None:
            _relation_reply(context, delivery, decision, draft_only=mode == "shadow")
    elapsed = time.perf_counter() - started
    APPLY_SECONDS.labels(delivery.host).observe(elapsed)
    if not context.store.complete_routing(delivery, outcome, elapsed * 1000):
        raise LeaseLost(f"delivery {delivery.id}: lease lost before the routing was recorded")
    if decision.process == "reactive" and decision.service:
        _improvement(context, delivery.host, decision.service)
    DECISIONS.labels(delivery.host, decision.process, outcome).inc()
    log.info(
        "routed",
        extra=log_extra(
            {
                "host": delivery.host,
                "ticket": delivery.ticket_id,
                "bpsm_process": decision.process,
                "service": decision.service,
                "queue": decision.queue,
                "confidence": decision.confidence,
                "outcome": outcome,
            }
        ),
    )
    return outcome
