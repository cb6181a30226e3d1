"""Request Tracker host: the pure parts, and the client against REST 2 answers recorded from
a real RT 5.0.3 (connector/hosts/rt/fixtures/*.json, written by
`python -m tests.realhosts.test_rt_e2e record`; each file holds the request, RT's status and
body). The client's HTTP is replayed with `responses` at the recorded paths; failures RT
itself does not produce (429, 503, connection refused) are staged the same way."""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import responses
from pydantic import SecretStr
from responses import matchers

from connector.events import NewTicket, RoutingDecision, SLATimes, TicketEvent
from connector.hosts import host_classes
from connector.hosts.base import BadPayload, HostError, WebhookRequest, read_mapping_options
from connector.hosts.rt import RTHost
from connector.hosts.rt.client import RTClient
from connector.hosts.rt.sansio import (
    create_text,
    initialdata,
    is_utc_zone,
    mail_text,
    parse_rt_time,
    queue_name,
    refusals,
    rights_instructions,
    rt_stamp,
    rt_time,
    sql_quote,
    token_user_id,
    watch_query,
)
from connector.hosts.rt.settings import RTOptions, RTSettings
from connector.mapping import Mapping, load_mapping
from connector.notes import NOTE_MARKER

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "connector" / "hosts" / "rt" / "fixtures"
BASE = "http://rt.example"
API = f"{BASE}/REST/2.0"
KEEP: Any = object()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def body(name: str) -> Any:
    return fixture(name)["body"]


def replay(
    rsps: responses.RequestsMock, name: str, path: str | None = None, answer: Any = KEEP
) -> None:
    """Serve a recorded answer at its recorded path (or `path`); pages are told apart."""
    recorded = fixture(name)
    method, target = recorded["request"].split(" ", 1)
    url = urlsplit(target)
    page = parse_qs(url.query).get("page")
    match = [matchers.query_param_matcher({"page": page[0]}, strict_match=False)] if page else []
    rsps.add(
        method,
        BASE + (path or url.path),
        json=recorded["body"] if answer is KEEP else answer,
        status=recorded["status"],
        match=match,
    )


TICKET = "1"  # the recorded ticket that is moved and commented
USER_ID = str(body("user_self")["id"])
TOKEN = f"1-{USER_ID}-{'ab' * 16}"
FIRST_ITEM = body("search_page_1")["items"][0]
NOW = datetime.fromisoformat(FIRST_ITEM["Created"].replace("Z", "+00:00"))
DUE = datetime(2026, 11, 25, 2, 4, 30, tzinfo=UTC)


def make_client(options: dict[str, Any] | None = None, **settings: Any) -> RTClient:
    values: dict[str, Any] = {"name": "rt", "url": BASE, "token": SecretStr(TOKEN), **settings}
    mapping = Mapping(host="rt", options={"watch_queues": ["E2E Recording"], **(options or {})})
    client = RTHost(RTSettings(**values), mapping).client()
    client.clock = lambda: NOW
    return client


def decision(**changes: Any) -> RoutingDecision:
    values: dict[str, Any] = {
        "process": "reactive",
        "service": "email",
        "queue": "E2E Reactive",
        "tags": ("bpsm", "reactive", "email"),
        "note": f"{NOTE_MARKER} Rutet til reaktiv håndtering, kø «E2E Reactive».",
        "language": "nb",
        "confidence": 0.8,
        "sla": SLATimes(response_due=DUE - timedelta(hours=7), resolution_due=DUE),
    }
    return RoutingDecision(**{**values, **changes})


def event(ticket_id: str = TICKET, queue: str = "E2E Recording") -> TicketEvent:
    return TicketEvent(
        host="rt",
        delivery_id=f"rt:{ticket_id}:2026-11-24T18:16:24Z",
        ticket_id=ticket_id,
        kind="polled",
        subject="Mailbox full",
        body="My Outlook mailbox is full",
        queue=queue,
    )


