"""The web layer's contract: status codes, JSON errors, nothing enqueued on rejection."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import load_settings
from connector.hosts import host_classes, settings_models
from connector.runtime import Runtime
from webhook_app import create_app

CONTRACT = (
    Path(__file__).resolve().parents[1] / "connector" / "hosts" / "zammad" / "fixtures" / "contract"
)
ZAMMAD_BODY = (CONTRACT / "webhook-ticket-create.json").read_bytes()
SECRET = "s3cr3t-t0k3n-of-24-bytes"  # webhook secrets are at least 16 bytes
ZAMMAD_SIG = "sha1=" + hmac.new(SECRET.encode(), ZAMMAD_BODY, hashlib.sha1).hexdigest()


def make_app(tmp_path: Path, **env: str):
    environ = {"BPSM_DATA_DIR": str(tmp_path), **env}
    settings = load_settings(
        environ, hosts=settings_models(), catalogue_path=Path("catalogue.yaml")
    )
    rt = Runtime(settings)
    return create_app(rt), rt


@pytest.fixture
def app_rt(tmp_path):
    return make_app(tmp_path, BPSM_ZAMMAD_WEBHOOK_SECRET=SECRET, BPSM_MAX_BODY_BYTES="65536")


def zammad_headers(signature: str | None = ZAMMAD_SIG, delivery: str = "d-1") -> dict[str, str]:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Zammad-Trigger": "connector: ticket created",
        "X-Zammad-Delivery": delivery,
    }
    if signature is not None:
        headers["X-Hub-Signature"] = signature
    return headers


def test_signed_zammad_contract_example_is_queued_once(app_rt):
    app, rt = app_rt
    client = app.test_client()
    first = client.post("/hooks/zammad", data=ZAMMAD_BODY, headers=zammad_headers())
    assert first.status_code == 202, first.json
    assert first.json["status"] == "queued"
    again = client.post("/hooks/zammad", data=ZAMMAD_BODY, headers=zammad_headers())
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert rt.store.count_deliveries() == 1
    # The web layer's one write is the store (the outbox); the dispatcher of a running
    # consumer hands each new delivery to the job queue exactly once.
    assert rt.queue.huey.pending_count() == 0
    assert rt.queue.dispatch() == 1 and rt.queue.huey.pending_count() == 1
    assert rt.queue.dispatch() == 0 and rt.queue.huey.pending_count() == 1
    # The web layer never classifies, so it never builds the catalogue index (GBs at scale).
    assert rt._index is None


@pytest.mark.parametrize(
    "signature,reason",
    [
        (None, "missing X-Hub-Signature"),
        ("sha1=" + "0" * 40, "does not match"),
        ("sha256=abc", "does not match"),
    ],
)
def test_bad_or_missing_signature_is_401(app_rt, signature, reason):
    app, rt = app_rt
    response = app.test_client().post(
        "/hooks/zammad", data=ZAMMAD_BODY, headers=zammad_headers(signature)
    )
    assert response.status_code == 401
    assert reason in response.json["error"]
    assert rt.store.count_deliveries() == 0


def test_without_secret_unsigned_zammad_is_accepted(tmp_path):
    app, _ = make_app(tmp_path)
    response = app.test_client().post(
        "/hooks/zammad", data=ZAMMAD_BODY, headers=zammad_headers(None)
    )
    assert response.status_code == 202


def test_over_size_limit_is_413(app_rt):
    app, rt = app_rt
    body = b'{"ticket_id": 1, "body": "' + b"x" * 70_000 + b'"}'
    response = app.test_client().post(
        "/hooks/demo", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than 65536" in response.json["error"]
    assert rt.store.count_deliveries() == 0


def test_unknown_host_is_404_and_names_known_ones(app_rt):
    app, _ = app_rt
    response = app.test_client().post("/hooks/jira", data=b"{}")
    assert response.status_code == 404
    assert "zammad" in response.json["error"]


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"", "empty body"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"subject": "x"}', "missing field ticket_id"),
        (b'{"ticket_id": 1, "body": 5}', "must be strings"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (
            b'{"ticket_id": "%s", "body": "x"}' % (b"7" * 101),
            "ticket_id: String should have at most 100",
        ),
    ],
)
def test_malformed_demo_bodies_are_400_with_a_reason(app_rt, body, needle):
    app, rt = app_rt
    response = app.test_client().post("/hooks/demo", data=body)
    assert response.status_code in (400, 413)
    if response.status_code == 400:
        assert needle in response.json["error"]
    assert rt.store.count_deliveries() == 0


def test_zammad_malformed_payloads(app_rt):
    app, rt = app_rt
    client = app.test_client()
    for body, needle in [
        (b'{"article": {}}', "missing field ticket"),
        (b'{"ticket": {"id": "81"}, "article": {}}', "ticket.id must be int"),
        (b'{"ticket": {"id": 81}, "article": []}', "article must be an object"),
    ]:
        signature = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
        response = client.post("/hooks/zammad", data=body, headers=zammad_headers(signature))
        assert response.status_code == 400, body
        assert needle in response.json["error"]
    assert rt.store.count_deliveries() == 0


def test_event_without_new_customer_text_is_ignored_with_200(app_rt):
    app, rt = app_rt
    payload = json.loads(ZAMMAD_BODY)
    payload["article"] = {}
    body = json.dumps(payload).encode()
    signature = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    response = app.test_client().post("/hooks/zammad", data=body, headers=zammad_headers(signature))
    assert response.status_code == 200
    assert response.json == {"status": "ignored", "reason": "no new customer text"}
    assert rt.store.count_deliveries() == 0


def test_healthz_and_metrics(app_rt):
    app, _ = app_rt
    client = app.test_client()
    client.post("/hooks/demo", data=b"nope")
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["checks"] == {"store": "ok", "queue": "ok"}
    assert health.json["mode"] == "dry-run"
    text = client.get("/metrics").get_data(as_text=True)
    assert 'bpsm_events_total{host="demo",reason="malformed",result="rejected"}' in text
    assert "bpsm_queue_depth 0.0" in text


def test_healthz_reports_a_broken_store(app_rt, tmp_path):
    app, rt = app_rt
    rt.store.dispose()
    # A directory where the database file should be: every query fails.
    rt.store.engine = rt.store._make_engine(f"sqlite:///{tmp_path}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"]["store"].startswith("error")


HOSTS = sorted(host_classes())
HEADER_NAMES = [
    "Content-Type",
    "X-Hub-Signature",
    "X-Zammad-Delivery",
    "X-GLPI-signature",
    "X-GLPI-timestamp",
    "X-Delivery-Id",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["ticket", "article", "item", "event", "ticket_id", "body", "queue_slug"]),
        json_values,
        max_size=4,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    host=st.sampled_from(HOSTS),
    body=bodies,
    headers=st.dictionaries(
        st.sampled_from(HEADER_NAMES),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=4,
    ),
)
def test_fuzz_never_500_and_rejections_enqueue_nothing(app_rt, host, body, headers):
    app, rt = app_rt
    before = rt.store.count_deliveries()
    response = app.test_client().post(f"/hooks/{host}", data=body, headers=headers)
    assert response.status_code in (200, 202, 400, 401, 413), response.data
    assert response.is_json and isinstance(response.json, dict)
    if response.status_code >= 400:
        assert response.json["error"]
        assert rt.store.count_deliveries() == before
