"""Hostile input at the web layer and in the configuration (issue 16, 17.9): no signing
oracle, no short secrets, no unverified webhooks acting on a helpdesk."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.config import ConfigError, load_settings
from connector.exitcodes import CONFIG
from connector.hosts import settings_models
from connector.hosts.zammad.settings import ZammadSettings
from connector.logs import record_fields
from connector.runtime import Runtime
from tests.e2e import ROOT, example_index
from webhook_app import create_app

LONG_SECRET = "a-webhook-secret-of-32-bytes-xyz"


def make_app(tmp_path: Path, **env: str) -> tuple[Any, Runtime]:
    environ = {"BPSM_DATA_DIR": str(tmp_path), "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"), **env}
    settings = load_settings(
        environ, hosts=settings_models(), catalogue_path=ROOT / "catalogue.yaml"
    )
    rt = Runtime(settings, index=example_index())
    return create_app(rt), rt


def bpsm_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`bpsm serve` as an operator runs it, on a free port; it is expected to refuse."""
    environ = {k: v for k, v in os.environ.items() if not (k.startswith("BPSM_") and "SECRET" in k)}
    environ.update(BPSM_DATA_DIR=str(tmp_path / "data"), **env)
    command = [str(Path(sys.executable).with_name("bpsm")), "serve", "--port", "0"]
    command += ["--catalogue", str(ROOT / "catalogue.yaml")]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# ----- 16.1: the GLPI challenge is no signing oracle ------------------------------------------


def test_glpi_challenge_answers_only_glpis_fixed_token(tmp_path):
    app, rt = make_app(tmp_path, BPSM_GLPI_WEBHOOK_SECRET=LONG_SECRET)
    client = app.test_client()
    real = hex_hmac(LONG_SECRET, b"validate_cra_challenge")  # Webhook::validateCRAChallenge
    answer = client.get(f"/hooks/glpi?crc_token={real}")
    assert answer.status_code == 200
    assert answer.get_data(as_text=True) == hex_hmac(LONG_SECRET, real.encode())

    # The oracle: a body + timestamp an attacker wants signed. Refused, and never signed.
    forged = '{"item":{"id":1,"content":"x","team":[]},"event":"new"}1700000000'
    for token in (forged, real[:-1], real.upper(), real + "0", "validate_cra_challenge"):
        refused = client.get("/hooks/glpi", query_string={"crc_token": token})
        assert refused.status_code in (400, 405), token
        assert hex_hmac(LONG_SECRET, token.encode()) not in refused.get_data(as_text=True)
    rt.close()


# ----- 16.4: empty and short secrets ---------------------------------------------------------


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "BPSM_ZAMMAD_WEBHOOK_SECRET_FILE: the webhook secret is empty"),
        ("\n", "BPSM_ZAMMAD_WEBHOOK_SECRET_FILE: the webhook secret is empty"),
        ("fifteen-bytes!!", "BPSM_ZAMMAD_WEBHOOK_SECRET_FILE: the webhook secret is only 15"),
    ],
)
def test_empty_or_short_secret_file_is_refused_at_start(tmp_path, content, needle):
    secret = tmp_path / "secret"
    secret.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(
            {"BPSM_ZAMMAD_WEBHOOK_SECRET_FILE": str(secret)}, hosts=settings_models("zammad")
        )


def test_short_or_empty_secret_variable_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="BPSM_GLPI_WEBHOOK_SECRET: .* only 3 bytes"):
        load_settings({"BPSM_GLPI_WEBHOOK_SECRET": "abc"}, hosts=settings_models("glpi"))
    with pytest.raises(ConfigError, match="BPSM_GLPI_WEBHOOK_SECRET is set but empty"):
        load_settings({"BPSM_GLPI_WEBHOOK_SECRET": ""}, hosts=settings_models("glpi"))
    sixteen = load_settings({"BPSM_GLPI_WEBHOOK_SECRET": "x" * 16}, hosts=settings_models("glpi"))
    assert sixteen.host("glpi").webhook_secret is not None


def test_cli_serve_refuses_an_empty_secret_file(tmp_path):
    empty = tmp_path / "secret"
    empty.write_text("")
    result = bpsm_serve(tmp_path, BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET_FILE=str(empty))
    assert result.returncode == CONFIG, result.stderr
    assert "BPSM_DJANGO_HELPDESK_WEBHOOK_SECRET_FILE: the webhook secret is empty" in (
        result.stderr
    )


# ----- 17.9 / 16.3: a webhook that acts on a helpdesk must be verifiable ----------------------