def sent(rsps: responses.RequestsMock, method: str) -> list[Any]:
    return [
        json.loads(call.request.body or b"null")
        for call in rsps.calls
        if call.request.method == method
    ]


def with_queue(name: str, queue: str) -> dict[str, Any]:
    ticket: dict[str, Any] = body(name)
    return {**ticket, "Queue": {**ticket["Queue"], "Name": queue}}


# ----- pure helpers -----------------------------------------------------------------------------


def test_dates_are_written_as_utc_wall_clock_and_read_from_rest2_form() -> None:
    oslo = datetime(2026, 7, 1, 12, 0, 5, tzinfo=UTC).astimezone(ZoneInfo("Europe/Oslo"))
    assert rt_time(oslo) == "2026-07-01 12:00:05"
    assert rt_stamp(oslo) == "2026-07-01T12:00:05Z"
    assert parse_rt_time("2026-11-24T17:37:19Z") == datetime(2026, 11, 24, 17, 37, 19, tzinfo=UTC)
    assert parse_rt_time("1970-01-01T00:00:00Z") is None  # RT's "not set"
    assert parse_rt_time("2026-11-24 17:37:19") == datetime(2026, 11, 24, 17, 37, 19, tzinfo=UTC)
    assert parse_rt_time("garbage") is None and parse_rt_time(None) is None


def test_ticketsql_quotes_and_watch_query() -> None:
    assert sql_quote("O'Brien \\ desk") == "'O\\'Brien \\\\ desk'"
    since = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    assert watch_query(["General", "Service Desk"], since) == (
        "(Queue = 'General' OR Queue = 'Service Desk') AND LastUpdated >= "
        "'2026-11-24 18:00:00' AND Status = '__Active__'"
    )


def test_refusals_read_the_messages_of_a_200_answer() -> None:
    assert refusals(body("put_denied")) == ["Ticket 3: Permission Denied"]
    for fine in ("put_queue", "put_queue_again", "put_fields"):
        assert refusals(body(fine)) == [], fine
    assert refusals(["Invalid value for custom field"]) == ["Invalid value for custom field"]
    assert refusals({"message": "odd"}) == ["unexpected answer: {'message': 'odd'}"]


def test_rt6_ticket_json_reads_as_rt5s() -> None:
    """RT 6 lists custom roles only under CustomRoles (lib/RT/REST2/Util.pm serialize_record);
    the connector reads no role, so queue, subject and dates come out the same."""
    rt6 = body("ticket_rt6_custom_role")
    assert "Service Owner" in rt6["CustomRoles"] and "Service Owner" not in rt6
    assert "Service Owner" in body("ticket_rt5_custom_role")  # RT 5.0.8: at top level too
    # The recorded RT 5.0.3 ticket is re-recorded with today's dates: it shares the queue
    # and subject; the two built from source (RT 5.0.8 and 6.0) share the dates too.
    readings = {name: (queue_name(body(name)), body(name)["Subject"]) for name in TICKET_SHAPES}
    assert len(set(readings.values())) == 1, readings
    dates = {
        name: (parse_rt_time(body(name)["Created"]), parse_rt_time(body(name)["LastUpdated"]))
        for name in TICKET_SHAPES[1:]
    }
    assert len(set(dates.values())) == 1 and None not in next(iter(dates.values())), dates


def test_date_only_fields_read_as_utc_midnight() -> None:
    """RT 6's date-only TimeWorkedDate comes raw (`2025-06-02`) by the source read, or as
    W3CDTF UTC if it goes through format_datetime: both read as the same moment."""
    raw = body("transaction_rt6_timeworkeddate")["TimeWorkedDate"]
    assert parse_rt_time(raw) == datetime(2025, 6, 2, tzinfo=UTC)
    assert parse_rt_time("2025-06-02T00:00:00Z") == parse_rt_time(raw)


def test_token_names_its_user_and_only_utc_zones_pass() -> None:
    assert token_user_id(TOKEN) == USER_ID
    assert token_user_id("not-a-token") is None
    assert all(is_utc_zone(z) for z in ("UTC", "Etc/UTC", "GMT", "Etc/Universal"))
    assert not any(is_utc_zone(z) for z in ("", "Europe/Oslo", "Europe/London", "No/Where"))


