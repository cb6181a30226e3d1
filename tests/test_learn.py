"""`bpsm learn`: the organisation's own words, learned from sorted tickets, as evidence."""

from __future__ import annotations

import json
import os
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from connector.catalogue import Catalogue, load_catalogue
from connector.classify import CatalogueIndex, build_index, ticket_tokens
from connector.cli import main
from connector.config import load_settings
from connector.crossval import as_learning, cross_validate, folds, headroom, subsample
from connector.evaluate import LabelledTicket, evaluate, read_labelled
from connector.events import TicketEvent
from connector.hosts import settings_models
from connector.learn import (
    LabelledText,
    LearnedModel,
    LearnedScorer,
    LearnedTerm,
    from_corrections,
    learn,
)
from connector.learnfile import LearnedError, LearnedFileWatcher, dump, load_learned
from connector.mapping import Mapping
from connector.route import decide
from connector.runtime import Runtime
from connector.worker import process_delivery
from tests.e2e import ROOT

CATALOGUE = ROOT / "catalogue.yaml"
TICKETS = ROOT / "tests" / "data" / "tickets.csv"


@cache
def index() -> CatalogueIndex:
    return build_index(load_catalogue(CATALOGUE))


@cache
def labelled() -> tuple[LabelledText, ...]:
    return tuple(as_learning(read_labelled(TICKETS, index().catalogue)))


# An invented product name no catalogue or thesaurus knows: only learning can teach it.
ZORBLEX = [
    ("Zorblex", "Zorblex henger når jeg åpner saken."),
    ("Problem med zorblex", "Får ikke logget inn i zorblex i dag."),
    ("zorblex feilmelding", "zorblex viser en feilmelding ved lagring."),
]


def _with_zorblex(count: int, service: str = "case-management") -> list[LabelledText]:
    taught = [
        LabelledText(f"z{i}", subject, body, service, "reactive")
        for i, (subject, body) in enumerate(ZORBLEX[:count])
    ]
    return [*labelled(), *taught]


def _learned(model: LearnedModel) -> CatalogueIndex:
    return index().with_learned(LearnedScorer.compile(index(), model))


def test_an_empty_learned_model_gives_exactly_todays_predictions():
    tickets = read_labelled(TICKETS, index().catalogue)
    today = evaluate(tickets, index(), Mapping())["predictions"]
    empty = evaluate(tickets, _learned(LearnedModel()), Mapping())["predictions"]
    assert empty == today


def test_three_tickets_teach_a_word_with_its_inflections_compounds_and_typos():
    before = index().classify("zorblexen krasjer igjen", "Hjelp")
    assert before.service != "case-management"
    learned = _learned(learn(index(), _with_zorblex(3)))
    for text in ("zorblexen krasjer igjen", "saksbehandlingszorblex krasjer", "zorbelx krasjer"):
        match = learned.classify(text, "Hjelp")
        assert match.service == "case-management", text
        assert any(e.learned_from == 3 for e in match.evidence), text


TONER_ORDERS = [
    ("Toner", "Vi må bestille toner til kontoret, hvem godkjenner innkjøpet?"),
    ("Bestille toner", "Kan dere bestille toner til avdelingen?"),
    ("toner", "Bestilling av toner og papir til neste måned"),
]


def test_a_catalogue_word_that_keeps_winning_the_wrong_service_is_damped():
    probe = "Tom for toner, kan dere bestille?"
    assert index().classify(probe).service == "printing"
    orders = [
        LabelledText(f"p{i}", subject, body, "procurement", "reactive")
        for i, (subject, body) in enumerate(TONER_ORDERS)
    ]
    model = learn(index(), [*labelled(), *orders])
    damped = {t.term: t for t in model.services["printing"] if t.kind == "catalogue"}
    # Three orders won by printing's 'toner', none of them printing's: (0 + 3) / (3 + 3).
    assert damped["ton"].weight == 0.5 and damped["ton"].examples == ("p0", "p1", "p2")
    assert _learned(model).classify(probe).service == "procurement"
    # Two wrong wins are the least that damps a word: one ticket does not.
    model = learn(index(), [*labelled(), *orders[:1]])
    assert not any(t.kind == "catalogue" for t in model.services.get("printing", ()))