@pytest.mark.parametrize(
    "host,env",
    [
        ("zammad", {"BPSM_ZAMMAD_URL": "http://zammad.invalid"}),
        ("glpi", {"BPSM_GLPI_URL": "http://glpi.invalid/apirest.php"}),
        ("django-helpdesk", {"BPSM_DJANGO_HELPDESK_URL": "http://dh.invalid"}),
    ],
)
@pytest.mark.parametrize("mode", ["route", "shadow"])
def test_a_webhook_host_without_credential_refuses_to_start(tmp_path, host, env, mode):
    prefix = "BPSM_" + host.upper().replace("-", "_")
    with pytest.raises(ConfigError, match=f"{host} receives webhooks in {mode} mode") as exc:
        make_app(tmp_path, BPSM_MODE=mode, **env)
    assert f"{prefix}_WEBHOOK_SECRET_FILE" in str(exc.value)
    assert f"{prefix}_ALLOW_UNSIGNED=1" in str(exc.value)
    # With its credential it starts.
    app, rt = make_app(tmp_path, BPSM_MODE=mode, **env, **{f"{prefix}_WEBHOOK_SECRET": LONG_SECRET})
    assert app.test_client().get("/healthz").json["warnings"] == []
    rt.close()


def test_dry_run_and_polled_hosts_need_no_webhook_credential(tmp_path):
    app, rt = make_app(
        tmp_path, BPSM_MODE="dry-run", BPSM_ZAMMAD_URL="http://zammad.invalid"
    )  # dry-run: nothing is ever called
    rt.close()
    polled = {"BPSM_RT_URL": "http://rt.invalid", "BPSM_RT_TOKEN": "t"}
    app, rt = make_app(tmp_path / "rt", **polled)
    # ... but nobody can post events for the polled host in its stead.
    forged = app.test_client().post("/hooks/rt", json={"ticket": {"id": 1}})
    assert forged.status_code == 401
    assert rt.store.count_deliveries() == 0
    rt.close()


def test_allow_unsigned_warns_at_start_and_on_healthz(tmp_path):
    env = {"BPSM_ZAMMAD_URL": "http://zammad.invalid", "BPSM_ZAMMAD_ALLOW_UNSIGNED": "1"}
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("bpsm.runtime")
    logger.addHandler(handler)  # the service's own log setup may stop propagation
    # Earlier tests in the same process may have left a higher level behind, or a library's
    # logging.config call may have disabled the existing loggers: this test reads the record.
    level, disabled, floor = logger.level, logger.disabled, logging.root.manager.disable
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    logging.disable(logging.NOTSET)
    try:
        app, rt = make_app(tmp_path, **env)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
        logging.disable(floor)
    warned = [r for r in records if r.getMessage() == "webhooks accepted without a signature"]
    assert [record_fields(r)["host"] for r in warned] == ["zammad"]
    health = app.test_client().get("/healthz").json
    assert health["warnings"] == [
        "zammad: webhooks accepted without a signature (BPSM_ZAMMAD_ALLOW_UNSIGNED=1)"
    ]
    rt.close()


def test_allow_unsigned_must_be_a_flag():
    with pytest.raises(ConfigError, match="BPSM_ZAMMAD_ALLOW_UNSIGNED: 'maybe' is not 1 or 0"):
        load_settings({"BPSM_ZAMMAD_ALLOW_UNSIGNED": "maybe"}, hosts=settings_models("zammad"))


def test_demo_host_only_without_a_real_helpdesk(tmp_path):
    ticket = {"ticket_id": "1", "subject": "Skriver", "body": "skriveren virker ikke"}
    app, rt = make_app(tmp_path)
    assert app.test_client().post("/hooks/demo", json=ticket).status_code == 202
    rt.close()
    app, rt = make_app(
        tmp_path / "real",
        BPSM_ZAMMAD_URL="http://zammad.invalid",
        BPSM_ZAMMAD_WEBHOOK_SECRET=LONG_SECRET,
    )
    answer = app.test_client().post("/hooks/demo", json=ticket)
    assert answer.status_code == 404
    assert "demo" not in answer.json["error"].split("known:")[1]
    assert rt.store.count_deliveries() == 0
    rt.close()


# ----- 16.3: the relation reply's recipient comes from the helpdesk ---------------------------


def test_zammad_relation_reply_goes_to_the_tickets_customer_not_the_payloads():
    from pydantic import SecretStr

    from connector.events import TicketEvent
    from connector.hosts.zammad import ZammadHost
    from connector.mapping import Mapping
    from tests.fakes.zammad import FakeZammad

    with FakeZammad(token="zammad-api-token") as zammad:
        ticket_id = zammad.create_ticket_as_customer(
            "Mac?", "Kan jeg bruke min egen Mac?", customer="nicole.braun@zammad.org"
        )
        settings = ZammadSettings(
            name="zammad", url=zammad.base_url, token=SecretStr("zammad-api-token")
        )
        client = ZammadHost(settings, Mapping(host="zammad")).client()
        forged = TicketEvent(
            host="zammad",
            delivery_id="forged-1",
            ticket_id=str(ticket_id),
            body="relay this",
            requester="victim@elsewhere.example",  # chosen by whoever sent the webhook
        )
        client.reply(forged, "Hei, dette tilbyr vi ikke.", send=True)
        sent = [
            a for a in zammad.articles(ticket_id) if a["type"] == "email" and a["sender"] == "Agent"
        ]
        assert [a["to"] for a in sent] == ["nicole.braun@zammad.org"]