def test_text_of_the_create_transaction_plain_or_html() -> None:
    assert create_text(body("create_attachments")["items"]) == (
        "My Outlook mailbox is full and I cannot send e-mail since this morning."
    )
    html = body("create_attachments_html")["items"]
    assert [a["ContentType"] for a in html] == ["text/html"]
    assert create_text(html) == "Hei!\nSkriveren i andre etasje skriver ikke ut & papirstopp."
    assert create_text([]) == ""
    assert mail_text("<style>p{}</style><div>a<b>b</b></div><script>x</script>c") == "ab\nc"


def rt_options(mapping: Mapping) -> RTOptions:
    return read_mapping_options("rt", RTOptions, mapping.options)


def test_queue_name_needs_see_queue() -> None:
    assert queue_name(body("ticket")) == "E2E Recording"
    blind = with_queue("ticket", "")  # what RT sends without SeeQueue
    with pytest.raises(HostError, match="needs SeeQueue") as error:
        queue_name(blind)
    assert error.value.permanent


def test_mapping_file_and_options() -> None:
    mapping = load_mapping(ROOT / "mappings" / "rt.yaml")
    options = rt_options(mapping)
    assert (options.watch_queues, options.service_field, options.overlap_seconds) == (
        ("General",),
        "BPSM Service",
        120.0,
    )
    assert mapping.queue_for("reactive") == "BPSM Reactive"
    assert "BPSM Triage" in mapping.all_queues()
    for bad, where in (
        ({"watch_queues": []}, "options.watch_queues"),
        ({"overlap_seconds": -1}, "options.overlap_seconds"),
        ({"watch_queue": ["General"]}, "options.watch_queue"),
    ):
        with pytest.raises(HostError, match=where) as error:
            rt_options(Mapping(options=bad))
        assert error.value.permanent


def test_rt_is_a_polling_host_that_refuses_webhooks() -> None:
    host = host_classes()["rt"]
    assert host is RTHost and host.polling is True
    with pytest.raises(BadPayload, match="polls RT"):
        RTHost(RTSettings(name="rt"), Mapping()).parse(WebhookRequest("POST", {}, b"{}"))


def test_client_configuration() -> None:
    client = make_client()
    assert client.http.base_url == API
    assert client.http.session.headers["Authorization"] == f"token {TOKEN}"
    assert client.me == USER_ID
    basic = make_client(token=None, user="bpsm", password=SecretStr("pw"), url=f"{API}/")
    assert basic.http.base_url == API and basic.http.session.auth == ("bpsm", "pw")
    assert basic.me == "bpsm"
    for settings, missing in (({"url": None}, "BPSM_RT_URL"), ({"token": None}, "BPSM_RT_TOKEN")):
        with pytest.raises(HostError, match=missing) as error:
            make_client(**settings)
        assert error.value.permanent


