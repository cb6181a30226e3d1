"""Every recorded webhook fixture of every host, through the real app, with its one exact
outcome: 202 queued (and the event's kind), 200 ignored (the reason and its metric label) or
400 (the field). Fixtures that are API answers, not webhooks, are listed as such, so that a
new file in connector/hosts/<host>/fixtures/ cannot go untested."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from connector.hosts.base import IGNORE_LABELS
from connector.metrics import EVENTS
from tests.e2e import ROOT
from tests.test_security import make_app

HOSTS = ROOT / "connector" / "hosts"


def fixtures(host: str) -> Path:
    """The recorded fixtures of a host package (`host`: its Python name)."""
    return HOSTS / host / "fixtures"


SECRET = "fixture-webhook-secret-32-bytes!"  # the fixtures are signed again with it
ZAMMAD_TOKEN = "fixture-bearer-token-of-32-bytes"  # and Zammad 7's Bearer token replaced
ENV = {
    "BPSM_ZAMMAD_WEBHOOK_SECRET": SECRET,
    "BPSM_ZAMMAD_WEBHOOK_TOKEN": ZAMMAD_TOKEN,
    "BPSM_GLPI_WEBHOOK_SECRET": SECRET,
    "BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET": SECRET,
}

Q = "queued"
GLPI_NOT_NEW = (
    "Ticket update ignored: only new tickets and new followups are routed "
    "(updates include the connector's own changes)"
)
# (host, file) → ("queued", kind) | ("ignored", reason, label) | ("400", field)
EXPECTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("zammad", "ticket_created.json"): (Q, "created"),
    ("zammad", "ticket_created_html_body.json"): (Q, "created"),
    ("zammad", "ticket_created_norwegian.json"): (Q, "created"),
    ("zammad", "customer_reply.json"): (Q, "customer_reply"),
    ("zammad", "agent_update_by_connector.json"): ("ignored", "own update", "own-update"),
    ("zammad", "ticket_update_no_article.json"): (
        "ignored",
        "no new customer text",
        "no-customer-text",
    ),
    ("zammad", "unknown_payload.json"): ("400", "ticket"),
    ("zammad", "malformed_missing_ticket.json"): ("400", "ticket"),
    ("zammad", "malformed_ticket_id_string.json"): ("400", "ticket.id"),
    ("zammad", "malformed_not_json.txt"): ("400", ""),
    ("zammad", "v7_bearer_post.json"): (Q, "created"),
    ("zammad", "v7_bearer_put.json"): (Q, "created"),
    ("zammad", "v7_bearer_and_signature_patch.json"): (Q, "created"),
    ("glpi", "v11_ticket_new.json"): (Q, "created"),
    ("glpi", "v11_ticket_new_html_heavy.json"): (Q, "created"),
    ("glpi", "v11_ticket_new_norwegian.json"): (Q, "created"),
    ("glpi", "v11_followup_new.json"): (Q, "customer_reply"),
    ("glpi", "v11_followup_by_connector.json"): ("ignored", "own update", "own-update"),
    ("glpi", "v11_ticket_update.json"): ("ignored", GLPI_NOT_NEW, "not-new"),
    ("glpi", "unknown_payload.json"): (
        "ignored",
        "TicketTask events are not routed (only Ticket and ITILFollowup)",
        "not-routed-type",
    ),
    ("glpi", "malformed_no_item.json"): ("400", "item"),
    ("glpi", "malformed_bad_event.json"): ("400", "event"),
    ("glpi", "malformed_not_json.txt"): ("400", ""),
    ("glpi", "v12_api2_ticket_new.json"): (Q, "created"),
    ("glpi", "v12_api2_followup_new.json"): (Q, "customer_reply"),
    ("glpi", "malformed_v12_api3_ticket_new.json"): ("400", "api"),
    ("django_helpdesk", "new_ticket.json"): (Q, "created"),
    ("django_helpdesk", "followup_customer.json"): (Q, "customer_reply"),
    ("django_helpdesk", "followup.json"): ("ignored", "staff follow-up", "staff-follow-up"),
    ("django_helpdesk", "followup_own_note.json"): ("ignored", "own update", "own-update"),
    ("django_helpdesk", "unknown_payload.json"): ("400", "ticket"),
    ("django_helpdesk", "malformed_followup_id_unknown.json"): ("400", "followup_id"),
    ("django_helpdesk", "malformed_ticket_id_string.json"): ("400", "ticket.id"),
    ("django_helpdesk", "malformed_followup_set_not_list.json"): ("400", "ticket.followup_set"),
    ("django_helpdesk", "malformed_no_queue_slug.json"): ("400", "queue_slug"),
}
# Not webhooks: recorded API answers the client tests replay (tests/hosts/test_rt.py,
# test_glpi.py), and the folders' READMEs.
NOT_WEBHOOKS = {"rt"}
API_ANSWER_PREFIXES = {"glpi": ("v10_",)}
URL_HOST = {"zammad": "zammad", "glpi": "glpi", "django_helpdesk": "django-helpdesk"}


SIDECARS = (".headers.json", ".request.json")  # a fixture's headers; its method and query


def webhook_files() -> set[tuple[str, str]]:
    found = set()
    for package in HOSTS.iterdir():
        folder = package / "fixtures"
        if not folder.is_dir() or package.name in NOT_WEBHOOKS:
            continue
        for path in folder.iterdir():
            name = path.name
            if path.is_dir() or name == "README.md" or name.endswith(SIDECARS):
                continue  # contract/: the helpdesks' documentation (see the next test)
            if name.startswith(API_ANSWER_PREFIXES.get(package.name, ("\0",))):
                continue
            found.add((package.name, name))
    return found


def test_every_webhook_fixture_has_an_expected_outcome():
    assert webhook_files() == set(EXPECTED)


def test_the_contract_folders_webhook_example_is_a_tested_fixture():
    """zammad/contract/ keeps Zammad's documented example: the same bytes as a fixture above
    (GLPI's contract/ file wraps its example in notes: test_glpi.py verifies it)."""
    contract = fixtures("zammad") / "contract" / "webhook-ticket-create.json"
    assert contract.read_bytes() == (fixtures("zammad") / "ticket_created.json").read_bytes()


def request_of(host: str, name: str) -> dict[str, Any]:
    """The fixture's `<name>.request.json` (method, query), if it has one."""
    path = fixtures(host) / (name.rsplit(".", 1)[0] + ".request.json")
    return json.loads(path.read_text()) if path.exists() else {}


def signed(host: str, name: str) -> tuple[bytes, dict[str, str], str]:
    """Body, headers and query string, signed with SECRET as the host signs."""
    path = fixtures(host) / name
    body = path.read_bytes()
    headers_file = path.with_name(path.name.rsplit(".", 1)[0] + ".headers.json")
    headers: dict[str, str] = {}
    if headers_file.exists():
        headers = json.loads(headers_file.read_text())
    query = "&".join(f"{k}={v}" for k, v in request_of(host, name).get("query", {}).items())
    query = f"?{query}" if query else ""
    if host == "zammad":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        if "Authorization" in headers:  # Zammad 7: Bearer, with or without a signature
            headers["Authorization"] = f"Bearer {ZAMMAD_TOKEN}"
            if "X-Hub-Signature" in headers:
                headers["X-Hub-Signature"] = "sha1=" + digest
        else:
            headers["X-Hub-Signature"] = "sha1=" + digest
    elif host == "glpi":
        stamp = headers["X-GLPI-timestamp"]
        headers["X-GLPI-signature"] = hmac.new(
            SECRET.encode(), body + stamp.encode(), hashlib.sha256
        ).hexdigest()
    else:
        query = f"?token={SECRET}"
    return body, headers, query


def ignored_count(host: str, label: str) -> float:
    for metric in EVENTS.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels == {
                "host": host,
                "result": "ignored",
                "reason": label,
            }:
                return sample.value
    return 0.0


@pytest.mark.parametrize("host,name", sorted(EXPECTED))
def test_fixture_through_the_app(tmp_path, host, name):
    app, rt = make_app(tmp_path, **ENV)
    if host == "glpi":  # the fixtures' clock (their timestamps are from 2025)
        body, headers, _ = signed(host, name)
        rt.host("glpi").clock = lambda: int(headers["X-GLPI-timestamp"]) + 60  # type: ignore[attr-defined]
    body, headers, query = signed(host, name)
    url_host = URL_HOST[host]
    expected = EXPECTED[(host, name)]
    before = ignored_count(url_host, expected[2]) if expected[0] == "ignored" else 0.0
    method = request_of(host, name).get("method", "POST")
    answer = app.test_client().open(
        f"/hooks/{url_host}{query}", method=method, data=body, headers=headers
    )
    outcome: Any = answer.json
    if expected[0] == Q:
        assert answer.status_code == 202, outcome
        assert outcome["status"] == "queued"
        delivery = rt.store.delivery(outcome["id"])
        assert delivery is not None and delivery.event.kind == expected[1]
    elif expected[0] == "ignored":
        assert answer.status_code == 200, outcome
        assert outcome == {"status": "ignored", "reason": expected[1]}
        assert expected[2] in IGNORE_LABELS
        assert ignored_count(url_host, expected[2]) == before + 1
        assert rt.store.count_deliveries() == 0
    else:
        assert answer.status_code == 400, outcome
        assert (outcome.get("field") or "") == expected[1], outcome
        assert rt.store.count_deliveries() == 0
    rt.close()


@pytest.mark.parametrize(
    "change",
    [
        {"internal": True, "sender": "Agent"},  # an agent's internal note
        {"internal": True, "sender": "Customer"},  # internal, whoever the sender
        {"internal": False, "sender": "Agent"},  # an agent's public answer
    ],
)
def test_zammad_article_by_another_agent_is_not_customer_text(tmp_path, change):
    """The connector's own note is ignored by its author; an agent's article is ignored by
    the internal/sender guard, which the recorded fixtures alone do not reach."""
    app, rt = make_app(tmp_path, **ENV)
    data = json.loads((fixtures("zammad") / "agent_update_by_connector.json").read_bytes())
    data["article"].update(change)
    data["article"]["created_by"] = {"login": "anna.agent@example.com"}
    data["ticket"]["updated_by"] = {"login": "anna.agent@example.com"}
    body = json.dumps(data).encode()
    headers = {
        "X-Zammad-Delivery": "anna-1",
        "X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
    }
    answer = app.test_client().post("/hooks/zammad", data=body, headers=headers)
    assert answer.status_code == 200
    assert answer.json == {"status": "ignored", "reason": "not customer text"}
    rt.close()
