"""The fake Zammad follows connector/hosts/zammad/fixtures/contract/zammad.md."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.fakes.zammad import (
    CONTRACT_DIR,
    FIXTURE_DIR,
    FIXTURE_SIGNATURE_TOKEN,
    FakeZammad,
    contract_example_fake,
    generate_fixtures,
    headers_file_name,
    rails_json,
    sign_body,
)

CONTRACT_BODY = CONTRACT_DIR / "webhook-ticket-create.json"
CONTRACT_HEADERS = CONTRACT_DIR / "webhook-ticket-create.headers.txt"


def verify(raw_body: bytes, signature_header: str, token: str = FIXTURE_SIGNATURE_TOKEN) -> bool:
    expected = "sha1=" + hmac.new(token.encode(), raw_body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(expected, signature_header)


# --------------------------------------------------------------------------- helpers


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny webhook endpoint: records requests, answers with queued status codes."""

    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/zammad/webhook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.received.append(Received(dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else 202
        return Response("accepted", status=status)(environ, start_response)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeZammad]:
    with FakeZammad(retry_wait=0.02) as zammad:
        yield zammad


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def api(fake: FakeZammad) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token token={fake.token}"
    return session


def url(fake: FakeZammad, path: str) -> str:
    return fake.base_url + path


# --------------------------------------------------------------------------- contract example


def test_contract_example_signature_verifies() -> None:
    raw = CONTRACT_BODY.read_bytes()
    headers = dict(
        line.split(": ", 1)
        for line in CONTRACT_HEADERS.read_text().splitlines()
        if ": " in line and not line.startswith("#")
    )
    assert verify(raw, headers["X-Hub-Signature"])
    assert not verify(raw + b" ", headers["X-Hub-Signature"])
    # re-serialising breaks the signature: verify over raw bytes only
    assert not verify(json.dumps(json.loads(raw)).encode(), headers["X-Hub-Signature"])
    assert sign_body(raw, FIXTURE_SIGNATURE_TOKEN) == headers["X-Hub-Signature"]


def test_serializer_reproduces_contract_example_bytes() -> None:
    fake, ticket_id = contract_example_fake()
    body = fake.webhook_payload(ticket_id, 104)
    assert body == CONTRACT_BODY.read_bytes()
    payload = json.loads(body)
    assert list(payload) == ["ticket", "article"]
    assert list(payload["article"])[-1] == "accounted_time"
    assert list(payload["article"])[:-1] == sorted(list(payload["article"])[:-1])
    assert list(payload["ticket"]) == sorted(payload["ticket"])
    assert "password" not in payload["ticket"]["customer"]
    assert "preferences" not in payload["ticket"]["owner"]


def test_rails_json_escaping() -> None:
    value = {"b": "<a href='x'>&</a>", "a": "æøå \u2028\u2029 \n\t\x01 / 🙏", "n": None}
    assert (
        rails_json(value)
        == (
            '{"b":"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e",'
            '"a":"æøå \\u2028\\u2029 \\n\\t\\u0001 / 🙏","n":null}'
        ).encode()
    )


def test_fixtures_are_generated_from_the_fake_and_signed() -> None:
    generated = generate_fixtures()
    assert generated["ticket_created.json"][0] == CONTRACT_BODY.read_bytes()
    # v7_*: Zammad 7's Bearer/PUT deliveries, built by hand from its admin docs (the fake
    # sends Zammad 6's signed POSTs); tests/hosts/test_zammad.py checks them.
    on_disk = {
        p.name
        for p in FIXTURE_DIR.iterdir()
        if p.is_file()
        and not p.name.endswith((".headers.json", ".request.json"))
        and not p.name.startswith("v7_")
    }
    assert on_disk == set(generated) | {"README.md"}
    for name, (body, headers) in generated.items():
        assert (FIXTURE_DIR / name).read_bytes() == body, f"{name} is stale; regenerate it"
        stored = json.loads((FIXTURE_DIR / headers_file_name(name)).read_text())
        assert stored == headers
        assert verify(body, stored["X-Hub-Signature"]), name
        assert stored["Content-Type"] == "application/json; charset=utf-8"
        assert stored["User-Agent"] == "Zammad User Agent"


def test_fixture_shapes() -> None:
    def load(name: str) -> Any:
        return json.loads((FIXTURE_DIR / name).read_bytes())

    note = load("agent_update_by_connector.json")
    assert note["article"]["internal"] is True
    assert note["article"]["created_by_id"] == note["ticket"]["updated_by_id"] == 4
    assert note["article"]["created_by"]["login"] == "bpsm-connector"
    assert load("ticket_update_no_article.json")["article"] == {}
    assert load("customer_reply.json")["article"]["sender"] == "Customer"
    assert load("ticket_created_norwegian.json")["ticket"]["organization"] == {}
    assert "Skriveren" in load("ticket_created_norwegian.json")["ticket"]["title"]
    assert b"\\u003ctable" in (FIXTURE_DIR / "ticket_created_html_body.json").read_bytes()
    assert "ticket" not in load("malformed_missing_ticket.json")
    assert load("malformed_ticket_id_string.json")["ticket"]["id"] == "81"
    assert "ticket" not in load("unknown_payload.json")
    with pytest.raises(ValueError):
        json.loads((FIXTURE_DIR / "malformed_not_json.txt").read_bytes())


# --------------------------------------------------------------------------- auth & errors


def test_auth_token_bearer_and_errors(fake: FakeZammad) -> None:
    me = url(fake, "/api/v1/users/me")
    ok = requests.get(me, headers={"Authorization": f"Token token={fake.token}"})
    assert ok.status_code == 200
    assert ok.json()["login"] == "bpsm-connector" and "password" not in ok.json()
    assert requests.get(me, headers={"Authorization": f'Token token="{fake.token}"'}).ok
    assert requests.get(me, headers={"Authorization": f"Bearer {fake.token}"}).ok

    bad = requests.get(me, headers={"Authorization": "Token token=nope"})
    assert bad.status_code == 401
    assert bad.json() == {
        "error": "Can't find User for Token",
        "error_human": "Can't find User for Token",
    }
    assert bad.headers["Content-Type"] == "application/json; charset=utf-8"
    assert bad.headers["X-Failure"] == "Can't find User for Token"
    bearer = requests.get(me, headers={"Authorization": "Bearer nope"})
    assert bearer.status_code == 401  # Doorkeeper gets the last word on Bearer
    assert bearer.json()["error"] == "The provided token is invalid."
    missing = requests.get(me)
    assert missing.status_code == 403
    assert missing.json()["error"] == "Authentication required"


def test_token_expired_and_missing_permission(fake: FakeZammad) -> None:
    fake.add_token("old", "bpsm-connector", expires_at=date(2020, 1, 1))
    fake.add_token("weak", "bpsm-connector", permissions=["ticket.agent"])
    r = requests.get(url(fake, "/api/v1/groups"), headers={"Authorization": "Token token=old"})
    assert r.status_code == 401 and r.json()["error"] == "Not authorized (token expired)!"
    r = requests.get(url(fake, "/api/v1/webhooks"), headers={"Authorization": "Token token=weak"})
    assert r.status_code == 403
    assert r.json() == {"error": "Not authorized", "error_human": "Not authorized"}


def test_unknown_route_and_ticket(fake: FakeZammad, api: requests.Session) -> None:
    r = api.get(url(fake, "/api/v1/nope"))
    assert r.status_code == 404 and r.json()["error"] == "No route matches [GET] /api/v1/nope"
    r = api.get(url(fake, "/api/v1/tickets/999"))
    assert r.status_code == 404
    assert r.json()["error_human"] == "Couldn't find Ticket with 'id'=999"


def test_422_cases(fake: FakeZammad, api: requests.Session) -> None:
    tid = fake.create_ticket_as_customer("Printer", "It is broken")
    r = api.put(url(fake, f"/api/v1/tickets/{tid}"), json={"group": "x"})
    assert r.status_code == 422
    assert r.json() == {
        "error": "No lookup value found for 'group': \"x\"",
        "error_human": "No lookup value found for 'group': \"x\"",
    }
    assert fake.ticket(tid)["group"] == "Users"

    r = api.post(url(fake, "/api/v1/tickets"), json={"group": "Users", "customer_id": 8})
    assert r.status_code == 422 and r.json()["error_human"] == "Title can't be blank"
    r = api.post(url(fake, "/api/v1/tickets"), json={"title": "x", "customer_id": 8})
    assert r.status_code == 422 and r.json()["error_human"] == "Group can't be blank"

    r = api.post(url(fake, "/api/v1/ticket_articles"), json={"ticket_id": tid, "internal": True})
    assert r.status_code == 422
    assert r.json()["error"] == "Need at least an 'article body' field."
    r = api.post(
        url(fake, "/api/v1/ticket_articles"), json={"ticket_id": tid, "body": "x", "type": "pigeon"}
    )
    assert r.status_code == 422 and "No lookup value found for 'type'" in r.json()["error"]

    r = api.post(url(fake, "/api/v1/groups"), json={"name": "Users"})
    assert r.status_code == 422 and r.json()["error_human"] == "Object already exists!"

    r = api.post(url(fake, "/api/v1/webhooks"), json={"name": "w", "endpoint": "ftp://x"})
    assert r.status_code == 422 and r.json()["error_human"].startswith("Endpoint The provided")

    trigger = {
        "name": "Connector: Ticket Created",
        "condition": {"ticket.action": {"operator": "is", "value": "create"}},
        "perform": {"notification.webhook": {"webhook_id": 1}},
    }
    assert api.post(url(fake, "/api/v1/triggers"), json=trigger).status_code == 201
    trigger["name"] = "connector: ticket CREATED"
    r = api.post(url(fake, "/api/v1/triggers"), json=trigger)
    assert r.status_code == 422 and r.json()["error_human"] == "Name has already been taken"
    r = api.post(url(fake, "/api/v1/triggers"), json={**trigger, "name": "y", "activator": "x"})
    assert r.status_code == 422


def test_pending_time_cleared_and_article_error_rolls_back(
    fake: FakeZammad, api: requests.Session
) -> None:
    tid = fake.create_ticket_as_customer("Printer", "broken")
    r = api.put(
        url(fake, f"/api/v1/tickets/{tid}"),
        json={"state": "pending reminder", "pending_time": "2025-07-01T08:00:00Z"},
    )
    assert r.json()["pending_time"] == "2025-07-01T08:00:00.000Z"
    r = api.put(url(fake, f"/api/v1/tickets/{tid}"), json={"state": "open"})
    assert r.json()["pending_time"] is None and r.json()["state_id"] == 2
    r = api.put(
        url(fake, f"/api/v1/tickets/{tid}"),
        json={"group_id": 1, "priority": "3 high", "article": {}},
    )
    assert r.status_code == 200 and r.json()["priority_id"] == 3
    r = api.put(
        url(fake, f"/api/v1/tickets/{tid}"),
        json={"priority": "1 low", "article": {"internal": True}},
    )
    assert r.status_code == 422 and fake.ticket(tid)["priority"] == "3 high"


# --------------------------------------------------------------------------- REST behaviour


def test_groups_tickets_articles_search(fake: FakeZammad, api: requests.Session) -> None:
    r = api.post(
        url(fake, "/api/v1/groups"), json={"name": "2nd Level", "active": True, "note": ""}
    )
    assert r.status_code == 201 and r.json()["name"] == "2nd Level"
    names = [g["name"] for g in api.get(url(fake, "/api/v1/groups")).json()]
    assert names == ["Users", "2nd Level"]

    r = api.post(
        url(fake, "/api/v1/tickets"),
        json={
            "title": "VPN down",
            "group": "Users",
            "customer": "emily@customer.example",
            "article": {"subject": "VPN", "body": "no tunnel", "type": "note", "internal": False},
        },
    )
    assert r.status_code == 201
    created = r.json()
    assert isinstance(created["number"], str) and created["group_id"] == 1
    assert len(created["article_ids"]) == 1
    tid = created["id"]

    r = api.put(
        url(fake, f"/api/v1/tickets/{tid}"),
        json={
            "group": "2nd Level",
            "number": "999",
            "article": {"body": "<p>Moved</p>", "internal": True, "content_type": "text/html"},
        },
    )
    assert r.status_code == 200
    assert r.json()["group_id"] == 2 and r.json()["number"] == created["number"]
    expanded = api.get(url(fake, f"/api/v1/tickets/{tid}?expand=true")).json()
    assert expanded["group"] == "2nd Level" and expanded["state"] == "new"
    assert expanded["customer"] == "emily@customer.example" and expanded["owner"] == "-"
    assert expanded["updated_by_id"] == fake.connector_user_id

    r = api.post(
        url(fake, "/api/v1/ticket_articles"),
        json={
            "ticket_id": tid,
            "body": "<p>Moved by connector</p>",
            "content_type": "text/html",
            "internal": True,
            "subject": "connector",
        },
    )
    assert r.status_code == 201
    article = r.json()
    assert (article["type"], article["sender"], article["internal"]) == ("note", "Agent", True)
    assert article["created_by"] == "bpsm-connector"
    by_ticket = api.get(url(fake, f"/api/v1/ticket_articles/by_ticket/{tid}")).json()
    assert [a["id"] for a in by_ticket] == [a["id"] for a in fake.articles(tid)]
    assert len(by_ticket) == 3

    found = api.get(
        url(fake, "/api/v1/tickets/search"),
        params={"query": f"number:{created['number']}", "limit": "50"},
    )
    assert found.json() == {"tickets": [tid], "tickets_count": 1, "assets": found.json()["assets"]}
    found = api.get(
        url(fake, "/api/v1/tickets/search"),
        params={
            "query": 'group.name:"2nd Level" AND created_at:>2020-01-01T00:00:00Z',
            "expand": "true",
        },
    )
    assert [t["id"] for t in found.json()] == [tid] and found.json()[0]["group"] == "2nd Level"
    found = api.get(url(fake, "/api/v1/tickets/search"), params={"query": "created_at:>now+1d"})
    assert found.json()["tickets"] == []


def test_tags_are_idempotent(fake: FakeZammad, api: requests.Session) -> None:
    tid = fake.create_ticket_as_customer("Printer", "broken")
    body = {"object": "Ticket", "o_id": tid, "item": "escalated"}
    for _ in range(2):
        r = api.post(url(fake, "/api/v1/tags/add"), json=body)
        assert r.status_code == 201 and r.json() is True
    r = api.get(url(fake, "/api/v1/tags"), params={"object": "Ticket", "o_id": str(tid)})
    assert r.json() == {"tags": ["escalated"]}
    assert api.delete(url(fake, "/api/v1/tags/remove"), json=body).json() is True
    assert fake.tags(tid) == []


# --------------------------------------------------------------------------- triggers & webhooks


def setup_via_api(
    api: requests.Session,
    fake: FakeZammad,
    endpoint: str,
    condition: dict[str, Any],
    token: str | None = FIXTURE_SIGNATURE_TOKEN,
    name: str = "connector: ticket created",
) -> None:
    r = api.post(
        url(fake, "/api/v1/webhooks"),
        json={
            "name": "connector",
            "endpoint": endpoint,
            "signature_token": token,
            "ssl_verify": True,
            "active": True,
            "customized_payload": False,
        },
    )
    assert r.status_code == 201
    r = api.post(
        url(fake, "/api/v1/triggers"),
        json={
            "name": name,
            "active": True,
            "activator": "action",
            "execution_condition_mode": "selective",
            "condition": condition,
            "perform": {"notification.webhook": {"webhook_id": r.json()["id"]}},
        },
    )
    assert r.status_code == 201


def test_trigger_fires_signed_webhook_on_create(
    fake: FakeZammad, api: requests.Session, receiver: Receiver
) -> None:
    setup_via_api(api, fake, receiver.url, {"ticket.action": {"operator": "is", "value": "create"}})
    tid = fake.create_ticket_as_customer(
        "Invoice <wrong> & late", "<p>Hi</p>", content_type="text/html"
    )
    (delivery,) = fake.wait_for_deliveries(1)
    fake.wait_for_jobs()
    assert delivery.status == 202 and delivery.attempt == 1
    (got,) = receiver.received
    assert got.body == delivery.body == fake.webhook_payload(tid, fake.articles(tid)[0]["id"])
    assert verify(got.body, got.headers["X-Hub-Signature"])
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    assert got.headers["User-Agent"] == "Zammad User Agent"
    assert got.headers["X-Zammad-Trigger"] == "connector: ticket created"
    assert got.headers["X-Zammad-Delivery"] == delivery.delivery_id
    assert b"\\u003cwrong\\u003e \\u0026 late" in got.body
    payload = json.loads(got.body)
    assert payload["ticket"]["id"] == tid and payload["ticket"]["group"]["name"] == "Users"
    assert payload["article"]["sender"] == "Customer"

    # the connector's own update is not a create: nothing more is sent
    api.put(url(fake, f"/api/v1/tickets/{tid}"), json={"group": "Users", "priority": "3 high"})
    fake.wait_for_jobs()
    assert len(fake.deliveries) == 1


def test_no_signature_header_without_token(
    fake: FakeZammad, api: requests.Session, receiver: Receiver
) -> None:
    setup_via_api(
        api,
        fake,
        receiver.url,
        {"ticket.action": {"operator": "is", "value": "create"}},
        token=None,
    )
    fake.create_ticket_as_customer("x", "y")
    fake.wait_for_deliveries(1)
    assert "X-Hub-Signature" not in receiver.received[0].headers


def test_updated_by_condition_suppresses_connector_updates(
    fake: FakeZammad, api: requests.Session, receiver: Receiver
) -> None:
    connector = str(fake.connector_user_id)
    setup_via_api(
        api,
        fake,
        receiver.url,
        {
            "article.action": {"operator": "is", "value": "create"},
            "ticket.updated_by_id": {
                "operator": "is not",
                "pre_condition": "specific",
                "value": [connector],
            },
        },
        name="connector: article created",
    )
    tid = fake.create_ticket_as_customer("Printer", "broken")
    fake.wait_for_deliveries(1)
    r = api.post(
        url(fake, "/api/v1/ticket_articles"),
        json={"ticket_id": tid, "body": "note", "internal": True},
    )
    assert r.status_code == 201
    fake.wait_for_jobs()
    assert len(fake.deliveries) == 1  # own note suppressed

    fake.add_customer_reply(tid, "any news?")
    deliveries = fake.wait_for_deliveries(2)
    reply = deliveries[1].json()
    assert reply["article"]["body"] == "any news?" and reply["ticket"]["updated_by_id"] == 8


def test_article_internal_condition_and_agent_move(fake: FakeZammad, receiver: Receiver) -> None:
    fake.configure_webhook(
        receiver.url,
        trigger_name="public articles",
        condition={
            "article.action": {"operator": "is", "value": "create"},
            "article.internal": {"operator": "is", "value": "false"},
            "article.sender_id": {"operator": "is not", "value": ["1"]},
        },
    )
    fake.configure_webhook(
        receiver.url,
        name="moves",
        trigger_name="group changed",
        condition={"ticket.group_id": {"operator": "has changed"}},
    )
    tid = fake.create_ticket_as_customer("Printer", "broken")
    fake.add_group("2nd Level")
    fake.move_ticket_as_agent(tid, "2nd Level")
    deliveries = fake.wait_for_deliveries(2)
    fake.wait_for_jobs()
    by_trigger = {d.trigger: d.json() for d in deliveries}
    assert set(by_trigger) == {"public articles", "group changed"}
    moved = by_trigger["group changed"]
    assert moved["article"] == {}
    assert moved["ticket"]["updated_by"]["login"] == "anna.agent@example.com"
    assert fake.ticket(tid)["group"] == "2nd Level"


def test_webhook_retries_reuse_delivery_id(fake: FakeZammad, receiver: Receiver) -> None:
    receiver.statuses = [500, 302]
    fake.configure_webhook(receiver.url)
    fake.create_ticket_as_customer("x", "y")
    deliveries = fake.wait_for_deliveries(3)
    assert [d.status for d in deliveries] == [500, 302, 202]
    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert len({d.delivery_id for d in deliveries}) == 1
    assert len({r.headers["X-Zammad-Delivery"] for r in receiver.received}) == 1


def test_webhook_gives_up_after_five_attempts(receiver: Receiver) -> None:
    receiver.statuses = [503] * 10
    with FakeZammad(retry_wait=0.01) as fake:
        fake.configure_webhook(receiver.url)
        fake.create_ticket_as_customer("x", "y")
        fake.wait_for_jobs()
        assert [d.status for d in fake.deliveries] == [503] * 5


# --------------------------------------------------------------------------- failure injection


def test_fail_next(fake: FakeZammad, api: requests.Session) -> None:
    tid = fake.create_ticket_as_customer("x", "y")
    fake.fail_next(2)
    for _ in range(2):
        r = api.put(url(fake, f"/api/v1/tickets/{tid}"), json={"priority": "3 high"})
        assert r.status_code == 503
    assert fake.ticket(tid)["priority"] == "2 normal"
    fake.fail_next(1, status=429, retry_after=2)
    r = api.get(url(fake, f"/api/v1/tickets/{tid}"))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert api.get(url(fake, f"/api/v1/tickets/{tid}")).status_code == 200
    assert [c.status for c in fake.api_calls][-4:] == [503, 503, 429, 200]


def test_lose_response_next_applies_the_write(fake: FakeZammad, api: requests.Session) -> None:
    tid = fake.create_ticket_as_customer("x", "y")
    fake.lose_response_next(1)
    assert api.get(url(fake, f"/api/v1/tickets/{tid}")).status_code == 200  # reads pass
    r = api.post(
        url(fake, "/api/v1/tags/add"), json={"object": "Ticket", "o_id": tid, "item": "billing"}
    )
    assert r.status_code == 502
    assert fake.tags(tid) == ["billing"]
    r = api.post(
        url(fake, "/api/v1/tags/add"), json={"object": "Ticket", "o_id": tid, "item": "billing"}
    )
    assert r.status_code == 201 and fake.tags(tid) == ["billing"]


def test_set_down_refuses_connections_then_comes_back(
    fake: FakeZammad, api: requests.Session
) -> None:
    base = fake.base_url
    assert api.get(url(fake, "/api/v1/users/me")).ok
    fake.set_down(True)
    with pytest.raises(requests.ConnectionError):
        api.get(base + "/api/v1/users/me", timeout=2)
    fake.set_down(False)
    assert fake.base_url == base
    assert api.get(base + "/api/v1/users/me").ok


def test_context_manager_stops(receiver: Receiver) -> None:
    with FakeZammad() as zammad:
        base = zammad.start() if zammad.is_down else zammad.base_url
        assert requests.get(
            base + "/api/v1/users/me", headers={"Authorization": "Token token=test-token"}
        ).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "/api/v1/users/me", timeout=2)


def test_fixture_readme_lists_every_file() -> None:
    readme = Path(FIXTURE_DIR / "README.md").read_text()
    for path in FIXTURE_DIR.iterdir():
        if path.name != "README.md" and not path.name.endswith(".headers.json"):
            assert f"`{path.name}`" in readme, path.name  # .request.json too