def test_setup_instructions_are_a_runnable_rights_file() -> None:
    options = rt_options(Mapping(options={"watch_queues": ["General"]}))
    queues = ["BPSM Reactive", "O'Brien"]
    lines = rights_instructions("bpsm-connector", options, queues)
    assert lines.count("cat > bpsm-rt-rights.pl <<'BPSM_EOF'") == 1 and "BPSM_EOF" in lines
    assert any("rt-setup-database-5 --action insert --skip-create" in line for line in lines)
    text = initialdata("bpsm-connector", options, queues)
    assert "['General', ['SeeQueue', 'ShowTicket', 'ShowTicketComments', 'ModifyTicket']]" in text
    assert "'O\\'Brien'" in text
    # Valid Perl (RT's own libraries are loaded by rt-setup-database, not needed to compile).
    checked = subprocess.run(
        ["perl", "-c", "-"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


# ----- polling ----------------------------------------------------------------------------------


def register_first_poll(rsps: responses.RequestsMock) -> None:
    replay(rsps, "user_self")
    replay(rsps, "search_page_1")
    replay(rsps, "search_page_2")
    for suffix in ("", "_html", "_mac"):
        replay(rsps, f"history_first{suffix}")
        replay(rsps, f"create_attachments{suffix}")


def test_first_poll_reads_all_pages_and_the_first_text_of_each_ticket() -> None:
    client = make_client()
    client.per_page = 2  # the recorded search has two pages of two
    with responses.RequestsMock() as rsps:
        register_first_poll(rsps)
        events, mark = client.poll(None)
        searches = [c.request.url for c in rsps.calls if "/tickets?" in c.request.url]
    # The watched queue's search; then the BPSM queues' (agent updates), which answers the
    # same recorded tickets here: the same deliveries, dropped.
    searches = [u for u in searches if "E2E Recording" in parse_qs(urlsplit(u).query)["query"][0]]
    items = body("search_page_1")["items"] + body("search_page_2")["items"]
    assert [e.ticket_id for e in events] == [i["id"] for i in items]
    assert [e.delivery_id for e in events] == [f"rt:{i['id']}:{i['LastUpdated']}" for i in items]
    assert [e.subject for e in events] == ["Mailbox full", "Skriveren virker ikke", "Mac?"]
    assert events[0].body.startswith("My Outlook mailbox is full")
    assert events[1].body == "Hei!\nSkriveren i andre etasje skriver ikke ut & papirstopp."
    assert {e.queue for e in events} == {"E2E Recording"} and {e.kind for e in events} == {"polled"}
    assert events[0].created_at == NOW
    assert mark == max(i["LastUpdated"] for i in items)
    query = parse_qs(urlsplit(searches[0]).query)
    start = rt_time(NOW - timedelta(seconds=120))  # now minus the overlap
    assert query["query"] == [watch_query(["E2E Recording"], NOW - timedelta(seconds=120))]
    assert start in query["query"][0] and query["fields[Queue]"] == ["Name"]
    assert [parse_qs(urlsplit(u).query)["page"] for u in searches] == [["1"], ["2"]]


def test_next_poll_starts_at_the_mark_minus_overlap_and_reuses_first_texts() -> None:
    client = make_client({"overlap_seconds": 30})
    client.per_page = 2
    with responses.RequestsMock() as rsps:
        register_first_poll(rsps)
        first, mark = client.poll(None)
        replay(rsps, "search_page_1")
        replay(rsps, "search_page_2")
        again, same_mark = client.poll(mark)
        histories = [c for c in rsps.calls if "/history" in c.request.url]
        last_query = parse_qs(urlsplit(rsps.calls[-1].request.url).query)["query"][0]
    # The store drops them: same delivery ids. A ticket's first text is fetched once.
    assert [e.delivery_id for e in again] == [e.delivery_id for e in first]
    assert len(histories) == 3 and same_mark == mark
    assert mark is not None
    since = parse_rt_time(mark)
    assert since is not None
    assert f"LastUpdated >= '{rt_time(since - timedelta(seconds=30))}'" in last_query


def test_poll_without_changes_keeps_the_mark() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "user_self")
        replay(rsps, "search_empty")
        assert client.poll("2026-11-24T18:00:00Z") == ([], "2026-11-24T18:00:00Z")
        first_time = client.poll(None)
    assert first_time == ([], rt_stamp(NOW))  # no mark yet: now, so a restart loses nothing


@pytest.mark.parametrize("zone", ["", "Europe/Oslo"])
def test_poll_refuses_an_api_user_not_in_utc(zone: str) -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "user_self", answer={**body("user_self"), "Timezone": zone})
        with pytest.raises(HostError, match="set its Timezone to UTC") as error:
            client.poll(None)
        assert len(rsps.calls) == 1  # no search: it would silently miss updates
    assert error.value.permanent


