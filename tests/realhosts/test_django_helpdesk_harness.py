"""Smoke tests for the real django-helpdesk harness (tests/realhosts/django_helpdesk_server.py).

They pin down what bpsm-connector relies on, against django-helpdesk 2.6 itself:
the bpsm_queues command, the webhook payloads and their headers, moving a ticket by
queue id, private follow-ups and their webhook, a helpdesk that serves the API while
one of its own webhooks is still waiting, and what a refused or slow webhook target
does to the request that fired it.

The first recorded webhook payloads live in connector/hosts/django_helpdesk/fixtures/; later runs
compare the live shape against them. BPSM_RECORD_FIXTURES=1 records them again.

Run: .venv/bin/python -m pytest tests/realhosts/test_django_helpdesk_harness.py -q -s
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from .django_helpdesk_server import (
    TIMINGS,
    DjangoHelpdeskFactory,
    DjangoHelpdeskServer,
    HelpdeskHarnessError,
    ensure_helpdesk_venv,
    webhook_env,
)

FIXTURES = (
    Path(__file__).resolve().parents[2] / "connector" / "hosts" / "django_helpdesk" / "fixtures"
)
RECORD = os.environ.get("BPSM_RECORD_FIXTURES") == "1"

# TicketSerializer.Meta.fields (helpdesk/serializers.py:261-282) minus the write-only
# "attachment", as a staff user sees them (no custom fields defined).
TICKET_FIELDS = {
    "id",
    "queue",
    "title",
    "description",
    "resolution",
    "submitter_email",
    "assigned_to",
    "status",
    "on_hold",
    "priority",
    "due_date",
    "merged_to",
    "followup_set",
}
FOLLOWUP_FIELDS = {
    "id",
    "ticket",
    "user",
    "title",
    "comment",
    "public",
    "new_status",
    "time_spent",
    "followupattachment_set",
    "date",
    "message_id",
    "email_recipients",
}
WEBHOOK_TIMEOUT_S = 3.0  # HELPDESK_WEBHOOK_TIMEOUT default (helpdesk/settings.py:580)


# ------------------------------------------------------------------ webhook receiver


@dataclass(frozen=True)
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookRecorder:
    """A threaded HTTP server on loopback that records every POST and answers 204.

    ``on_request(hook)`` runs in the handler thread before the answer, like a
    connector that calls the helpdesk back while the helpdesk waits on its webhook;
    ``delay`` holds every answer back that many seconds.
    """

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.on_request: Callable[[Hook], None] | None = None
        self.delay = 0.0
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                hook = Hook(
                    self.path, dict(self.headers.items()), self.rfile.read(length), time.monotonic()
                )
                with recorder._cond:
                    recorder.hooks.append(hook)
                    recorder._cond.notify_all()
                try:
                    if recorder.on_request is not None:
                        recorder.on_request(hook)
                    if recorder.delay:
                        time.sleep(recorder.delay)
                except BaseException as exc:  # noqa: BLE001 - surfaced by the test
                    recorder.errors.append(exc)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path.lstrip('/')}"

    def on(self, path: str) -> list[Hook]:
        with self._cond:
            return [h for h in self.hooks if h.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Hook]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([h for h in self.hooks if h.path == path]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} webhook(s) on {path}, got {[h.path for h in self.hooks]}"
                    )
                self._cond.wait(left)
            return [h for h in self.hooks if h.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recorder() -> Iterator[WebhookRecorder]:
    rec = WebhookRecorder()
    yield rec
    rec.close()


@pytest.fixture
def recorder_b() -> Iterator[WebhookRecorder]:
    rec = WebhookRecorder()
    yield rec
    rec.close()


def refused_url(path: str = "/hook") -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def report(label: str, **values: float | str) -> None:
    parts = [f"{k}={v:.3f}s" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()]
    print(f"\n[django_helpdesk] {label}: " + " ".join(parts))


# ----------------------------------------------------------------- fixtures on disk


def check_or_record(name: str, hook: Hook) -> None:
    """Record the payload and headers the first time; later, compare their shape."""
    payload_file = FIXTURES / f"{name}.json"
    headers_file = FIXTURES / f"{name}.headers.json"
    payload = hook.json()
    if RECORD or not payload_file.exists() or not headers_file.exists():
        FIXTURES.mkdir(parents=True, exist_ok=True)
        # As received: key order and values untouched.
        payload_file.write_text(json.dumps(payload, indent=2) + "\n")
        headers_file.write_text(json.dumps(hook.headers, indent=2) + "\n")
        return
    recorded = json.loads(payload_file.read_text())
    assert set(payload) == set(recorded)
    assert set(payload["ticket"]) == set(recorded["ticket"])
    recorded_headers = json.loads(headers_file.read_text())
    assert {k.lower() for k in hook.headers} == {k.lower() for k in recorded_headers}
    assert hook.headers.get("Content-Type") == recorded_headers.get("Content-Type")


def assert_webhook_headers(hook: Hook) -> None:
    assert hook.headers["Content-Type"] == "application/json"
    assert hook.headers["User-Agent"].startswith("python-requests/")
    names = {k.lower() for k in hook.headers}
    # No signature of any kind (webhooks.py posts bare JSON).
    assert not [n for n in names if "signature" in n or "hmac" in n or n.startswith("x-")]
    assert names == {
        "host",
        "user-agent",
        "accept-encoding",
        "accept",
        "connection",
        "content-length",
        "content-type",
    }


# ------------------------------------------------------------------------------ tests


def test_venv_is_built_once_and_reused(django_helpdesk_venv: Path) -> None:
    started = time.monotonic()
    assert ensure_helpdesk_venv() == django_helpdesk_venv
    reuse = time.monotonic() - started
    version = subprocess.run(
        [
            str(django_helpdesk_venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('django-helpdesk'), "
            "m.version('django'), m.version('djangorestframework'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert version[0].startswith("2.6.")
    build = TIMINGS.get("venv_build_s")
    report(
        "venv",
        build=build if build is not None else "cached (requirements hash matched)",
        reuse_check=reuse,
        django_helpdesk=version[0],
        django=version[1],
        drf=version[2],
    )
    assert reuse < 1.0


def test_webhook_env_format() -> None:
    env = webhook_env(["http://a/n", "http://b/n"], ["http://a/f", "http://b/f"])
    assert env == {
        "HELPDESK_NEW_TICKET_WEBHOOK_URLS": "http://a/n,http://b/n",
        "HELPDESK_FOLLOWUP_WEBHOOK_URLS": "http://a/f , http://b/f",
    }
    assert webhook_env() == {}
    with pytest.raises(ValueError):
        webhook_env(["http://a/x,y"])


def test_bpsm_queues_command(django_helpdesk_factory: DjangoHelpdeskFactory) -> None:
    # This one keeps Django's default (PBKDF2) password hasher, as a real helpdesk.
    hd = django_helpdesk_factory(fast_password_hasher=False)
    report("server start (no webhooks, default password hasher)", **hd.timings)
    assert hd.queues() == {"general": 1}

    created = hd.queues({"bpsm-reactive": "BPSM Reactive", "bpsm-change": "BPSM Change"})
    assert created == {"general": 1, "bpsm-reactive": 2, "bpsm-change": 3}
    # Idempotent, including a title that differs from the existing queue's.
    again = hd.manage(
        "bpsm_queues", "--create", "Renamed=bpsm-reactive", "BPSM Change=bpsm-change", "--json"
    )
    assert json.loads(again.stdout) == created
    assert "left unchanged" in again.stderr
    # Without --json: one "id<TAB>slug" line per queue; a title may contain "=".
    plain = hd.manage("bpsm_queues", "--create", "A=B queue=a-b").stdout.split("\n")
    assert [line for line in plain if line] == [
        "1\tgeneral",
        "2\tbpsm-reactive",
        "3\tbpsm-change",
        "4\ta-b",
    ]
    with pytest.raises(HelpdeskHarnessError, match="invalid slug"):
        hd.manage("bpsm_queues", "--create", "Bad=not a slug")
    with pytest.raises(HelpdeskHarnessError, match="TITLE=SLUG"):
        hd.manage("bpsm_queues", "--create", "no-equals-sign")

    # The API names queues by these ids; the connector user (staff, not superuser)
    # can use the API and sees every queue's tickets.
    ticket = hd.create_ticket(created["bpsm-change"], "Via queue id", "body")
    assert ticket["queue"] == created["bpsm-change"]
    resp = requests.get(f"{hd.api_url}/tickets/", auth=hd.connector_auth, timeout=10)
    assert resp.status_code == 200
    assert [t["id"] for t in resp.json()["results"]] == [ticket["id"]]
    nobody = requests.get(f"{hd.api_url}/tickets/", auth=("bpsm", "wrong"), timeout=10)
    assert nobody.status_code in (401, 403)

    # Creating a ticket through the API requires "priority".
    no_priority = {"queue": 1, "title": "t", "description": "d", "submitter_email": "a@b.example"}
    resp = hd.api("POST", "tickets/", json_body=no_priority)
    assert resp.status_code == 400 and "priority" in resp.json()
    # /api/followups/ ignores a ticket filter: it lists every ticket's follow-ups,
    # which is why DjangoHelpdeskServer.followups() reads the ticket's followup_set.
    other = hd.create_ticket(created["general"], "Another", "body")
    unfiltered = hd.api("GET", f"followups/?ticket={ticket['id']}", expect=200).json()
    assert {f["ticket"] for f in unfiltered["results"]} == {ticket["id"], other["id"]}
    assert [f["ticket"] for f in hd.followups(ticket["id"])] == [ticket["id"]]

    rounds = 5
    started = time.monotonic()
    for _ in range(rounds):
        hd.get_ticket(ticket["id"])
    report("round trip, PBKDF2 basic auth", get_ticket_avg=(time.monotonic() - started) / rounds)


def test_webhooks_move_and_private_followup(
    django_helpdesk_factory: DjangoHelpdeskFactory,
    recorder: WebhookRecorder,
    recorder_b: WebhookRecorder,
) -> None:
    # Two targets per kind: proves the env var formats (",", " , ") really split.
    hd = django_helpdesk_factory(
        webhook_urls=[recorder.url("/new"), recorder_b.url("/new")],
        followup_webhook_urls=[recorder.url("/followup"), recorder_b.url("/followup")],
    )
    report("server start (webhooks on)", **hd.timings)
    ids = hd.queues({"bpsm-reactive": "BPSM Reactive"})

    # --- new ticket: the webhook is posted before the API answers ---------------------
    started = time.monotonic()
    ticket = hd.create_ticket(
        ids["general"], "Printer on fire", "Smoke from tray 2", submitter_email="ann@example.com"
    )
    create_rtt = time.monotonic() - started
    hooks = recorder.on("/new")  # no waiting: it must be here already
    assert len(hooks) == 1
    assert len(recorder_b.on("/new")) == 1
    hook = hooks[0]
    payload = hook.json()
    assert set(payload) == {"ticket", "queue_slug"}
    assert payload["queue_slug"] == "general"
    assert set(payload["ticket"]) == TICKET_FIELDS
    assert payload["ticket"]["id"] == ticket["id"]
    assert payload["ticket"]["queue"] == ids["general"]  # integer id, not the slug
    assert payload["ticket"]["title"] == "Printer on fire"
    assert payload["ticket"]["description"] == "Smoke from tray 2"
    assert payload["ticket"]["submitter_email"] == "ann@example.com"
    assert payload["ticket"]["priority"] == 3
    # The "Ticket Opened" follow-up exists already; it fires no follow-up webhook.
    [opened] = payload["ticket"]["followup_set"]
    assert set(opened) == FOLLOWUP_FIELDS
    assert opened["title"] == "Ticket Opened" and opened["public"] is True
    assert_webhook_headers(hook)
    check_or_record("new_ticket", hook)

    # --- an agent moves it: PATCH {"queue": id}; no webhook, no follow-up --------------
    started = time.monotonic()
    moved = hd.move_ticket(ticket["id"], ids["bpsm-reactive"])
    move_rtt = time.monotonic() - started
    assert moved["queue"] == ids["bpsm-reactive"]
    assert hd.get_ticket(ticket["id"])["queue"] == ids["bpsm-reactive"]
    assert len(hd.followups(ticket["id"])) == 1

    # --- the connector's private note: POST /api/followups/ ---------------------------
    started = time.monotonic()
    note = hd.add_followup(ticket["id"], "Routed to BPSM Reactive by bpsm-connector")
    followup_rtt = time.monotonic() - started
    fu_hooks = recorder.on("/followup")
    assert len(fu_hooks) == 1
    assert len(recorder_b.on("/followup")) == 1
    fu_payload = fu_hooks[0].json()
    assert set(fu_payload) == {"ticket", "queue_slug", "followup_id"}
    assert fu_payload["followup_id"] == note["id"]
    assert fu_payload["queue_slug"] == "bpsm-reactive"  # the queue after the move
    assert fu_payload["ticket"]["queue"] == ids["bpsm-reactive"]
    [fu] = [f for f in fu_payload["ticket"]["followup_set"] if f["id"] == note["id"]]
    # The connector must ignore webhooks for its own notes: "user" is its user id.
    assert fu["public"] is False and fu["user"] == note["user"] != opened["user"]
    assert_webhook_headers(fu_hooks[0])
    check_or_record("followup", fu_hooks[0])

    listed = hd.followups(ticket["id"])
    assert [f["id"] for f in listed] == [opened["id"], note["id"]]
    assert listed[1]["comment"] == "Routed to BPSM Reactive by bpsm-connector"
    assert listed[1]["public"] is False

    # Nothing else was posted: creating and moving fire no follow-up webhook.
    time.sleep(0.3)
    assert [h.path for h in recorder.hooks] == ["/new", "/followup"]

    rounds = 20
    started = time.monotonic()
    for _ in range(rounds):
        hd.get_ticket(ticket["id"])
    get_rtt = (time.monotonic() - started) / rounds
    report(
        "round trips",
        create_with_2_webhooks=create_rtt,
        patch_queue=move_rtt,
        followup_with_2_webhooks=followup_rtt,
        get_ticket_avg=get_rtt,
    )


def test_api_is_served_while_a_webhook_waits(
    django_helpdesk_factory: DjangoHelpdeskFactory, recorder: WebhookRecorder
) -> None:
    """The connector's pattern: on the new-ticket webhook it moves the ticket and adds
    a note through the API before it answers; that note fires a follow-up webhook back
    at the connector. Needs the threaded server (and SQLite not locked meanwhile)."""
    hd = django_helpdesk_factory(
        webhook_urls=[recorder.url("/new")], followup_webhook_urls=[recorder.url("/followup")]
    )
    ids = hd.queues({"bpsm-reactive": "BPSM Reactive"})
    callback_done: dict[str, float] = {}

    def route(hook: Hook) -> None:
        if hook.path != "/new":
            return
        ticket_id = hook.json()["ticket"]["id"]
        t0 = time.monotonic()
        hd.move_ticket(ticket_id, ids["bpsm-reactive"], auth=hd.connector_auth)
        hd.add_followup(ticket_id, "routed while the helpdesk waits")
        callback_done["s"] = time.monotonic() - t0

    recorder.on_request = route
    started = time.monotonic()
    ticket = hd.create_ticket(ids["general"], "Concurrent", "body")
    elapsed = time.monotonic() - started
    assert not recorder.errors, recorder.errors
    assert "s" in callback_done
    assert elapsed < WEBHOOK_TIMEOUT_S, "the webhook timed out: the server is not concurrent"
    # The nested follow-up webhook reached us while /new was still being answered.
    [fu_hook] = recorder.wait_for("/followup")
    assert fu_hook.json()["queue_slug"] == "bpsm-reactive"
    # The create call answered with the ticket as it was before the callback moved it.
    assert ticket["queue"] == ids["general"]
    final = hd.get_ticket(ticket["id"])
    assert final["queue"] == ids["bpsm-reactive"]
    assert [f["public"] for f in final["followup_set"]] == [True, False]
    report("nested API calls during webhook", create_total=elapsed, callback=callback_done["s"])


def test_refused_webhook_target_fails_the_request_but_keeps_the_data(
    django_helpdesk_factory: DjangoHelpdeskFactory,
) -> None:
    """webhooks.py catches only Timeout: a refused connection escapes as a 500."""
    hd = django_helpdesk_factory(
        webhook_urls=[refused_url("/new")], followup_webhook_urls=[refused_url("/followup")]
    )
    body = {
        "queue": 1,
        "title": "Connector is down",
        "description": "body",
        "submitter_email": "user@example.com",
        "priority": 3,
    }
    started = time.monotonic()
    resp = hd.api("POST", "tickets/", json_body=body)
    elapsed = time.monotonic() - started
    assert resp.status_code == 500
    assert elapsed < 2.0  # refused at once, not a timeout
    # ... but the ticket was saved before the webhook was attempted.
    listed = hd.api("GET", "tickets/", expect=200).json()["results"]
    [saved] = [t for t in listed if t["title"] == "Connector is down"]
    assert saved["queue"] == 1

    # Same for a follow-up: 500, and the follow-up is saved.
    resp = hd.api(
        "POST",
        "followups/",
        auth=hd.connector_auth,
        json_body={"ticket": saved["id"], "comment": "note", "public": False},
    )
    assert resp.status_code == 500
    assert [f["comment"] for f in hd.followups(saved["id"])][-1] == "note"
    assert "ConnectionError" in hd.log_tail(200) or "Connection refused" in hd.log_tail(200)
    report("refused webhook", ticket_create_status="500 (ticket saved)", create=elapsed)


def test_slow_webhook_target_times_out_after_3s(
    django_helpdesk_factory: DjangoHelpdeskFactory, recorder: WebhookRecorder
) -> None:
    """A Timeout is caught (logged): the request succeeds after HELPDESK_WEBHOOK_TIMEOUT."""
    recorder.delay = WEBHOOK_TIMEOUT_S + 1.5
    hd = django_helpdesk_factory(webhook_urls=[recorder.url("/new")])
    started = time.monotonic()
    ticket = hd.create_ticket(1, "Slow connector", "body")
    elapsed = time.monotonic() - started
    assert ticket["title"] == "Slow connector"
    assert WEBHOOK_TIMEOUT_S - 0.2 < elapsed < WEBHOOK_TIMEOUT_S + 1.0
    assert len(recorder.on("/new")) == 1
    assert "Timeout while sending new ticket webhook" in hd.log_tail(50)
    report("slow webhook", create=elapsed)


def test_followup_urls_joined_with_a_plain_comma_are_one_broken_url(
    django_helpdesk_factory: DjangoHelpdeskFactory,
    recorder: WebhookRecorder,
    recorder_b: WebhookRecorder,
) -> None:
    """Why webhook_env joins follow-up URLs with " , ": "a,b" is not split at all."""
    naive = f"{recorder.url('/followup')},{recorder_b.url('/followup')}"
    hd: DjangoHelpdeskServer = django_helpdesk_factory(
        extra_env={"HELPDESK_FOLLOWUP_WEBHOOK_URLS": naive}
    )
    ticket = hd.create_ticket(1, "Naive list", "body")
    hd.add_followup(ticket["id"], "note")
    # One POST to the first host, with the rest of the string as its path.
    assert [h.path for h in recorder.hooks] == [f"/followup,{recorder_b.url('/followup')}"]
    assert recorder_b.hooks == []
