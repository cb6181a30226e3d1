"""End to end with a REAL Request Tracker 5: tickets created through RT's REST 2 API are
polled by the running connector (tests.e2e.ConnectorService: real app, worker and pollers),
routed through REST 2 as a least-privilege RT user, and the assertions read RT's own state.

The RT server is the session's `rt_server`, shared with test_rt_harness.py, so this module
uses its own queue, user and mapping names ("E2E …", "Setup …") and never touches theirs.
The connector's rights are exactly `WATCHED_RIGHTS`/`TARGET_RIGHTS`/`FIELD_RIGHTS` of
connector/hosts/rt.py, granted with the harness: these tests are what proves them enough
(relation replies included: RT grants no one ReplyToTicket by default).

`python -m tests.realhosts.test_rt_e2e record` rewrites connector/hosts/rt/fixtures/*.json
from a fresh RT; `test_recorded_fixtures_still_match_rt` fails when RT's answers change shape.
"""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import and_, select

from connector.cli import main as bpsm
from connector.events import RoutingDecision, TicketEvent
from connector.hosts.base import HostError
from connector.hosts.rt import RTHost
from connector.hosts.rt.sansio import (
    FIELD_RIGHTS,
    TARGET_RIGHTS,
    WATCHED_RIGHTS,
    parse_rt_time,
    rt_stamp,
    rt_time,
    search_params,
    watch_query,
)
from connector.hosts.rt.settings import RTSettings
from connector.mapping import Mapping, load_mapping
from connector.notes import NOTE_MARKER
from connector.replies import relation_reply
from connector.route import decide
from connector.store import deliveries
from tests.e2e import ROOT, ConnectorService, example_index, wait_for

from .rt_server import RT_SETUP_DATABASE, RTServer, TokenAuth

FIXTURES = ROOT / "connector" / "hosts" / "rt" / "fixtures"
FAKE_BASE = "http://rt.example"

USER = "bpsm-e2e"
# Each service below watches its own intake queue: services run side by side on one RT.
INTAKE = "E2E Intake"
INTAKE_OVERRIDE = "E2E Intake Override"
INTAKE_RESTART = "E2E Intake Restart"
INTAKE_SHADOW = "E2E Intake Shadow"
INTAKE_LEARNED = "E2E Intake Learned"
WATCHES = {
    "main": [INTAKE],
    "override": [INTAKE_OVERRIDE],
    "restart": [INTAKE_RESTART],
    "shadow": [INTAKE_SHADOW],
    "learned": [INTAKE_LEARNED],
}
DESK = "E2E Service Desk"  # an agents' queue; the connector may see and comment there
LOCKED = "E2E Locked"  # the connector has no rights here
READONLY = "E2E Readonly"  # the connector may only look
TARGETS = {
    "reactive": "E2E Reactive",
    "relation": "E2E Relation",
    "change": "E2E Change",
    "proactive": "E2E Proactive",
    "improvement": "E2E Improvement",
}
FALLBACK = "E2E Triage"
FIELD = "BPSM Service"
# relation.reply per policy: its own intake and relation queue, and both watched, so that the
# connector's own reply comes back through the poller.
REPLY_QUEUES = {
    "send": ("E2E Intake Reply Send", "E2E Relation Send"),
    "draft": ("E2E Intake Reply Draft", "E2E Relation Draft"),
}

MAIL = "My Outlook mailbox is full and I cannot send e-mail since this morning."
PRINTER_NB = "Hei! Skriveren i andre etasje skriver ikke ut, papirstopp hele tiden. Mvh Kari"
MAC_NB = "Hei! Kan jeg bruke min egen MacBook med macOS på jobben i stedet for Windows-PC? Mvh Kari"


@dataclass(frozen=True)
class Prepared:
    rt_url: str
    token: str
    user_id: int
    mapping_dir: Path

    def env(self, watch: str = "main") -> dict[str, str]:
        return {
            "BPSM_RT_URL": self.rt_url,
            "BPSM_RT_TOKEN": self.token,
            "BPSM_RT_POLL_INTERVAL": "0.5",
            "BPSM_RT_MAPPING": str(self.mapping_dir / f"{watch}.yaml"),
        }


def write_mapping(path: Path, watch: list[str], **changes: Any) -> Path:
    """mappings/rt.yaml with this module's names (and `changes`) written to `path`."""
    data = yaml.safe_load((ROOT / "mappings" / "rt.yaml").read_text(encoding="utf-8"))
    data.update(
        processes=dict(TARGETS),
        fallback=FALLBACK,
        connector_user=USER,
        services={"telephony": LOCKED},  # a queue the connector may not move into
    )
    data["options"].update(watch_queues=watch, service_field=FIELD)
    data.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    load_mapping(path)  # fail here, not in the service, if the file is wrong
    return path


def ensure_field(rt: RTServer, name: str) -> int:
    query = json.dumps([{"field": "Name", "value": name}])
    found = rt.get_json("customfields", params={"query": query})["items"]
    if found:
        return int(found[0]["id"])
    answer = rt.api(
        "POST",
        "customfield",
        json={
            "Name": name,
            "Type": "Freeform",
            "MaxValues": 1,
            "LookupType": "RT::Queue-RT::Ticket",
        },
        expected=(201,),
    )
    return int(answer.json()["id"])


