"""The `bpsm` command line (click). Thin: parse options, call the library, print.

Commands import the runtime, the store, the job queue and the hosts inside their bodies, for
start-up time: `bpsm --help` and the catalogue checks load no database driver or queue, and
`serve` must not import prometheus_client before it has chosen its metrics directory."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from connector.catalogue import (
    CatalogueError,
    check_catalogue_document,
    load_catalogue,
    parse_duration,
)
from connector.classify import PACKS_VARIABLE, CatalogueIndex, build_index, parse_packs
from connector.evaluate import (
    DataError,
    evaluate,
    format_errors,
    format_report,
    read_labelled,
    sweep,
)
from connector.events import TicketEvent
from connector.exitcodes import CONFIG, FAILED, NO_STORE
from connector.mapping import Mapping, MappingError, check_mapping_document, load_mapping
from connector.route import decide
from connector.yamlsource import Problem, read_yaml

F = TypeVar("F", bound=Callable[..., Any])


def catalogue_option(func: F) -> F:
    return click.option(
        "--catalogue",
        "catalogue_path",
        type=click.Path(dir_okay=False),
        default=lambda: os.environ.get("BPSM_CATALOGUE", "catalogue.yaml"),
        show_default="./catalogue.yaml or $BPSM_CATALOGUE",
        help="Service catalogue file.",
    )(func)


def mapping_option(func: F) -> F:
    return click.option(
        "--mapping",
        "mapping_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Mapping file (queues, threshold); built-in defaults when omitted.",
    )(func)


def _packs(_ctx: click.Context, _param: click.Parameter, value: str | None) -> frozenset[str]:
    try:
        return parse_packs(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def packs_option(func: F) -> F:
    return click.option(
        "--packs",
        "packs",
        metavar="LIST|all|none",
        default=lambda: os.environ.get(PACKS_VARIABLE, "all"),
        show_default=f"all or ${PACKS_VARIABLE}",
        callback=_packs,
        help="Domain packs of the thesaurus to use: a comma list (e.g. healthcare,municipal).",
    )(func)


def _fail(problems: list[Problem], status: int = FAILED) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)
    sys.exit(status)


def _catalogue_missing(catalogue_path: str | Path, status: int) -> None:
    """The way out when there is no catalogue (a fresh install has none in its folder)."""
    if not Path(catalogue_path).exists():
        click.echo(
            f"{catalogue_path}: no service catalogue here. Pass --catalogue PATH, set "
            "BPSM_CATALOGUE, or run `bpsm init` to write a starting catalogue.yaml and "
            "mappings/ to edit.",
            err=True,
        )
        sys.exit(status)


def learned_option(func: F) -> F:
    return click.option(
        "--learned",
        "learned_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Learned file (`bpsm learn`): the organisation's own words as extra evidence.",
    )(func)


def _load(
    catalogue_path: str,
    mapping_path: str | None,
    packs: frozenset[str] | None = None,
    learned_path: str | None = None,
) -> tuple[CatalogueIndex, Mapping]:
    from connector.learn import LearnedScorer
    from connector.learnfile import LearnedError, load_learned

    _catalogue_missing(catalogue_path, FAILED)
    try:
        catalogue = load_catalogue(catalogue_path)
        mapping = load_mapping(mapping_path) if mapping_path else Mapping()
        model = load_learned(learned_path, catalogue) if learned_path else None
    except (CatalogueError, MappingError, LearnedError) as exc:
        _fail(exc.problems)
        raise  # unreachable; keeps mypy sure of the types
    index = build_index(catalogue, packs=packs)
    if model is not None and not model.empty:
        index = index.with_learned(LearnedScorer.compile(index, model))
    return index, mapping


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bpsm-connector")
def main() -> None:
    """bpsm-connector: route helpdesk tickets to BPSM processes by the service catalogue."""


def _looks_like_mapping(data: Any, path: Path) -> bool:
    """Catalogues have `version` and a list of services; mappings name queues."""
    if not isinstance(data, dict) or "version" in data:
        return False
    return (
        path.parent.name == "mappings"
        or "processes" in data
        or "host" in data
        or isinstance(data.get("services"), dict)
    )


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory: str) -> None:
    """Write a starting catalogue.yaml and mappings/ into DIRECTORY (default: here).

    They are the example of a Norwegian municipality's IT services, to be edited into your
    own. Files that exist are kept, never overwritten."""
    from connector.starter import write_starter

    try:
        results = write_starter(Path(directory))
    except OSError as exc:
        click.echo(f"cannot write into {directory}: {exc.strerror}", err=True)
        sys.exit(FAILED)
    for path, written in results:
        click.echo(f"{'wrote' if written else 'kept (exists)'}: {path}")
    catalogue = Path(directory) / "catalogue.yaml"
    click.echo(
        f"\nNext: edit {catalogue} into your own services and queues, check it with "
        f'`bpsm check {catalogue}`, and try `bpsm classify "printer broken" --catalogue '
        f"{catalogue}`. The service reads BPSM_CATALOGUE and BPSM_MAPPINGS_DIR "
        "(default ./catalogue.yaml and ./mappings)."
    )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@catalogue_option
def check(paths: tuple[str, ...], catalogue_path: str) -> None:
    """Validate catalogues, mappings or learned files; prints file:line: message for every
    problem."""
    from connector.learnfile import check_learned_document, is_learned

    errors = 0
    for path in paths or (catalogue_path,):
        doc = read_yaml(path)
        is_mapping = _looks_like_mapping(doc.data, Path(path))
        kind = "mapping" if is_mapping else "catalogue"
        if is_learned(doc.data):
            kind = "learned"
            # Service ids are checked against the catalogue when there is one to read.
            catalogue = None
            if Path(catalogue_path).is_file():
                catalogue, _ = check_catalogue_document(read_yaml(catalogue_path))
            _, problems = check_learned_document(doc, catalogue)
        elif is_mapping:
            _, problems = check_mapping_document(doc)
        else:
            _, problems = check_catalogue_document(doc)
        for problem in problems:
            click.echo(str(problem), err=problem.severity == "error")
        failed = sum(p.severity == "error" for p in problems)
        errors += failed
        if not failed:
            click.echo(f"{path}: ok ({kind})")
    if errors:
        sys.exit(1)


@main.command()
@click.argument("text")
@click.option("--subject", default="", help="Ticket subject.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@catalogue_option
@mapping_option
@packs_option
@learned_option
def classify(
    text: str,
    subject: str,
    as_json: bool,
    catalogue_path: str,
    mapping_path: str | None,
    packs: frozenset[str],
    learned_path: str | None,
) -> None:
    """Classify TEXT and show the routing decision with its evidence."""
    index, mapping = _load(catalogue_path, mapping_path, packs, learned_path)
    match = index.classify(text, subject)
    event = TicketEvent(host="cli", delivery_id="cli", ticket_id="cli", subject=subject, body=text)
    decision = decide(event, match, index.catalogue, mapping)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "match": match.model_dump(mode="json"),
                    "decision": decision.model_dump(mode="json"),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    click.echo(
        f"service:    {match.service or '-'}  (score {match.score:.2f}, "
        f"confidence {match.confidence:.2f}, runner-up {match.runner_up or '-'})"
    )
    click.echo(f'process:    {decision.process}  → queue "{decision.queue}"')
    click.echo(f"language:   {match.language}")
    click.echo(f"tags:       {', '.join(decision.tags)}")
    for ev in match.evidence:
        source = ev.source if ev.learned_from is None else f"learned from {ev.learned_from} tickets"
        click.echo(f"evidence:   {ev.word!r} → {ev.term!r} ({source}, {ev.how}, {ev.weight})")
    if match.outside:
        click.echo(f"outside IT: {match.outside}")
    if match.change_cues:
        click.echo(f"change:     {', '.join(match.change_cues)}")
    click.echo("note:\n  " + decision.note.replace("\n", "\n  "))


@main.command("evaluate")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Confidence threshold for auto-routing (default: the mapping's).",
)
@click.option("--sweep", "do_sweep", is_flag=True, help="Show share vs accuracy per threshold.")
@click.option("--errors", "show_errors", is_flag=True, help="List the misrouted tickets and why.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the sweep as an HTML page with a chart to this file.",
)
@click.option(
    "--cv",
    "cv_folds",
    type=click.IntRange(2, 20),
    default=None,
    help="Cross-validate learning: learn on k-1 folds, evaluate on the rest, beside zero-shot.",
)
@catalogue_option
@mapping_option
@packs_option
@learned_option
def evaluate_command(
    data: str,
    as_json: bool,
    threshold: float | None,
    do_sweep: bool,
    show_errors: bool,
    html_path: str | None,
    cv_folds: int | None,
    catalogue_path: str,
    mapping_path: str | None,
    packs: frozenset[str],
    learned_path: str | None,
) -> None:
    """Accuracy of service and process on labelled tickets (CSV subject,body,service,process)."""
    index, mapping = _load(catalogue_path, mapping_path, packs, learned_path)
    try:
        tickets = read_labelled(data, index.catalogue)
    except DataError as exc:
        _fail(exc.problems)
        return
    if cv_folds is not None:
        from connector.crossval import cross_validate, format_cv

        folded = cross_validate(tickets, index, mapping, k=cv_folds)
        click.echo(json.dumps(folded, ensure_ascii=False) if as_json else format_cv(folded))
        return
    result = evaluate(tickets, index, mapping, threshold)
    table = sweep(tickets, result["predictions"]) if do_sweep else None
    if html_path:
        from connector.report import render_sweep_html

        rows = table if table is not None else sweep(tickets, result["predictions"])
        _write_output(html_path, render_sweep_html(result, rows, data))
    if as_json:
        if table is not None:
            result["sweep"] = table
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    click.echo(format_report(result))
    if show_errors:
        click.echo("\n" + format_errors(tickets, result["predictions"]))
    if table is not None:
        click.echo("\nthreshold  routed  service-acc  process-acc")
        for row in table:
            service = "-" if row["service"] is None else f"{row['service']:.3f}"
            process = "-" if row["process"] is None else f"{row['process']:.3f}"
            click.echo(
                f"{row['threshold']:>9.1f}  {row['share']:>6.1%}  {service:>11}  {process:>11}"
            )


@main.command()
@click.argument("data", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="The learned file to write (YAML; written only when learning succeeded).",
)
@click.option(
    "--from-audit",
    is_flag=True,
    help="Also learn from agents' corrections in the audit log (moves to other BPSM queues, "
    "another service in the helpdesk's service field, the review page).",
)
@click.option(
    "--from-host",
    "from_host",
    default=None,
    help="Also learn from tickets the helpdesk holds (HOST: zammad, glpi, rt, …), labelled "
    "by their service field, else their queue: a BPSM service queue of the mapping, or "
    "--label-map.",
)
@click.option(
    "--label-map",
    "label_map_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --from-host: YAML map from the helpdesk's queues/groups to service ids.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="With --from-host: print tickets per service and the label map's coverage; write nothing.",
)
@click.option(
    "--since",
    default="90d",
    show_default=True,
    help="With --from-audit or --from-host: tickets within this period (30d, 180d).",
)
@click.option(
    "--suggest",
    is_flag=True,
    help="Also print learned words worth adding as catalogue keywords (a YAML patch).",
)
@catalogue_option
def learn(
    data: str | None,
    output_path: str,
    from_audit: bool,
    from_host: str | None,
    label_map_path: str | None,
    dry_run: bool,
    since: str,
    suggest: bool,
    catalogue_path: str,
) -> None:
    """Learn the organisation's own words per service from labelled tickets (DATA, the
    `evaluate` CSV) and/or agents' corrections (--from-audit) into a reviewable file for
    `--learned` / BPSM_LEARNED."""
    from connector.crossval import as_learning
    from connector.datadir import write_atomically
    from connector.learn import learn as learn_model
    from connector.learnfile import dump

    if data is None and not from_audit and not from_host:
        raise click.UsageError("give a labelled CSV, --from-audit or --from-host (or several)")
    index, mapping = _load(catalogue_path, None)
    tickets = []
    sources = []
    if data is not None:
        try:
            tickets = read_labelled(data, index.catalogue)
        except DataError as exc:
            _fail(exc.problems)
            return
        sources.append(Path(data).name)
    learning = as_learning(tickets)
    if from_audit:
        audit = _audit_tickets(catalogue_path, since)
        click.echo(f"audit log: {len(audit)} corrected tickets with a service (since {since})")
        learning += audit
        sources.append(f"audit log, {since}")
    if from_host:
        hosted = _host_tickets(from_host, since, label_map_path, catalogue_path, index, dry_run)
        if dry_run:
            return
        learning += hosted
        sources.append(f"{from_host}, {since}")
    if not learning:
        click.echo("nothing to learn from: no labelled tickets", err=True)
        sys.exit(1)
    model = learn_model(index, learning, sources=sources)
    try:
        write_atomically(output_path, dump(model))
    except OSError as exc:
        click.echo(f"cannot write {output_path}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    terms = sum(len(t) for t in model.services.values())
    click.echo(
        f"learned {terms} terms for {len(model.services)} services from {model.tickets} "
        f"tickets → {output_path}"
    )
    if suggest and tickets:
        from connector.suggest import format_suggestions, suggest_keywords

        click.echo(format_suggestions(suggest_keywords(index, mapping, tickets, model)))


def _host_tickets(
    name: str,
    since: str,
    label_map_path: str | None,
    catalogue_path: str,
    index: CatalogueIndex,
    dry_run: bool,
) -> list[Any]:
    """The helpdesk's tickets of the period, labelled by their service field or queue (see
    label_ticket); with `dry_run`, only what would be learned is printed."""
    from collections import Counter
    from datetime import UTC, datetime

    from connector.hosts import host_classes
    from connector.hosts.base import HostError
    from connector.learn import LabelledText, label_ticket
    from connector.learnfile import LearnedError, load_label_map

    window = _since_window(since)
    if name not in host_classes() or name == "demo":
        raise click.BadParameter(f"no helpdesk called {name!r}", param_hint="--from-host")
    try:
        label_map = load_label_map(label_map_path, index.catalogue) if label_map_path else {}
    except LearnedError as exc:
        _fail(exc.problems)
    settings = _settings(catalogue_path)
    if not settings.host(name).configured:
        click.echo(f"{name}: no URL; set the {name} URL variable", err=True)
        sys.exit(CONFIG)
    path = settings.mapping_path(name)
    try:
        mapping = load_mapping(path) if path.exists() else Mapping(host=name)
    except MappingError as exc:
        _fail(exc.problems, CONFIG)
    client = host_classes()[name](settings.host(name), mapping).client()
    try:
        # What agents sorted: the BPSM queues, and the queues the label map names.
        queues = {*mapping.all_queues(), *label_map}
        events = client.history(datetime.now(UTC) - window, queues, _reading(name))
    except (HostError, NotImplementedError) as exc:
        click.echo(f"cannot read tickets from {name}: {exc or 'not supported'}", err=True)
        sys.exit(FAILED)
    finally:
        client.close()
    tickets, per_service, unlabelled = [], Counter[str](), Counter[str]()
    for event in events:
        label = label_ticket(event, mapping, label_map, index.catalogue)
        if label is None or label[1] is None:
            unlabelled[event.queue or "-"] += 1
            continue
        process, service = label[0], label[1]
        per_service[service] += 1
        tickets.append(
            LabelledText(f"{name}#{event.ticket_id}", event.subject, event.body, service, process)
        )
    click.echo(f"{name}: {len(events)} tickets since {since}, {len(tickets)} with a service")
    if dry_run:
        for service, count in sorted(per_service.items(), key=lambda i: (-i[1], i[0])):
            click.echo(f"  {service:<28} {count:>5}")
        for queue, count in sorted(unlabelled.items(), key=lambda i: (-i[1], i[0])):
            click.echo(f"  not labelled: queue {queue!r} ({count} tickets)")
        seen = {e.queue for e in events}
        for queue in sorted(set(label_map) - seen):
            click.echo(f"  label map: no ticket in queue {queue!r} (is the name right?)")
    return tickets


def _audit_tickets(catalogue_path: str, since: str) -> list[Any]:
    import time

    from connector.learn import from_corrections

    window = _since_window(since)
    runtime = _runtime(catalogue_path, read_only=True)
    try:
        known = {s.id for s in runtime.catalogue.services}
        rows = runtime.store.corrections_with_text(since=time.time() - window.total_seconds())
        # A service since removed from the catalogue teaches nothing.
        return [t for t in from_corrections(rows) if t.service in known]
    finally:
        runtime.close()


def _settings(catalogue_path: str | None = None) -> Any:
    """The settings from the environment, or exit CONFIG naming the bad one."""
    from connector.config import ConfigError, load_settings
    from connector.hosts import settings_models

    overrides: dict[str, Any] = {}
    if catalogue_path:
        overrides["catalogue_path"] = Path(catalogue_path)
    try:
        settings = load_settings(hosts=settings_models(), **overrides)
        # Read again where the index is built; checked here so a typo stops the start.
        parse_packs(os.environ.get(PACKS_VARIABLE))
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(CONFIG)
    except ValueError as exc:
        click.echo(f"configuration error: {PACKS_VARIABLE}: {exc}", err=True)
        sys.exit(CONFIG)
    return settings


def _no_store(exc: Exception, settings: Any) -> None:
    click.echo(f"{exc}", err=True)
    if not settings.database_url:
        click.echo(
            f"(BPSM_DATA_DIR is {settings.data_dir}; `bpsm serve` or `bpsm worker` creates "
            "the store there)",
            err=True,
        )
    sys.exit(NO_STORE)


def _since_window(since: str) -> timedelta:
    """A `--since` duration ("90d", "12h"); a bad one is the option's error."""
    try:
        return parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc


