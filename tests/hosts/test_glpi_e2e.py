"""End to end with GLPI: the fake GLPI (tests/fakes/glpi.py) either fires real, signed GLPI 11
webhooks at the running connector or, as GLPI 10, is polled by it; the worker routes through
GLPI's REST API. Assertions read the fake's own state: assigned groups, category, time to
resolve, followups, actors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from werkzeug.wrappers import Response

from connector.hosts import host_settings
from connector.hosts.glpi import GlpiHost
from connector.mapping import load_mapping
from connector.notes import NOTE_MARKER
from connector.proactive import maintenance_items
from tests.e2e import BPSM_GROUPS, ROOT, ConnectorService, example_index, wait_for
from tests.fakes.glpi import FakeGLPI

SECRET = "glpi-webhook-secret"
APP_TOKEN, USER_TOKEN = "app-token", "user-token"
GROUPS = [*BPSM_GROUPS, "Network team"]
CATEGORIES = ["Printer", "E-mail", "ERP", "Mac computers", "Remote access"]
OSLO_SUMMER = timezone(timedelta(hours=2))
# name: (title, HTML content, process, service, category)
TICKETS = {
    "reactive": (
        "Printer jams",
        "<p>The printer on the 2nd floor keeps jamming and prints blank pages.</p>",
        "reactive",
        "printing",
        "Printer",
    ),
    "relation": (
        "Mac?",
        "<p>Does IT support Macs? I would like to use my own MacBook with macOS at work.</p>",
        "relation",
        "mac-computers",
        "Mac computers",
    ),
    "change": (
        "Integration",
        "<p>We would like a new integration between Visma and the archive for the whole "
        "department, the budget is approved.</p>",
        "change",
        "erp",
        "ERP",
    ),
    "norwegian": (
        "Får ikke logget inn på e-post",
        "<p>Etter at jeg byttet passord i går får jeg ikke logget inn på Outlook. Kalenderen "
        "og innboksen er tomme på mobilen også.</p>",
        "reactive",
        "email",
        "E-mail",
    ),
}
PRINTER = "<p>The printer on the 2nd floor keeps jamming and prints blank pages.</p>"
VPN = "<p>My laptop will not connect to the VPN from home, it drops every few minutes.</p>"


# ----- helpers -------------------------------------------------------------------------------


def seed(fake: FakeGLPI) -> FakeGLPI:
    for group in GROUPS:
        fake.add_group(group)
    for category in CATEGORIES:
        fake.add_category(category)
    return fake


def api_env(
    fake: FakeGLPI, api: str = "v1", folder: Path | None = None, **extra: str
) -> dict[str, str]:
    """The connector's GLPI settings for the legacy API (v1) or the high-level API (hlapi:
    its mapping, written to `folder`, says `options.api: hlapi`)."""
    env = {
        "BPSM_GLPI_URL": fake.url,
        # The proactive process runs at start-up, as in production: its tickets must be
        # recognised as the connector's own and never routed.
        "BPSM_MAINTENANCE_INTERVAL": "600",
    }
    if api == "v1":
        env |= {"BPSM_GLPI_APP_TOKEN": APP_TOKEN, "BPSM_GLPI_USER_TOKEN": USER_TOKEN}
    else:
        assert folder is not None
        data = yaml.safe_load((ROOT / "mappings" / "glpi.yaml").read_text())
        data["options"]["api"] = "hlapi"
        mapping = folder / "glpi-hlapi.yaml"
        mapping.write_text(yaml.safe_dump(data, allow_unicode=True))
        env |= {
            "BPSM_GLPI_MAPPING": str(mapping),
            "BPSM_GLPI_CLIENT_ID": fake.oauth_client_id,
            "BPSM_GLPI_CLIENT_SECRET": fake.oauth_client_secret,
            "BPSM_GLPI_USERNAME": fake.login,
            "BPSM_GLPI_PASSWORD": fake.password,
        }
    return env | extra


def assign_path(api: str, ticket_id: int | str = "") -> str:
    """The path (end) of the call that assigns a group: Group_Ticket (v1), TeamMember (HL)."""
    if api == "v1":
        return f"/Ticket/{ticket_id}/Group_Ticket" if ticket_id else "/Group_Ticket"
    return f"/Assistance/Ticket/{ticket_id}/TeamMember" if ticket_id else "/TeamMember"


def followup_path(api: str) -> str:
    return "/ITILFollowup" if api == "v1" else "/Timeline/Followup"


def own_followups(fake: FakeGLPI, ticket_id: int) -> list[dict[str, Any]]:
    return [f for f in fake.followups(ticket_id) if NOTE_MARKER in f["content"]]


def connector_tickets(fake: FakeGLPI) -> list[int]:
    """Tickets the connector opened itself (proactive maintenance at start-up)."""
    return [t["id"] for t in fake.tickets() if NOTE_MARKER in str(t["content"])]


def settle(fake: FakeGLPI) -> None:
    """Wait for the start-up maintenance tickets, so that injected failures hit the test's own
    calls and not theirs."""
    due = len(maintenance_items(example_index().catalogue))
    wait_for(lambda: len(connector_tickets(fake)) >= due, message="maintenance tickets")


def api_calls(fake: FakeGLPI, method: str, suffix: str) -> list[Any]:
    return [c for c in fake.calls if c.method == method and c.path.endswith(suffix)]


def assert_routed_once(
    fake: FakeGLPI, service: ConnectorService, ticket_id: int, name: str, language: str = "en"
) -> dict[str, Any]:
    _, _, process, service_id, category = TICKETS[name]
    routing = service.wait_routed("glpi", ticket_id)
    assert routing["outcome"] == "applied", service.runtime.store.list_dead_letters()
    assert (routing["process"], routing["service"], routing["language"]) == (
        process,
        service_id,
        language,
    )
    assert fake.assigned_group_names(ticket_id) == [f"BPSM {process.capitalize()}"]
    ticket = fake.ticket(ticket_id)
    assert ticket["itilcategories_id"] == fake.category_id(category)
    notes = own_followups(fake, ticket_id)
    assert len(notes) == 1 and notes[0]["is_private"] == 1
    assert f"bpsm, {process}, {service_id}" in notes[0]["content"]  # GLPI has no tags
    requesters = [u for u in fake.ticket_users(ticket_id) if u["type"] == 1]
    assert len(requesters) == 1  # the requester is still there
    return ticket


def after_first(
    fake: FakeGLPI, matches: Callable[[Any], bool], action: Callable[[Any], Any]
) -> threading.Event:
    """Once, right after the fake handled the first request that `matches`, run `action` on
    its response (and answer what it returns): a failure at an exact point of a batch."""
    original = fake._dispatch
    fired = threading.Event()

    def dispatch(request: Any, raw: bytes, query: dict[str, Any]) -> Any:
        response = original(request, raw, query)
        if not fired.is_set() and matches(request):
            fired.set()
            return action(response)
        return response

    fake._dispatch = dispatch  # type: ignore[method-assign]
    return fired


def expire_sessions_after(fake: FakeGLPI, matches: Callable[[Any], bool]) -> threading.Event:
    def expire(response: Any) -> Any:
        fake.expire_sessions()
        return response

    return after_first(fake, matches, expire)


def lose_answer_of(fake: FakeGLPI, matches: Callable[[Any], bool]) -> threading.Event:
    """The write is saved, but a proxy answers 502 (the connector cannot know it was saved)."""
    return after_first(fake, matches, lambda _: Response("Bad Gateway", status=502))


def wait_delivered(fake: FakeGLPI, ticket_id: int) -> None:
    """Wait until the Ticket `new` webhook of this ticket reached the connector."""
    wait_for(
        lambda: [d for d in fake.deliveries if d.items_id == ticket_id and d.status],
        message=f"the webhook of ticket {ticket_id}",
    )


def attempts(service: ConnectorService, ticket_id: int) -> int:
    for pk in range(1, service.runtime.store.count_deliveries() + 1):
        delivery = service.runtime.store.delivery(pk)
        if delivery is not None and delivery.ticket_id == str(ticket_id):
            return delivery.attempts
    return 0


def renewed_sessions(fake: FakeGLPI, api: str = "v1") -> bool:
    statuses = [c.status for c in fake.calls]
    if api == "v1":
        return 401 in statuses and len(api_calls(fake, "GET", "/initSession")) >= 2
    return 401 in statuses and len(api_calls(fake, "POST", "/api.php/token")) >= 2


# ----- GLPI 11: webhooks ---------------------------------------------------------------------


@pytest.fixture
def glpi11() -> Iterator[FakeGLPI]:
    with FakeGLPI(version=11, app_token=APP_TOKEN, user_token=USER_TOKEN) as fake:
        yield seed(fake)


def subscribe(fake: FakeGLPI, service: ConnectorService, **extra: Any) -> None:
    """The two webhooks `bpsm setup glpi` creates (connector/hosts/glpi/guide.md)."""
    for itemtype in ("Ticket", "ITILFollowup"):
        url = f"{service.hook_url('glpi')}?itemtype={itemtype}"
        fake.add_webhook(url, SECRET, itemtype, ["new"], **extra)


@pytest.fixture(params=["v1", "hlapi"])
def api(request: pytest.FixtureRequest) -> str:
    """The API the connector writes through: every GLPI 11 test runs with both clients."""
    return str(request.param)


@pytest.fixture
def connector11(tmp_path, glpi11, api) -> Iterator[ConnectorService]:
    env = api_env(glpi11, api, tmp_path, BPSM_GLPI_WEBHOOK_SECRET=SECRET)
    with ConnectorService(tmp_path, env) as service:
        subscribe(glpi11, service)
        settle(glpi11)
        yield service


@pytest.mark.parametrize("name", ["reactive", "relation", "change"])
def test_webhook_ticket_gets_group_category_and_one_private_followup(
    glpi11, connector11, name, api
):
    title, content, process, _, _ = TICKETS[name]
    ticket_id = glpi11.create_ticket_as_user(title, content, observers=["observer1"])
    ticket = assert_routed_once(glpi11, connector11, ticket_id, name)
    assert [u["type"] for u in glpi11.ticket_users(ticket_id)] == [1, 3]  # observer kept too
    note = own_followups(glpi11, ticket_id)[0]["content"]
    if process == "reactive" and api == "hlapi":
        # The high-level API's Ticket has no time to resolve (connector/hosts/glpi/guide.md).
        assert ticket["time_to_resolve"] is None
        assert "SLA: first response by" in note
    elif process == "reactive":
        # Catalogue SLA for printing: resolution 1 day after opening, in GLPI's local time.
        opened = datetime.strptime(ticket["date"], "%Y-%m-%d %H:%M:%S")
        assert ticket["time_to_resolve"] == f"{opened + timedelta(days=1):%Y-%m-%d %H:%M:%S}"
        assert "SLA: first response by" in note
    else:
        assert ticket["time_to_resolve"] is None
    if process == "relation":
        assert "Why:" in note and "Alternative:" in note
    answers = [d.status for d in glpi11.deliveries if d.items_id == ticket_id]
    assert answers == [202]


def test_norwegian_ticket_gets_a_norwegian_followup(glpi11, connector11):
    title, content, *_ = TICKETS["norwegian"]
    ticket_id = glpi11.create_ticket_as_user(title, content, requester="knordmann")
    assert_routed_once(glpi11, connector11, ticket_id, "norwegian", language="nb")
    note = own_followups(glpi11, ticket_id)[0]["content"]
    assert "Rutet til reaktiv håndtering" in note and "Stikkord: bpsm, reactive, email" in note


def test_connectors_own_updates_are_ignored_and_replies_do_not_reroute(glpi11, connector11, api):
    # A careless admin also subscribed Ticket `update`: assigning the group raises one.
    glpi11.add_webhook(connector11.hook_url("glpi"), SECRET, "Ticket", ["update"])
    ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
    connector11.wait_routed("glpi", ticket_id)
    glpi11.add_followup_as_user(ticket_id, "<p>It now jams on the colour printer too.</p>")
    glpi11.wait_webhooks_idle()
    wait_for(connector11.idle, message="the connector to go idle")
    answers = {
        (d.itemtype, d.event, d.status, json.loads(d.response_body).get("reason"))
        for d in glpi11.deliveries
        if d.items_id == ticket_id or d.json()["item"].get("items_id") == ticket_id
    }
    assert answers == {
        ("Ticket", "new", 202, None),
        ("Ticket", "update", 200, _update_reason()),
        ("ITILFollowup", "new", 200, "own update"),  # the connector's followup
        ("ITILFollowup", "new", 202, None),  # the requester's reply: queued, not re-routed
    }
    assert len(own_followups(glpi11, ticket_id)) == 1
    assert len(api_calls(glpi11, "POST", assign_path(api, ticket_id))) == 1
    assert connector11.routing("glpi", ticket_id)["outcome"] == "applied"
    # The maintenance tickets the connector opened were recognised as its own, too.
    assert all(connector11.routing("glpi", t) is None for t in connector_tickets(glpi11))


def _update_reason() -> str:
    return (
        "Ticket update ignored: only new tickets and new followups are routed "
        "(updates include the connector's own changes)"
    )


def test_redelivered_webhook_is_applied_once(glpi11, connector11):
    ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
    connector11.wait_routed("glpi", ticket_id)
    first = next(d for d in glpi11.deliveries if d.items_id == ticket_id)
    again = requests.post(first.url, data=first.body, headers=first.headers, timeout=5)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(own_followups(glpi11, ticket_id)) == 1


def test_session_expiry_in_the_middle_of_a_batch_loses_nothing(glpi11, connector11, api):
    fired = expire_sessions_after(
        glpi11, lambda req: req.method == "POST" and req.path.endswith(assign_path(api))
    )
    ids = [glpi11.create_ticket_as_user(f"Printer {n}", PRINTER) for n in range(3)]
    for ticket_id in ids:
        assert_routed_once(glpi11, connector11, ticket_id, "reactive")
    assert fired.is_set() and renewed_sessions(glpi11, api)


def test_glpi_down_then_back_applies_once_even_after_a_lost_answer(glpi11, connector11, api):
    glpi11.set_down(True)
    ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
    wait_delivered(glpi11, ticket_id)  # webhooks still go out; the API refuses connections
    wait_for(lambda: attempts(connector11, ticket_id) >= 2, message="attempts while GLPI is down")
    assert connector11.routing("glpi", ticket_id)["outcome"] == "applying"
    glpi11.lose_response_next(1)  # the group is assigned, but the answer is a 502
    followup_lost = lose_answer_of(
        glpi11, lambda req: req.method == "POST" and req.path.endswith(followup_path(api))
    )
    glpi11.set_down(False)
    assert_routed_once(glpi11, connector11, ticket_id, "reactive")
    lost = [c for c in glpi11.calls if c.injected == "lost"]
    assert len(lost) == 1 and lost[0].path.endswith(assign_path(api))
    assert followup_lost.is_set()  # and still one followup: the retry looked first


def test_agent_assigning_a_group_first_is_an_override_not_moved_back(glpi11, tmp_path, api):
    env = api_env(glpi11, api, tmp_path, BPSM_GLPI_WEBHOOK_SECRET=SECRET)
    service = ConnectorService(tmp_path, env)
    service._thread.start()  # only the web layer: the event is queued, not yet processed
    try:
        subscribe(glpi11, service)
        ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
        wait_delivered(glpi11, ticket_id)
        glpi11.assign_group_as_agent(ticket_id, "Network team")
        service.background.start()
        routing = service.wait_routed("glpi", ticket_id)
        assert routing["outcome"] == "override"
        assert glpi11.assigned_group_names(ticket_id) == ["Network team"]
        note = own_followups(glpi11, ticket_id)[0]["content"]
        assert 'an agent had already assigned "Network team"' in note and "bpsm-override" in note
    finally:
        service.stop()


def test_purged_ticket_goes_to_dead_letters(glpi11, connector11):
    service = connector11
    glpi11.set_down(True)  # hold the worker until the ticket is gone
    ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
    wait_delivered(glpi11, ticket_id)
    glpi11.delete_ticket(ticket_id, purge=True)
    glpi11.set_down(False)
    assert service.wait_routed("glpi", ticket_id)["outcome"] == "failed"
    letters = service.runtime.store.list_dead_letters()
    assert len(letters) == 1 and f"ticket {ticket_id} was deleted" in letters[0]["reason"]


def test_setup_creates_groups_categories_and_signed_webhooks_idempotently():
    with FakeGLPI(version=11, app_token=APP_TOKEN, user_token=USER_TOKEN) as fake:
        host = GlpiHost(
            host_settings("glpi", api_env(fake)), load_mapping(ROOT / "mappings" / "glpi.yaml")
        )
        client = host.client()
        result = client.setup(host.mapping, "http://connector.example/hooks/glpi")
        lines = result.lines
        assert "group created: BPSM Reactive" in lines and "category created: Printer" in lines
        url = "http://connector.example/hooks/glpi?itemtype=Ticket&api=2"
        assert f"webhook created: Ticket new → {url}" in lines
        assert "GLPI legacy REST API (apirest.php): answers (options.api: v1)" in lines
        assert any(line.startswith("GLPI high-level API (api.php): versions 2") for line in lines)

        secret = result.webhook_secret
        assert secret and len(secret) == 40
        assert result.test_event is not None and result.test_event.url == url

        again = host.client()
        rerun = again.setup(host.mapping, "http://new.example/hooks/glpi")
        second = rerun.lines
        assert "group exists: BPSM Reactive" in second
        assert not [line for line in second if "created" in line]
        url = "http://new.example/hooks/glpi?itemtype=ITILFollowup&api=2"
        assert f"webhook updated: ITILFollowup new → {url}" in second
        assert rerun.webhook_secret is None  # the secret the connector runs with is kept
        assert rerun.test_event is None  # nothing to sign it with
        with fake._lock:
            rows = list(fake._tables["Webhook"].values())
        assert sorted((r["itemtype"], r["event"], r["is_active"]) for r in rows) == [
            ("ITILFollowup", "new", 1),
            ("Ticket", "new", 1),
        ]
        assert all(fake.webhook_secret(r["id"]) == secret for r in rows)
        client.close()
        again.close()
        assert fake.active_sessions == 0  # killSession on close


# ----- GLPI 10: polling ----------------------------------------------------------------------


@pytest.fixture
def glpi10() -> Iterator[FakeGLPI]:
    # GLPI 10.0 encodes stored text as &#60;…&#62; and runs in local time (+02:00 here).
    with FakeGLPI(
        version=10,
        app_token=APP_TOKEN,
        user_token=USER_TOKEN,
        tz=OSLO_SUMMER,
        v10_entities="numeric",
    ) as fake:
        yield seed(fake)


def polling_env(fake: FakeGLPI, tmp_path: Path, page_size: int | None = None) -> dict[str, str]:
    env = api_env(fake, BPSM_GLPI_API_VERSION="10", BPSM_GLPI_POLL_INTERVAL="0.2")
    if page_size:
        data = yaml.safe_load((ROOT / "mappings" / "glpi.yaml").read_text())
        data["options"]["page_size"] = page_size
        mapping = tmp_path / "glpi.yaml"
        mapping.write_text(yaml.safe_dump(data, allow_unicode=True))
        env["BPSM_GLPI_MAPPING"] = str(mapping)
    return env


def searches(fake: FakeGLPI) -> int:
    return len(api_calls(fake, "GET", "/search/Ticket"))


def wait_polls(fake: FakeGLPI, n: int = 2) -> None:
    start = searches(fake)
    wait_for(lambda: searches(fake) >= start + n, message=f"{n} more polls")


def started_polling(service: ConnectorService) -> ConnectorService:
    wait_for(lambda: service.runtime.store.high_water("glpi"), message="the first poll mark")
    return service


def test_polling_routes_new_tickets_and_requester_replies_only(glpi10, tmp_path):
    glpi10.advance_time(-600)  # two tickets opened 10 minutes before the connector started
    old_by_agent = glpi10.create_ticket_as_user("Old VPN", VPN)
    old_by_requester = glpi10.create_ticket_as_user("Old printer", PRINTER)
    glpi10.advance_time(600)
    with ConnectorService(tmp_path, polling_env(glpi10, tmp_path)) as service:
        started_polling(service)
        settle(glpi10)
        ids = {}
        glpi10.advance_time(-5)  # opened seconds before the connector's own changes
        for name, (title, content, *_) in TICKETS.items():
            ids[name] = glpi10.create_ticket_as_user(f"{title} & <co>", content)
        glpi10.advance_time(5)
        glpi10.update_ticket_as_agent(old_by_agent, {"urgency": 5})
        glpi10.add_followup_as_user(old_by_requester, "<p>Still jamming, please help.</p>")
        for name, ticket_id in ids.items():
            language = "nb" if name == "norwegian" else "en"
            ticket = assert_routed_once(glpi10, service, ticket_id, name, language)
            if name == "reactive":  # in GLPI's own local time, not UTC
                opened = datetime.strptime(ticket["date"], "%Y-%m-%d %H:%M:%S")
                assert (
                    ticket["time_to_resolve"] == f"{opened + timedelta(days=1):%Y-%m-%d %H:%M:%S}"
                )
        assert service.wait_routed("glpi", old_by_requester)["outcome"] == "applied"
        wait_polls(glpi10)
        assert service.routing("glpi", old_by_agent) is None  # an agent's edit routes nothing
        delivered = [d["ticket_id"] for d in _deliveries(service)]
        # One delivery each: the connector's own changes (and its own tickets) are not re-read.
        assert sorted(delivered) == sorted(str(t) for t in [*ids.values(), old_by_requester])
        # Subjects arrive decoded once: "&" and "<co>" are text, not entities or tags.
        event = next(
            d["event"] for d in _deliveries(service) if d["ticket_id"] == str(ids["change"])
        )
        assert event.subject == "Integration & <co>"
        created = service.routing("glpi", ids["reactive"])["ticket_created_at"]
        assert abs(created - time.time()) < 60  # GLPI's +02:00 local time understood as such


def _deliveries(service: ConnectorService) -> list[dict[str, Any]]:
    rows = []
    for pk in range(1, service.runtime.store.count_deliveries() + 1):
        delivery = service.runtime.store.delivery(pk)
        if delivery is not None:
            rows.append({"ticket_id": delivery.ticket_id, "event": delivery.event})
    return rows


def test_polling_session_expiry_in_the_middle_of_a_batch_loses_nothing(glpi10, tmp_path):
    with ConnectorService(tmp_path, polling_env(glpi10, tmp_path)) as service:
        started_polling(service)
        settle(glpi10)
        ids = [glpi10.create_ticket_as_user(f"Printer {n}", PRINTER) for n in range(4)]
        first = f"/Ticket/{ids[0]}"
        fired = expire_sessions_after(
            glpi10, lambda req: req.method == "GET" and req.path.endswith(first)
        )
        for ticket_id in ids:
            assert_routed_once(glpi10, service, ticket_id, "reactive")
        assert fired.is_set() and renewed_sessions(glpi10)


class Killed(Exception):
    """The poller's process dies here (nothing after this point happens)."""