def prepare(rt: RTServer, mapping_dir: Path) -> Prepared:
    """Queues, the service field, the connector's user (Timezone UTC) with exactly the
    documented rights, and its auth token; one batch of RT admin ops (~1 s)."""
    reply_targets = [relation for _, relation in REPLY_QUEUES.values()]
    targets = [*TARGETS.values(), FALLBACK, *reply_targets]
    watched = [*(q for queues in WATCHES.values() for q in queues), RECORDING]
    watched += [q for queues in REPLY_QUEUES.values() for q in queues]
    for queue in (*watched, DESK, LOCKED, READONLY, *targets):
        rt.create_queue(queue)
    field_id = ensure_field(rt, FIELD)
    user_id = rt.create_user(USER, "e2e-password-1", timezone="UTC")
    grant = {"op": "grant", "user": USER}
    ops: list[dict[str, Any]] = [
        {"op": "apply_custom_field", "id": field_id, "queues": targets},
        {**grant, "queues": watched, "rights": list(WATCHED_RIGHTS)},
        {**grant, "queues": targets, "rights": list(TARGET_RIGHTS)},
        {**grant, "custom_fields": [field_id], "rights": list(FIELD_RIGHTS)},
        {**grant, "queues": [READONLY], "rights": ["SeeQueue", "ShowTicket"]},
        # what the RT guide advises for queues agents move tickets to
        {**grant, "queues": [DESK], "rights": ["SeeQueue", "ShowTicket", "CommentOnTicket"]},
        {"op": "auth_token", "user": USER, "description": "bpsm e2e"},
    ]
    token = str(rt.rt_admin(ops)[-1]["token"])
    for name, queues in WATCHES.items():
        write_mapping(mapping_dir / f"{name}.yaml", queues)
    for policy, (intake, relation) in REPLY_QUEUES.items():
        write_mapping(
            mapping_dir / f"reply-{policy}.yaml",
            [intake, relation],
            processes={**TARGETS, "relation": relation},
            relation={"reply": policy},
        )
    return Prepared(rt_url=rt.url, token=token, user_id=user_id, mapping_dir=mapping_dir)


# ----- reading RT's own state ---------------------------------------------------------------


def rt_ticket(rt: RTServer, ticket_id: int) -> dict[str, Any]:
    result: dict[str, Any] = rt.get_json(f"ticket/{ticket_id}", params={"fields[Queue]": "Name"})
    return result


def queue_of(rt: RTServer, ticket_id: int) -> str:
    return str(rt_ticket(rt, ticket_id)["Queue"]["Name"])


def own_comments(rt: RTServer, ticket_id: int) -> list[str]:
    return [
        t["content"]
        for t in rt.ticket_history(ticket_id)
        if t["Type"] == "Comment" and NOTE_MARKER in t["content"]
    ]


def queue_moves(rt: RTServer, ticket_id: int, by: str = USER) -> list[dict[str, Any]]:
    return [
        t
        for t in rt.ticket_history(ticket_id)
        if (t["Type"], t["Field"]) == ("Set", "Queue") and t["Creator"]["id"] == by
    ]


def messages_of(rt: RTServer, ticket_id: int, kind: str) -> list[dict[str, Any]]:
    """Correspondence or comments (`kind`: RT's transaction type) other than the connector's
    routing note."""
    return [
        t
        for t in rt.ticket_history(ticket_id)
        if t["Type"] == kind and NOTE_MARKER not in t["content"]
    ]


def words(text: str) -> str:
    return " ".join(text.split())


def mails_to(rt: RTServer, address: str) -> list[str]:
    """The text of every mail RT has sent to `address` (its $MailCommand is 'mbox')."""
    texts = []
    for path in sorted(rt.var_dir.glob("*.mbox")):
        for message in mailbox.mbox(path):
            if address not in str(message.get("To", "")):
                continue
            for part in message.walk():
                if part.get_content_type() == "text/plain":
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    texts.append(payload.decode(part.get_content_charset() or "utf-8"))
    return texts


def expected_reply(decision_json: str, subject: str, mapping: Path) -> str:
    """The reply the template renders for the stored decision."""
    decision = RoutingDecision.model_validate_json(decision_json)
    event = TicketEvent(host="rt", delivery_id="-", ticket_id="0", subject=subject)
    return relation_reply(event, decision, example_index().catalogue, load_mapping(mapping))


def field_values(ticket: dict[str, Any]) -> dict[str, list[str]]:
    return {cf["name"]: cf["values"] for cf in ticket["CustomFields"]}


def route(event: TicketEvent, mapping: Mapping) -> RoutingDecision:
    index = example_index()
    return decide(event, index.classify(event.body, event.subject), index.catalogue, mapping)


