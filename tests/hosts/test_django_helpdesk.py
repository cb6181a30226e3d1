"""django-helpdesk without a helpdesk: parse and verify on the recorded payloads (and the
derived variants listed in connector/hosts/django_helpdesk/fixtures/README.md), the token check and
status codes through the real Flask app, and the pure helpers of setup."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import responses

from connector.config import load_settings
from connector.events import TicketEvent
from connector.hosts import settings_models
from connector.hosts.base import (
    BadPayload,
    HostError,
    Ignored,
    Unauthorized,
    WebhookRequest,
    read_mapping_options,
)
from connector.hosts.django_helpdesk import DjangoHelpdeskHost
from connector.hosts.django_helpdesk.client import webhook_env_lines
from connector.hosts.django_helpdesk.sansio import bpsm_queues_command, note_text, with_token
from connector.hosts.django_helpdesk.settings import DjangoHelpdeskOptions
from connector.mapping import Mapping, load_mapping
from connector.notes import NOTE_MARKER
from connector.poller import PollerThreads
from connector.runtime import Runtime
from webhook_app import create_app

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "connector" / "hosts" / "django_helpdesk" / "fixtures"
SECRET = "dh-s3cr3t-t0k3n-24-bytes"
HOST = "django-helpdesk"


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def headers(name: str) -> dict[str, str]:
    """The recorded headers of the kind of webhook the fixture is (only two were recorded)."""
    kind = "followup" if name.startswith("followup") else "new_ticket"
    recorded: dict[str, str] = json.loads((FIXTURES / f"{kind}.headers.json").read_text())
    return recorded


def host(**mapping: Any) -> DjangoHelpdeskHost:
    settings = load_settings({}, hosts=settings_models(HOST)).host(HOST)
    return DjangoHelpdeskHost(settings, Mapping(host=HOST, **mapping))


def parse(name: str, **mapping: Any) -> TicketEvent | Ignored:
    request = WebhookRequest("POST", headers(name), body(name))
    return host(**mapping).parse(request)


# ----- parse ------------------------------------------------------------------------------


def test_new_ticket_becomes_a_created_event_with_a_stable_delivery_id():
    event = parse("new_ticket")
    assert event == TicketEvent(
        host=HOST,
        delivery_id="ticket:1:created",
        ticket_id="1",
        kind="created",
        subject="Printer on fire",
        body="Smoke from tray 2",
        queue="general",
        requester="ann@example.com",
        actor="1",
        created_at=datetime(2026, 11, 24, 17, 39, 34, 343162, tzinfo=UTC),
    )
    # The helpdesk sends no delivery id: the same webhook again must be the same delivery.
    assert parse("new_ticket") == event


def test_a_ticket_the_connector_opened_is_ignored():
    # By its author id (the opening follow-up's user)...
    assert parse("new_ticket", connector_user="1") == Ignored("own update", "1")
    # ... or by the marker create_ticket puts in the description.
    data = json.loads(body("new_ticket"))
    data["ticket"]["description"] = f"{NOTE_MARKER}\nQuarterly backup test"
    request = WebhookRequest("POST", {}, json.dumps(data).encode())
    assert host().parse(request) == Ignored("own update", "1")


def test_staff_followup_is_ignored_and_is_own_when_the_mapping_names_its_author():
    assert parse("followup") == Ignored("staff follow-up", "1")
    assert parse("followup", connector_user="2") == Ignored("own update", "1")
    assert parse("followup", connector_user="bpsm") == Ignored("staff follow-up", "1")


def test_followup_carrying_the_marker_is_own_whoever_wrote_it():
    assert parse("followup_own_note") == Ignored("own update", "1")


def test_customer_followup_is_a_customer_reply_with_all_the_text():
    event = parse("followup_customer")
    assert isinstance(event, TicketEvent)
    assert (event.kind, event.delivery_id, event.ticket_id) == (
        "customer_reply",
        "followup:3",
        "1",
    )
    assert event.queue == "bpsm-reactive"
    assert event.body == (
        "Smoke from tray 2\n\nIt is still smoking, and now the whole floor smells of it."
    )


def test_private_followup_without_author_is_not_customer_text():
    data = json.loads(body("followup_customer"))
    data["ticket"]["followup_set"][-1]["public"] = False
    request = WebhookRequest("POST", {}, json.dumps(data).encode())
    assert host().parse(request) == Ignored("not customer text", "1")


@pytest.mark.parametrize(
    "name,field",
    [
        ("malformed_followup_id_unknown", "followup_id"),
        ("malformed_ticket_id_string", "ticket.id"),
        ("malformed_followup_set_not_list", "ticket.followup_set"),
        ("malformed_no_queue_slug", "queue_slug"),
        ("unknown_payload", "ticket"),
    ],
)
def test_malformed_fixtures_name_the_field(name, field):
    with pytest.raises(BadPayload) as caught:
        host().parse(WebhookRequest("POST", {}, body(name)))
    assert caught.value.field == field


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda d: d["ticket"].update(title=5), "ticket.title"),
        (lambda d: d["ticket"]["followup_set"][0].update(user="admin"), "followup_set[0].user"),
        (lambda d: d["ticket"]["followup_set"].append("x"), "ticket.followup_set[1]"),
        (lambda d: d.update(followup_id=None), "followup_id"),
        (lambda d: d.update(ticket=[]), "ticket"),
    ],
)
def test_malformed_variants_name_the_field(change, field):
    data = json.loads(body("new_ticket"))
    change(data)
    with pytest.raises(BadPayload) as caught:
        host().parse(WebhookRequest("POST", {}, json.dumps(data).encode()))
    assert caught.value.field is not None and caught.value.field.endswith(field)


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{", b"\xff\xfe"])
def test_non_json_bodies_are_bad_payloads(raw):
    with pytest.raises(BadPayload):
        host().parse(WebhookRequest("POST", {}, raw))


# ----- verify -------------------------------------------------------------------------------


def verifying_host(secret: str | None = SECRET) -> DjangoHelpdeskHost:
    env = {"BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET": secret} if secret else {}
    settings = load_settings(env, hosts=settings_models(HOST)).host(HOST)
    return DjangoHelpdeskHost(settings, Mapping(host=HOST))


@pytest.mark.parametrize("query", [{}, {"token": ""}, {"token": "wrong"}, {"token": SECRET + "x"}])
def test_missing_or_wrong_token_is_unauthorized_and_not_echoed(query):
    request = WebhookRequest("POST", {}, body("new_ticket"), query=query)
    with pytest.raises(Unauthorized) as caught:
        verifying_host().verify(request)
    assert SECRET not in str(caught.value)
    assert not query.get("token") or query["token"] not in str(caught.value)


def test_right_token_passes_and_no_secret_means_no_check():
    verifying_host().verify(WebhookRequest("POST", {}, b"", query={"token": SECRET}))
    verifying_host(None).verify(WebhookRequest("POST", {}, b""))


# ----- through the web layer ----------------------------------------------------------------


@pytest.fixture
def app_rt(tmp_path, example_index):
    env = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET": SECRET}
    settings = load_settings(env, hosts=settings_models())
    rt = Runtime(settings, index=example_index)
    yield create_app(rt), rt
    rt.close()


def post(app, name: str, token: str | None = SECRET):
    url = "/hooks/django-helpdesk" + (f"?token={token}" if token is not None else "")
    return app.test_client().post(url, data=body(name), headers=headers(name))


def test_token_401s_through_the_app_enqueue_nothing_and_log_no_secret(app_rt, caplog):
    app, rt = app_rt
    caplog.set_level(logging.DEBUG)
    for token in (None, "", "wrong-token-value"):
        answer = post(app, "new_ticket", token)
        assert answer.status_code == 401, answer.json
        assert "token" in answer.json["error"]
        assert "wrong-token-value" not in answer.get_data(as_text=True)
    assert rt.store.count_deliveries() == 0
    assert post(app, "new_ticket").status_code == 202
    assert SECRET not in caplog.text and "wrong-token-value" not in caplog.text


def test_status_codes_of_each_recorded_payload(app_rt):
    app, rt = app_rt
    first = post(app, "new_ticket")
    assert first.status_code == 202 and first.json["delivery"] == "ticket:1:created"
    again = post(app, "new_ticket")
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert post(app, "followup").json == {"status": "ignored", "reason": "staff follow-up"}
    assert post(app, "followup_own_note").json["reason"] == "own update"
    customer = post(app, "followup_customer")
    assert customer.status_code == 202 and customer.json["delivery"] == "followup:3"
    bad = post(app, "malformed_followup_id_unknown")
    assert bad.status_code == 400 and bad.json["field"] == "followup_id"
    assert rt.store.count_deliveries() == 2


# ----- configuration ------------------------------------------------------------------------


def test_polling_is_chosen_by_the_poll_interval(tmp_path, example_index):
    env = {
        "BPSM_DATA_DIR": str(tmp_path),
        "BPSM_DJANGO_HELPDESK_URL": "http://helpdesk.invalid",
        "BPSM_DJANGO_HELPDESK_POLL_INTERVAL": "15",
    }
    polling = Runtime(load_settings(env, hosts=settings_models()), example_index)
    assert polling.host(HOST).polling is True
    assert HOST in PollerThreads(polling).hosts
    polling.close()
    del env["BPSM_DJANGO_HELPDESK_POLL_INTERVAL"]
    pushed = Runtime(load_settings(env, hosts=settings_models()), example_index)
    assert pushed.host(HOST).polling is False
    assert HOST not in PollerThreads(pushed).hosts
    pushed.close()


def read_options(mapping: Mapping) -> DjangoHelpdeskOptions:
    return read_mapping_options(HOST, DjangoHelpdeskOptions, mapping.options)


def test_shipped_mapping_names_slugs_with_titles():
    mapping = load_mapping(ROOT / "mappings" / "django-helpdesk.yaml")
    options = read_options(mapping)
    assert set(mapping.all_queues()) == set(options.queue_titles)
    assert options.queue_ids == {}  # filled in from bpsm_queues' output at install time


def test_bad_options_are_a_permanent_error_naming_the_key():
    mapping = Mapping(host=HOST, options={"queue_ids": {"bpsm-reactive": "two"}})
    with pytest.raises(HostError) as caught:
        read_options(mapping)
    assert caught.value.permanent and "options.queue_ids.bpsm-reactive" in str(caught.value)


def test_client_needs_url_user_and_password():
    with pytest.raises(HostError, match="_USER and _PASSWORD"):
        host().client()


def test_setup_helpers():
    assert with_token("https://c.example/hooks/django-helpdesk", "a b") == (
        "https://c.example/hooks/django-helpdesk?token=a+b"
    )
    assert with_token("http://c/h?token=old&x=1", "new") == "http://c/h?x=1&token=new"
    assert bpsm_queues_command(["bpsm-reactive", "x"], {"bpsm-reactive": "BPSM Reactive"}) == (
        "python manage.py bpsm_queues --create 'BPSM Reactive=bpsm-reactive' --create x=x --json"
    )


def test_note_text_survives_the_helpdesk_template_rendering_and_states_outcome():
    assert note_text("[bpsm-connector] {{ ticket.title }}", "applied") == (
        "[bpsm-connector] { { ticket.title } }"
    )
    assert note_text("n", "override").endswith("\n[bpsm-override]")
    assert note_text("n", "shadow").endswith("\n[bpsm-shadow]")


# ----- django-helpdesk 2.6.x: the two webhook variables, HELPDESK_API_ENABLED ----------------


def split_as_django_helpdesk_261(name: str, value: str) -> list[str]:
    """How django-helpdesk 2.6.1 reads each variable (helpdesk/settings.py 559–573):
    new-ticket URLs with str.split(","), follow-up URLs with re.split(r"[\\s],[\\s]", …)."""
    if name == "HELPDESK_NEW_TICKET_WEBHOOK_URLS":
        return value.split(",")
    return re.split(r"[\s],[\s]", value)


def test_setup_prints_each_variable_with_the_separator_its_list_is_split_on():
    hook = "https://c.example/hooks/django-helpdesk?token=t0k"
    lines = webhook_env_lines(hook)
    examples = [line.strip().split("   (")[0] for line in lines if "other.example" in line]
    assert len(examples) == 2
    for line in examples + [lines[0].strip(), lines[1].strip()]:
        name, value = line.split("=", 1)
        urls = split_as_django_helpdesk_261(name, value)
        assert urls[-1] == hook, (name, urls)
        assert all(" " not in url for url in urls)  # no URL with a stray space in it
    # The other separator would break either list.
    assert split_as_django_helpdesk_261("HELPDESK_FOLLOWUP_WEBHOOK_URLS", f"a,{hook}") == [
        f"a,{hook}"
    ]


@responses.activate
@pytest.mark.parametrize("step", ["setup", "poll"])
def test_an_unmounted_api_is_named_at_setup_and_at_the_first_poll(step):
    settings = load_settings(
        {
            "BPSM_DJANGO_HELPDESK_URL": "http://dh.example",
            "BPSM_DJANGO_HELPDESK_USER": "bpsm",
            "BPSM_DJANGO_HELPDESK_PASSWORD": "pw",
        },
        hosts=settings_models(HOST),
    ).host(HOST)
    client = DjangoHelpdeskHost(settings, Mapping(host=HOST)).client()
    client._next_login = float("inf")  # type: ignore[attr-defined]  # basic auth: no login page
    responses.get("http://dh.example/api/tickets/", status=404, body="<h1>Not Found</h1>")
    with pytest.raises(HostError, match="HELPDESK_API_ENABLED = True") as caught:
        if step == "setup":
            client.setup(Mapping(host=HOST), None)
        else:
            client.poll(None)
    assert caught.value.permanent


@responses.activate
def test_a_ticket_still_being_created_is_read_by_the_next_poll_not_routed_half_read():
    """django-helpdesk saves a ticket before its opening follow-up, which says who opened it
    (the connector's own tickets are told by it): a poll in between must not route it, nor
    move its mark past it (seen in CI: the connector's own proactive ticket was routed)."""
    settings = load_settings(
        {
            "BPSM_DJANGO_HELPDESK_URL": "http://dh.example",
            "BPSM_DJANGO_HELPDESK_USER": "bpsm",
            "BPSM_DJANGO_HELPDESK_PASSWORD": "pw",
        },
        hosts=settings_models(HOST),
    ).host(HOST)
    client = DjangoHelpdeskHost(settings, Mapping(host=HOST)).client()
    client._next_login = float("inf")  # type: ignore[attr-defined]  # basic auth: no login page
    whole = json.loads(body("new_ticket"))["ticket"]
    whole["followup_set"][0]["date"] = datetime.now(UTC).isoformat()  # within the first poll
    half = {**whole, "id": 2, "followup_set": []}
    second = {**whole, "id": 2}
    responses.get(
        "http://dh.example/api/queues/1/", json={"id": 1, "slug": "general", "title": "General"}
    )
    answers = [[whole, half], [whole, second]]
    for results in answers:
        responses.get(
            "http://dh.example/api/tickets/", json={"count": len(results), "results": results}
        )
    events, mark = client.poll(None)
    assert [e.ticket_id for e in events] == ["1"] and mark == "1"
    events, mark = client.poll(mark)
    assert [e.ticket_id for e in events] == ["1", "2"] and mark == "2"