def test_poller_killed_mid_batch_and_restarted_routes_every_ticket_exactly_once(glpi10, tmp_path):
    env = polling_env(glpi10, tmp_path, page_size=2)
    first = ConnectorService(tmp_path / "data", env).start()
    started_polling(first)
    settle(glpi10)
    recorded: list[str] = []
    record = first.runtime.store.record_delivery

    def record_then_die(event: Any, now: float | None = None) -> int | None:
        if len(recorded) >= 3:  # the first page (2 tickets) and one of the second
            raise Killed()
        recorded.append(event.ticket_id)
        return record(event, now)

    first.runtime.store.record_delivery = record_then_die  # type: ignore[method-assign]
    texts = [PRINTER, VPN, TICKETS["norwegian"][1], TICKETS["change"][1], TICKETS["relation"][1]]
    ids = [glpi10.create_ticket_as_user(f"Ticket {n}", text) for n, text in enumerate(texts)]
    wait_for(lambda: len(recorded) >= 3, message="three recorded deliveries")
    mark = first.runtime.store.high_water("glpi")
    first.stop()
    assert first.runtime.store.high_water("glpi") == mark  # the mark never passed the dead batch

    with ConnectorService(tmp_path / "data", env) as second:
        for ticket_id in ids:
            routing = second.wait_routed("glpi", ticket_id)
            assert routing["outcome"] == "applied"
            assert len(own_followups(glpi10, ticket_id)) == 1
            assigned = [g for g in glpi10.group_tickets(ticket_id) if g["type"] == 2]
            assert len(assigned) == 1
        wait_polls(glpi10)
        assert second.runtime.store.high_water("glpi") != mark
        routed = [r["ticket_id"] for r in second.runtime.store.all_routings()]
        assert sorted(routed) == sorted(str(t) for t in ids)  # once each, nothing else