def deliveries_of(service: ConnectorService, ticket_id: int) -> list[dict[str, Any]]:
    query = select(deliveries).where(
        and_(deliveries.c.host == "rt", deliveries.c.ticket_id == str(ticket_id))
    )
    with service.runtime.store.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def latest_change_handled(
    service: ConnectorService, rt: RTServer, ticket_id: int
) -> dict[str, Any]:
    """Wait until a poll recorded the ticket's latest change and the worker finished it."""
    delivery_id = f"rt:{ticket_id}:{rt_ticket(rt, ticket_id)['LastUpdated']}"

    def handled() -> dict[str, Any] | None:
        rows = [d for d in deliveries_of(service, ticket_id) if d["delivery_id"] == delivery_id]
        return rows[0] if rows and rows[0]["outcome"] else None

    found: dict[str, Any] = wait_for(handled, message=f"a poll to see {delivery_id}")
    return found


def next_second(rt: RTServer, ticket_id: int) -> None:
    """RT stamps changes to the second, and a delivery is (ticket, LastUpdated): wait until
    the next change of the ticket gets a stamp of its own."""
    last = parse_rt_time(rt_ticket(rt, ticket_id)["LastUpdated"])
    assert last is not None
    wait_for(lambda: datetime.now(UTC) >= last + timedelta(seconds=1), message="next second")


def agent_move(rt: RTServer, ticket_id: int, queue: str) -> None:
    """An agent (root) moves the ticket by hand."""
    answer = rt.api("PUT", f"ticket/{ticket_id}", json={"Queue": queue}).json()
    assert answer and "Queue changed" in answer[0], answer


# ----- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(rt_server: RTServer, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return prepare(rt_server, tmp_path_factory.mktemp("rt-mappings"))


@pytest.fixture(scope="module")
def connector(
    prepared: Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectorService]:
    with ConnectorService(tmp_path_factory.mktemp("rt-connector"), prepared.env()) as service:
        # The first poll sets the mark; tickets created from now on are new.
        wait_for(lambda: service.runtime.store.high_water("rt"), message="the first poll")
        yield service


# ----- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject,body,process,service,language",
    [
        ("Mailbox full", MAIL, "reactive", "email", "en"),
        (
            "Mac?",
            "Does IT support Macs? I would like to use my own MacBook with macOS at work.",
            "relation",
            "mac-computers",
            "en",
        ),
        (
            "Integration",
            "We would like a new integration between Visma and the archive for the whole "
            "department, the budget is approved.",
            "change",
            "erp",
            "en",
        ),
        ("Skriveren virker ikke", PRINTER_NB, "reactive", "printing", "nb"),
    ],
    ids=["reactive", "relation", "change", "norwegian"],
)
def test_new_ticket_is_moved_with_service_due_and_one_comment(
    rt_server: RTServer,
    connector: ConnectorService,
    subject: str,
    body: str,
    process: str,
    service: str,
    language: str,
) -> None:
    rt = rt_server
    ticket_id = rt.create_ticket(INTAKE, subject, body)
    routing = connector.wait_routed("rt", ticket_id)
    assert routing["outcome"] == "applied", connector.runtime.store.list_dead_letters()
    assert (routing["process"], routing["service"], routing["language"]) == (
        process,
        service,
        language,
    )
    ticket = rt_ticket(rt, ticket_id)
    assert ticket["Queue"]["Name"] == TARGETS[process]
    assert field_values(ticket)[FIELD] == [service]
    catalogue = example_index().catalogue
    if process == "reactive":
        created = parse_rt_time(ticket["Created"])
        assert created is not None
        resolution = catalogue.sla_for(catalogue.service(service)).resolution
        assert ticket["Due"] == rt_stamp(created + resolution)
    else:
        assert ticket["Due"] == "1970-01-01T00:00:00Z"  # no SLA outside reactive
    (comment,) = own_comments(rt, ticket_id)
    assert f'"{TARGETS[process]}"' in comment or f"«{TARGETS[process]}»" in comment
    if process == "relation":
        assert "Why:" in comment and "Alternative:" in comment
    if language == "nb":
        assert "Rutet til reaktiv håndtering" in comment and "Tjeneste:" in comment
    (move,) = queue_moves(rt, ticket_id)
    assert move["OldValue"] == str(rt.queue_id(INTAKE))


def test_move_refused_inside_a_200_answer_goes_to_dead_letters(
    rt_server: RTServer, connector: ConnectorService
) -> None:
    # The mapping sends telephony to a queue where the connector lacks CreateTicket: RT
    # answers the PUT with 200 and ["Ticket N: Permission Denied"].
    ticket_id = rt_server.create_ticket(
        INTAKE, "Phone", "I need a new phone extension for my desk phone."
    )
    routing = connector.wait_routed("rt", ticket_id)
    assert routing["outcome"] == "failed"
    (letter,) = [
        d for d in connector.runtime.store.list_dead_letters() if d["ticket_id"] == str(ticket_id)
    ]
    assert "Permission Denied" in letter["reason"] and "CreateTicket" in letter["reason"]
    assert queue_of(rt_server, ticket_id) == INTAKE
    assert own_comments(rt_server, ticket_id) == []