def test_backfill_asks_for_active_tickets_created_since() -> None:
    client = make_client()
    client.per_page = 2
    with responses.RequestsMock() as rsps:
        register_first_poll(rsps)
        read: list[int] = []
        events = client.backfill(datetime(2026, 11, 17, tzinfo=UTC), progress=read.append)
        query = parse_qs(urlsplit(rsps.calls[1].request.url).query)["query"][0]
    assert query == (
        "(Queue = 'E2E Recording') AND Created >= '2026-11-17 00:00:00' AND Status = '__Active__'"
    )
    assert [e.delivery_id for e in events] == ["backfill:1", "backfill:2", "backfill:3"]
    assert read == [1, 2, 3]  # across two pages, counted as read


# ----- apply ------------------------------------------------------------------------------------


def without_note() -> dict[str, Any]:
    attachments: dict[str, Any] = body("ticket_attachments")
    items = [a for a in attachments["items"] if NOTE_MARKER not in a["Content"]]
    return {**attachments, "items": items, "count": len(items)}


# RT 5 (recorded, and 5.0.8 with a custom role at top level) and RT 6 (custom roles only
# under CustomRoles): the client reads the same ticket from each (fixtures/README.md).
TICKET_SHAPES = ["ticket", "ticket_rt5_custom_role", "ticket_rt6_custom_role"]


@pytest.mark.parametrize("ticket", TICKET_SHAPES)
def test_apply_moves_sets_field_and_due_then_comments(ticket: str) -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, ticket)
        replay(rsps, "put_queue")
        replay(rsps, "ticket_moved")
        replay(rsps, "put_fields")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(), "route")
        puts, posts = sent(rsps, "PUT"), sent(rsps, "POST")
    assert result.outcome == "applied"
    assert puts == [
        {"Queue": "E2E Reactive"},
        {"CustomFields": {"BPSM Service": "email"}, "Due": "2026-11-25 02:04:30"},
    ]
    # JSON, not a text/plain body: RT 5.0.3 would store that twice UTF-8-encoded.
    assert posts == [{"Content": decision().note, "ContentType": "text/plain"}]


def test_retry_after_a_lost_answer_writes_nothing_twice() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket_moved")  # the earlier try moved it
        replay(rsps, "ticket_moved")
        replay(rsps, "put_fields", answer=body("put_queue_again"))  # [] : nothing changed
        replay(rsps, "ticket_attachments")  # the comment is there
        replay(rsps, "user_self")  # written by the connector's user? (the token names its id)
        result = client.apply(event(), decision(), "route")
        puts, posts = sent(rsps, "PUT"), sent(rsps, "POST")
    assert result.outcome == "applied" and "comment existed" in result.detail
    assert [p for p in puts if "Queue" in p] == [] and posts == []


def test_relation_without_sla_or_field_sets_no_due() -> None:
    client = make_client({"service_field": None})
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket")
        replay(rsps, "put_queue")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(queue="E2E Reactive", sla=None), "route")
        puts = sent(rsps, "PUT")
    assert result.outcome == "applied" and puts == [{"Queue": "E2E Reactive"}]


def test_field_not_applied_to_the_queue_is_left_out() -> None:
    client = make_client()
    bare = {**body("ticket_moved"), "CustomFields": []}
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket")
        replay(rsps, "put_queue")
        replay(rsps, "ticket_moved", answer=bare)
        replay(rsps, "put_fields")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(), "route")
        puts = sent(rsps, "PUT")
    assert puts[1] == {"Due": "2026-11-25 02:04:30"}
    assert "custom field 'BPSM Service' not applied to 'E2E Reactive'" in result.detail


def test_move_refused_inside_200_is_a_permanent_error_naming_the_rights() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket", path="/REST/2.0/ticket/3")
        replay(rsps, "put_denied")
        with pytest.raises(HostError, match="Permission Denied") as error:
            client.apply(event("3"), decision(), "route")
        assert not sent(rsps, "POST")
    assert error.value.permanent
    assert "ModifyTicket on 'E2E Recording' and CreateTicket on 'E2E Reactive'" in str(error.value)


