"""Mappings (`mappings/<host>.yaml`): BPSM processes and services → the host's queue names.

Validated like the catalogue: unknown keys are errors, every problem names file and line.
Host-specific settings live under `options:` and are validated by the host module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.catalogue import _pydantic_problems
from connector.events import Process
from connector.yamlsource import Problem, YamlDocument, read_yaml

DEFAULT_QUEUES: dict[Process, str] = {
    "reactive": "BPSM Reactive",
    "relation": "BPSM Relation",
    "change": "BPSM Change",
    "proactive": "BPSM Proactive",
    "improvement": "BPSM Improvement",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelationSettings(_Strict):
    # off: internal note only; draft: also an internal draft of the reply; send: reply to
    # the customer through the host.
    reply: Literal["off", "draft", "send"] = "off"
    template: str | None = None  # path to a Jinja2 template; default ships with the product


class ChangeSettings(_Strict):
    approver_group: str | None = None  # CAB queue/group to involve on change tickets


class Mapping(_Strict):
    host: str | None = None
    processes: dict[Process, str] = Field(default_factory=lambda: dict(DEFAULT_QUEUES))
    services: dict[str, str] = Field(default_factory=dict)  # service id → reactive queue
    fallback: str | None = None  # queue for low-confidence matches (None: the process queue)
    confidence_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    connector_user: str | None = None
    relation: RelationSettings = RelationSettings()
    change: ChangeSettings = ChangeSettings()
    options: dict[str, Any] = Field(default_factory=dict)

    def queue_for(self, process: Process) -> str:
        return self.processes.get(process) or DEFAULT_QUEUES[process]

    def all_queues(self) -> list[str]:
        names = [self.queue_for(p) for p in DEFAULT_QUEUES]
        names += list(self.services.values())
        names += [q for q in (self.fallback, self.change.approver_group) if q]
        return list(dict.fromkeys(names))


def check_mapping_document(doc: YamlDocument) -> tuple[Mapping | None, list[Problem]]:
    problems = list(doc.problems)
    if doc.data is None:
        return (Mapping() if not problems else None), problems
    if not isinstance(doc.data, dict):
        return None, problems + [Problem(doc.file, 1, "", "a mapping must be a YAML mapping")]
    try:
        mapping = Mapping.model_validate(doc.data)
    except ValidationError as exc:
        return None, problems + _pydantic_problems(exc, doc)
    return (mapping if not problems else None), problems


class MappingError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_mapping(path: str | Path) -> Mapping:
    mapping, problems = check_mapping_document(read_yaml(path))
    if mapping is None:
        raise MappingError(problems)
    return mapping