def test_agent_move_before_routing_stands_and_the_comment_says_so(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path
) -> None:
    rt = rt_server
    service = ConnectorService(tmp_path, prepared.env("override"))
    # Web layer and poller only: the poll records the ticket, nobody routes it yet.
    service._thread.start()
    assert service.pollers is not None
    service.pollers.start()
    try:
        wait_for(lambda: service.runtime.store.high_water("rt"), message="the first poll")
        ticket_id = rt.create_ticket(INTAKE_OVERRIDE, "Mailbox full", MAIL)
        wait_for(lambda: deliveries_of(service, ticket_id), message="the poll to see the ticket")
        agent_move(rt, ticket_id, DESK)
        service.background.start()
        routing = service.wait_routed("rt", ticket_id)
        assert routing["outcome"] == "override"
        assert queue_of(rt, ticket_id) == DESK and queue_moves(rt, ticket_id) == []
        # DESK grants the connector only ShowTicket, SeeQueue and CommentOnTicket.
        (comment,) = own_comments(rt, ticket_id)
        assert f'Not moved: an agent had already put this ticket in "{DESK}"' in comment
    finally:
        service.stop()


def test_own_comment_coming_back_changes_nothing(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path
) -> None:
    # Shadow mode comments and leaves the ticket in the watched queue, so the connector's
    # own comment is a change the next poll sees.
    rt = rt_server
    service = ConnectorService(tmp_path, {**prepared.env("shadow"), "BPSM_MODE": "shadow"})
    service._thread.start()
    assert service.pollers is not None
    service.pollers.start()
    try:
        wait_for(lambda: service.runtime.store.high_water("rt"), message="the first poll")
        ticket_id = rt.create_ticket(INTAKE_SHADOW, "Mailbox full", MAIL)
        wait_for(lambda: deliveries_of(service, ticket_id), message="the poll to see the ticket")
        next_second(rt, ticket_id)  # so that the comment is a change of its own
        service.background.start()
        assert service.wait_routed("rt", ticket_id)["outcome"] == "shadow"
        assert latest_change_handled(service, rt, ticket_id)["outcome"] == "already-routed"
        wait_for(service.idle, message="the worker to finish")
        outcomes = [d["outcome"] for d in deliveries_of(service, ticket_id)]
        assert outcomes.count("shadow") == 1, outcomes
    finally:
        service.stop()
    ticket = rt_ticket(rt, ticket_id)
    assert ticket["Queue"]["Name"] == INTAKE_SHADOW and queue_moves(rt, ticket_id) == []
    assert len(own_comments(rt, ticket_id)) == 1
    assert ticket["Due"] == "1970-01-01T00:00:00Z" and ticket["CustomFields"] == []


@pytest.mark.parametrize("policy", ["send", "draft"])
def test_relation_reply_is_posted_once_and_coming_back_changes_nothing(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path, policy: str
) -> None:
    rt = rt_server
    intake, relation = REPLY_QUEUES[policy]
    requestor = f"kari.{policy}@customer.example"
    subject = "Mac på jobb?"
    service = ConnectorService(tmp_path, prepared.env(f"reply-{policy}"))
    service._thread.start()
    assert service.pollers is not None
    service.pollers.start()
    try:
        wait_for(lambda: service.runtime.store.high_water("rt"), message="the first poll")
        ticket_id = rt.create_ticket(intake, subject, MAC_NB, requestor=requestor)
        wait_for(lambda: deliveries_of(service, ticket_id), message="the poll to see the ticket")
        next_second(rt, ticket_id)  # so that the connector's writes are a change of their own
        service.background.start()
        routing = service.wait_routed("rt", ticket_id)
        assert routing["outcome"] == "applied", service.runtime.store.list_dead_letters()
        assert (routing["process"], routing["language"]) == ("relation", "nb")
        assert routing["replied_at"] is not None
        # The relation queue is watched: a poll sees the ticket as it is after the reply
        # (RT stamps to the second, so possibly together with the move and the note).
        handled = latest_change_handled(service, rt, ticket_id)
        assert handled["outcome"] in ("already-routed", "duplicate-ticket"), handled
        wait_for(service.idle, message="the worker to finish")
        outcomes = [d["outcome"] for d in deliveries_of(service, ticket_id)]
        assert outcomes.count("applied") == 1, outcomes
        assert set(outcomes) <= {"applied", "already-routed", "duplicate-ticket"}, outcomes
    finally:
        service.stop()
    mapping = prepared.mapping_dir / f"reply-{policy}.yaml"
    text = expected_reply(routing["decision"], subject, mapping)
    assert "ikke en tjeneste" in text and f"«{subject}»" in text
    sent, drafts = messages_of(rt, ticket_id, "Correspond"), messages_of(rt, ticket_id, "Comment")
    (reply,) = sent if policy == "send" else drafts
    assert (sent if policy == "draft" else drafts) == []
    assert reply["Creator"]["id"] == USER
    assert words(reply["content"]) == words(text)  # "å", "ø", "«»" as written
    mailed = [m for m in mails_to(rt, requestor) if "ikke en tjeneste" in m]
    assert len(mailed) == (1 if policy == "send" else 0)
    assert queue_of(rt, ticket_id) == relation
    assert len(own_comments(rt, ticket_id)) == 1 and len(queue_moves(rt, ticket_id)) == 1