def _runtime(catalogue_path: str | None = None, read_only: bool = False) -> Any:
    """The Runtime, or exit CONFIG. `read_only`: the store must exist (else exit NO_STORE)
    and nothing is created or migrated; the store read is named on standard error."""
    from connector.config import ConfigError
    from connector.runtime import Runtime
    from connector.store import StoreUnavailable, describe_store

    settings = _settings(catalogue_path)
    _catalogue_missing(settings.catalogue_path, CONFIG)
    try:
        runtime = Runtime(settings, read_only=read_only)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(CONFIG)
    except (CatalogueError, MappingError) as exc:
        _fail(exc.problems, CONFIG)
    except StoreUnavailable as exc:
        _no_store(exc, settings)
    if read_only:
        click.echo(f"store: {describe_store(settings.database)}", err=True)
    return runtime


def _run_process(body: Callable[[Any, Any, Any], int], catalogue_path: str, serve: bool) -> None:
    """The frame of `serve` and `worker`: signals handled from the first instant, the metrics
    directory of `serve` made before prometheus_client is imported, start-up failures as one
    line on stderr and exit status 1."""
    from connector.config import ConfigError
    from connector.logs import setup_logging
    from connector.service import MetricsDir, StartupError, Stopper
    from connector.store import StoreTooNew

    stopper = Stopper()
    stopper.install()
    metrics = MetricsDir.prepare() if serve else None
    code = 1
    try:
        settings = _settings(catalogue_path)
        setup_logging(settings.log_level)
        code = body(settings, stopper, metrics)
    except StartupError as exc:
        click.echo(f"bpsm: cannot start: {exc}", err=True)
    except StoreTooNew as exc:  # CONFIG: a restart cannot fix it (systemd stops retrying)
        click.echo(f"bpsm: cannot start: {exc}", err=True)
        code = CONFIG
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        code = CONFIG
    except (CatalogueError, MappingError) as exc:
        _fail(exc.problems, CONFIG)
    finally:
        if metrics is not None:
            metrics.cleanup()
    sys.exit(code)