# ----- 16.8: metric labels from request data come from a fixed set ----------------------------


def test_ignored_event_labels_are_a_fixed_set_whatever_the_request_says(tmp_path):
    import json
    import time

    from connector.hosts.base import IGNORE_LABELS
    from connector.metrics import EVENTS

    app, rt = make_app(tmp_path, BPSM_GLPI_WEBHOOK_SECRET=LONG_SECRET)
    client = app.test_client()
    stamp = str(int(time.time()))
    for n in range(20):
        body = json.dumps({"item": {"id": n, "team": []}, "event": f"evil-event-{n}"}).encode()
        signature = hex_hmac(LONG_SECRET, body + stamp.encode())
        headers = {"X-GLPI-timestamp": stamp, "X-GLPI-signature": signature}
        for query in (f"?itemtype=EvilType{n}", "?itemtype=Ticket"):
            answer = client.post(f"/hooks/glpi{query}", data=body, headers=headers)
            assert answer.status_code == 200, answer.json
    reasons = {
        sample.labels["reason"]
        for metric in EVENTS.collect()
        for sample in metric.samples
        if sample.labels.get("host") == "glpi" and sample.labels.get("result") == "ignored"
    }
    assert reasons and reasons <= IGNORE_LABELS | {"other", "duplicate"}
    assert {"not-routed-type", "not-new"} <= reasons
    rt.close()


# ----- 16, low: bad input is a 4xx naming the problem, never a 500 ----------------------------


def test_a_5000_digit_id_is_400_not_500(tmp_path):
    app, rt = make_app(tmp_path)
    body = b'{"ticket_id": ' + b"9" * 5000 + b', "body": "printer"}'
    answer = app.test_client().post("/hooks/demo", data=body)
    assert answer.status_code == 400
    assert answer.json["error"].startswith("body is not usable JSON: Exceeds the limit")
    rt.close()


def test_a_deep_body_under_the_size_limit_is_400_nested_too_deeply(tmp_path):
    app, rt = make_app(tmp_path)
    body = b'{"ticket_id": "1", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert len(body) < rt.settings.max_body_bytes  # the nesting check is what answers
    answer = app.test_client().post("/hooks/demo", data=body)
    assert answer.status_code == 400 and answer.json["error"] == "JSON is nested too deeply"
    rt.close()


def test_a_glpi_date_utc_cannot_hold_is_400_naming_it(tmp_path):
    import json
    import time

    app, rt = make_app(tmp_path, BPSM_GLPI_WEBHOOK_SECRET=LONG_SECRET)
    item = {"id": 9, "name": "x", "content": "printer", "team": []}
    item["date"] = "0001-01-01T00:00:00+05:00"
    body = json.dumps({"item": item, "event": "new"}).encode()
    stamp = str(int(time.time()))
    headers = {
        "X-GLPI-timestamp": stamp,
        "X-GLPI-signature": hex_hmac(LONG_SECRET, body + stamp.encode()),
    }
    answer = app.test_client().post("/hooks/glpi?itemtype=Ticket", data=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json == {"error": "field item.date is out of range", "field": "item.date"}
    rt.close()


def test_nul_in_an_id_is_400_and_nul_in_text_is_dropped(tmp_path):
    app, rt = make_app(tmp_path)
    client = app.test_client()
    answer = client.post("/hooks/demo", json={"ticket_id": "1\x00", "body": "printer"})
    assert answer.status_code == 400 and answer.json["field"] == "ticket_id"
    assert "NUL" in answer.json["error"]
    answer = client.post("/hooks/demo", json={"ticket_id": "2", "body": "prin\x00ter"})
    assert answer.status_code == 202
    stored = rt.store.delivery(answer.json["id"])
    assert stored is not None and stored.event.body == "printer"
    rt.close()


def test_a_chunked_body_over_the_limit_is_413(tmp_path):
    import io

    app, rt = make_app(tmp_path, BPSM_MAX_BODY_BYTES="1000")
    client = app.test_client()

    def chunked(body: bytes) -> Any:
        return client.post(
            "/hooks/demo",
            input_stream=io.BytesIO(body),
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            environ_overrides={"wsgi.input_terminated": True},
        )

    over = chunked(b'{"ticket_id": "1", "body": "' + b"x" * 5000 + b'"}')
    assert over.status_code == 413 and over.json["error"] == "body larger than 1000 bytes"
    exact = b'{"ticket_id": "1", "body": "printer"}'
    exact = exact[:-2] + b" " * (1000 - len(exact)) + exact[-2:]
    assert len(exact) == 1000 and chunked(exact).status_code == 202
    assert rt.store.count_deliveries() == 1
    rt.close()


def test_cli_serve_refuses_a_webhook_host_without_credential(tmp_path):
    result = bpsm_serve(tmp_path, BPSM_ZAMMAD_URL="http://zammad.invalid")
    assert result.returncode == CONFIG, result.stderr
    assert "zammad receives webhooks in route mode but has no webhook credential" in (result.stderr)
