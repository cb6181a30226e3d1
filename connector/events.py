"""Host-agnostic data that flows through the connector (pydantic, serialisable for the store)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Process = Literal["reactive", "relation", "change", "proactive", "improvement"]
PROCESSES: tuple[Process, ...] = ("reactive", "relation", "change", "proactive", "improvement")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Evidence(_Frozen):
    """One reason for a match: which catalogue term the ticket's word hit, and how."""

    term: str  # the catalogue or thesaurus term
    word: str  # what the ticket said
    source: str  # name | keyword | description | thesaurus:<concept> | cue
    how: str  # exact | stem | phrase | compound | fuzzy
    weight: float

    @property
    def shown(self) -> str:
        """As notes and reports show it: "skriveren → skriver", or the term alone."""
        return self.term if self.word == self.term else f"{self.word} → {self.term}"

    @property
    def learned_from(self) -> int | None:
        """Tickets the evidence was learned from (`bpsm learn`); None for catalogue evidence."""
        if not self.source.startswith("learned:"):
            return None
        return int(self.source.removeprefix("learned:"))


class ServiceMatch(_Frozen):
    """The classifier's answer: best service (or none), its score and why."""

    service: str | None
    score: float
    confidence: float = Field(ge=0.0, le=1.0)
    language: str
    evidence: tuple[Evidence, ...] = ()
    runner_up: str | None = None
    runner_up_score: float = 0.0
    change_cues: tuple[str, ...] = ()  # change-intent evidence
    change_score: float = 0.0
    change_intent: bool = False
    private_cues: tuple[str, ...] = ()  # private-matter evidence
    private_matter: bool = False
    # With no service: the matter outside IT the ticket is about ("furniture"), in its
    # language; the evidence then lists its terms.
    outside: str | None = None
    # Distinct words of the ticket that are words of a catalogue language (a stopword, or a
    # word the index knows): "asdf qwerty" has none. None for matches stored before it existed.
    known_words: int | None = None


class SLATimes(_Frozen):
    response_due: datetime
    resolution_due: datetime


class RoutingDecision(_Frozen):
    """What the connector will do with one ticket, in host-neutral terms."""

    process: Process
    service: str | None
    queue: str
    tags: tuple[str, ...]
    note: str  # internal note, in the ticket's language
    language: str
    confidence: float
    low_confidence: bool = False
    sla: SLATimes | None = None
    approver_group: str | None = None  # change approval (CAB), from the mapping
    reasons: tuple[str, ...] = ()


class TicketEvent(_Frozen):
    """One helpdesk event, whatever the helpdesk: what the worker needs and nothing else."""

    # Bounds of the store's columns: PostgreSQL refuses a longer value, so it must be refused
    # here, with a 400 that names the field, not at the INSERT.
    host: str = Field(max_length=40)
    delivery_id: str = Field(max_length=200)
    ticket_id: str = Field(max_length=100)
    # "correction": a person chose the service/process in the review page; the worker
    # applies it in the helpdesk (the web layer never calls one).
    # "agent_update": a change of a ticket in a BPSM queue, read only for what an agent chose
    # there (a move, the service field); a ticket the connector never routed is left alone.
    kind: Literal[
        "created", "customer_reply", "updated", "polled", "correction", "agent_update"
    ] = "created"
    subject: str = ""
    body: str = ""
    queue: str | None = None  # queue/group the ticket is in at event time
    requester: str | None = None
    actor: str | None = None  # who caused the event (login, id or e-mail), if the host says
    # The service the helpdesk's own service field names at event time (RT's service custom
    # field), where the host reads one: an agent who changes it corrects the service.
    service_label: str | None = Field(default=None, max_length=100)
    created_at: datetime | None = None
    language_hint: str | None = None

    @field_validator(
        "host", "delivery_id", "ticket_id", "queue", "requester", "actor", "service_label"
    )
    @classmethod
    def _no_nul_in_names(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL: refused here (a 400 naming the field), not at the
        # INSERT; and an id with NUL in it names nothing in any helpdesk.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("subject", "body")
    @classmethod
    def _drop_nul_in_text(cls, value: str) -> str:
        return value.replace("\x00", "")  # carries no meaning in ticket text


# Called with the number of items read so far (a long listing shows that it is moving).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class NewTicket:
    """A ticket the connector opens itself (proactive maintenance, improvement)."""

    queue: str
    title: str
    body: str
    tags: tuple[str, ...] = ()
    language: str = "en"
    # One word in the body naming what the ticket is for (see `referenced`); "" for none.
    ref: str = ""

    def referenced(self, key: str) -> NewTicket:
        """This ticket with a reference derived from `key` (e.g. a maintenance entry and its
        period) at the end of its body. Opening a ticket is not idempotent: an answer lost
        after the helpdesk saved it must not open a second one, so `create_ticket` first
        looks for a ticket carrying the reference. One alphanumeric word, so that every
        helpdesk's search (full text or SQL LIKE) finds it."""
        ref = "bpsmref" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
        return replace(self, ref=ref, body=f"{self.body}\n\nref {ref}")


@dataclass(frozen=True)
class TicketTimes:
    """What the helpdesk knows of a ticket's handling, for `bpsm report --host-times`.

    Epoch seconds; None means it has not happened (yet). `first_response_at` is the first
    reply to the customer by a person, never the connector's own internal note."""

    first_response_at: float | None = None
    closed_at: float | None = None
