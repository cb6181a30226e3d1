"""The review page (/ui/): login, CSRF, rate limit, decisions, a correction applied in the
helpdesk by the worker (fake Zammad), dead-letter replay; and `bpsm ui-user`."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from connector.cli import main
from connector.ui import read_users, write_user
from tests.e2e import ConnectorService, wait_for, zammad_connector, zammad_with_bpsm_groups
from tests.fakes.zammad import FakeZammad

SECRET = "s3cr3t-t0k3n-for-the-ui-tests"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with zammad_with_bpsm_groups() as fake:
        yield fake


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "ui-users"
    write_user(path, "lead", PASSWORD)
    return path


@pytest.fixture
def connector(tmp_path, zammad, users, monkeypatch) -> Iterator[ConnectorService]:
    monkeypatch.setenv("BPSM_UI_USERS_FILE", str(users))
    with zammad_connector(tmp_path / "data", zammad, SECRET) as service:
        yield service


def client(service: ConnectorService) -> FlaskClient:
    # https: the session cookie is Secure, so a client on plain http would never send it.
    return service.app.test_client()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


def log_in(c: FlaskClient, password: str = PASSWORD, user: str = "lead") -> int:
    page = c.get("/ui/login", base_url="https://localhost").get_data(as_text=True)
    answer = c.post(
        "/ui/login",
        data={"user": user, "password": password, "csrf": csrf_of(page)},
        base_url="https://localhost",
    )
    return answer.status_code


def get(c: FlaskClient, path: str):  # type: ignore[no-untyped-def]
    return c.get(path, base_url="https://localhost")


def test_anonymous_requests_get_the_login_page_never_data(connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    connector.wait_routed("zammad", ticket)
    c = client(connector)
    for path in ("/ui/", "/ui/decisions/1", "/ui/dead-letters", "/ui/report"):
        answer = get(c, path)
        assert answer.status_code == 302 and "/ui/login" in answer.headers["Location"]
        assert b"Printer" not in answer.data
    # A form post without a session (and so without its CSRF token) is refused.
    refused = c.post(
        "/ui/decisions/1/correct", data={"process": "change"}, base_url="https://localhost"
    )
    assert refused.status_code == 400
    assert connector.runtime.store.corrections_since() == []


def test_wrong_password_then_rate_limited(connector):
    c = client(connector)
    assert [log_in(c, "wrong password!!") for _ in range(5)] == [401] * 5
    # Blocked now, even with the right password: guessing has a price.
    assert log_in(c) == 429
    assert log_in(client(connector), user="nobody") == 401


def test_session_cookie_is_secure_httponly_and_scoped(connector):
    c = client(connector)
    assert log_in(c) == 302
    cookie = c.get_cookie("bpsm_session", domain="localhost", path="/ui")
    assert cookie is not None and cookie.secure and cookie.http_only
    assert cookie.same_site == "Lax"


def test_a_post_without_the_csrf_token_is_refused(connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    routing = connector.wait_routed("zammad", ticket)
    c = client(connector)
    assert log_in(c) == 302
    answer = c.post(
        f"/ui/decisions/{routing['id']}/correct",
        data={"process": "change", "service": "printing"},
        base_url="https://localhost",
    )
    assert answer.status_code == 400 and b"CSRF" in answer.data
    assert connector.runtime.store.corrections_since() == []


def test_decisions_filter_and_one_decisions_explanation(connector, zammad):
    printer = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    vague = zammad.create_ticket_as_customer("asdf", "qwerty")
    connector.wait_routed("zammad", printer)
    connector.wait_routed("zammad", vague)
    c = client(connector)
    assert log_in(c) == 302
    page = get(c, "/ui/").get_data(as_text=True)
    assert "Printer jams" in page and "asdf" in page
    low = get(c, "/ui/?low_confidence=1").get_data(as_text=True)
    assert "asdf" in low and "Printer jams" not in low
    routing = connector.routing("zammad", printer)
    detail = get(c, f"/ui/decisions/{routing['id']}").get_data(as_text=True)
    assert "a supported service → reactive, with its SLA" in detail
    assert "printer" in detail and "[bpsm-connector]" in detail  # evidence and the note
    assert get(c, "/ui/?since=soon").status_code == 200  # a bad filter is said, not a 500


def test_a_correction_is_recorded_once_and_applied_in_the_helpdesk(connector, zammad):
    ticket = zammad.create_ticket_as_customer("asdf", "qwerty")
    routing = connector.wait_routed("zammad", ticket)
    assert routing["low_confidence"] and zammad.ticket(ticket)["group"] == "BPSM Triage"
    c = client(connector)
    assert log_in(c) == 302
    page = get(c, f"/ui/decisions/{routing['id']}").get_data(as_text=True)
    answer = c.post(
        f"/ui/decisions/{routing['id']}/correct",
        data={"service": "printing", "process": "reactive", "csrf": csrf_of(page)},
        base_url="https://localhost",
    )
    assert answer.status_code == 302
    wait_for(lambda: zammad.ticket(ticket)["group"] == "BPSM Reactive", 20, message="the move")
    corrections = wait_for(
        lambda: [
            c for c in connector.runtime.store.corrections_since() if c["status"] != "pending"
        ],
        20,
        message="the correction applied",
    )
    assert len(corrections) == 1 and corrections[0]["actor"] == "lead"
    assert (corrections[0]["from_queue"], corrections[0]["to_service"]) == (
        "BPSM Triage",
        "printing",
    )
    after = connector.routing("zammad", ticket)
    assert (after["process"], after["service"], after["queue"]) == (
        "reactive",
        "printing",
        "BPSM Reactive",
    )
    # The helpdesk's own update event about the move is not an agent's override.
    assert after["moved_by_agent_at"] is None
    assert "bpsm-corrected" in zammad.tags(ticket)
    # Out of the low-confidence queue once corrected.
    assert "asdf" not in get(c, "/ui/?low_confidence=1").get_data(as_text=True)


def test_a_dead_letter_is_replayed_from_the_page(connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    connector.wait_routed("zammad", ticket)
    store = connector.runtime.store
    # Given up on as a job would: claimed again (as for a retry), then dead-lettered.
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE bpsm_deliveries SET status = 'queued' WHERE id = 1")
    delivery = store.claim(1, 60.0)
    assert delivery is not None
    assert store.dead_letter(delivery, "the helpdesk said 403: no rights on group X")
    c = client(connector)
    assert log_in(c) == 302
    page = get(c, "/ui/dead-letters").get_data(as_text=True)
    assert "no rights on group X" in page
    dead = store.list_dead_letters()[0]
    answer = c.post(
        f"/ui/dead-letters/{dead['id']}/replay",
        data={"csrf": csrf_of(page)},
        base_url="https://localhost",
    )
    assert answer.status_code == 302
    assert store.list_dead_letters() == []  # replayed: queued again, no longer waiting


def test_ui_user_add_writes_an_argon2_hash_readable_only_by_the_owner(tmp_path):
    path = tmp_path / "users"
    result = CliRunner().invoke(
        main,
        ["ui-user", "add", "lead", "--file", str(path)],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in path.read_text() and read_users(path)["lead"].startswith("$argon2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    short = CliRunner().invoke(
        main, ["ui-user", "add", "x", "--file", str(path)], input="short\nshort\n"
    )
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    assert list(read_users(path)) == ["lead"]


def test_only_the_review_page_opens_a_session():
    from flask import Flask, request

    from connector.ui import PageSessions

    app = Flask(__name__)
    app.secret_key = "k"
    sessions = PageSessions()
    for path in ("/hooks/demo", "/healthz", "/metrics"):
        with app.test_request_context(path, method="POST"):
            assert sessions.open_session(app, request) is None  # no signer built per webhook
    with app.test_request_context("/ui/login"):
        assert sessions.open_session(app, request) is not None
