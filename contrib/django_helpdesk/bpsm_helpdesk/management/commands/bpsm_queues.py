"""``manage.py bpsm_queues``: create django-helpdesk queues and print slug -> id.

django-helpdesk's REST API has no queue endpoint, and its ticket API names a queue
by integer id, so bpsm-connector's setup needs this to learn (and create) the queues
it routes to::

    python manage.py bpsm_queues --create "BPSM Reactive=bpsm-reactive" \
        --create "BPSM Change=bpsm-change" --json

Creating is idempotent: a queue whose slug exists already is left as it is. The
output covers every queue of the helpdesk, not only the ones named. With ``--json``
stdout holds exactly one JSON object, ``{"<slug>": <id>, ...}``; notes go to stderr.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction
from helpdesk.models import Queue

TITLE_MAX = Queue._meta.get_field("title").max_length or 100
SLUG_MAX = Queue._meta.get_field("slug").max_length or 50


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"Title=slug"`` at its last ``=`` (a slug has none, a title may)."""
    title, sep, slug = spec.rpartition("=")
    title, slug = title.strip(), slug.strip()
    if not sep or not title or not slug:
        raise CommandError(f"--create expects TITLE=SLUG, got {spec!r}")
    try:
        validate_slug(slug)
    except ValidationError as exc:
        raise CommandError(f"invalid slug {slug!r} in {spec!r}: {exc.messages[0]}") from exc
    if len(slug) > SLUG_MAX:
        raise CommandError(f"slug {slug!r} is longer than {SLUG_MAX} characters")
    if len(title) > TITLE_MAX:
        raise CommandError(f"title {title!r} is longer than {TITLE_MAX} characters")
    return title, slug


class Command(BaseCommand):
    help = (
        "Create helpdesk queues (idempotent, by slug) and print slug -> queue id for every queue."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--create",
            action="extend",
            nargs="+",
            default=[],
            metavar="TITLE=SLUG",
            help='queue to create unless its slug exists, e.g. "BPSM Reactive=bpsm-reactive"; '
            "repeatable, and takes several values",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help='print one JSON object {"slug": id, ...} on stdout',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wanted: dict[str, str] = {}
        for spec in options["create"]:
            title, slug = parse_spec(spec)
            if wanted.get(slug, title) != title:
                raise CommandError(f"slug {slug!r} given twice with different titles")
            wanted[slug] = title

        with transaction.atomic():
            for slug, title in wanted.items():
                existing = Queue.objects.filter(slug=slug).first()
                if existing is not None:
                    if existing.title != title:
                        self.stderr.write(
                            f"queue {slug!r} exists (id {existing.pk}) with title "
                            f"{existing.title!r}; left unchanged"
                        )
                    continue
                queue = Queue(title=title, slug=slug)
                try:
                    queue.full_clean()
                except ValidationError as exc:
                    raise CommandError(f"cannot create queue {slug!r}: {exc}") from exc
                queue.save()
                self.stderr.write(f"created queue {slug!r} (id {queue.pk})")

        queues = {q.slug: q.pk for q in Queue.objects.order_by("pk")}
        if options["json"]:
            self.stdout.write(json.dumps(queues))
        else:
            for slug, pk in queues.items():
                self.stdout.write(f"{pk}\t{slug}")