@main.command()
@click.option("--bind", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn web worker processes.",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Job-consumer threads in each consumer process.",
)
@click.option(
    "--consumers",
    default=None,
    type=click.IntRange(1, 64),
    envvar="BPSM_CONSUMERS",
    show_default="one per core beside the web workers, at least 1",
    help="Job-consumer processes: the first in this process, the others in child processes.",
)
@click.option(
    "--consumer-nice",
    default=10,  # Linux CFS: a nice-10 thread gets ~1/10 of the CPU a nice-0 one wants
    show_default=True,
    type=click.IntRange(0, 19),
    envvar="BPSM_CONSUMER_NICE",
    help="Lower the consumers' CPU priority by this much (0: as the web workers), so that a "
    "burst of webhooks is answered first and decided after.",
)
@catalogue_option
def serve(
    bind: str,
    port: int,
    workers: int,
    threads: int,
    consumers: int | None,
    consumer_nice: int,
    catalogue_path: str,
) -> None:
    """Run the webhook service: gunicorn for HTTP, the job consumers and pollers.

    State lives under $BPSM_DATA_DIR (default ./data). With no helpdesk configured it runs
    in dry-run mode with the demo host: POST a ticket to /hooks/demo and see the decision
    with `bpsm decisions`.
    """
    os.environ["BPSM_CATALOGUE"] = str(Path(catalogue_path).resolve())

    def body(settings: Any, stopper: Any, metrics: Any) -> int:
        from connector.service import default_consumers, run_service

        return run_service(
            settings,
            stopper,
            metrics=metrics,
            bind=bind,
            port=port,
            web_workers=workers,
            consumer_threads=threads,
            consumers=consumers or default_consumers(workers),
            consumer_nice=consumer_nice,
        )

    _run_process(body, catalogue_path, serve=True)


