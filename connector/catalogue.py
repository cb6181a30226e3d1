"""The service catalogue (format v1): pydantic models, loader and checks.

Every problem is reported as ``file:line: path: message`` so an admin can fix a catalogue
of hundreds of services without guessing; all problems are reported at once, not the first.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from connector.yamlsource import Loc, Problem, YamlDocument, format_loc, read_yaml

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
LANG_CODE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class CatalogueError(Exception):
    """The catalogue has errors; ``problems`` lists each with file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_duration(value: Any) -> timedelta:
    """'30m', '4h', '2d', '1w' -> timedelta. Anything else is an error that shows the form."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{value!r} is not a duration like 30m, 4h, 2d or 1w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


def _check_language_keys(value: dict[str, Any]) -> dict[str, Any]:
    for code in value:
        if not isinstance(code, str) or not LANG_CODE.match(code):
            raise ValueError(f"{code!r} is not a language code such as en or nb")
    return value


_BOOLEAN = TypeAdapter(bool)  # built once: the check runs for every service of a catalogue


def _says_false(value: Any) -> bool:
    """Whether `supported` reads as false: the model accepts `no`, `off`, `0` and the like
    as false too, so the rules for unsupported services must see them the same way."""
    if value is None:
        return False
    try:
        return _BOOLEAN.validate_python(value) is False
    except ValidationError:
        return False  # reported as a field error


def _text_map(value: Any) -> Any:
    # A plain string is accepted as text in every language (handy for brand names).
    if isinstance(value, str):
        return {"*": value}
    return value


TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]
TermsMap = dict[str, list[str]]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `keyword:` must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLA(_Strict):
    response: Duration
    resolution: Duration


class Maintenance(_Strict):
    title: TextMap
    every: Literal["daily", "weekly", "monthly", "quarterly", "yearly"]
    description: TextMap | None = None


class Improvement(_Strict):
    threshold: int = Field(default=5, ge=1)
    window: Duration = timedelta(days=7)


class Defaults(_Strict):
    sla: SLA = SLA(response=timedelta(hours=4), resolution=timedelta(days=3))


class Service(_Strict):
    id: str
    name: TextMap
    description: TextMap = Field(default_factory=dict)
    keywords: TermsMap = Field(default_factory=dict)
    supported: bool = True
    sla: SLA | None = None
    maintenance: list[Maintenance] = Field(default_factory=list)
    reason: TextMap | None = None
    alternative: TextMap | None = None
    owner: str | None = None

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(f"{value!r} is not a slug (lowercase letters, digits, - and _)")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value or not any(v.strip() for v in value.values()):
            raise ValueError("a service needs a name in at least one language")
        return value

    @field_validator("name", "description", "keywords", "reason", "alternative")
    @classmethod
    def _languages(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        _check_language_keys({k: v for k, v in value.items() if k != "*"})
        return value

    def text(self, field: str, lang: str, fallback: str = "en") -> str:
        """The text of ``field`` in ``lang`` (else fallback, else any language)."""
        return pick_text(getattr(self, field), lang, fallback)


class Catalogue(_Strict):
    version: Literal[1]
    languages: list[str] = Field(default_factory=lambda: ["en"])
    defaults: Defaults = Defaults()
    change_cues: TermsMap = Field(default_factory=dict)
    services: list[Service] = Field(min_length=1)
    improvement: Improvement = Improvement()

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        _check_language_keys(dict.fromkeys(value))
        return value

    @field_validator("change_cues")
    @classmethod
    def _cue_languages(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        _check_language_keys(value)
        return value

    def service(self, service_id: str) -> Service:
        for service in self.services:
            if service.id == service_id:
                return service
        raise KeyError(service_id)

    def sla_for(self, service: Service) -> SLA:
        return service.sla or self.defaults.sla


def pick_text(texts: dict[str, str] | None, lang: str, fallback: str = "en") -> str:
    """Choose the text for ``lang``; a plain-string field (key '*') fits every language."""
    if not texts:
        return ""
    for key in (lang, "*", fallback):
        if key in texts:
            return texts[key]
    return next(iter(texts.values()))


def _pydantic_problems(exc: ValidationError, doc: YamlDocument) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc: Loc = tuple(
            part for part in error["loc"] if not (isinstance(part, str) and "[" in part)
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r} (check the spelling)"
        elif error["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(doc.file, doc.line_of(loc), format_loc(loc), message))
    return problems


def _semantic_problems(data: dict[str, Any], doc: YamlDocument) -> list[Problem]:
    """Rules that span fields: unique ids, unsupported services explain themselves.

    They run on the raw data, so they are reported together with field errors instead of
    waiting until those are fixed.
    """
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    languages = data.get("languages")
    declared = set(languages) if isinstance(languages, list) else set()

    def add(loc: Loc, message: str, severity: str = "error") -> None:
        problems.append(Problem(doc.file, doc.line_of(loc), format_loc(loc), message, severity))

    services = data.get("services")
    for index, service in enumerate(services if isinstance(services, list) else []):
        if not isinstance(service, dict):
            continue
        loc: Loc = ("services", index)
        service_id = service.get("id")
        if isinstance(service_id, str) and service_id in first_seen:
            add(
                loc + ("id",),
                f"duplicate service id {service_id!r} "
                f"(first used by services[{first_seen[service_id]}])",
            )
        elif isinstance(service_id, str):
            first_seen[service_id] = index
        if _says_false(service.get("supported")):
            if not service.get("reason"):
                add(loc + ("supported",), "an unsupported service must give a reason")
            if not service.get("alternative"):
                add(
                    loc + ("supported",),
                    "unsupported service without an alternative "
                    "(users will be told no without a way forward)",
                    "warning",
                )
        sla = service.get("sla")
        if isinstance(sla, dict):
            try:
                if parse_duration(sla.get("response")) > parse_duration(sla.get("resolution")):
                    add(loc + ("sla",), "response time is longer than resolution time")
            except ValueError:
                pass  # reported as a field error
        used = {
            code
            for key in ("name", "description", "keywords")
            if isinstance(service.get(key), dict)
            for code in service[key]
        }
        for code in sorted(c for c in used - declared if isinstance(c, str)) if declared else []:
            add(loc, f"language {code!r} is not listed in `languages`", "warning")
    return problems


def check_catalogue_document(doc: YamlDocument) -> tuple[Catalogue | None, list[Problem]]:
    """Validate a parsed document; returns the catalogue (None on errors) and all problems."""
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(doc.file, 1, "", "the file is empty"))
    if problems and doc.data is None:
        return None, problems
    if not isinstance(doc.data, dict):
        return None, problems + [Problem(doc.file, 1, "", "a catalogue must be a YAML mapping")]
    cat: Catalogue | None = None
    try:
        cat = Catalogue.model_validate(doc.data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, doc)
    problems += _semantic_problems(doc.data, doc)
    problems.sort(key=lambda p: p.line)
    ok = not any(p.severity == "error" for p in problems)
    return (cat if ok else None), problems


def load_catalogue(path: str | Path) -> Catalogue:
    """Load and validate a catalogue; raises CatalogueError listing every error."""
    catalogue, problems = check_catalogue_document(read_yaml(path))
    if catalogue is None:
        raise CatalogueError([p for p in problems if p.severity == "error"])
    return catalogue


def check_catalogue(path: str | Path) -> list[Problem]:
    return check_catalogue_document(read_yaml(path))[1]