def test_polling_through_an_outage_applies_once(glpi10, tmp_path):
    with ConnectorService(tmp_path, polling_env(glpi10, tmp_path)) as service:
        started_polling(service)
        settle(glpi10)
        glpi10.set_down(True)
        ticket_id = glpi10.create_ticket_as_user("VPN", VPN)
        time.sleep(0.7)  # a few polls fail with "connection refused"
        assert service.routing("glpi", ticket_id) is None
        glpi10.set_down(False)
        routing = service.wait_routed("glpi", ticket_id)
        assert routing["outcome"] == "applied" and routing["service"] == "remote-access"
        assert glpi10.assigned_group_names(ticket_id) == ["BPSM Reactive"]
        assert len(own_followups(glpi10, ticket_id)) == 1


def test_backfill_queues_open_user_tickets_only(glpi10, tmp_path):
    solved = glpi10.create_ticket_as_user("Done", PRINTER)
    glpi10.update_ticket_as_agent(solved, {"status": 5})
    open_ids = [glpi10.create_ticket_as_user(f"Printer {n}", PRINTER) for n in range(3)]
    service = ConnectorService(tmp_path, polling_env(glpi10, tmp_path), poll=False)
    client = service.runtime.client("glpi")
    own = client.create_ticket(_maintenance_like())
    read: list[int] = []
    events = client.backfill(datetime.now(UTC) - timedelta(hours=1), progress=read.append)
    assert sorted(int(e.ticket_id) for e in events) == open_ids
    assert read == [1, 2, 3]  # counted as they are read, for the terminal's progress line
    assert {e.delivery_id for e in events} == {f"backfill:{t}" for t in open_ids}
    assert all(e.body == PRINTER for e in events)
    assert client.is_open(str(open_ids[0])) is True and client.is_open(str(solved)) is False
    assert glpi10.assigned_group_names(int(own)) == ["BPSM Proactive"]
    service.runtime.close()
    service.server.server_close()  # never started: only its socket to release