@main.command(hidden=True)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 64))
@catalogue_option
def consume(threads: int, catalogue_path: str) -> None:
    """A further job consumer of `bpsm serve --consumers N`, started by it and dying with it."""

    def body(settings: Any, stopper: Any, _metrics: Any) -> int:
        from connector.service import run_consumer

        return run_consumer(settings, stopper, consumer_threads=threads)

    _run_process(body, catalogue_path, serve=False)


@main.command()
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="BPSM_WORKER_METRICS_PORT",
    help="Serve this worker's /metrics on this port (off by default).",
)
@click.option("--metrics-bind", default="127.0.0.1", show_default=True)
@catalogue_option
def worker(threads: int, metrics_port: int | None, metrics_bind: str, catalogue_path: str) -> None:
    """Run a job consumer (and host pollers) without the web layer; run many with Redis."""

    def body(settings: Any, stopper: Any, _metrics: Any) -> int:
        from connector.service import run_worker

        where = (metrics_bind, metrics_port) if metrics_port is not None else None
        return run_worker(settings, stopper, consumer_threads=threads, metrics_bind=where)

    _run_process(body, catalogue_path, serve=False)


@main.command()
@click.option("--id", "dead_letter_id", type=int, default=None, help="One dead letter.")
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter not yet replayed.")
@click.option("--list", "list_only", is_flag=True, help="Only list the dead letters.")
@catalogue_option
def replay(
    dead_letter_id: int | None, replay_all: bool, list_only: bool, catalogue_path: str
) -> None:
    """List dead letters, or put them back in the queue once the cause is fixed."""
    runtime = _runtime(catalogue_path, read_only=True)
    if list_only or (dead_letter_id is None and not replay_all):
        letters = runtime.store.list_dead_letters()
        for row in letters:
            click.echo(
                f"{row['id']:>5}  {row['host']:<16} ticket {row['ticket_id']:<10} {row['reason']}"
            )
        if not letters:
            click.echo("no dead letters")
        return
    ids = runtime.store.replay(None if replay_all else dead_letter_id)  # the service routes them
    click.echo(
        f"replayed {len(ids)} deliver{'y' if len(ids) == 1 else 'ies'}"
        + ("" if ids or replay_all else f" (no open dead letter {dead_letter_id})")
    )
    if dead_letter_id is not None and not ids:
        sys.exit(1)