def test_field_refused_inside_200_is_a_permanent_error() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket_moved")
        replay(rsps, "ticket_moved")
        replay(rsps, "put_fields", answer=["Ticket 1: Permission Denied"])
        with pytest.raises(HostError, match="ModifyCustomField on 'BPSM Service'") as error:
            client.apply(event(), decision(), "route")
    assert error.value.permanent


def test_agent_moved_it_first_so_it_stays_and_the_comment_says_so() -> None:
    client = make_client()
    elsewhere = with_queue("ticket", "E2E Service Desk")
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket", answer=elsewhere)
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(), "route")
        (note,) = sent(rsps, "POST")
        assert sent(rsps, "PUT") == []
    assert result.outcome == "override"
    assert note["Content"].startswith(decision().note)
    assert (
        "Ikke flyttet: en saksbehandler hadde allerede lagt saken i «E2E Service Desk»"
        in (note["Content"])
    )


def test_a_move_into_another_watched_queue_is_routed_like_a_new_ticket_there() -> None:
    # Polled in one intake, then moved by an agent to a second intake before routing: the
    # same outcome as when the poll first sees it in the second one (routed, not kept).
    client = make_client({"watch_queues": ["E2E Recording", "E2E Second Intake"]})
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket", answer=with_queue("ticket", "E2E Second Intake"))
        replay(rsps, "put_queue")
        replay(rsps, "ticket_moved")
        replay(rsps, "put_fields")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(), "route")
        puts = sent(rsps, "PUT")
    assert result.outcome == "applied" and {"Queue": "E2E Reactive"} in puts


def test_override_in_a_queue_the_connector_may_not_comment_in_is_still_an_override() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket", answer=with_queue("ticket", "E2E Readonly"))
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment_denied", path=f"/REST/2.0/ticket/{TICKET}/comment")
        result = client.apply(event(), decision(), "route")
    assert result.outcome == "override" and "comment refused in 'E2E Readonly'" in result.detail


def test_comment_refused_after_the_move_is_a_permanent_error() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket_moved")
        replay(rsps, "ticket_moved")
        replay(rsps, "put_fields")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment_denied", path=f"/REST/2.0/ticket/{TICKET}/comment")
        with pytest.raises(HostError, match="ModifyTicket \\(or CommentOnTicket\\)") as error:
            client.apply(event(), decision(), "route")
    assert error.value.permanent


def test_shadow_mode_only_comments() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket")
        replay(rsps, "ticket_attachments", answer=without_note())
        replay(rsps, "comment")
        result = client.apply(event(), decision(), "shadow")
        assert sent(rsps, "PUT") == []
    assert result.outcome == "shadow"


@pytest.mark.parametrize(
    "name,ticket_id,message",
    [
        ("ticket_missing", "999999", "does not exist"),
        ("ticket_forbidden", "4", "lacks ShowTicket"),
    ],
)
def test_missing_or_invisible_ticket_is_a_permanent_error(
    name: str, ticket_id: str, message: str
) -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, name)
        with pytest.raises(HostError, match=message) as error:
            client.apply(event(ticket_id), decision(), "route")
    assert error.value.permanent


def test_create_ticket_and_is_open_and_tags_are_a_no_op() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket_created")
        new = NewTicket(queue="E2E Proactive", title="Maintenance", body="x", tags=("bpsm",))
        assert client.create_ticket(new) == body("ticket_created")["id"]
        rsps.add("GET", f"{API}/tickets", json=body("search_page_2"))
        rsps.add("GET", f"{API}/tickets", json=body("search_empty"))
        assert client.is_open("3") is True and client.is_open("1") is False
        client.add_tags("1", ("bpsm",))  # RT has no tags: no request
        assert sent(rsps, "POST") == [fixture("ticket_created")["request_body"]]
        assert len(rsps.calls) == 3
        assert (
            "Status = '__Active__'"
            in parse_qs(urlsplit(rsps.calls[1].request.url).query)["query"][0]
        )