def _maintenance_like() -> Any:
    from connector.events import NewTicket

    return NewTicket(queue="BPSM Proactive", title="Restore test", body="Quarterly restore test.")


def test_backfill_dry_run_shows_what_it_would_queue_and_queues_nothing(glpi10, tmp_path):
    from click.testing import CliRunner

    from connector.cli import main
    from connector.store import Store

    for n in range(3):
        glpi10.create_ticket_as_user(f"Printer {n}", PRINTER)
    glpi10.create_ticket_as_user("asdf", "qwerty")
    env = {
        **polling_env(glpi10, tmp_path),
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"),
    }
    catalogue = ["--catalogue", str(ROOT / "catalogue.yaml")]
    preview = CliRunner().invoke(main, ["backfill", "glpi", "--dry-run", *catalogue], env=env)
    assert preview.exit_code == 0, preview.output
    assert "would queue 4 tickets (0 already routed)" in preview.output
    lines = [line.split() for line in preview.output.splitlines()]
    assert ["reactive", "printing", "3"] in lines and ["relation", "-", "1"] in lines
    assert Store(f"sqlite:///{tmp_path / 'bpsm.db'}").count_deliveries() == 0
    queued = CliRunner().invoke(main, ["backfill", "glpi", *catalogue], env=env)
    assert queued.exit_code == 0, queued.output
    assert "4 tickets found, 4 queued for routing" in queued.output
