"""Relation management's reply to the customer, from Jinja2 templates admins can edit.

Templates are looked up as `relation_reply.<language>.j2`, first in the mapping's
`relation.template` folder (when set), then in the shipped `connector/templates/`; English is
the fallback language.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from connector.catalogue import Catalogue, pick_text
from connector.events import RoutingDecision, TicketEvent
from connector.mapping import Mapping

SHIPPED = Path(str(resources.files("connector").joinpath("templates")))


def _environment(mapping: Mapping) -> Environment:
    folders = [Path(mapping.relation.template)] if mapping.relation.template else []
    loaders = [FileSystemLoader(str(f)) for f in [*folders, SHIPPED]]
    # Plain text for e-mail: no HTML escaping, but undefined names are errors, not blanks.
    return Environment(
        loader=ChoiceLoader(loaders),
        autoescape=False,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def relation_reply(
    event: TicketEvent, decision: RoutingDecision, catalogue: Catalogue, mapping: Mapping
) -> str:
    env = _environment(mapping)
    lang = decision.language
    try:
        template = env.get_template(f"relation_reply.{lang}.j2")
    except TemplateNotFound:
        template = env.get_template("relation_reply.en.j2")
        lang = "en"
    service = catalogue.service(decision.service) if decision.service else None
    return (
        template.render(
            subject=event.subject,
            service=pick_text(service.name, lang) if service else None,
            reason=pick_text(service.reason, lang) if service and service.reason else None,
            alternative=(
                pick_text(service.alternative, lang) if service and service.alternative else None
            ),
        ).strip()
        + "\n"
    )
