"""GLPI 12 and the high-level API: the recorded HL exchanges (fixtures/contract/
hlapi_v2_exchanges.json) against the client, setup's pinned webhooks and its warnings
against the fake GLPI 12, and the pure helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import responses
from pydantic import SecretStr

from connector.events import RoutingDecision, TicketEvent
from connector.hosts.base import HostError, OptionsError
from connector.hosts.glpi import GlpiHost
from connector.hosts.glpi.hlclient import GlpiHlClient, connect_hl, hl_error_text, team_groups
from connector.hosts.glpi.sansio import (
    PORT_HINT,
    PRIVATE_NETWORK_HINT,
    describe_apis,
    glpi_root,
    hl_api_majors,
    url_refusal_hints,
)
from connector.hosts.glpi.settings import GlpiOptions, GlpiSettings
from connector.mapping import Mapping, load_mapping
from tests.e2e import ROOT
from tests.fakes.glpi import FakeGLPI

FIXTURES = ROOT / "connector" / "hosts" / "glpi" / "fixtures"
EXCHANGES = json.loads((FIXTURES / "contract" / "hlapi_v2_exchanges.json").read_text())
ROOT_URL = "http://glpi.example"
V2 = f"{ROOT_URL}/api.php/v2"
TICKET = json.loads((FIXTURES / "v11_ticket_new.json").read_bytes())["item"]  # same schema


def hl_settings(**extra: Any) -> GlpiSettings:
    return GlpiSettings(
        name="glpi",
        url=f"{ROOT_URL}/apirest.php",
        client_id=SecretStr("bpsm"),
        client_secret=SecretStr("s3cret"),
        username=SecretStr("bpsm-connector"),
        password=SecretStr("pw"),
        **extra,
    )


def hl_client(**options: Any) -> GlpiHlClient:
    return connect_hl(hl_settings(), GlpiOptions(api="hlapi", **options))


def answer_of(name: str) -> dict[str, Any]:
    return EXCHANGES[name]["response"]


def add_token(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{ROOT_URL}/api.php/token", json=answer_of("token_password_grant")["body"])


def decision(queue: str = "BPSM Reactive") -> RoutingDecision:
    return RoutingDecision(
        process="reactive",
        service="printing",
        queue=queue,
        confidence=0.9,
        language="en",
        note="[bpsm-connector] routed",
        tags=("bpsm", "reactive", "printing"),
    )


def event() -> TicketEvent:
    return TicketEvent(
        host="glpi",
        delivery_id="d1",
        ticket_id="42",
        kind="created",
        subject="Printer",
        body="jams",
        queue=None,
        created_at=datetime(2025, 6, 2, 7, 15, tzinfo=UTC),
    )


# ----- the recorded exchanges -----------------------------------------------------------------


@responses.activate
def test_the_token_request_is_the_password_grant_of_the_contract():
    add_token(responses.mock)
    responses.get(f"{V2}/session", json={"user_id": 7})
    client = hl_client()
    assert client._me() == 7
    sent = dict(parse_qsl(responses.calls[0].request.body))
    assert sent == EXCHANGES["token_password_grant"]["request"]["form"] | {
        "client_secret": "s3cret",
        "password": "pw",
    }
    assert responses.calls[1].request.headers["GLPI-API-Version"] == "2"
    assert responses.calls[1].request.headers["Authorization"].startswith("Bearer eyJ")


@responses.activate
def test_a_refused_password_says_which_variables_to_check():
    bad = answer_of("token_bad_password")
    responses.post(f"{ROOT_URL}/api.php/token", json=bad["body"], status=bad["status"])
    with pytest.raises(HostError, match="invalid_grant: The user credentials were incorrect"):
        hl_client()._me()
    assert "BPSM_GLPI_USERNAME/BPSM_GLPI_PASSWORD" in hl_error_text(
        responses.calls[0].response  # type: ignore[union-attr]
    )


@responses.activate
def test_apply_reads_assigns_sets_the_category_and_writes_one_private_followup():
    add_token(responses.mock)
    responses.get(f"{V2}/Assistance/Ticket/42", json=TICKET)
    responses.get(f"{V2}/session", json={"user_id": 7})
    responses.get(
        f"{V2}/Administration/Group",
        json=[{"id": 11, "name": "BPSM Reactive", "completename": "BPSM Reactive"}],
        headers={"Content-Range": "0-0/1"},
    )
    responses.get(
        f"{V2}/Dropdowns/ITILCategory",
        json=[{"id": 21, "name": "Printer", "completename": "Printer"}],
        headers={"Content-Range": "0-0/1"},
    )
    responses.post(f"{V2}/Assistance/Ticket/42/TeamMember", status=201)
    responses.patch(f"{V2}/Assistance/Ticket/42", json=TICKET)
    responses.get(f"{V2}/Assistance/Ticket/42/Timeline/Followup", json=[])
    created = answer_of("followup_create")
    responses.post(
        f"{V2}/Assistance/Ticket/42/Timeline/Followup",
        json=created["body"],
        status=created["status"],
        headers=created["headers"],
    )
    result = hl_client(categories={"printing": "Printer"}).apply(event(), decision(), "route")
    assert result.outcome == "applied"
    bodies = {
        (c.request.method, c.request.url.split("/v2/")[-1]): c.request.body
        for c in responses.calls
        if c.request.method in ("POST", "PATCH") and "/v2/" in str(c.request.url)
    }
    team = bodies[("POST", "Assistance/Ticket/42/TeamMember")]
    assert json.loads(team) == EXCHANGES["group_assign_team_member"]["request"]["json"]
    category = bodies[("PATCH", "Assistance/Ticket/42")]
    assert json.loads(category) == {"category": 21}
    note = json.loads(bodies[("POST", "Assistance/Ticket/42/Timeline/Followup")])
    assert note["is_private"] is True and "Tags: bpsm, reactive, printing" in note["content"]
    assert "Service Desk" not in str(bodies)  # nothing but what the contract shows


@responses.activate
def test_a_deleted_ticket_is_a_permanent_error():
    add_token(responses.mock)
    gone = answer_of("not_found")
    responses.get(f"{V2}/Assistance/Ticket/42", json=gone["body"], status=gone["status"])
    with pytest.raises(HostError, match="ticket 42 was deleted") as exc:
        hl_client().apply(event(), decision(), "route")
    assert exc.value.permanent


@responses.activate
def test_an_expired_token_is_renewed_once():
    add_token(responses.mock)
    responses.get(
        f"{V2}/session", status=401, json=answer_of("ticket_read_with_userless_token")["body"]
    )
    responses.get(f"{V2}/session", json={"user_id": 7})
    assert hl_client()._me() == 7
    assert [c.request.url.rsplit("/", 1)[-1] for c in responses.calls] == [
        "token",
        "session",
        "token",
        "session",
    ]


def test_team_groups_reads_groups_by_their_form_link_in_order():
    ticket = {
        "team": [
            {"role": "requester", "name": "jdoe", "href": "/front/user.form.php?id=5"},
            {"role": "assigned", "name": "anna", "href": "/front/user.form.php?id=6"},
            {"role": "assigned", "name": "L1", "href": "/front/group.form.php?id=11"},
            {"role": "observer", "name": "L2", "href": "/front/group.form.php?id=12"},
            {"role": "assigned", "name": "L3", "href": "/front/group.form.php?id=13"},
        ]
    }
    assert team_groups(ticket) == [(11, "L1"), (13, "L3")]


# ----- configuration --------------------------------------------------------------------------


def test_hlapi_names_every_missing_credential():
    with pytest.raises(HostError, match="BPSM_GLPI_CLIENT_SECRET, BPSM_GLPI_PASSWORD"):
        connect_hl(
            GlpiSettings(
                name="glpi",
                url=ROOT_URL,
                client_id=SecretStr("x"),
                username=SecretStr("y"),
            ),
            GlpiOptions(api="hlapi"),
        )


def test_hlapi_needs_glpi_11():
    mapping = Mapping(options={"api": "hlapi", "api_version": 10})
    with pytest.raises(OptionsError, match="options.api: hlapi needs GLPI 11 or later"):
        GlpiHost(GlpiSettings(name="glpi"), mapping)


def test_v1_stays_the_default_so_existing_configurations_keep_working():
    mapping = load_mapping(ROOT / "mappings" / "glpi.yaml")
    settings = GlpiSettings(
        name="glpi", url=f"{ROOT_URL}/apirest.php", user_token=SecretStr("user-token")
    )
    assert type(GlpiHost(settings, mapping).client()).__name__ == "GlpiClient"


# ----- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [ROOT_URL, f"{ROOT_URL}/", f"{ROOT_URL}/apirest.php", f"{ROOT_URL}/api.php/v2/"],
)
def test_glpi_root_from_any_documented_url(url):
    assert glpi_root(url) == ROOT_URL


def test_describe_apis_tells_glpi_11_from_12():
    index = {"api_versions": [{"api_version": "1"}, {"api_version": "2", "version": "2.2.0"}]}
    assert hl_api_majors(index) == [2]
    lines, major = describe_apis(True, [2])
    assert major == 11 and "versions 2 (options.api: hlapi" in lines[1]
    assert describe_apis(True, [2, 3])[1] == 12
    assert describe_apis(True, [])[1] is None


def test_url_refusal_hints_per_version():
    assert url_refusal_hints(11, "http://10.0.0.5:8080/hooks/glpi", True) == [PORT_HINT]
    assert url_refusal_hints(12, "http://10.0.0.5:8080/hooks/glpi", True) == [PRIVATE_NETWORK_HINT]
    assert url_refusal_hints(12, "https://bpsm.example/hooks/glpi", False) == []
    assert url_refusal_hints(None, "http://127.0.0.1:8080/h", True) == [
        PRIVATE_NETWORK_HINT,
        PORT_HINT,
    ]


# ----- setup against the fake GLPI 12 ---------------------------------------------------------


def glpi12_host(fake: FakeGLPI, api: str, tmp_path: Path, legacy: bool = True) -> GlpiHost:
    data = {"options": {"api": api, "categories": {"printing": "Printer"}}}
    mapping = Mapping(processes={"reactive": "BPSM Reactive"}, **data)  # type: ignore[arg-type]
    settings: dict[str, Any] = {"name": "glpi", "url": fake.url}
    if legacy:
        settings |= {"app_token": SecretStr("app-token"), "user_token": SecretStr("user-token")}
    if api == "hlapi":
        settings |= {
            "client_id": SecretStr(fake.oauth_client_id),
            "client_secret": SecretStr(fake.oauth_client_secret),
            "username": SecretStr(fake.login),
            "password": SecretStr(fake.password),
        }
    return GlpiHost(GlpiSettings(**settings), mapping)


@pytest.mark.parametrize("api", ["v1", "hlapi"])
def test_setup_on_glpi12_pins_webhooks_to_2_and_warns_about_private_addresses(tmp_path, api):
    with FakeGLPI(version=12) as fake:
        stale = fake.add_webhook("http://old.example/h", "x" * 20, "Ticket", ["new"])[0]
        with fake._lock:  # made by hand on GLPI 12: pinned to the highest major
            fake._tables["Webhook"][stale]["name"] = "bpsm-connector: Ticket new"
        host = glpi12_host(fake, api, tmp_path)
        client = host.client()
        result = client.setup(host.mapping, "http://127.0.0.1:8080/hooks/glpi")
        lines = result.lines
        assert any("high-level API (api.php): versions 2, 3" in line for line in lines)
        assert f"warning: {PRIVATE_NETWORK_HINT}" in lines
        with fake._lock:
            rows = list(fake._tables["Webhook"].values())
        assert sorted(r["pinned_version"] for r in rows) == ["2", "2"]
        assert all(r["url"].endswith("&api=2") for r in rows)
        assert "group created: BPSM Reactive" in lines
        client.close()


def test_hlapi_setup_without_the_legacy_token_prints_the_webhooks_to_make(tmp_path):
    with FakeGLPI(version=11) as fake:
        host = glpi12_host(fake, "hlapi", tmp_path, legacy=False)
        result = host.client().setup(host.mapping, "https://bpsm.example/hooks/glpi")
        text = "\n".join(result.lines)
        assert "the high-level API cannot create them" in text
        assert "https://bpsm.example/hooks/glpi?itemtype=Ticket&api=2 (API version 2" in text
        assert result.webhook_secret is None and result.test_event is None
        assert fake.group_id("BPSM Reactive") and fake.category_id("Printer")
        with fake._lock:
            assert not fake._tables["Webhook"]


def test_glpi12_does_not_deliver_to_a_private_address_unless_allowed():
    with FakeGLPI(version=12) as fake:
        fake.add_webhook("http://127.0.0.1:9/hooks/glpi", "x" * 20, "Ticket", ["new"])
        fake.create_ticket_as_user("Printer", "<p>jams</p>")
        delivery = fake.wait_for_deliveries(1)[0]
        assert delivery.status is None and "private network" in str(delivery.error)
