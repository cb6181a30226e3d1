"""The fake GLPI follows connector/hosts/glpi/fixtures/contract/glpi.md: wire formats,
errors, webhooks, failures."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.fakes.glpi import (
    FakeGLPI,
    cra_expected_response,
    cra_token,
    glpi_signature,
    php_json_encode,
    verify_glpi_signature,
)

FIXTURES = Path(__file__).resolve().parents[2] / "connector" / "hosts" / "glpi" / "fixtures"
CONTRACT = FIXTURES / "contract" / "webhook_ticket_update.json"
# From the contract's signed example (webhook_ticket_update.json), so this file stands alone.
CONTRACT_SECRET = "s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr"
CONTRACT_HEADERS = {
    "X-GLPI-signature": "2ec2e17b540ea8d2e05f340c4c6003bc1e6268eba67c6e09185a07d41710ab25",
    "X-GLPI-timestamp": "1748848811",
}
SECRET = "glpi-secret"
TZ = timezone(timedelta(hours=2))
T0 = datetime(2025, 6, 2, 9, 15, tzinfo=TZ).timestamp()
HOOK_FIXTURES = sorted(
    p.name.removesuffix(".headers.json") for p in FIXTURES.glob("*.headers.json")
)


# ------------------------------------------------------------------------------------ helpers


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny webhook receiver: records requests, answers scripted statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    cra_secret: str | None = None
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}/hooks/glpi"

    def posts(self) -> list[Received]:
        return [r for r in self.received if r.method != "GET" and r.path != "/oauth"]


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Received:
            length = int(self.headers.get("Content-Length") or 0)
            parts = urlsplit(self.path)
            item = Received(
                self.command,
                parts.path,
                parse_qs(parts.query),
                dict(self.headers.items()),
                self.rfile.read(length),
            )
            receiver.received.append(item)
            return item

        def _answer(self, status: int, body: bytes = b"ok") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            item = self._record()
            token = item.query.get("crc_token", [""])[0]
            secret = receiver.cra_secret or "wrong"
            self._answer(200, cra_expected_response(secret, token).encode())

        def do_POST(self) -> None:
            item = self._record()
            if item.path.endswith("/oauth"):
                self._answer(200, b'{"access_token": "tok-1", "token_type": "Bearer"}')
                return
            self._answer(receiver.statuses.pop(0) if receiver.statuses else 200)

        do_PUT = do_PATCH = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(rec))
    thread = threading.Thread(target=rec.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeGLPI]:
    with FakeGLPI(version=11) as instance:
        yield instance
        assert not instance.internal_errors


@pytest.fixture
def fake10() -> Iterator[FakeGLPI]:
    with FakeGLPI(version=10) as instance:
        yield instance
        assert not instance.internal_errors


def session(fake: FakeGLPI) -> requests.Session:
    s = requests.Session()
    s.headers["App-Token"] = "app-token"
    r = s.get(f"{fake.url}/initSession", headers={"Authorization": "user_token user-token"})
    assert r.status_code == 200, r.text
    s.headers["Session-Token"] = r.json()["session_token"]
    return s


def doc(fake: FakeGLPI, code: str) -> str:
    return f"; view documentation in your browser at {fake.url}/#{code}"


# ------------------------------------------------------------------ serializer and signatures


def test_contract_example_is_reproduced_byte_for_byte_and_verifies() -> None:
    raw = (FIXTURES / "v11_ticket_update.json").read_bytes()
    assert php_json_encode(json.loads(raw), pretty=True).encode() == raw
    assert verify_glpi_signature(raw, CONTRACT_HEADERS, CONTRACT_SECRET)
    assert not verify_glpi_signature(raw + b" ", CONTRACT_HEADERS, CONTRACT_SECRET)
    lowered = {k.lower(): v for k, v in CONTRACT_HEADERS.items()}
    assert verify_glpi_signature(raw.decode(), lowered, CONTRACT_SECRET)


def test_fixture_is_the_contract_body_and_cra_helpers_match() -> None:
    contract = json.loads(CONTRACT.read_text())
    body_raw = contract["request"]["body_raw"]
    assert (FIXTURES / "v11_ticket_update.json").read_text() == body_raw
    assert php_json_encode(contract["request"]["body_parsed"], pretty=True) == body_raw
    secret = contract["webhook_config"]["secret"]
    assert secret == CONTRACT_SECRET
    assert verify_glpi_signature(body_raw, contract["request"]["headers"], secret)
    cra = contract["cra_challenge"]
    assert cra_token(secret) == cra["crc_token"]
    assert cra_expected_response(secret, cra["crc_token"]) == cra["expected_response_body"]


def test_php_json_encode_matches_php_defaults() -> None:
    value = {"a/b": 'é😀\u2028\x7f\x01\t"\\', "n": [1, 2.5, 1e25, True, None], "e": [], "o": {}}
    assert php_json_encode(value) == (
        '{"a\\/b":"\\u00e9\\ud83d\\ude00\\u2028\x7f\\u0001\\t\\"\\\\",'
        '"n":[1,2.5,1.0e+25,true,null],"e":[],"o":{}}'
    )
    assert php_json_encode({"x": "é/\u2028"}, unescaped_slashes=True, unescaped_unicode=True) == (
        '{"x":"é/\\u2028"}'
    )
    assert php_json_encode({"a": [1], "b": {}}, pretty=True) == (
        '{\n    "a": [\n        1\n    ],\n    "b": {}\n}'
    )


@pytest.mark.parametrize("name", HOOK_FIXTURES)
def test_webhook_fixtures_are_signed_with_glpi_secret_and_php_encoded(name: str) -> None:
    headers = json.loads((FIXTURES / f"{name}.headers.json").read_text())
    assert set(headers) == {"X-GLPI-signature", "X-GLPI-timestamp"}
    body_path = next(
        p
        for p in FIXTURES.glob(f"{name}.*")
        if not p.name.endswith((".headers.json", ".request.json"))
    )
    raw = body_path.read_bytes()
    assert verify_glpi_signature(raw, headers, SECRET)
    assert headers["X-GLPI-signature"] == glpi_signature(raw, headers["X-GLPI-timestamp"], SECRET)
    assert raw.isascii()  # non-ASCII is always \uXXXX-escaped
    if body_path.suffix == ".json":
        assert php_json_encode(json.loads(raw), pretty=True).encode() == raw
    else:
        with pytest.raises(ValueError):
            json.loads(raw)


def test_fixture_payload_shapes() -> None:
    def load(name: str) -> Any:
        return json.loads((FIXTURES / f"{name}.json").read_bytes())

    new = load("v11_ticket_new")
    assert list(new) == ["item", "event"] and new["event"] == "new"
    assert [m["role"] for m in new["item"]["team"]] == ["requester"]
    followup = load("v11_followup_new")
    assert list(followup) == ["item", "event", "parent_item"]
    assert followup["item"]["items_id"] == followup["parent_item"]["id"]
    own = load("v11_followup_by_connector")
    assert "[bpsm-connector]" in own["item"]["content"] and own["item"]["is_private"] is True
    assert "\\u00e5" in (FIXTURES / "v11_ticket_new_norwegian.json").read_text()
    assert "item" not in load("malformed_no_item")
    assert not isinstance(load("malformed_bad_event")["event"], str)
    encoded = load("v10_ticket_html_encoded")["content"]
    assert encoded.startswith("&lt;p&gt;")
    page1 = json.loads((FIXTURES / "v10_search_ticket_page1.meta.json").read_text())
    assert page1["status"] == 206 and page1["headers"]["Content-Range"] == "0-1/3"


# ------------------------------------------------------------------------------- sessions


def test_init_session_answers_a_token(fake: FakeGLPI) -> None:
    r = requests.get(
        f"{fake.url}/initSession",
        headers={"App-Token": "app-token", "Authorization": "user_token user-token"},
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert len(r.json()["session_token"]) == 40
    full = requests.get(
        f"{fake.url}/initSession",
        params={"get_full_session": "true"},
        headers={"App-Token": "app-token", "Authorization": "user_token user-token"},
    ).json()
    assert full["session"]["glpiID"] == 2


@pytest.mark.parametrize(
    ("headers", "status", "code", "with_doc"),
    [
        ({"App-Token": "app-token"}, 400, "ERROR_LOGIN_PARAMETERS_MISSING", True),
        (
            {"App-Token": "app-token", "Authorization": "user_token nope"},
            401,
            "ERROR_GLPI_LOGIN_USER_TOKEN",
            False,
        ),
        (
            {"App-Token": "wrong", "Authorization": "user_token user-token"},
            400,
            "ERROR_WRONG_APP_TOKEN_PARAMETER",
            True,
        ),
        (
            {"Authorization": "user_token user-token"},
            400,
            "ERROR_APP_TOKEN_PARAMETERS_MISSING",
            True,
        ),
        (
            {"App-Token": "app-token", "Authorization": "Basic Z2xwaTpnbHBp"},
            400,
            "ERROR_LOGIN_WITH_CREDENTIALS_DISABLED",
            False,
        ),
    ],
)
def test_init_session_errors(
    fake: FakeGLPI, headers: dict[str, str], status: int, code: str, with_doc: bool
) -> None:
    r = requests.get(f"{fake.url}/initSession", headers=headers)
    assert r.status_code == status
    body = r.json()
    assert body[0] == code and len(body) == 2
    assert body[1].endswith(doc(fake, code)) is with_doc


def test_basic_auth_and_query_tokens() -> None:
    with FakeGLPI(allow_basic_auth=True) as fake:
        r = requests.get(
            f"{fake.url}/initSession",
            headers={"App-Token": "app-token", "Authorization": "Basic Z2xwaTpnbHBp"},
        )
        assert r.status_code == 200
        bad = requests.get(
            f"{fake.url}/initSession", auth=("glpi", "x"), headers={"App-Token": "app-token"}
        )
        assert (bad.status_code, bad.json()[0]) == (401, "ERROR_GLPI_LOGIN")
        token = r.json()["session_token"]
        r = requests.get(
            f"{fake.url}/Group", params={"app_token": "app-token", "session_token": token}
        )
        assert r.status_code == 200


def test_session_token_missing_invalid_expired_and_killed(fake: FakeGLPI) -> None:
    r = requests.get(f"{fake.url}/Ticket/1", headers={"App-Token": "app-token"})
    assert r.status_code == 400
    assert r.json() == [
        "ERROR_SESSION_TOKEN_MISSING",
        "parameter session_token is missing or empty" + doc(fake, "ERROR_SESSION_TOKEN_MISSING"),
    ]
    r = requests.get(f"{fake.url}/Group", headers={"App-Token": "app-token", "Session-Token": "x"})
    assert (r.status_code, r.json()) == (
        401,
        ["ERROR_SESSION_TOKEN_INVALID", "session_token seems invalid"],
    )

    s = session(fake)
    fake.expire_sessions()
    assert s.get(f"{fake.url}/Group").status_code == 401
    s = session(fake)  # re-init works
    assert s.get(f"{fake.url}/Group").status_code == 200
    assert s.get(f"{fake.url}/killSession").json() is True
    assert s.get(f"{fake.url}/Group").json()[0] == "ERROR_SESSION_TOKEN_INVALID"


def test_session_expires_after_ttl_of_inactivity() -> None:
    with FakeGLPI(session_ttl=60) as fake:
        s = session(fake)
        fake.advance_time(50)
        assert s.get(f"{fake.url}/Group").status_code == 200  # use refreshes the session
        fake.advance_time(50)
        assert s.get(f"{fake.url}/Group").status_code == 200
        fake.advance_time(61)
        r = s.get(f"{fake.url}/Group")
        assert (r.status_code, r.json()[0]) == (401, "ERROR_SESSION_TOKEN_INVALID")
        assert session(fake).get(f"{fake.url}/Group").status_code == 200


def test_get_with_body_and_bad_json_are_rejected(fake: FakeGLPI) -> None:
    s = session(fake)
    r = s.get(f"{fake.url}/Group", data=b'{"a":1}', headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_JSON_PAYLOAD_FORBIDDEN")
    r = s.put(f"{fake.url}/Ticket/1", data=b"{nope", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (
        400,
        ["ERROR_JSON_PAYLOAD_INVALID", "JSON payload seems not valid"],
    )
    r = s.get(f"{fake.url}/NoSuchType")
    assert r.json()[0] == "ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM"


# --------------------------------------------------------------------------------- tickets


@pytest.mark.parametrize(
    ("version", "entities", "expected"),
    [
        (11, "named", "<p>A &amp; B</p>"),
        (10, "named", "&lt;p&gt;A &amp;amp; B&lt;/p&gt;"),
        (10, "numeric", "&#60;p&#62;A &#38;amp; B&#60;/p&#62;"),
    ],
)
def test_ticket_content_encoding_by_version(version: int, entities: Any, expected: str) -> None:
    with FakeGLPI(version=version, v10_entities=entities) as fake:
        tid = fake.create_ticket_as_user("Ærlig <talt>", "<p>A &amp; B</p>")
        body = session(fake).get(f"{fake.url}/Ticket/{tid}").json()
        assert body["content"] == expected
        assert body["name"] == (
            "Ærlig <talt>"
            if version == 11
            else "Ærlig &lt;talt&gt;"
            if entities == "named"
            else "Ærlig &#60;talt&#62;"
        )
        assert fake.ticket(tid)["content"] == "<p>A &amp; B</p>"  # stored raw


def test_get_ticket_row_links_and_errors(fake: FakeGLPI) -> None:
    s = session(fake)
    cat = fake.add_category("Printer")
    tid = fake.create_ticket_as_user("Printer", "<p>x</p>", category="Printer")
    r = s.get(f"{fake.url}/Ticket/{tid}")
    assert r.status_code == 200 and r.headers["Last-Modified"].endswith(" GMT")
    body = r.json()
    assert body["itilcategories_id"] == cat and body["status"] == 1 and body["is_deleted"] == 0
    rels = {link["rel"] for link in body["links"]}
    assert {"Entity", "User", "ITILCategory", "ITILFollowup", "Group_Ticket"} <= rels
    expanded = s.get(f"{fake.url}/Ticket/{tid}", params={"expand_dropdowns": "true"}).json()
    assert expanded["itilcategories_id"] == "Printer"

    fake.delete_ticket(tid, purge=False)  # trashed: still readable
    assert s.get(f"{fake.url}/Ticket/{tid}").json()["is_deleted"] == 1
    fake.delete_ticket(tid)
    r = s.get(f"{fake.url}/Ticket/{tid}")
    assert (r.status_code, r.json()) == (404, ["ERROR_ITEM_NOT_FOUND", "Item not found"])

    other = fake.create_ticket_as_user("Other", "<p>y</p>")
    fake.deny("Ticket", "read")
    r = s.get(f"{fake.url}/Ticket/{other}")
    assert (r.status_code, r.json()) == (
        403,
        ["ERROR_RIGHT_MISSING", "You don't have permission to perform this action."],
    )


def test_update_ticket(fake: FakeGLPI) -> None:
    s = session(fake)
    cat = fake.add_category("Printer")
    tid = fake.create_ticket_as_user("Printer", "<p>x</p>", urgency=3, impact=3)
    r = s.put(
        f"{fake.url}/Ticket/{tid}",
        json={
            "input": {
                "itilcategories_id": cat,
                "time_to_resolve": "2025-06-03 09:15:00",
                "urgency": 5,
                "unknown_field": 1,
            }
        },
    )
    assert (r.status_code, r.json()) == (200, [{str(tid): True, "message": ""}])
    row = fake.ticket(tid)
    assert (row["itilcategories_id"], row["time_to_resolve"]) == (cat, "2025-06-03 09:15:00")
    assert row["priority"] == 4  # recomputed from urgency 5 x impact 3
    assert row["users_id_lastupdater"] == 2

    r = s.patch(f"{fake.url}/Ticket/{tid}", json={"nothing": 1})
    assert r.json() == [
        "ERROR_BAD_ARRAY",
        "input parameter must be an array of objects" + doc(fake, "ERROR_BAD_ARRAY"),
    ]
    r = s.put(f"{fake.url}/Ticket/{tid}", json={"input": {"urgency": 9}})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_GLPI_UPDATE")
    r = s.put(f"{fake.url}/Ticket/999999", json={"input": {"urgency": 2}})
    assert (r.status_code, r.json()) == (400, ["ERROR_GLPI_UPDATE", "Item not found"])
    r = s.put(f"{fake.url}/Ticket", json={"input": [{"id": tid, "urgency": 2}, {"id": 999999}]})
    assert r.status_code == 207 and r.json()[0] == "ERROR_GLPI_PARTIAL_UPDATE"


def test_create_ticket_through_api(fake: FakeGLPI) -> None:
    s = session(fake)
    r = s.post(f"{fake.url}/Ticket", json={"input": {"name": "Maintenance", "content": "<p>m</p>"}})
    assert r.status_code == 201
    new_id = r.json()["id"]
    assert r.json() == {"id": new_id, "message": ""}
    assert r.headers["Location"] == f"{fake.url}/Ticket/{new_id}"
    assert fake.ticket(new_id)["users_id_recipient"] == 2
    r = s.post(f"{fake.url}/Ticket", json={"input": {"name": "", "content": ""}})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_GLPI_ADD")


# ---------------------------------------------------------------------------- Group_Ticket


def test_group_ticket_needs_tickets_id_in_input_even_on_nested_url(fake: FakeGLPI) -> None:
    s = session(fake)
    gid = fake.add_group("Service Desk L1")
    tid = fake.create_ticket_as_user("Printer", "<p>x</p>")
    other = fake.create_ticket_as_user("Other", "<p>y</p>")

    r = s.post(
        f"{fake.url}/Ticket/{tid}/Group_Ticket", json={"input": {"groups_id": gid, "type": 2}}
    )
    assert (r.status_code, r.json()) == (
        400,
        ["ERROR_GLPI_ADD", "You don't have permission to perform this action."],
    )
    assert fake.group_tickets(tid) == []

    r = s.post(
        f"{fake.url}/Ticket/{tid}/Group_Ticket",
        json={"input": {"tickets_id": tid, "groups_id": gid, "type": 2}},
    )
    assert r.status_code == 201
    link_id = r.json()["id"]
    assert r.headers["Location"] == f"{fake.url}/Group_Ticket/{link_id}"
    assert fake.group_tickets(tid) == [
        {"id": link_id, "tickets_id": tid, "groups_id": gid, "type": 2}
    ]
    assert fake.ticket(tid)["status"] == 2  # a new ticket becomes "processing (assigned)"
    listed = s.get(f"{fake.url}/Ticket/{tid}/Group_Ticket")
    assert [row["groups_id"] for row in listed.json()] == [gid]
    assert listed.headers["Content-Range"] == "0-0/1"

    # createItems() ignores the parent id of the URL: the input's tickets_id wins.
    r = s.post(
        f"{fake.url}/Ticket/{tid}/Group_Ticket",
        json={"input": {"tickets_id": other, "groups_id": gid, "type": 2}},
    )
    assert r.status_code == 201 and len(fake.group_tickets(other)) == 1

    r = s.post(
        f"{fake.url}/Group_Ticket", json={"input": {"tickets_id": tid, "groups_id": gid, "type": 2}}
    )
    assert (r.status_code, r.json()[0]) == (400, "ERROR_GLPI_ADD")  # same actor twice


def test_denied_group_ticket(fake: FakeGLPI) -> None:
    s = session(fake)
    gid = fake.add_group("L1")
    tid = fake.create_ticket_as_user("Printer", "<p>x</p>")
    fake.deny("Group_Ticket")
    r = s.post(
        f"{fake.url}/Group_Ticket", json={"input": {"tickets_id": tid, "groups_id": gid, "type": 2}}
    )
    assert r.json() == ["ERROR_GLPI_ADD", "You don't have permission to perform this action."]
    assert s.get(f"{fake.url}/Ticket/{tid}/Group_Ticket").status_code == 403
    fake.allow("Group_Ticket")
    assert s.get(f"{fake.url}/Ticket/{tid}/Group_Ticket").status_code == 200


# ---------------------------------------------------------------------------- followups


def test_followups(fake: FakeGLPI) -> None:
    s = session(fake)
    tid = fake.create_ticket_as_user("Printer", "<p>x</p>")
    note = {
        "itemtype": "Ticket",
        "items_id": tid,
        "content": "<p>[bpsm-connector] L1</p>",
        "is_private": 1,
    }
    r = s.post(f"{fake.url}/ITILFollowup", json={"input": note})
    assert r.status_code == 201 and r.headers["Location"].endswith(
        f"/ITILFollowup/{r.json()['id']}"
    )
    r = s.post(f"{fake.url}/Ticket/{tid}/ITILFollowup", json={"input": {**note, "is_private": 0}})
    assert r.status_code == 201
    listed = s.get(f"{fake.url}/Ticket/{tid}/ITILFollowup").json()
    assert [(f["is_private"], f["users_id"]) for f in listed] == [(1, 2), (0, 2)]
    fake.add_followup_as_user(tid, "<p>thanks</p>")
    assert [f["users_id"] for f in fake.followups(tid)] == [2, 2, 5]

    r = s.post(f"{fake.url}/ITILFollowup", json={"input": {**note, "content": ""}})
    assert r.json() == ["ERROR_GLPI_ADD", "You can't add a followup without description"]
    r = s.post(f"{fake.url}/ITILFollowup", json={"input": [note, {**note, "items_id": 999999}]})
    assert r.status_code == 207
    assert r.json()[0] == "ERROR_GLPI_PARTIAL_ADD" and r.json()[1][1]["id"] is False
    r = s.post(f"{fake.url}/ITILFollowup", json={"input": [note, note]})
    assert r.status_code == 201 and len(r.json()) == 2


# ------------------------------------------------------------------------- lists and search


def test_group_list_search_text_and_range(fake: FakeGLPI) -> None:
    s = session(fake)
    for name in ("Service Desk L1", "Service Desk L2", "Network", "Service Desk L3"):
        fake.add_group(name)
    r = s.get(f"{fake.url}/Group", params={"searchText[name]": "service desk", "range": "0-1"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "0-1/3" and r.headers["Accept-Range"] == "Group 990"
    assert [g["name"] for g in r.json()] == ["Service Desk L1", "Service Desk L2"]
    r = s.get(f"{fake.url}/Group", params={"searchText[name]": "^Network$"})
    assert r.status_code == 200 and r.headers["Content-Range"] == "0-0/1"
    r = s.get(f"{fake.url}/Group", params={"searchText[nope]": "x"})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_FIELD_NOT_FOUND")
    r = s.get(f"{fake.url}/Group", params={"range": "10-20"})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_RANGE_EXCEED_TOTAL")

    r = s.post(f"{fake.url}/ITILCategory", json={"input": {"name": "Hardware"}})
    parent = r.json()["id"]
    r = s.post(
        f"{fake.url}/ITILCategory", json={"input": {"name": "Printer", "itilcategories_id": parent}}
    )
    assert r.status_code == 201
    child = s.get(f"{fake.url}/ITILCategory/{r.json()['id']}").json()
    assert child["completename"] == "Hardware > Printer"
    assert s.post(f"{fake.url}/Group", json={"input": {"name": "Ops"}}).status_code == 201


def test_search_paging_on_last_update(fake10: FakeGLPI) -> None:
    fake = fake10
    old = fake.create_ticket_as_user("Old", "<p>o</p>")
    fake.advance_time(3600)
    since = fake.ticket(old)["date_mod"]
    ids = []
    for name in ("A & B", "C", "D"):
        fake.advance_time(60)
        ids.append(fake.create_ticket_as_user(name, "<p>x</p>"))
    s = session(fake)  # after the clock moved past the default session TTL
    query = {
        "criteria[0][field]": "19",
        "criteria[0][searchtype]": "morethan",
        "criteria[0][value]": since,
        "forcedisplay[0]": "2",
        "sort": "19",
        "order": "ASC",
    }
    r = s.get(f"{fake.url}/search/Ticket", params={**query, "range": "0-1"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "0-1/3" and r.headers["Accept-Range"] == "Ticket 990"
    body = r.json()
    assert (body["totalcount"], body["count"], body["content-range"]) == (3, 2, "0-1/3")
    assert (body["sort"], body["order"]) == ([19], ["ASC"])
    assert [row["2"] for row in body["data"]] == ids[:2]
    assert list(body["data"][0]) == ["1", "2", "12", "19", "80"]
    assert body["data"][0]["1"] == "A &amp; B"  # GLPI 10: HTML-encoded
    r = s.get(f"{fake.url}/search/Ticket", params={**query, "range": "2-3"})
    assert r.status_code == 206 and r.headers["Content-Range"] == "2-2/3"  # still partial
    assert [row["2"] for row in r.json()["data"]] == ids[2:]
    r = s.get(f"{fake.url}/search/Ticket", params={**query, "range": "0-49"})
    assert r.status_code == 200 and r.json()["count"] == 3
    r = s.get(f"{fake.url}/search/Ticket", params={**query, "range": "5-9"})
    assert (r.status_code, r.json()[0]) == (400, "ERROR_RANGE_EXCEED_TOTAL")
    # the cursor is strict: "morethan" the newest date_mod finds nothing, and no Content-Range
    newest = fake.ticket(ids[-1])["date_mod"]
    r = s.get(f"{fake.url}/search/Ticket", params={**query, "criteria[0][value]": newest})
    assert r.status_code == 200 and r.json()["totalcount"] == 0
    assert "Content-Range" not in r.headers


def test_search_bad_criteria_and_other_fields(fake: FakeGLPI) -> None:
    s = session(fake)
    gid = fake.add_group("L1")
    a = fake.create_ticket_as_user("A", "<p>a</p>")
    fake.create_ticket_as_user("B", "<p>b</p>")
    fake.assign_group_as_agent(a, "L1")
    expected = [
        "ERROR",
        "Bad field ID in search criteria" + doc(fake, "ERROR"),
    ]
    for params in (
        {
            "criteria[0][field]": "9999",
            "criteria[0][searchtype]": "equals",
            "criteria[0][value]": "1",
        },
        {"criteria[0][searchtype]": "equals", "criteria[0][value]": "1"},
        {"criteria[0][field]": "12", "criteria[0][searchtype]": "bogus"},
    ):
        r = s.get(f"{fake.url}/search/Ticket", params=params)
        assert (r.status_code, r.json()) == (400, expected)
    r = s.get(
        f"{fake.url}/search/Ticket",
        params={
            "criteria[0][field]": "8",
            "criteria[0][searchtype]": "equals",
            "criteria[0][value]": str(gid),
            "forcedisplay[0]": "2",
        },
    )
    assert [row["2"] for row in r.json()["data"]] == [a]
    assert r.json()["data"][0]["8"] == "L1"
    r = s.get(
        f"{fake.url}/search/Ticket",
        params={
            "criteria[0][field]": "12",
            "criteria[0][searchtype]": "equals",
            "criteria[0][value]": "1",
            "forcedisplay[0]": "2",
            "withindexes": "true",
        },
    )
    assert list(r.json()["data"]) == [str(a + 1)]


# ------------------------------------------------------------------------------- webhooks


def test_ticket_new_webhook_is_signed_php_json_without_content_type(
    fake: FakeGLPI, receiver: Receiver
) -> None:
    fake.add_webhook(receiver.url, SECRET, "Ticket", ["new"])
    tid = fake.create_ticket_as_user("Skriver på 2. etasje", "<p>Feil E-13 / papirstopp</p>")
    (delivery,) = fake.wait_for_deliveries(1)
    fake.wait_webhooks_idle()
    (got,) = receiver.posts()
    assert got.method == "POST" and got.path == "/hooks/glpi"
    assert got.body == delivery.body
    lowered = {k.lower() for k in got.headers}
    assert "content-type" not in lowered and "x-glpi-signature" in lowered
    assert verify_glpi_signature(got.body, got.headers, SECRET)
    assert got.headers["X-GLPI-timestamp"].isdigit()
    assert got.body.isascii() and b"<\\/p>" in got.body and b"p\\u00e5" in got.body
    payload = json.loads(got.body)
    assert php_json_encode(payload, pretty=True).encode() == got.body
    assert payload["event"] == "new" and payload["item"]["id"] == tid
    assert payload["item"]["content"] == "<p>Feil E-13 / papirstopp</p>"
    assert payload["item"]["team"][0]["href"] == "/front/user.form.php?id=5"
    assert delivery.ok and delivery.attempt == 1


def test_followup_and_update_webhooks(fake: FakeGLPI, receiver: Receiver) -> None:
    fake.add_webhook(receiver.url, SECRET, "Ticket", ["update"])
    fake.add_webhook(receiver.url, SECRET, "ITILFollowup", ["new"])
    fake.add_group("Service Desk L1")
    fake.add_group("Network")
    tid = fake.create_ticket_as_user("VPN", "<p>v</p>")  # no "new" hook: nothing sent
    s = session(fake)
    r = s.post(
        f"{fake.url}/Group_Ticket",
        json={
            "input": {"tickets_id": tid, "groups_id": fake.group_id("Service Desk L1"), "type": 2}
        },
    )
    assert r.status_code == 201
    fake.add_followup_as_user(tid, "<p>still down</p>")
    fake.assign_group_as_agent(tid, "Network")
    deliveries = fake.wait_for_deliveries(3)
    assert [(d.itemtype, d.event) for d in deliveries] == [
        ("Ticket", "update"),
        ("ITILFollowup", "new"),
        ("Ticket", "update"),
    ]
    first, followup, moved = (d.json() for d in deliveries)
    assert first["item"]["status"] == {"id": 2, "name": "Processing (assigned)"}
    assert list(followup) == ["item", "event", "parent_item"]
    assert followup["item"]["items_id"] == tid and followup["parent_item"]["id"] == tid
    assert followup["item"]["is_private"] is False
    assigned = [m["name"] for m in moved["item"]["team"] if m["role"] == "assigned"]
    assert assigned == ["Network"]
    assert fake.assigned_group_names(tid) == ["Network"]
    assert all(verify_glpi_signature(d.body, d.headers, SECRET) for d in deliveries)


def test_webhook_retries_resend_the_same_headers(receiver: Receiver) -> None:
    with FakeGLPI(tz=TZ, clock=lambda: T0) as fake:
        receiver.statuses = [500, 503]
        fake.add_webhook(receiver.url, SECRET)
        fake.create_ticket_as_user("A", "<p>a</p>")
        fake.wait_for_deliveries(3)
        fake.wait_webhooks_idle()
        posts = receiver.posts()
        assert len(posts) == 3
        assert [d.status for d in fake.deliveries] == [500, 503, 200]
        assert [d.attempt for d in fake.deliveries] == [1, 2, 3]
        assert {p.headers["X-GLPI-signature"] for p in posts} == {
            posts[0].headers["X-GLPI-signature"]
        }
        assert {p.headers["X-GLPI-timestamp"] for p in posts} == {str(int(T0))}
        assert {p.body for p in posts} == {posts[0].body}


def test_webhook_gives_up_after_sent_try_plus_one_attempts(receiver: Receiver) -> None:
    with FakeGLPI() as fake:
        receiver.statuses = [500] * 10
        fake.add_webhook(receiver.url, SECRET)
        fake.create_ticket_as_user("A", "<p>a</p>")
        fake.wait_webhooks_idle()
        assert [d.attempt for d in fake.deliveries] == [1, 2, 3, 4]
        assert len(receiver.posts()) == 4


def test_webhook_configured_through_the_api(fake: FakeGLPI, receiver: Receiver) -> None:
    s = session(fake)
    base = {
        "name": "bpsm",
        "itemtype": "Ticket",
        "event": "new",
        "url": receiver.url,
        "custom_headers": {"X-GLPI-signature": "forged", "X-Item": "{{ item.id }}"},
    }
    r = s.post(f"{fake.url}/Webhook", json={"input": base})  # is_active defaults to 0
    assert r.status_code == 201
    fake.create_ticket_as_user("Inactive", "<p>x</p>")
    r = s.post(
        f"{fake.url}/Webhook",
        json={"input": {**base, "is_active": 1, "url": receiver.url + "/{{ event }}"}},
    )
    hook_id = r.json()["id"]
    secret = fake.webhook_secret(hook_id)
    assert len(secret) == 40  # generated when left empty
    tid = fake.create_ticket_as_user("Active", "<p>y</p>")
    (delivery,) = fake.wait_for_deliveries(1)
    assert delivery.url.endswith("/hooks/glpi/new")
    assert delivery.headers["X-Item"] == str(tid)
    assert verify_glpi_signature(delivery.body, delivery.headers, secret)
    assert s.get(f"{fake.url}/Webhook/{hook_id}").json()["secret"] != secret
    r = s.post(f"{fake.url}/Webhook", json={"input": {**base, "itemtype": "Group_Ticket"}})
    assert r.status_code == 400


def test_glpi_10_has_no_webhooks(fake10: FakeGLPI) -> None:
    with pytest.raises(RuntimeError):
        fake10.add_webhook("http://127.0.0.1:9/x", SECRET)
    r = session(fake10).post(f"{fake10.url}/Webhook", json={"input": {"url": "http://x"}})
    assert r.json()[0] == "ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM"


@pytest.mark.parametrize("answer_right", [True, False])
def test_cra_challenge_before_send(receiver: Receiver, answer_right: bool) -> None:
    with FakeGLPI(webhook_max_cra_skips=1) as fake:
        receiver.cra_secret = SECRET if answer_right else None
        fake.add_webhook(receiver.url, SECRET, use_cra_challenge=True)
        fake.create_ticket_as_user("A", "<p>a</p>")
        fake.wait_webhooks_idle()
        gets = [r for r in receiver.received if r.method == "GET"]
        assert gets[0].query["crc_token"] == [cra_token(SECRET)]
        if answer_right:
            assert len(receiver.posts()) == 1 and fake.cra_checks[0].passed
        else:  # skipped: nothing sent
            assert receiver.posts() == [] and fake.deliveries == []
            assert [c.passed for c in fake.cra_checks] == [False, False]


def test_custom_payload_template(fake: FakeGLPI, receiver: Receiver) -> None:
    fake.add_webhook(receiver.url, SECRET, payload='{"id": {{ item.id }}, "n": "{{ item.name }}"}')
    tid = fake.create_ticket_as_user('Say "hi"', "<p>a</p>")
    (delivery,) = fake.wait_for_deliveries(1)
    assert delivery.body == f'{{"id": {tid}, "n": "Say \\"hi\\""}}'.encode()
    assert json.loads(delivery.body)["n"] == 'Say "hi"'


def test_oauth_bearer_token(fake: FakeGLPI, receiver: Receiver) -> None:
    oauth_url = receiver.url.replace("/hooks/glpi", "/oauth")
    fake.add_webhook(
        receiver.url,
        SECRET,
        use_oauth=True,
        oauth_url=oauth_url,
        clientid="cid",
        clientsecret="csecret",
    )
    fake.create_ticket_as_user("A", "<p>a</p>")
    fake.wait_for_deliveries(1)
    token_request = next(r for r in receiver.received if r.path == "/oauth")
    assert parse_qs(token_request.body.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["cid"],
        "client_secret": ["csecret"],
    }
    (post,) = receiver.posts()
    assert post.headers["Authorization"] == "Bearer tok-1"
    assert verify_glpi_signature(post.body, post.headers, SECRET)


# ------------------------------------------------------------------------ failure injection


def test_fail_next(fake: FakeGLPI) -> None:
    s = session(fake)
    fake.fail_next(2, status=503, retry_after=3)
    first = s.get(f"{fake.url}/Group")
    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert s.get(f"{fake.url}/Group").status_code == 503
    assert s.get(f"{fake.url}/Group").status_code == 200
    assert [c.injected for c in fake.calls[-3:]] == ["fail", "fail", None]


def test_lose_response_applies_the_write(fake: FakeGLPI) -> None:
    s = session(fake)
    tid = fake.create_ticket_as_user("A", "<p>a</p>")
    fake.lose_response_next(1)
    assert s.get(f"{fake.url}/Ticket/{tid}").status_code == 200  # reads are not affected
    note = {"itemtype": "Ticket", "items_id": tid, "content": "<p>[bpsm-connector]</p>"}
    r = s.post(f"{fake.url}/ITILFollowup", json={"input": note})
    assert r.status_code == 502
    assert len(fake.followups(tid)) == 1  # saved although the answer was lost
    assert s.post(f"{fake.url}/ITILFollowup", json={"input": note}).status_code == 201


def test_set_down_refuses_connections_then_comes_back_on_the_same_port(fake: FakeGLPI) -> None:
    s = session(fake)
    url = fake.url
    assert s.get(f"{url}/Group").status_code == 200
    fake.set_down(True)
    with pytest.raises(requests.ConnectionError):
        s.get(f"{url}/Group", timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/Group", timeout=2)
    fake.set_down(False)
    assert fake.url == url
    assert s.get(f"{url}/Group").status_code == 200  # sessions survive