def _host_option_env(
    host: str, url: str | None, token_file: str | None, user: str | None, password_file: str | None
) -> None:
    """Command-line connection options become the host's environment variables."""
    from connector.config import env_prefix

    prefix = env_prefix(host)
    for key, value in (
        ("URL", url),
        ("TOKEN_FILE", token_file),
        ("USER", user),
        ("PASSWORD_FILE", password_file),
    ):
        if value:
            os.environ[prefix + key] = value


def _host_argument(func: F) -> F:
    from connector.hosts import host_names

    func = click.option("--password-file", default=None, help="File holding the password.")(func)
    func = click.option("--user", default=None, help="API user (hosts with basic auth).")(func)
    func = click.option("--token-file", default=None, help="File holding the API token.")(func)
    func = click.option("--url", default=None, help="Helpdesk base URL (else from env).")(func)
    return click.argument("host", type=click.Choice([h for h in host_names() if h != "demo"]))(func)


@main.command()
@_host_argument
@click.option(
    "--hook-url",
    default=None,
    help="Public URL of this connector's /hooks/<host> (for hosts with webhooks).",
)
@click.option(
    "--secret-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to write a generated webhook secret (mode 0600).",
)
@click.option(
    "--remove",
    is_flag=True,
    help="Undo setup: remove the webhooks and triggers it created (Zammad, GLPI).",
)
@click.option(
    "--queues",
    "remove_queues",
    is_flag=True,
    help="With --remove: also remove the mapping's queues that hold no ticket.",
)
@catalogue_option
def setup(
    host: str,
    url: str | None,
    token_file: str | None,
    user: str | None,
    password_file: str | None,
    hook_url: str | None,
    secret_file: str | None,
    remove: bool,
    remove_queues: bool,
    catalogue_path: str,
) -> None:
    """Create the BPSM queues (and webhook/triggers) in the helpdesk; safe to run again.

    With --remove, take away what it created instead (uninstalling)."""
    from connector.hosts.base import HostError

    if remove_queues and not remove:
        raise click.UsageError("--queues only goes with --remove")
    _host_option_env(host, url, token_file, user, password_file)
    runtime = _runtime(catalogue_path)
    if not runtime.settings.host(host).configured:
        click.echo(f"{host}: no URL; pass --url or set the {host} URL variable", err=True)
        sys.exit(2)
    from connector.secretfile import private

    client = runtime.client(host)
    if remove:
        _teardown(client, host, runtime.mapping(host), remove_queues)
        return
    path = Path(secret_file or runtime.settings.data_dir / f"{host}-webhook-secret")
    private(path)
    # A secret setup generates is written to `path` before the webhook is created with it.
    client.secret_file = path
    try:
        result = client.setup(runtime.mapping(host), hook_url)
    except HostError as exc:
        click.echo(f"setup failed: {exc}", err=True)
        if path.exists():
            click.echo(f"the webhook secret is kept in {path}; run setup again", err=True)
        sys.exit(1)
    finally:
        client.close()
    for line in result.lines:
        click.echo(line)
    if result.webhook_secret:
        from connector.config import env_prefix

        click.echo(
            f"webhook secret written to {path}; run the service with "
            f"{env_prefix(host)}WEBHOOK_SECRET_FILE={path.resolve()}"
        )
    if hook_url and result.test_event is not None:
        from connector.hosts.http import send_test_event

        click.echo(send_test_event(result.test_event))


def _guide(host: str) -> str:
    """Where a host's install guide is in the repository."""
    from connector.hosts import host_classes

    return host_classes()[host].__module__.replace(".", "/") + "/guide.md"


def _teardown(client: Any, host: str, mapping: Mapping, queues: bool) -> None:
    from connector.hosts.base import HostError

    try:
        for line in client.teardown(mapping, queues):
            click.echo(line)
    except NotImplementedError:
        click.echo(
            f"bpsm setup {host} --remove cannot undo {host}'s setup: see the uninstall steps "
            f"of its guide ({_guide(host)})",
            err=True,
        )
        sys.exit(FAILED)
    except HostError as exc:
        click.echo(f"remove failed: {exc}", err=True)
        sys.exit(FAILED)
    finally:
        client.close()
    click.echo(
        "The helpdesk sends nothing more. Stop the service, then delete its data folder "
        "(BPSM_DATA_DIR) and secret files if you are uninstalling."
    )