# ----- HTTP failures ----------------------------------------------------------------------------


def test_throttled_with_a_short_retry_after_is_retried_in_the_call() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", f"{API}/ticket/1", status=429, headers={"Retry-After": "0"})
        replay(rsps, "ticket")
        assert client.ticket("1")["id"] == 1
        assert [c.response.status_code for c in rsps.calls] == [429, 200]


def test_throttled_for_long_goes_back_to_the_queue_with_the_wait() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", f"{API}/ticket/1", status=429, headers={"Retry-After": "120"})
        with pytest.raises(HostError) as error:
            client.ticket("1")
        assert len(rsps.calls) == 1
    assert not error.value.permanent and error.value.retry_after == 120


def test_unavailable_then_ok() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", f"{API}/ticket/1", status=503, json={"message": "down"})
        replay(rsps, "ticket")
        assert queue_name(client.ticket("1")) == "E2E Recording"


def attachments_with(*texts: str) -> dict[str, Any]:
    """The recorded ticket_attachments answer, plus messages saying `texts`."""
    answer: dict[str, Any] = body("ticket_attachments")
    extra = [{"id": str(90 + n), "type": "attachment", "Content": t} for n, t in enumerate(texts)]
    items = [*answer["items"], *extra]
    return {**answer, "items": items, "count": len(items)}


@pytest.mark.parametrize("saved", [True, False])
def test_reply_answered_502_is_not_posted_again_in_the_call(saved: bool) -> None:
    # A proxy's 502 (or a timeout) after RT may have saved and mailed the correspondence:
    # the real RT does not answer so, and a blind retry would mail the customer twice.
    client = make_client()
    text = "Hei,\nMac er ikke en tjeneste IT-avdelingen støtter.\n"
    with responses.RequestsMock() as rsps:
        replay(rsps, "ticket_attachments")
        rsps.add("POST", f"{API}/ticket/{TICKET}/correspond", status=502, body="Bad Gateway")
        replay(rsps, "ticket_attachments", answer=attachments_with(text) if saved else KEEP)
        if saved:
            client.reply(event(), text, send=True)
        else:
            with pytest.raises(HostError, match="502") as error:
                client.reply(event(), text, send=True)
            assert not error.value.permanent  # the job is retried later, looking first
        assert len(sent(rsps, "POST")) == 1


def test_bad_token_is_permanent_with_a_hint() -> None:
    client = make_client()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", f"{API}/ticket/1", status=401, json={"message": "Unauthorized"})
        with pytest.raises(HostError, match="check BPSM_RT_TOKEN") as error:
            client.ticket("1")
    assert error.value.permanent


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(url=f"http://127.0.0.1:{port}")
    with pytest.raises(HostError, match="cannot connect") as error:
        client.poll(None)
    assert not error.value.permanent


def test_the_bpsm_queues_are_polled_for_what_agents_chose_there() -> None:
    """A routed ticket sits in a BPSM queue, which no intake watch covers: its moves and its
    service field come back as agent updates (the worker records them, routes none)."""
    client = make_client()
    sorted_item = {
        **body("search_page_1")["items"][0],
        "Queue": {"id": "9", "Name": "BPSM Reactive", "type": "queue"},
        "CustomFields": [{"id": "3", "name": "BPSM Service", "values": ["printing"]}],
    }

    def search(request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        assert "CustomFields" in query["fields"][0].split(",")
        found = [sorted_item] if "BPSM Reactive" in query["query"][0] else []
        return 200, {}, json.dumps({"items": found, "page": 1, "pages": 1, "count": len(found)})

    with responses.RequestsMock() as rsps:
        replay(rsps, "user_self")
        rsps.add_callback("GET", BASE + "/REST/2.0/tickets", callback=search)
        replay(rsps, "history_first")  # the first text of ticket 1
        replay(rsps, "create_attachments")
        events, _ = client.poll(None)
    assert [(e.kind, e.queue, e.service_label) for e in events] == [
        ("agent_update", "BPSM Reactive", "printing")
    ]