def test_reply_again_posts_nothing_and_a_refused_reply_names_the_right(
    rt_server: RTServer, prepared: Prepared
) -> None:
    rt = rt_server
    settings = RTSettings(name="rt", url=rt.url, token=SecretStr(prepared.token))
    client = RTHost(settings, load_mapping(prepared.mapping_dir / "main.yaml")).client()
    text = "Hei,\n\ntakk for henvendelsen «Mac på jobb?».\nMac er ikke en tjeneste her.\n"
    # No watched queue: only this test acts on these tickets.
    ticket_id = rt.create_ticket(TARGETS["relation"], "Mac på jobb?", MAC_NB)
    event = TicketEvent(host="rt", delivery_id="-", ticket_id=str(ticket_id))
    client.reply(event, text, send=True)
    client.reply(event, text, send=True)  # the job retried after a lost answer
    client.reply(event, text, send=False)  # the same text as a draft: already said
    (reply,) = messages_of(rt, ticket_id, "Correspond")
    assert words(reply["content"]) == words(text)
    assert messages_of(rt, ticket_id, "Comment") == []
    # Where the connector may only look (no ModifyTicket), RT refuses the correspondence.
    agent_move(rt, ticket_id, READONLY)
    with pytest.raises(HostError, match="ModifyTicket \\(or ReplyToTicket\\)") as refused:
        client.reply(event, "Hei igjen,\nnoe annet.\n", send=True)
    assert refused.value.permanent
    assert len(messages_of(rt, ticket_id, "Correspond")) == 1


def test_restarted_poller_routes_nothing_twice_and_misses_nothing(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path
) -> None:
    rt = rt_server
    with ConnectorService(tmp_path, prepared.env("restart")) as first:
        wait_for(lambda: first.runtime.store.high_water("rt"), message="the first poll")
        routed = rt.create_ticket(INTAKE_RESTART, "Mailbox full", MAIL)
        assert first.wait_routed("rt", routed)["outcome"] == "applied"
        # An agent disagrees and puts it back where it came from: the poll sees it in a
        # watched queue again, and the connector must leave it there.
        next_second(rt, routed)
        agent_move(rt, routed, INTAKE_RESTART)
        assert latest_change_handled(first, rt, routed)["outcome"] == "already-routed"
        seen = {d["delivery_id"] for d in deliveries_of(first, routed)}
        mark = first.runtime.store.high_water("rt")
        assert mark is not None and parse_rt_time(mark) is not None
    while_down = rt.create_ticket(INTAKE_RESTART, "Skriveren virker ikke", PRINTER_NB)
    with ConnectorService(tmp_path, prepared.env("restart")) as second:
        assert second.wait_routed("rt", while_down)["outcome"] == "applied"
        wait_for(second.idle, message="the worker to finish")
        # The poll that found `while_down` re-read the overlap before the mark, `routed`
        # included: the same deliveries again, dropped.
        assert (second.runtime.store.high_water("rt") or "") >= (mark or "")
        assert {d["delivery_id"] for d in deliveries_of(second, routed)} == seen
        assert second.routing("rt", routed)["moved_by_agent_at"] is not None
    assert queue_of(rt, routed) == INTAKE_RESTART
    assert queue_of(rt, while_down) == TARGETS["reactive"]
    for ticket_id in (routed, while_down):
        assert len(own_comments(rt, ticket_id)) == 1
        assert len(queue_moves(rt, ticket_id)) == 1


# ----- bpsm setup rt --------------------------------------------------------------------------


def heredoc(output: str) -> str:
    """The initialdata file that `bpsm setup rt` prints as a shell here-document."""
    found = re.search(r"<<'BPSM_EOF'\n(.*?)\nBPSM_EOF\n", output, re.DOTALL)
    assert found, output
    return found.group(1) + "\n"