def test_one_ticket_teaches_nothing():
    model = learn(index(), _with_zorblex(1))
    assert not any("zorblex" in t.term for terms in model.services.values() for t in terms)


def test_the_note_names_learned_evidence_in_the_tickets_language():
    learned = _learned(learn(index(), _with_zorblex(3)))
    match = learned.classify("zorblex henger hele tiden, kan dere se på det?", "zorblex")
    event = TicketEvent(host="t", delivery_id="1", ticket_id="1", subject="zorblex", body="x")
    note = decide(event, match, index().catalogue, Mapping()).note
    assert "lært fra 3 saker" in note or "learned from 3 tickets" in note


def test_evaluate_errors_name_learned_evidence():
    from connector.evaluate import LabelledTicket, format_errors

    learned = _learned(learn(index(), _with_zorblex(3)))
    tickets = [LabelledTicket(2, "zorblex", "zorblexen krasjer", "printing", "reactive")]
    result = evaluate(tickets, learned, Mapping())
    errors = format_errors(tickets, result["predictions"])
    assert "line 2: printing/reactive → case-management/reactive" in errors
    assert "(learned from 3 tickets)" in errors


def test_the_learned_file_round_trips_and_is_reviewable(tmp_path):
    model = learn(index(), _with_zorblex(3), sources=["tickets.csv"])
    path = tmp_path / "learned.yaml"
    path.write_text(dump(model), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert "version: 1" in text and "kind: bpsm-learned" in text
    # One line per term, so a reviewer deletes a line to undo a term.
    line = next(x for x in text.splitlines() if "term: zorblex" in x)
    assert "support: 3" in line and "examples: [z0, z1, z2]" in line
    assert load_learned(path, index().catalogue) == model


def test_a_broken_learned_file_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "learned.yaml"
    path.write_text(
        "kind: bpsm-learned\nversion: 1\ntickets: 3\nservices:\n"
        "  no-such-service:\n    tickets: 3\n    terms: []\n"
        "  printing:\n    tickets: 3\n    terms:\n"
        "      - {term: toner, kind: word, weight: -1, support: 3, seen: 3}\n",
        encoding="utf-8",
    )
    with pytest.raises(LearnedError) as caught:
        load_learned(path, index().catalogue)
    assert [str(p).split(": ")[0] for p in caught.value.problems] == [f"{path}:11"]
    code, out = _run("check", str(path), "--catalogue", str(CATALOGUE))
    assert code == 1 and f"{path}:11: services.printing.terms[0].weight" in out
    path.write_text(
        "kind: bpsm-learned\nversion: 1\ntickets: 3\nservices:\n"
        "  no-such-service:\n    tickets: 3\n    terms: []\n",
        encoding="utf-8",
    )
    code, out = _run("check", str(path), "--catalogue", str(CATALOGUE))
    assert code == 1 and f"{path}:5: services.no-such-service: 'no-such-service' is not" in out


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_cli_learn_then_classify_and_evaluate_with_it(tmp_path):
    data = tmp_path / "labelled.csv"
    rows = TICKETS.read_text(encoding="utf-8").rstrip("\n")
    extra = "".join(f'\n"{s}","{b}",case-management,reactive' for s, b in ZORBLEX)
    data.write_text(rows + extra + "\n", encoding="utf-8")
    output = tmp_path / "learned.yaml"
    code, out = _run("learn", str(data), "--catalogue", str(CATALOGUE), "--output", str(output))
    assert code == 0, out
    assert "learned" in out and output.is_file()
    code, out = _run("check", str(output), "--catalogue", str(CATALOGUE))
    assert code == 0 and "ok (learned)" in out
    args = ["--catalogue", str(CATALOGUE), "--learned", str(output)]
    code, out = _run("classify", "zorblexen krasjer", *args)
    assert code == 0 and "case-management" in out and "learned from 3 tickets" in out
    code, out = _run("evaluate", str(TICKETS), "--json", *args)
    assert code == 0 and {"service_accuracy", "predictions"} <= set(json.loads(out))


def test_cli_an_empty_learned_file_changes_no_prediction(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    args = [str(TICKETS), "--json", "--catalogue", str(CATALOGUE)]
    _, today = _run("evaluate", *args)
    _, with_empty = _run("evaluate", *args, "--learned", str(empty))
    assert json.loads(with_empty)["predictions"] == json.loads(today)["predictions"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('"a","b",no-such-service,reactive', "'no-such-service' is not a service id"),
        (",,,", "'' is not one of reactive"),
    ],
)
def test_cli_learn_refuses_bad_rows_naming_them_and_writes_nothing(tmp_path, row, message):
    data = tmp_path / "bad.csv"
    data.write_text(f'subject,body,service,process\n"ok","x",printing,reactive\n{row}\n')
    output = tmp_path / "learned.yaml"
    code, out = _run("learn", str(data), "--catalogue", str(CATALOGUE), "--output", str(output))
    assert code == 1 and f"{data}:3:" in out and message in out
    assert not output.exists() and list(tmp_path.iterdir()) == [data]


def test_cli_learn_refuses_a_wrong_header(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("title,text,svc,process\na,b,printing,reactive\n")
    output = tmp_path / "learned.yaml"
    code, out = _run("learn", str(data), "--catalogue", str(CATALOGUE), "--output", str(output))
    assert code == 1 and f"{data}:1:" in out and "missing column" in out
    assert not output.exists()


def test_a_running_service_picks_up_a_changed_learned_file(tmp_path):
    path = tmp_path / "learned.yaml"
    watcher = LearnedFileWatcher(path)
    assert watcher.current(index()).classify("zorblexen krasjer").service != "case-management"
    path.write_text(dump(learn(index(), _with_zorblex(3))), encoding="utf-8")
    assert watcher.current(index()).classify("zorblexen krasjer").service == "case-management"
    # A broken file keeps the last good one; removing the file undoes the learning.
    path.write_text("kind: bpsm-learned\nversion: 7\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert watcher.current(index()).classify("zorblexen krasjer").service == "case-management"
    path.unlink()
    assert watcher.current(index()).classify("zorblexen krasjer").service != "case-management"


def test_bpsm_learned_is_used_by_the_workers_index_without_a_restart(tmp_path):
    path = tmp_path / "learned.yaml"
    rt = _runtime(tmp_path, BPSM_LEARNED=str(path))
    assert rt.index.classify("zorblexen krasjer").service != "case-management"
    path.write_text(dump(learn(index(), _with_zorblex(3))), encoding="utf-8")
    assert rt.index.classify("zorblexen krasjer").service == "case-management"
    rt.close()


def test_folds_are_deterministic_stratified_and_cover_every_ticket():
    tickets = read_labelled(TICKETS, index().catalogue)
    first, again = folds(tickets, 5), folds(tickets, 5)
    assert first == again
    assert sorted(p for fold in first for p in fold) == list(range(len(tickets)))
    per_service = Counter(t.service for t in tickets)
    for fold in first:
        counts = Counter(tickets[p].service for p in fold)
        # Each service's tickets are spread: no fold holds more than its share, rounded up.
        assert all(counts[s] <= -(-n // 5) for s, n in per_service.items())
    half = subsample(tickets, first[0], 0.5)
    assert set(half) <= set(first[0]) and len(half) < len(first[0])


def test_cross_validation_reports_zero_shot_and_learned_figures_of_the_same_folds():
    tickets = read_labelled(TICKETS, index().catalogue)
    result = cross_validate(tickets, index(), Mapping(), k=3, curve=(0.5, 1.0))
    assert [row["test"] for row in result["folds"]] == [len(f) for f in folds(tickets, 3)]
    zero_shot = evaluate(tickets, index(), Mapping())
    # The zero-shot figures of the folds are today's predictions, fold by fold.
    weighted = sum(r["zero_shot"]["service_accuracy"] * r["test"] for r in result["folds"])
    assert weighted / len(tickets) == pytest.approx(zero_shot["service_accuracy"], abs=1e-3)
    assert set(result["mean"]["curve"]) == {"0.50", "1.00"}


# Words found nowhere else: the only thing these tickets share is "zorblex".
NONSENSE = [
    ("Zorblex qwimvar", "Zorblex fnargle plotvik."),
    ("Zorblex drubnik", "Zorblex wexquol strimbo."),
    ("Zorblex yavrent", "Zorblex klompith darvuse."),
]


def test_headroom_counts_the_errors_a_word_of_the_training_folds_could_fix():
    own = read_labelled(TICKETS, index().catalogue)
    taught = [
        LabelledTicket(9000 + i, s, b, "case-management", "reactive")
        for i, (s, b) in enumerate(NONSENSE)
    ]
    tickets = [*own, *taught]
    zorblex = set(range(len(own), len(tickets)))
    # Say zero-shot got the three wrong and everything else right.
    right = [position not in zorblex for position in range(len(tickets))]
    room = headroom(tickets, index(), right, k=3)
    assert room["errors"] == 3
    # A zorblex ticket can learn from the other zorblex tickets its own fold does not hold.
    fold_of = {p: n for n, fold in enumerate(folds(tickets, 3)) for p in fold}
    others = [sum(fold_of[q] != fold_of[p] for q in zorblex - {p}) for p in sorted(zorblex)]
    assert room["learnable"] == {s: sum(n >= s for n in others) for s in (1, 2, 3)}
    assert room["learnable"][3] == 0 and room["learnable"][1] >= 1
    # Words that other services' tickets have teach a ticket's own service nothing.
    apart = [
        LabelledTicket(t.line, t.subject, t.body, service, t.process)
        for t, service in zip(taught, ("case-management", "email", "printing"), strict=True)
    ]
    assert headroom([*own, *apart], index(), right, k=3)["learnable"][1] == 0


def test_cli_cross_validation_prints_folds_headroom_and_curve():
    code, out = _run("evaluate", str(TICKETS), "--catalogue", str(CATALOGUE), "--cv", "3")
    assert code == 0, out
    errors = int(out.split("headroom (what learning can fix at most): of ")[1].split()[0])
    predictions = evaluate(read_labelled(TICKETS, index().catalogue), index(), Mapping())
    assert errors == sum(
        p["service"] != t.service
        for p, t in zip(
            predictions["predictions"], read_labelled(TICKETS, index().catalogue), strict=True
        )
    )
    assert out.index("headroom") < out.index("learning curve")
    code, out = _run("evaluate", str(TICKETS), "--catalogue", str(CATALOGUE), "--cv", "3", "--json")
    assert set(json.loads(out)["headroom"]["learnable"]) == {"1", "2", "3"}


def test_learning_from_the_labelled_set_takes_seconds():
    # Not a timing assertion: the work is bounded by the tickets' words, each looked up once.
    model = learn(index(), labelled())
    assert model.tickets == len(labelled())
    learned = [t for terms in model.services.values() for t in terms if t.kind != "catalogue"]
    assert learned and all(t.support >= 3 for t in learned)


def test_suggest_prints_a_yaml_patch_with_support_and_accuracy_change(tmp_path):
    data = tmp_path / "labelled.csv"
    rows = TICKETS.read_text(encoding="utf-8").rstrip("\n")
    extra = "".join(f'\n"{s}","{b}",case-management,reactive' for s, b in ZORBLEX)
    data.write_text(rows + extra + "\n", encoding="utf-8")
    output = tmp_path / "learned.yaml"
    code, out = _run(
        "learn", str(data), "--catalogue", str(CATALOGUE), "--output", str(output), "--suggest"
    )
    assert code == 0, out
    patch = out[out.index("services:") :]
    assert "- id: case-management  # accuracy change +" in patch
    assert "- zorblex  # support 3" in patch


def test_paths_in_tests_are_inside_the_repository():
    assert Path(TICKETS).is_relative_to(ROOT)


# ----- corrections: agents' moves in the audit log ------------------------------------------


def _runtime(tmp_path: Path, **extra: str) -> Runtime:
    mappings = tmp_path / "mappings"
    mappings.mkdir(exist_ok=True)
    # A service with a queue of its own: moving a ticket there names the service.
    (mappings / "demo.yaml").write_text("services: {case-management: Saksbehandling}\n")
    env = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_MAPPINGS_DIR": str(mappings), **extra}
    settings = load_settings(env, hosts=settings_models(), catalogue_path=CATALOGUE)
    return Runtime(settings, index=index())


def _deliver(
    rt: Runtime, ticket: str, number: int, queue: str, subject: str, body: str, **more: Any
) -> str:
    values: dict[str, Any] = {"kind": "created" if number == 1 else "customer_reply", **more}
    event = TicketEvent(
        host="demo",
        delivery_id=f"{ticket}-{number}",
        ticket_id=ticket,
        subject=subject,
        body=body,
        queue=queue,
        **values,
    )
    pk = rt.store.record_delivery(event)
    assert pk is not None
    return process_delivery(rt.context, pk).outcome


def test_an_agents_move_to_another_bpsm_queue_is_recorded_as_a_correction(tmp_path):
    rt = _runtime(tmp_path)
    subject, body = ZORBLEX[0]
    assert _deliver(rt, "7", 1, "Users", subject, body) == "dry-run"
    routed = rt.store.routing("demo", "7")
    assert routed is not None and routed["service"] != "case-management"
    # Still in its source queue (a dry run moves nothing): no decision of an agent.
    assert _deliver(rt, "7", 2, "Users", subject, "more") == "already-routed"
    assert rt.store.corrections_with_text() == []
    _deliver(rt, "7", 3, "BPSM Change", subject, "more")
    _deliver(rt, "7", 4, "Saksbehandling", subject, "more")
    _deliver(rt, "7", 5, "Saksbehandling", subject, "again")  # the same move, once
    rows = rt.store.corrections_with_text()
    assert [(r["to_process"], r["to_service"]) for r in rows] == [
        ("change", routed["service"]),
        ("reactive", "case-management"),
    ]
    assert all(
        r["routing"] == routed["id"] and r["from_process"] == routed["process"] for r in rows
    )
    assert [t.service for t in from_corrections(rows)] == ["case-management"]
    # A correction made in the review page teaches too; a ticket's latest correction counts.
    _deliver(rt, "8", 1, "Users", *ZORBLEX[1])
    routed = rt.store.routing("demo", "8")
    rt.store.record_correction(routed["id"], "care-records", "reactive", "anne")
    learnt = from_corrections(rt.store.corrections_with_text())
    assert [(t.ref, t.service) for t in learnt] == [
        ("demo#7", "case-management"),
        ("demo#8", "care-records"),
    ]
    rt.close()


def test_an_agents_service_field_is_a_correction_and_an_unrouted_ticket_is_left_alone(
    tmp_path,
):
    rt = _runtime(tmp_path)
    subject, body = ZORBLEX[0]
    assert _deliver(rt, "7", 1, "Users", subject, body) == "dry-run"
    routed = rt.store.routing("demo", "7")
    assert routed is not None and routed["service"] != "case-management"
    update = {"kind": "agent_update"}
    # The field naming the routed service (the connector's own write) says nothing.
    _deliver(rt, "7", 2, "Users", subject, "", service_label=routed["service"], **update)
    assert rt.store.corrections_with_text() == []
    _deliver(rt, "7", 3, "Users", subject, "", service_label="no-such-service", **update)
    assert rt.store.corrections_with_text() == []
    _deliver(rt, "7", 4, "Users", subject, "", service_label="case-management", **update)
    _deliver(rt, "7", 5, "Users", subject, "", service_label="case-management", **update)
    rows = rt.store.corrections_with_text()
    assert [(r["to_process"], r["to_service"], r["source"]) for r in rows] == [
        ("reactive", "case-management", "agent")
    ]
    # A ticket a person put in a BPSM queue, which the connector never routed: not routed.
    assert _deliver(rt, "9", 1, "BPSM Reactive", subject, body, **update) == "not-routed"
    assert rt.store.routing("demo", "9") is None
    rt.close()


def test_learn_from_audit_and_report_corrections_per_service(tmp_path):
    rt = _runtime(tmp_path)
    for number, (subject, body) in enumerate(ZORBLEX):
        _deliver(rt, f"t{number}", 1, "Users", subject, body)
        _deliver(rt, f"t{number}", 2, "Saksbehandling", subject, "")
    rt.close()
    env = {
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_MAPPINGS_DIR": str(tmp_path / "mappings"),
        "BPSM_CATALOGUE": str(CATALOGUE),
    }
    output = tmp_path / "learned.yaml"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["learn", str(TICKETS), "--from-audit", "--since", "90d", "--output", str(output)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "audit log: 3 corrected tickets" in result.output
    learned = load_learned(output, index().catalogue)
    zorblex = [t for t in learned.services["case-management"] if t.term == "zorblex"]
    assert zorblex and zorblex[0].examples == ("demo#t0", "demo#t1", "demo#t2")
    result = runner.invoke(main, ["report", "--since", "1d"], env=env)
    assert result.exit_code == 0, result.output
    assert "corrections by agents" in result.output
    result = runner.invoke(main, ["report", "--since", "1d", "--format", "json"], env=env)
    corrections = json.loads(result.stdout)["corrections"]  # the store's name: stderr
    # Each ticket was routed elsewhere and moved to the service's queue: one correction per
    # ticket, counted under the service it had been routed to.
    assert sum(e["to"].get("reactive/case-management", 0) for e in corrections.values()) == 3
    assert "case-management" not in corrections


# ----- the helpdesk's own history ------------------------------------------------------------


@pytest.fixture
def zammad():
    from tests.fakes.zammad import FakeZammad

    with FakeZammad(token="zammad-api-token") as fake:
        for group in ("Saksbehandlere", "BPSM Reactive", "BPSM Relation"):
            fake.add_group(group)
        yield fake


def test_learn_from_host_labels_tickets_by_their_queue_through_the_label_map(zammad, tmp_path):
    for subject, body in ZORBLEX:
        zammad.create_ticket_as_customer(subject, body, group="Saksbehandlere")
    zammad.create_ticket_as_customer("Skriveren", "skriveren virker ikke", group="Users")
    label_map = tmp_path / "labels.yaml"
    label_map.write_text("Saksbehandlere: case-management\nOld queue: {service: printing}\n")
    env = {
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"),
        "BPSM_CATALOGUE": str(CATALOGUE),
    }
    output = tmp_path / "learned.yaml"
    args = ["learn", "--from-host", "zammad", "--since", "1d", "--label-map", str(label_map)]
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--output", str(output), "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    assert "zammad: 4 tickets since 1d, 3 with a service" in result.output
    assert "case-management" in result.output and "not labelled: queue 'Users'" in result.output
    assert "label map: no ticket in queue 'Old queue'" in result.output
    assert not output.exists()
    # With the labelled CSV: three tickets of one service alone say nothing about the others.
    result = runner.invoke(main, [*args, str(TICKETS), "--output", str(output)], env=env)
    assert result.exit_code == 0, result.output
    learned = load_learned(output, index().catalogue)
    assert any(t.term == "zorblex" for t in learned.services["case-management"])


def test_learn_from_host_refuses_a_bad_label_map_and_an_unreachable_helpdesk(zammad, tmp_path):
    label_map = tmp_path / "labels.yaml"
    label_map.write_text("Saksbehandlere: case-management\nDesk: no-such-service\n")
    env = {
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_CATALOGUE": str(CATALOGUE),
    }
    output = tmp_path / "learned.yaml"
    args = ["learn", "--from-host", "zammad", "--output", str(output)]
    runner = CliRunner()
    result = runner.invoke(main, [*args, "--label-map", str(label_map)], env=env)
    assert result.exit_code == 1
    assert f"{label_map}:2: Desk: 'no-such-service' is not a service id" in result.output
    zammad.set_down(True)
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 1 and "cannot read tickets from zammad" in result.output
    assert not output.exists()


def test_scores_the_learner_recomputes_keep_the_carrier_discount():
    """A learned file that changes nothing of substance (a damping factor of 1 on the PC
    service's own 'pc') must leave every score as classify made it: recomputed from the
    hits, 'pc' still weighs as a carrier beside SPSS's topic evidence."""
    catalogue = Catalogue.model_validate(
        {
            "version": 1,
            "languages": ["en"],
            "services": [
                {"id": "workstations", "name": {"en": "Workstations"}, "keywords": {"en": ["pc"]}},
                {"id": "statistics", "name": {"en": "Statistics"}, "keywords": {"en": ["spss"]}},
            ],
        }
    )
    plain = build_index(catalogue, [])
    tokens = ticket_tokens("", "My PC freezes whenever SPSS opens a data file")
    unsorted, kept = plain.scores(tokens)
    pc_term = next(h.posting.term for h in kept[0] if h.word == "pc")
    neutral = LearnedTerm(term=pc_term, kind="catalogue", weight=1.0, support=0, seen=0)
    model = LearnedModel(tickets=1, services={"workstations": (neutral,)})
    rescored, _ = LearnedScorer.compile(plain, model).rescore(plain, tokens, unsorted, kept)
    before, after = dict((s, v) for v, s in unsorted), dict((s, v) for v, s in rescored)
    assert before.keys() == after.keys()
    assert [after[s] for s in before] == pytest.approx(list(before.values()))