@main.command()
@_host_argument
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Route open tickets created within this period (30m, 4h, 7d).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only print what would be queued, per process and service; queue nothing.",
)
@catalogue_option
def backfill(
    host: str,
    url: str | None,
    token_file: str | None,
    user: str | None,
    password_file: str | None,
    since: str,
    dry_run: bool,
    catalogue_path: str,
) -> None:
    """Queue existing tickets for routing (each is routed once; re-running is safe)."""
    from datetime import UTC, datetime

    from connector.hosts.base import HostError

    window = _since_window(since)
    _host_option_env(host, url, token_file, user, password_file)
    runtime = _runtime(catalogue_path)
    click.echo(f"{host}: fetching open tickets created within {since} …", err=True)
    try:
        events = runtime.client(host).backfill(datetime.now(UTC) - window, _reading(host))
    except HostError as exc:
        click.echo(f"backfill failed: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"\r\033[K{host}: {len(events)} tickets found"
        if sys.stderr.isatty()
        else f"{host}: {len(events)} tickets found",
        err=True,
    )
    if dry_run:
        _backfill_preview(runtime, host, events)
        return
    queued = 0
    with _progress(events, "queueing") as items:
        for event in items:
            if runtime.store.record_delivery(event) is not None:
                queued += 1
    click.echo(
        f"{len(events)} tickets found, {queued} queued for routing "
        f"({len(events) - queued} seen before); a running service or "
        "`bpsm worker` routes them"
    )


def _reading(host: str) -> Any:
    """A count of the tickets read so far, for a person at a terminal (a helpdesk's listing
    can take minutes); nothing in a pipe or a log."""
    if not sys.stderr.isatty():
        return None

    def show(count: int) -> None:
        # \r and "erase to the end of the line": one line that counts up, then is replaced.
        click.echo(f"\r\033[K{host}: {count} tickets read …", nl=False, err=True)

    return show


def _progress(items: list[Any], label: str) -> Any:
    """A progress bar for a person at a terminal; nothing extra in a pipe or a log."""
    return click.progressbar(items, label=label, file=sys.stderr if sys.stderr.isatty() else None)


def _backfill_preview(runtime: Any, host: str, events: list[Any]) -> None:
    """What a backfill would queue: each ticket classified and decided, nothing written."""
    from collections import Counter

    mapping = runtime.mapping(host)
    counts: Counter[tuple[str, str]] = Counter()
    seen = 0
    with _progress(events, "classifying") as items:
        for event in items:
            if runtime.store.routing(host, event.ticket_id) is not None:
                seen += 1
                continue
            match = runtime.index.classify(event.body, event.subject, event.language_hint)
            decision = decide(event, match, runtime.catalogue, mapping)
            counts[(decision.process, decision.service or "-")] += 1
    click.echo(f"would queue {sum(counts.values())} tickets ({seen} already routed):")
    click.echo(f"  {'process':<10} {'service':<28} {'tickets':>7}")
    for (process, service), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        click.echo(f"  {process:<10} {service:<28} {n:>7}")


@main.command()
@catalogue_option
def maintenance(catalogue_path: str) -> None:
    """Open this period's maintenance tickets (proactive process); once per period."""
    from connector.processes import run_maintenance

    runtime = _runtime(catalogue_path)
    results = run_maintenance(runtime.context)
    for result in results:
        click.echo(str(result))
    if not results:
        click.echo("the catalogue has no maintenance entries")
    runtime.close()
    if any(r.status == "failed" for r in results):
        sys.exit(1)


@main.command()
@click.argument("service")
@click.option("--reason", required=True, help='Why, e.g. "new legislation: …".')
@click.option("--host", "host_name", default=None, help="Helpdesk (default: the configured one).")
@catalogue_option
def improvement(service: str, reason: str, host_name: str | None, catalogue_path: str) -> None:
    """Open an improvement ticket for SERVICE by hand (structural improvement process)."""
    from connector.processes import open_improvement, target_hosts

    runtime = _runtime(catalogue_path)
    try:
        runtime.index.catalogue.service(service)
    except KeyError:
        click.echo(f"unknown service {service!r}; see `bpsm check` for the catalogue", err=True)
        sys.exit(2)
    host = host_name or target_hosts(runtime.context)[0]
    result = open_improvement(runtime.context, host, service, reason, [])
    click.echo(str(result))
    runtime.close()
    if result.status == "failed":
        sys.exit(1)


@main.command()
@click.option("--since", default=None, help="Only decisions within this period (4h, 7d, 12w).")
@click.option("--service", default=None, help="Only this service (its catalogue id).")
@click.option(
    "--process",
    type=click.Choice(["reactive", "relation", "change", "proactive", "improvement"]),
    default=None,
    help="Only this process.",
)
@click.option("--low-confidence", is_flag=True, help="Only low-confidence decisions.")
@click.option("--overridden", is_flag=True, help="Only decisions an agent overrode.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
@catalogue_option
def decisions(
    since: str | None,
    service: str | None,
    process: str | None,
    low_confidence: bool,
    overridden: bool,
    limit: int,
    as_json: bool,
    catalogue_path: str,
) -> None:
    """The latest routing decisions from the audit log, newest first. Works without a
    catalogue (service names come from it when it can be read)."""
    import time

    from connector.decisions import DecisionFilter, as_table, decision_row
    from connector.decisions import as_json as decisions_json

    start = None
    if since is not None:
        start = time.time() - _since_window(since).total_seconds()
    wanted = DecisionFilter(
        since=start,
        service=service,
        process=process,
        low_confidence=low_confidence,
        overridden=overridden,
        limit=limit,
    )
    store, catalogue = _audit_store(catalogue_path)
    try:
        rows = [decision_row(r, catalogue) for r in store.decision_rows(wanted)]
    finally:
        store.dispose()
    if as_json:
        click.echo(decisions_json(rows))
    elif rows:
        click.echo(as_table(rows))
    else:
        click.echo(
            "no decisions match" if wanted != DecisionFilter(limit=limit) else "no decisions yet"
        )


def _audit_store(catalogue_path: str | None) -> tuple[Any, Any]:
    """The store as it is (never created or migrated; exit NO_STORE when it is missing) and,
    when it can be read, the catalogue (for service names): reading the audit log must not
    need a valid catalogue."""
    from connector.catalogue import load_catalogue
    from connector.store import Store, StoreUnavailable, describe_store

    settings = _settings(catalogue_path)
    try:
        catalogue = load_catalogue(settings.catalogue_path)
    except CatalogueError:
        catalogue = None
    try:
        store = Store(settings.database, create=False)
    except StoreUnavailable as exc:
        _no_store(exc, settings)
    click.echo(f"store: {describe_store(settings.database)}", err=True)
    return store, catalogue


@main.group("ui-user")
def ui_user() -> None:
    """Users of the review page (/ui/): names and argon2 hashes in BPSM_UI_USERS_FILE."""


def _users_file(path: str | None) -> Path:
    chosen = path or os.environ.get("BPSM_UI_USERS_FILE")
    if not chosen:
        raise click.UsageError("give --file or set BPSM_UI_USERS_FILE")
    return Path(chosen)


@ui_user.command("add")
@click.argument("name")
@click.option("--file", "path", default=None, help="Users file (default: BPSM_UI_USERS_FILE).")
@click.password_option("--password", help="Asked for when not given (never echoed).")
def ui_user_add(name: str, path: str | None, password: str) -> None:
    """Add a user, or set a user's password (the file is written 0600)."""
    from connector.ui import write_user

    target = _users_file(path)
    try:
        write_user(target, name, password)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: saved in {target}")


@ui_user.command("remove")
@click.argument("name")
@click.option("--file", "path", default=None, help="Users file (default: BPSM_UI_USERS_FILE).")
def ui_user_remove(name: str, path: str | None) -> None:
    """Remove a user."""
    from connector.ui import remove_user

    target = _users_file(path)
    if not remove_user(target, name):
        raise click.ClickException(f"no user {name!r} in {target}")
    click.echo(f"{name}: removed from {target}")


def _write_output(path: str, text: str) -> None:
    """Write a report file; the note goes to stderr so stdout stays clean for pipes."""
    try:
        Path(path).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        click.echo(f"cannot write {path}: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(f"wrote {path}", err=True)


def _host_times(runtime: Any, rows: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Ask each configured helpdesk for its tickets' response/close times.

    Hosts without a URL, or whose client does not implement `ticket_times`, are skipped. A
    host that fails with a transient error is not asked again in this run (it is down or
    throttling; N more timeouts would not help); a permanent error only loses that ticket.
    """
    from connector.hosts.base import HostClient, HostError

    found: dict[tuple[str, str], Any] = {}
    for host in sorted({str(r["host"]) for r in rows}):
        tickets = [str(r["ticket_id"]) for r in rows if r["host"] == host]
        if not runtime.settings.host(host).configured:
            continue
        try:
            client = runtime.client(host)
        except NotImplementedError:  # a host module without an API client
            continue
        if type(client).ticket_times is HostClient.ticket_times:
            click.echo(f"{host}: the connector cannot read ticket times from it", err=True)
            continue
        for ticket_id in tickets:
            try:
                found[(host, ticket_id)] = client.ticket_times(ticket_id)
            except HostError as exc:
                if not exc.permanent:
                    click.echo(f"{host}: stopped asking for ticket times: {exc}", err=True)
                    break
        known = sum(found.get((host, t)) is not None for t in tickets)
        click.echo(f"{host}: ticket times for {known} of {len(tickets)} tickets", err=True)
    return found


def _with_subjects(store: Any, rows: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """The low-confidence rows with their ticket's subject, for the report's review list."""
    from connector.decisions import DecisionFilter, decision_row
    from connector.report import LOW_CONFIDENCE_LIST

    wanted = DecisionFilter(since=since, low_confidence=True, limit=LOW_CONFIDENCE_LIST)
    subjects = {row.id: row.subject for row in map(decision_row, store.decision_rows(wanted))}
    return [r | {"subject": subjects[r["id"]]} if r["id"] in subjects else r for r in rows]


AGREEMENT_CACHE_SECONDS = 3600.0  # a ticket's queue asked within the hour is not asked again
AGREEMENT_PAUSE = 0.05  # seconds between two questions to one helpdesk (≤ 20 a second)


def _agreement(runtime: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pilot tickets' current queues (cached in the data folder for an hour, asked at most
    20 a second per helpdesk), compared with the connector's decisions."""
    import time

    from connector.datadir import private_file
    from connector.hosts.base import HostError
    from connector.report import PILOT_OUTCOMES, pilot_agreement

    cache_path = runtime.settings.data_dir / "agreement-cache.json"
    try:
        cache: dict[str, Any] = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    now = time.time()
    current: dict[tuple[str, str], str | None] = {}
    pilot = [r for r in rows if r["outcome"] in PILOT_OUTCOMES]
    for host in sorted({str(r["host"]) for r in pilot}):
        if not runtime.settings.host(host).configured:
            click.echo(f"{host}: no URL, so its tickets' queues cannot be asked", err=True)
            continue
        client = runtime.client(host)
        for row in (r for r in pilot if r["host"] == host):
            key = f"{host}:{row['ticket_id']}"
            hit = cache.get(key)
            if hit and now - float(hit["at"]) < AGREEMENT_CACHE_SECONDS:
                current[(host, str(row["ticket_id"]))] = hit["queue"]
                continue
            try:
                queue = client.current_queue(str(row["ticket_id"]))
            except NotImplementedError:
                click.echo(f"{host}: the connector cannot read a ticket's queue from it", err=True)
                break
            except HostError as exc:
                if not exc.permanent:
                    click.echo(f"{host}: stopped asking for queues: {exc}", err=True)
                    break
                continue
            current[(host, str(row["ticket_id"]))] = queue
            cache[key] = {"queue": queue, "at": now}
            time.sleep(AGREEMENT_PAUSE)
    try:
        private_file(cache_path).write_text(json.dumps(cache), encoding="utf-8")
    except OSError as exc:
        click.echo(f"could not keep the agreement cache: {exc}", err=True)
    queues = {host: runtime.mapping(host).all_queues() for host in {h for h, _ in current}}
    return pilot_agreement(rows, current, queues)


def _service_names(catalogue: Any) -> dict[str, str]:
    language = catalogue.languages[0] if catalogue.languages else "en"
    return {s.id: s.text("name", language) for s in catalogue.services}


def _threshold(runtime: Any, rows: list[dict[str, Any]]) -> float | None:
    """The confidence threshold of the hosts in the report, when they share one."""
    thresholds = {runtime.mapping(host).confidence_threshold for host in {r["host"] for r in rows}}
    return thresholds.pop() if len(thresholds) == 1 else None


@main.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="Tickets routed within this period (30m, 4h, 30d, 12w).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv", "html"]),
    default="text",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option(
    "--host-times",
    is_flag=True,
    help="Ask the helpdesks for first-response and close times (SLA breaches, medians).",
)
@click.option(
    "--agreement",
    is_flag=True,
    help="In a pilot: ask the helpdesks where agents have since put each ticket, and how "
    "often that is the queue the connector would have chosen.",
)
@catalogue_option
def report(
    since: str,
    fmt: str,
    output: str | None,
    host_times: bool,
    agreement: bool,
    catalogue_path: str,
) -> None:
    """KPIs per process and service: auto-routed share, overrides, confidence, SLAs."""
    import time

    from connector.report import RENDERERS, correction_counts, kpis

    window = _since_window(since)
    runtime = _runtime(catalogue_path, read_only=True)
    retention = runtime.settings.retention
    if retention and window.total_seconds() > retention:
        click.echo(
            f"note: only the last {retention / 86400:g} days are kept (BPSM_RETENTION)", err=True
        )
    try:
        now = time.time()
        start = now - window.total_seconds()
        rows = _with_subjects(runtime.store, runtime.store.all_routings(since=start), start)
        times = _host_times(runtime, rows) if host_times else None
        figures = kpis(
            rows,
            now,
            times,
            since=start,
            service_names=_service_names(runtime.catalogue),
            threshold=_threshold(runtime, rows),
            agreement=_agreement(runtime, rows) if agreement else None,
        )
        figures["corrections"] = correction_counts(runtime.store.corrections_with_text(since=start))
        text = RENDERERS[fmt](figures)
    finally:
        runtime.close()
    if output:
        _write_output(output, text)
    else:
        click.echo(text, nl=not text.endswith("\n"))


@main.command()
@click.option(
    "--older-than",
    default=None,
    help="Delete what was stored longer ago than this (90d, 12w); default: BPSM_RETENTION.",
)
def purge(older_than: str | None) -> None:
    """Delete old deliveries, their ticket text, decisions and dead letters now.

    The running service does the same every hour with BPSM_RETENTION (default 365d).
    Unfinished work and open improvement tickets are kept."""
    from connector.config import ConfigError, parse_retention
    from connector.store import Store, StoreUnavailable, describe_store

    settings = _settings()
    try:
        seconds = parse_retention(older_than, "--older-than") if older_than else settings.retention
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    if seconds <= 0:
        click.echo("nothing to purge: BPSM_RETENTION=0 keeps everything (or pass --older-than)")
        return
    try:
        store = Store(settings.database, create=False)
    except StoreUnavailable as exc:
        _no_store(exc, settings)
        raise  # unreachable
    try:
        counts = store.purge(seconds)
    finally:
        store.dispose()
    parts = ", ".join(f"{n} {table}" for table, n in counts.items())
    click.echo(f"store: {describe_store(settings.database)}", err=True)
    click.echo(f"purged what is older than {seconds / 86400:g} days: {parts}")


@main.command("prebuild-index")
@catalogue_option
def prebuild_index(catalogue_path: str) -> None:
    """Build the catalogue's index file under $BPSM_DATA_DIR/index now (catalogues of more
    than 300 services), so that workers start by loading it (connector/indexfile.py)."""
    import time

    from connector.indexfile import (
        PREBUILT_ABOVE,
        index_path,
        load_catalogue_cached,
        load_or_build_index,
    )

    settings = _settings(catalogue_path)
    data_dir = settings.data_dir
    try:  # the parsed catalogue is kept too: workers then skip the YAML parser as well
        catalogue = load_catalogue_cached(Path(catalogue_path), data_dir)
    except CatalogueError as exc:
        _fail(exc.problems, CONFIG)
    if len(catalogue.services) <= PREBUILT_ABOVE:
        click.echo(f"{len(catalogue.services)} services: built in each process, no file needed")
        return
    started = time.perf_counter()
    _, how = load_or_build_index(catalogue, Path(catalogue_path), data_dir)
    path = index_path(data_dir, Path(catalogue_path), os.environ.get("BPSM_DOMAIN_PACKS"))
    click.echo(f"{path}: {how} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