def run_setup(tmp_path: Path, rt: RTServer, mapping: Path) -> str:
    password = tmp_path / "root-password"
    password.write_text(rt.root_auth[1] + "\n")
    result = CliRunner().invoke(
        bpsm,
        [
            "setup",
            "rt",
            "--url",
            rt.url,
            "--user",
            rt.root_auth[0],
            "--password-file",
            str(password),
            "--catalogue",
            str(ROOT / "catalogue.yaml"),
        ],
        env={"BPSM_RT_MAPPING": str(mapping), "BPSM_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.exit_code == 0, result.output
    return result.output


def run_initialdata(rt: RTServer, path: Path) -> str:
    """What the admin runs on the RT server (here: against the test server's config)."""
    assert rt.tmpdir is not None
    env = {
        "PATH": "/usr/sbin:/usr/bin:/bin",
        "RT_SITE_CONFIG": str(rt.tmpdir / "RT_SiteConfig.pm"),
        "RT_SITE_CONFIG_DIR": str(rt.tmpdir / "RT_SiteConfig.d"),
    }
    done = subprocess.run(
        [str(RT_SETUP_DATABASE), "--action", "insert", "--skip-create", "--datafile", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_setup_creates_queues_field_user_and_prints_rights_that_work(
    rt_server: RTServer, tmp_path: Path
) -> None:
    rt = rt_server
    user, intake = "bpsm-setup", "Setup Intake"
    targets = {p: q.replace("E2E", "Setup") for p, q in TARGETS.items()}
    mapping = write_mapping(
        tmp_path / "rt.yaml",
        [intake],
        processes=targets,
        fallback="Setup Triage",
        connector_user=user,
        services={},
    )
    rt.create_queue(intake)
    # An existing user without a time zone: polling is refused until setup fixes it.
    user_id = rt.create_user(user, "setup-password-1")
    token = rt.create_auth_token(user, "bpsm setup e2e")
    settings = RTSettings(name="rt", url=rt.url, token=SecretStr(token))
    client = RTHost(settings, load_mapping(mapping)).client()
    with pytest.raises(HostError, match="has Timezone ''.*set its Timezone to UTC") as refused:
        client.poll(None)
    assert refused.value.permanent

    first = run_setup(tmp_path, rt, mapping)  # the command an admin runs
    assert "queue created: Setup Reactive" in first and "queue created: Setup Triage" in first
    assert f"watched queue exists: {intake}" in first
    assert re.search(rf"custom field (created|exists): {FIELD}", first)
    assert f"user updated: {user} (Timezone → UTC)" in first
    admin = RTSettings(name="rt", url=rt.url, user="root", password=SecretStr("password"))
    lines = RTHost(admin, load_mapping(mapping)).client().setup(load_mapping(mapping), None).lines
    second = "\n".join(lines) + "\n"
    assert "created" not in second and "updated" not in second, second
    assert "queue exists: Setup Reactive" in second and f"user exists: {user}" in second

    rights_file = tmp_path / "bpsm-rt-rights.pl"
    rights_file.write_text(heredoc(second))
    granted = run_initialdata(rt, rights_file)
    assert "bpsm: granted CreateTicket on queue 'Setup Reactive'" in granted
    assert f"bpsm: applied custom field '{FIELD}' to queue 'Setup Reactive'" in granted
    again = run_initialdata(rt, rights_file)
    assert "granted" not in again and "applied" not in again
    assert f"bpsm: {user} has ModifyTicket on queue '{intake}'" in again

    # With exactly those rights the connector user polls and routes.
    client = RTHost(settings, load_mapping(mapping)).client()
    _, mark = client.poll(None)
    ticket_id = rt.create_ticket(intake, "Mailbox full", MAIL)
    events, _ = client.poll(mark)
    (event,) = [e for e in events if e.ticket_id == str(ticket_id)]
    assert (event.queue, event.subject, event.body) == (intake, "Mailbox full", MAIL)
    decision = route(event, load_mapping(mapping))
    assert client.apply(event, decision, "route").outcome == "applied"
    ticket = rt_ticket(rt, ticket_id)
    assert ticket["Queue"]["Name"] == "Setup Reactive"
    assert field_values(ticket)[FIELD] == ["email"]
    assert len(own_comments(rt, ticket_id)) == 1
    assert token.startswith(f"1-{user_id}-")


# ----- recorded answers (connector/hosts/rt/fixtures) -----------------------------------------

RECORDING = "E2E Recording"  # the connector may watch it; no service watches it
_RT_DATE = re.compile(r"\b[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\b")


def record_answers(rt: RTServer, prepared: Prepared) -> dict[str, dict[str, Any]]:
    """REST 2 answers to the calls RTClient makes, as the least-privilege connector user.

    Keyed by fixture name; each is {"request", "status", "body"}."""
    conn = TokenAuth(prepared.token)
    answers: dict[str, dict[str, Any]] = {}

    def call(name: str, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any):
        response = rt.api(method, path, auth=conn, expected=None, params=params, **kw)
        query = ("?" + urlencode(params, doseq=True)) if params else ""
        sent = kw.get("json")
        answers[name] = {
            "request": f"{method} /REST/2.0/{path}{query}",
            **({"request_body": sent} if sent is not None else {}),
            "status": response.status_code,
            "body": response.json(),
        }
        return response.json()

    start = datetime.now(UTC) - timedelta(seconds=5)
    mail = rt.create_ticket(RECORDING, "Mailbox full", MAIL)
    html = rt.create_ticket(
        RECORDING,
        "Skriveren virker ikke",
        "<p>Hei!<br>Skriveren i andre etasje skriver ikke ut &amp; papirstopp.</p>",
        ContentType="text/html",
    )
    mac = rt.create_ticket(RECORDING, "Mac?", "Does IT support Macs? I would like a MacBook.")
    locked = rt.create_ticket(LOCKED, "Not for the connector", "x")
    query = watch_query([RECORDING], start)
    for page in (1, 2):
        call(
            f"search_page_{page}",
            "GET",
            "tickets",
            {**search_params(query), "per_page": 2, "page": page},
        )
    later = watch_query([RECORDING], datetime.now(UTC) + timedelta(days=1))
    call("search_empty", "GET", "tickets", {**search_params(later), "per_page": 100, "page": 1})
    call("user_self", "GET", f"user/{prepared.user_id}")
    call("ticket", "GET", f"ticket/{mail}", {"fields[Queue]": "Name"})
    for name, ticket_id in (("", mail), ("_html", html), ("_mac", mac)):
        history = call(
            f"history_first{name}",
            "GET",
            f"ticket/{ticket_id}/history",
            {"per_page": 1, "fields": "Type"},
        )
        create = history["items"][0]["id"]
        call(
            f"create_attachments{name}",
            "GET",
            f"transaction/{create}/attachments",
            {"fields": "ContentType,Content"},
        )
    call("put_queue", "PUT", f"ticket/{mail}", json={"Queue": TARGETS["reactive"]})
    call("put_queue_again", "PUT", f"ticket/{mail}", json={"Queue": TARGETS["reactive"]})
    call("ticket_moved", "GET", f"ticket/{mail}", {"fields[Queue]": "Name"})
    due = rt_time(datetime.now(UTC) + timedelta(hours=8))
    call("put_fields", "PUT", f"ticket/{mail}", json={"CustomFields": {FIELD: "email"}, "Due": due})
    note = f"{NOTE_MARKER} Rutet til reaktiv håndtering, kø «{TARGETS['reactive']}»."
    comment = {"Content": note, "ContentType": "text/plain"}
    call("comment", "POST", f"ticket/{mail}/comment", json=comment)
    call(
        "ticket_attachments",
        "GET",
        f"ticket/{mail}/attachments",
        {"fields": "Content,Creator", "per_page": 100, "page": 1},
    )
    call("put_denied", "PUT", f"ticket/{mac}", json={"Queue": LOCKED})
    agent_move(rt, mac, READONLY)
    call("comment_denied", "POST", f"ticket/{mac}/comment", json=comment)
    call("ticket_forbidden", "GET", f"ticket/{locked}", {"fields[Queue]": "Name"})
    call("ticket_missing", "GET", "ticket/999999", {"fields[Queue]": "Name"})
    new = {
        "Queue": TARGETS["proactive"],
        "Subject": "Maintenance",
        "Content": "x",
        "ContentType": "text/plain",
    }
    call("ticket_created", "POST", "ticket", json=new)
    return answers


def shape(value: Any) -> Any:
    """What must not change between RT runs: keys, types, and message texts (without
    numbers and dates)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            return sorted(re.sub(r"\d+", "N", _RT_DATE.sub("DATE", item)) for item in value)
        return [shape(value[0])] if value else []
    return type(value).__name__


def test_recorded_fixtures_still_match_rt(rt_server: RTServer, prepared: Prepared) -> None:
    fresh = record_answers(rt_server, prepared)
    stored = {path.stem: json.loads(path.read_text()) for path in FIXTURES.glob("*.json")}
    # Other RT versions' answers, built from RT's source ("version": "… (built from source)",
    # fixtures/README.md), are not recorded here: Debian ships RT 5 only.
    stored = {name: data for name, data in stored.items() if "version" not in data}
    assert sorted(stored) == sorted(fresh)
    for name, answer in fresh.items():
        assert (name, answer["status"]) == (name, stored[name]["status"])
        assert (name, shape(answer["body"])) == (name, shape(stored[name]["body"]))


def write_fixtures() -> None:
    """Record connector/hosts/rt/fixtures/*.json from a fresh RT (links rewritten to FAKE_BASE)."""
    import tempfile

    from .rt_server import ensure_rt_installed

    ensure_rt_installed()
    with RTServer() as rt, tempfile.TemporaryDirectory() as tmp:
        answers = record_answers(rt, prepare(rt, Path(tmp)))
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for name, answer in answers.items():
            text = json.dumps(answer, indent=2, ensure_ascii=False).replace(rt.url, FAKE_BASE)
            (FIXTURES / f"{name}.json").write_text(text + "\n", encoding="utf-8")
            print(f"wrote {name}.json ({answer['status']})")


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    write_fixtures()


# ----- proactive process against the real RT ------------------------------------------------


def test_maintenance_opens_one_ticket_per_entry_and_period_in_real_rt(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from connector.processes import run_maintenance

    entries = sum(len(s.maintenance) for s in example_index().catalogue.services)
    when = datetime(2031, 2, 3, 9, tzinfo=UTC)  # a period no other test uses
    service = ConnectorService(tmp_path, prepared.env())
    proactive = service.runtime.mapping("rt").queue_for("proactive")
    try:
        first = run_maintenance(service.runtime.context, when)
        again = run_maintenance(service.runtime.context, when)
    finally:
        service.runtime.close()
    opened = [r for r in first if r.status == "opened"]
    assert len(opened) == entries, [str(r) for r in first]
    assert {r.status for r in again} == {"already-open"}
    for result in opened:
        assert result.ticket_id is not None
        ticket = rt_ticket(rt_server, int(result.ticket_id))
        assert ticket["Queue"]["Name"] == proactive
        assert "2031" in ticket["Subject"]


def test_a_ticket_opened_before_is_found_by_its_reference_in_real_rt(
    rt_server: RTServer, prepared: Prepared, tmp_path: Path
) -> None:
    """The look before a retried ticket creation (the first answer lost) works in real RT:
    TicketSQL on queue and subject, then the reference in the ticket's first text."""
    from connector.events import NewTicket

    service = ConnectorService(tmp_path, prepared.env())
    proactive = service.runtime.mapping("rt").queue_for("proactive")
    ticket = NewTicket(
        queue=proactive, title="Restore test — Backup (2031-Q1)", body="[bpsm-connector]\nRestore."
    )
    try:
        client = service.runtime.client("rt")
        first = client.create_ticket(ticket.referenced("maintenance:backup:0:restore:2031-Q1"))
        again = client.create_ticket(ticket.referenced("maintenance:backup:0:restore:2031-Q1"))
        other = client.create_ticket(ticket.referenced("maintenance:backup:0:restore:2031-Q2"))
    finally:
        service.runtime.close()
    assert again == first  # found, not opened twice
    assert other != first  # the same subject with another reference is another ticket
    assert rt_ticket(rt_server, int(first))["Queue"]["Name"] == proactive


# ----- learning from what agents chose (issue 19) ---------------------------------------------

# A product the catalogue does not know; the organisation's agents know it belongs to the ERP.
ZORBLEX = [
    ("Zorblex", "Zorblex henger når jeg åpner saken."),
    ("Problem med zorblex", "Får ikke logget inn i zorblex i dag."),
    ("zorblex feilmelding", "zorblex viser en feilmelding ved lagring."),
]
TAUGHT = "erp"


def set_service_field(rt: RTServer, ticket_id: int, service: str) -> None:
    """An agent (root) names the service in the ticket's BPSM Service field."""
    answer = rt.api("PUT", f"ticket/{ticket_id}", json={"CustomFields": {FIELD: service}}).json()
    assert answer and FIELD in answer[0], answer


def learn(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(
        bpsm, ["learn", str(ROOT / "tests" / "data" / "tickets.csv"), *args], env=env
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_agents_corrections_in_rt_teach_learn_and_a_like_ticket_then_goes_their_way(
    rt_server: RTServer, prepared: Prepared, connector: ConnectorService, tmp_path: Path
) -> None:
    rt = rt_server
    ids = [rt.create_ticket(INTAKE, subject, body) for subject, body in ZORBLEX]
    routed = [connector.wait_routed("rt", i) for i in ids]
    assert all(r["service"] != TAUGHT for r in routed), routed
    # The agents: two name the service in the field; one moves the ticket to the change
    # queue first, then names the service.
    for ticket_id in ids[:2]:
        next_second(rt, ticket_id)
        set_service_field(rt, ticket_id, TAUGHT)
    next_second(rt, ids[2])
    agent_move(rt, ids[2], TARGETS["change"])
    next_second(rt, ids[2])
    set_service_field(rt, ids[2], TAUGHT)

    def corrected() -> list[Any] | None:
        rows = connector.runtime.store.corrections_with_text()
        mine = {r["ticket_id"]: r for r in rows if r["ticket_id"] in {str(i) for i in ids}}
        latest = [(r["to_process"], r["to_service"]) for _, r in sorted(mine.items())]
        return latest if len(latest) == 3 and all(s == TAUGHT for _, s in latest) else None

    chosen = wait_for(corrected, timeout=30, message="the poller to see the agents' choices")
    assert chosen == [("reactive", TAUGHT), ("reactive", TAUGHT), ("change", TAUGHT)]
    moves = [
        r
        for r in connector.runtime.store.corrections_with_text()
        if r["ticket_id"] == str(ids[2]) and r["to_process"] == "change"
    ]
    assert [r["to_service"] for r in moves] == [routed[2]["service"], TAUGHT]

    catalogue = {"BPSM_CATALOGUE": str(ROOT / "catalogue.yaml")}
    from_audit = tmp_path / "from-audit.yaml"
    audit_env = {**catalogue, "BPSM_DATA_DIR": str(connector.runtime.settings.data_dir)}
    out = learn(audit_env, "--from-audit", "--since", "1d", "--output", str(from_audit))
    assert "audit log: " in out
    from_host = tmp_path / "from-host.yaml"
    host_env = {**prepared.env(), **catalogue, "BPSM_DATA_DIR": str(tmp_path / "data")}
    out = learn(host_env, "--from-host", "rt", "--since", "1d", "--output", str(from_host))
    assert "rt: " in out
    for learned in (from_audit, from_host):
        terms = yaml.safe_load(learned.read_text())["services"][TAUGHT]["terms"]
        zorblex = [t for t in terms if t["term"] == "zorblex"]
        assert zorblex, (learned.name, terms)

    # A ticket like the corrected ones now goes where the agents put them, and says why.
    env = {**prepared.env("learned"), "BPSM_LEARNED": str(from_host)}
    with ConnectorService(tmp_path / "learned", env) as service:
        wait_for(lambda: service.runtime.store.high_water("rt"), message="the first poll")
        ticket_id = rt.create_ticket(
            INTAKE_LEARNED, "Zorblex igjen", "Zorblex krasjer ved lagring."
        )
        routing = service.wait_routed("rt", ticket_id)
    assert routing["service"] == TAUGHT and routing["outcome"] == "applied", routing
    assert field_values(rt_ticket(rt, ticket_id))[FIELD] == [TAUGHT]
    (comment,) = own_comments(rt, ticket_id)
    assert "lært fra" in comment or "learned from" in comment, comment
