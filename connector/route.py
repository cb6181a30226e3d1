"""BPSM decision rules: (event, match, catalogue, mapping) → RoutingDecision. Pure.

Rules, in order:
1. nothing in the catalogue matches            → relation (no service)
2. the matched service is unsupported, or the
   ticket is a private matter (own device, family, club) → relation, note says why
3. change cues on a supported service          → change
4. otherwise                                   → reactive, with the catalogue's SLA
A match below the mapping's confidence threshold keeps its process but goes to the fallback
queue (when one is configured), and the note says why; without a fallback it stays where the
rules put it, flagged low-confidence. A ticket with no usable text ("asdf qwerty", an empty
body: fewer than MIN_USABLE_WORDS words of any catalogue language, and no service) is treated
the same way: relation management is for texts that ask for something no service covers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.catalogue import Catalogue, Service, pick_text
from connector.events import Process, RoutingDecision, ServiceMatch, SLATimes, TicketEvent
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, messages

MIN_USABLE_WORDS = 3


def _texts(language: str) -> dict[str, Any]:
    return messages().get(language) or messages()["en"]


def choose_process(match: ServiceMatch, catalogue: Catalogue) -> tuple[Process, Service | None]:
    if match.service is None:
        return "relation", None
    service = catalogue.service(match.service)
    if not service.supported or match.private_matter:
        return "relation", service
    if match.change_intent:
        return "change", service
    return "reactive", service


def sla_times(catalogue: Catalogue, service: Service, start: datetime) -> SLATimes:
    sla = catalogue.sla_for(service)
    return SLATimes(response_due=start + sla.response, resolution_due=start + sla.resolution)


def decide(
    event: TicketEvent,
    match: ServiceMatch,
    catalogue: Catalogue,
    mapping: Mapping,
    now: datetime | None = None,
) -> RoutingDecision:
    process, service = choose_process(match, catalogue)
    queue = mapping.queue_for(process)
    if process == "reactive" and service is not None and service.id in mapping.services:
        queue = mapping.services[service.id]
    vague = has_no_usable_text(match)
    low = vague or (match.service is not None and match.confidence < mapping.confidence_threshold)
    if low and mapping.fallback:
        queue = mapping.fallback
    start = event.created_at or now or datetime.now(UTC)
    sla = sla_times(catalogue, service, start) if process == "reactive" and service else None
    tags = ["bpsm", process] + ([service.id] if service else [])
    if low:
        tags.append("bpsm-low-confidence")
    language = event.language_hint or match.language
    approver = mapping.change.approver_group if process == "change" else None
    decision = RoutingDecision(
        approver_group=approver,
        process=process,
        service=service.id if service else None,
        queue=queue,
        tags=tuple(tags),
        note="",
        language=language,
        confidence=match.confidence,
        low_confidence=low,
        sla=sla,
        reasons=("no-usable-text",) if vague else (),
    )
    note = render_note(decision, match, service, mapping)
    return decision.model_copy(update={"note": note})


def correct(
    event: TicketEvent,
    service_id: str | None,
    process: Process,
    catalogue: Catalogue,
    mapping: Mapping,
    actor: str,
    language: str,
    now: datetime | None = None,
) -> RoutingDecision:
    """The decision a person chose in the review page: their service and process, the
    queue and SLA the rules give them, and a note that says who corrected it."""
    service = catalogue.service(service_id) if service_id else None
    queue = mapping.queue_for(process)
    if process == "reactive" and service is not None and service.id in mapping.services:
        queue = mapping.services[service.id]
    start = event.created_at or now or datetime.now(UTC)
    sla = sla_times(catalogue, service, start) if process == "reactive" and service else None
    t = _texts(language)
    lines = [
        f"{NOTE_MARKER} "
        + t["corrected"].format(actor=actor, process=t["processes"][process], queue=queue)
    ]
    if service is not None:
        lines.append(
            t["corrected_service"].format(
                service_name=pick_text(service.name, language), service_id=service.id
            )
        )
    if sla:
        lines.append(
            t["sla"].format(
                response_due=sla.response_due.strftime("%Y-%m-%d %H:%M"),
                resolution_due=sla.resolution_due.strftime("%Y-%m-%d %H:%M"),
            )
        )
    return RoutingDecision(
        process=process,
        service=service.id if service else None,
        queue=queue,
        tags=("bpsm", process, *([service.id] if service else []), "bpsm-corrected"),
        note="\n".join(lines),
        language=language,
        confidence=1.0,
        sla=sla,
        reasons=("corrected",),
    )


def render_note(
    decision: RoutingDecision, match: ServiceMatch, service: Service | None, mapping: Mapping
) -> str:
    """The internal note, in the ticket's language, starting with the connector's marker."""
    lang = decision.language
    t = _texts(lang)
    process_name = t["processes"][decision.process]
    lines = [f"{NOTE_MARKER} " + t["routed"].format(process=process_name, queue=decision.queue)]
    if service is None and match.outside:
        lines.append(t["outside"].format(matter=match.outside, evidence=_evidence(match, t)))
    elif service is None:
        # A text too thin to route is said by the low-confidence line, not as "no service".
        if "no-usable-text" not in decision.reasons:
            lines.append(t["no_service"].format(guess=match.runner_up or "-"))
    else:
        name = pick_text(service.name, lang)
        lines.append(
            t["service"].format(
                service_name=name, service_id=service.id, confidence=decision.confidence
            )
        )
        if match.evidence:
            lines.append(t["evidence"].format(evidence=_evidence(match, t)))
        if not service.supported:
            lines.append(t["unsupported"].format(service_name=name))
            if service.reason:
                lines.append(t["reason"].format(reason=pick_text(service.reason, lang)))
            if service.alternative:
                lines.append(
                    t["alternative"].format(alternative=pick_text(service.alternative, lang))
                )
        if match.private_matter and decision.process == "relation":
            lines.append(t["private"].format(cues=", ".join(match.private_cues)))
        if decision.process == "change":
            lines.append(t["change"].format(service_name=name, cues=", ".join(match.change_cues)))
        if service.owner and decision.process in ("change", "relation"):
            lines.append(t["owner"].format(owner=service.owner))
        if decision.approver_group:
            lines.append(t["approver"].format(group=decision.approver_group))
    if decision.sla:
        lines.append(
            t["sla"].format(
                response_due=decision.sla.response_due.strftime("%Y-%m-%d %H:%M"),
                resolution_due=decision.sla.resolution_due.strftime("%Y-%m-%d %H:%M"),
            )
        )
    if decision.low_confidence:
        lines.append(_low_confidence_line(decision, match, mapping, t))
    return "\n".join(lines)


def has_no_usable_text(match: ServiceMatch) -> bool:
    """Too few words of any catalogue language to say anything, and no service found."""
    known = match.known_words
    return match.service is None and known is not None and known < MIN_USABLE_WORDS


def _low_confidence_line(
    decision: RoutingDecision, match: ServiceMatch, mapping: Mapping, t: dict[str, Any]
) -> str:
    """What happened to an uncertain ticket: the fallback queue when one is set, otherwise
    it stays where the rules put it — the note must not claim a review queue that is not
    there."""
    fallback = bool(mapping.fallback) and decision.queue == mapping.fallback
    if "no-usable-text" in decision.reasons:
        why = t["no_usable_text"].format(count=match.known_words or 0)
    else:
        why = t["below_threshold"].format(threshold=mapping.confidence_threshold)
    then = t["to_fallback" if fallback else "please_check"].format(queue=decision.queue)
    return f"{why} {then}"


def _evidence(match: ServiceMatch, texts: dict[str, Any]) -> str:
    """The evidence as shown in notes; learned evidence says so ("learned from 14 tickets")."""
    return ", ".join(
        e.shown
        if e.learned_from is None
        else f"{e.shown} ({texts['learned'].format(tickets=e.learned_from)})"
        for e in match.evidence
    )
