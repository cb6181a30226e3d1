"""Each BPSM routing rule, on hand-made matches (the router is pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.catalogue import load_catalogue
from connector.events import Evidence, ServiceMatch, TicketEvent
from connector.mapping import Mapping
from connector.notes import NOTE_MARKER, is_own_note
from connector.route import decide
from tests.e2e import ROOT

CATALOGUE = load_catalogue(ROOT / "catalogue.yaml")
EVENT = TicketEvent(
    host="t", delivery_id="1", ticket_id="7", created_at=datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
)
MAPPING = Mapping(
    fallback="BPSM Triage", services={"email": "E-mail team"}, change={"approver_group": "CAB"}
)


def match(
    service: str | None, confidence: float = 0.9, change: bool = False, language: str = "en"
) -> ServiceMatch:
    evidence = (
        (Evidence(term="printer", word="printer", source="keyword", how="exact", weight=3.0),)
        if service
        else ()
    )
    return ServiceMatch(
        service=service,
        score=5.0 if service else 0.5,
        confidence=confidence,
        language=language,
        evidence=evidence,
        change_intent=change,
        change_cues=("could you add",) if change else (),
    )


def test_supported_service_is_reactive_with_sla_from_the_catalogue():
    decision = decide(EVENT, match("printing"), CATALOGUE, MAPPING)
    sla = CATALOGUE.sla_for(CATALOGUE.service("printing"))
    assert (decision.process, decision.queue) == ("reactive", "BPSM Reactive")
    assert decision.tags == ("bpsm", "reactive", "printing")
    assert decision.sla is not None
    assert decision.sla.response_due - EVENT.created_at == sla.response
    assert decision.sla.resolution_due - EVENT.created_at == sla.resolution
    assert decision.note.startswith(NOTE_MARKER) and "SLA: first response by" in decision.note


def test_service_specific_reactive_queue():
    assert decide(EVENT, match("email"), CATALOGUE, MAPPING).queue == "E-mail team"


def test_unsupported_service_is_relation_with_reason_and_alternative():
    service = CATALOGUE.service("mac-computers")
    decision = decide(EVENT, match("mac-computers"), CATALOGUE, MAPPING)
    assert (decision.process, decision.queue, decision.sla) == ("relation", "BPSM Relation", None)
    assert service.reason and service.reason["en"] in decision.note
    assert service.alternative and service.alternative["en"] in decision.note


def test_nothing_matches_is_relation_without_service():
    decision = decide(EVENT, match(None, confidence=0.0), CATALOGUE, MAPPING)
    assert (decision.process, decision.service, decision.queue) == (
        "relation",
        None,
        "BPSM Relation",
    )
    assert "No service in the catalogue matches" in decision.note
    assert not decision.low_confidence


@pytest.mark.parametrize(
    "language,matter,expected",
    [
        ("en", "furniture", "outside IT (furniture: chair)"),
        ("nb", "møbler", "utenfor IT (møbler: chair)"),
    ],
)
def test_matter_outside_it_is_relation_and_the_note_names_it(language, matter, expected):
    chair = Evidence(term="chair", word="chair", source="keyword", how="exact", weight=4.2)
    outside = match(None, confidence=0.4, language=language).model_copy(
        update={"outside": matter, "evidence": (chair,), "runner_up": "workplace-pc"}
    )
    decision = decide(EVENT, outside, CATALOGUE, MAPPING)
    assert (decision.process, decision.service, decision.queue) == (
        "relation",
        None,
        "BPSM Relation",
    )
    assert expected in decision.note
    assert "No service in the catalogue matches" not in decision.note


def test_change_intent_on_a_supported_service_is_change_with_approver():
    decision = decide(EVENT, match("erp", change=True), CATALOGUE, MAPPING)
    assert (decision.process, decision.queue, decision.approver_group) == (
        "change",
        "BPSM Change",
        "CAB",
    )
    assert "change" in decision.tags and "erp" in decision.tags
    owner = CATALOGUE.service("erp").owner
    assert owner and owner in decision.note and "CAB" in decision.note


def test_change_intent_on_an_unsupported_service_stays_relation():
    decision = decide(EVENT, match("mac-computers", change=True), CATALOGUE, MAPPING)
    assert decision.process == "relation"


@pytest.mark.parametrize("language,expected", [("en", "private matter"), ("nb", "privat sak")])
def test_private_matter_on_a_supported_service_is_relation_and_says_why(language, expected):
    private = match("printing", language=language).model_copy(
        update={"private_matter": True, "private_cues": ("my own printer",)}
    )
    decision = decide(EVENT, private, CATALOGUE, MAPPING)
    assert (decision.process, decision.service, decision.sla) == ("relation", "printing", None)
    assert expected in decision.note and "my own printer" in decision.note


def test_low_confidence_goes_to_the_fallback_queue_and_says_so():
    decision = decide(EVENT, match("printing", confidence=0.1), CATALOGUE, MAPPING)
    assert decision.process == "reactive" and decision.queue == "BPSM Triage"
    assert decision.low_confidence and "bpsm-low-confidence" in decision.tags
    assert "below the threshold (60%)" in decision.note


def test_confidence_at_the_threshold_is_enough():
    """The boundary itself (issue 16: a `<` turned into `<=` survived the suite)."""
    threshold = MAPPING.confidence_threshold
    at = decide(EVENT, match("printing", confidence=threshold), CATALOGUE, MAPPING)
    assert not at.low_confidence and at.queue != MAPPING.fallback
    below = decide(EVENT, match("printing", confidence=threshold - 1e-4), CATALOGUE, MAPPING)
    assert below.low_confidence and below.queue == MAPPING.fallback


def test_low_confidence_without_fallback_keeps_the_process_queue():
    decision = decide(EVENT, match("printing", confidence=0.1), CATALOGUE, Mapping())
    assert decision.queue == "BPSM Reactive" and decision.low_confidence
    # The note must not claim a review queue that does not exist.
    assert "for a person to check" not in decision.note
    assert "Routed with low confidence: please check." in decision.note


def test_low_confidence_without_fallback_in_norwegian():
    decision = decide(EVENT, match("printing", 0.1, language="nb"), CATALOGUE, Mapping())
    assert "Rutet med lav sikkerhet: sjekk saken." in decision.note
    assert "manuell vurdering" not in decision.note


def vague(known_words: int | None) -> ServiceMatch:
    return match(None).model_copy(update={"known_words": known_words})


def test_no_usable_text_goes_to_the_fallback_not_relation_management():
    decision = decide(EVENT, vague(0), CATALOGUE, MAPPING)
    assert decision.queue == "BPSM Triage" and decision.low_confidence
    assert decision.reasons == ("no-usable-text",)
    assert "too little recognisable text to route (0 known words)" in decision.note


def test_no_usable_text_without_fallback_is_flagged_where_it_lands():
    decision = decide(EVENT, vague(2), CATALOGUE, Mapping())
    assert decision.queue == "BPSM Relation" and decision.low_confidence
    assert "bpsm-low-confidence" in decision.tags


@pytest.mark.parametrize("known_words", [3, None])
def test_enough_words_asking_for_nothing_known_is_relation_management(known_words):
    decision = decide(EVENT, vague(known_words), CATALOGUE, MAPPING)
    assert decision.queue == "BPSM Relation" and not decision.low_confidence
    assert decision.reasons == ()


@pytest.mark.parametrize(
    "subject,body,usable",
    [
        ("asdf", "qwerty", False),
        ("", "", False),
        ("Printer", "My printer is broken and will not print anything.", True),
        ("Ønske", "Kan dere hjelpe meg med noe jeg lurer på?", True),
    ],
)
def test_known_words_of_real_tickets(example_index, subject, body, usable):
    known = example_index.classify(body, subject).known_words
    assert known is not None and (known >= 3) == usable


@pytest.mark.parametrize(
    "language,expected",
    [
        ("nb", "Rutet til reaktiv håndtering"),
        ("en", "Routed to reactive management"),
        ("de", "Routed to reactive management"),  # no German texts: English
    ],
)
def test_note_language(language, expected):
    decision = decide(EVENT, match("printing", language=language), CATALOGUE, MAPPING)
    assert expected in decision.note


def test_missing_creation_time_uses_now():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = EVENT.model_copy(update={"created_at": None})
    decision = decide(event, match("printing"), CATALOGUE, MAPPING, now=now)
    assert decision.sla and decision.sla.response_due > now
    assert decision.sla.response_due - now < timedelta(days=7)


def test_own_note_marker():
    assert is_own_note(f"<p>{NOTE_MARKER} Routed</p>", 4, 4) and not is_own_note("hello", 4, 4)
    assert not is_own_note(f"<p>{NOTE_MARKER} Routed</p>", 2, 4)  # typed by a customer


@pytest.mark.parametrize(
    "confidence,low",
    [(0.25, False), (0.2499999, True), (0.2500001, False), (0.0, True)],
)
def test_confidence_threshold_boundary(confidence, low):
    """A match exactly at the threshold is confident enough (`<`, not `<=`)."""
    mapping = Mapping(fallback="BPSM Triage", confidence_threshold=0.25)
    decision = decide(EVENT, match("printing", confidence=confidence), CATALOGUE, mapping)
    assert decision.low_confidence is low
    assert decision.queue == ("BPSM Triage" if low else "BPSM Reactive")
    assert ("bpsm-low-confidence" in decision.tags) is low


def test_only_a_change_names_the_approver_group():
    """MAPPING has change.approver_group "CAB": reactive and relation decisions carry none."""
    assert decide(EVENT, match("erp", change=True), CATALOGUE, MAPPING).approver_group == "CAB"
    for found in (match("printing"), match("mac-computers"), match(None)):
        decision = decide(EVENT, found, CATALOGUE, MAPPING)
        assert decision.process != "change" and decision.approver_group is None
        assert "bpsm-cab-approval" not in decision.tags


def test_sla_without_any_time_given_starts_now_in_utc():
    undated = EVENT.model_copy(update={"created_at": None})
    before = datetime.now(UTC)
    decision = decide(undated, match("printing"), CATALOGUE, MAPPING)
    assert decision.sla is not None and decision.sla.response_due.tzinfo is not None
    sla = CATALOGUE.sla_for(CATALOGUE.service("printing"))
    assert timedelta(0) <= decision.sla.response_due - sla.response - before < timedelta(minutes=1)
