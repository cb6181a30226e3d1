"""Zammad's pure part (connector/hosts/zammad/sansio.py): error hints and the test event
`bpsm setup zammad` sends. Webhook parsing and signatures: tests/test_fixtures_app.py and
tests/test_signatures.py; the client: test_zammad_e2e.py, test_zammad_setup.py."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from connector.hosts.base import Ignored, Unauthorized, WebhookRequest
from connector.hosts.zammad import ZammadHost
from connector.hosts.zammad.sansio import setup_test_event, zammad_error_text
from connector.hosts.zammad.settings import ZammadSettings
from connector.mapping import Mapping
from tests.test_security import make_app

SECRET = "zammad-webhook-secret-of-32-byte"


def answer(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    return response


def test_error_text_has_zammads_message_and_the_admins_next_step() -> None:
    text = zammad_error_text(answer(401, b'{"error": "auth", "error_human": "Invalid token"}'))
    assert text == "Invalid token — check BPSM_ZAMMAD_TOKEN (token unknown or expired)"
    assert zammad_error_text(answer(500, b"<html>oops</html>")) == "<html>oops</html>"


def test_the_setup_test_event_is_signed_and_ignored_by_the_connector() -> None:
    event = setup_test_event("http://connector.example/hooks/zammad", SECRET)
    host = ZammadHost(ZammadSettings(name="zammad", webhook_secret=SecretStr(SECRET)), Mapping())
    request = WebhookRequest("POST", event.headers, event.body)
    host.verify(request)  # raises Unauthorized if the signature were wrong
    outcome: Any = host.parse(request)
    assert isinstance(outcome, Ignored) and outcome.label == "no-customer-text"
    assert event.url == "http://connector.example/hooks/zammad"


# ----- Zammad 7: Bearer token, PUT/PATCH/DELETE (fixtures v7_*) -------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "connector" / "hosts" / "zammad" / "fixtures"
TOKEN = "zammad-bearer-token"  # the fixtures' Bearer token
FIXTURE_SECRET = "zammad-secret"  # and the PATCH one's signature key


def v7_request(name: str, **header_changes: str | None) -> WebhookRequest:
    headers = json.loads((FIXTURES / f"{name}.headers.json").read_text())
    for key, value in header_changes.items():
        key = key.replace("_", "-")
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    request_file = FIXTURES / f"{name}.request.json"
    method = json.loads(request_file.read_text())["method"] if request_file.exists() else "POST"
    return WebhookRequest(method, headers, (FIXTURES / f"{name}.json").read_bytes())


def host_with(secret: str | None = None, token: str | None = None) -> ZammadHost:
    settings = ZammadSettings(
        name="zammad",
        webhook_secret=SecretStr(secret) if secret else None,
        webhook_token=SecretStr(token) if token else None,
    )
    return ZammadHost(settings, Mapping())


@pytest.mark.parametrize("name", ["v7_bearer_post", "v7_bearer_put"])
def test_a_bearer_only_delivery_passes_with_the_token_and_parses_like_a_signed_one(name):
    request = v7_request(name)
    host_with(token=TOKEN).verify(request)
    host_with(secret=FIXTURE_SECRET, token=TOKEN).verify(request)  # either credential will do
    event: Any = host_with(token=TOKEN).parse(request)
    signed = WebhookRequest(
        "POST",
        json.loads((FIXTURES / "ticket_created.headers.json").read_text()),
        (FIXTURES / "ticket_created.json").read_bytes(),
    )
    assert event == host_with().parse(signed)


@pytest.mark.parametrize(
    "secret,token,changes,reason",
    [
        (FIXTURE_SECRET, None, {}, "missing X-Hub-Signature"),  # a token bpsm does not know
        (None, TOKEN, {"Authorization": "Bearer wrong"}, "Bearer token does not match"),
        (FIXTURE_SECRET, TOKEN, {"Authorization": "Bearer wrong"}, "Bearer token does not match"),
        (None, TOKEN, {"Authorization": None}, "missing Authorization: Bearer"),
        (None, TOKEN, {"Authorization": f"Token {TOKEN}"}, "missing Authorization: Bearer"),
        (FIXTURE_SECRET, TOKEN, {"Authorization": None}, "send the X-Hub-Signature or"),
    ],
)
def test_a_wrong_or_missing_credential_is_refused(secret, token, changes, reason):
    with pytest.raises(Unauthorized, match=reason):
        host_with(secret, token).verify(v7_request("v7_bearer_post", **changes))


def test_with_both_credentials_sent_each_is_checked():
    request = v7_request("v7_bearer_and_signature_patch")
    host_with(FIXTURE_SECRET, TOKEN).verify(request)
    host_with(FIXTURE_SECRET).verify(request)  # the Bearer is not configured: the signature
    host_with(token=TOKEN).verify(request)  # and the other way round
    with pytest.raises(Unauthorized, match="X-Hub-Signature does not match"):
        host_with("another-secret-of-16-bytes", TOKEN).verify(request)
    with pytest.raises(Unauthorized, match="Bearer token does not match"):
        host_with(FIXTURE_SECRET, "another-token").verify(request)


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    host_with(token=TOKEN).verify(v7_request("v7_bearer_post"))
    assert (TOKEN.encode(), TOKEN.encode()) in compared


def test_the_token_counts_as_a_credential_at_start(tmp_path):
    env = {"BPSM_MODE": "route", "BPSM_ZAMMAD_URL": "http://zammad.invalid"}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    app, rt = make_app(tmp_path, **env, BPSM_ZAMMAD_WEBHOOK_TOKEN_FILE=str(token_file))
    assert app.test_client().get("/healthz").json["warnings"] == []
    assert rt.host("zammad").settings.webhook_token.get_secret_value() == TOKEN  # type: ignore[attr-defined]
    rt.close()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_zammad_may_send_other_methods_and_other_hosts_may_not(tmp_path, method):
    app, rt = make_app(tmp_path, BPSM_ZAMMAD_WEBHOOK_TOKEN=TOKEN)
    request = v7_request("v7_bearer_post")
    client = app.test_client()
    answer = client.open("/hooks/zammad", method=method, data=request.body, headers=request.headers)  # type: ignore[arg-type]
    assert answer.status_code == 202, answer.json
    refused = client.open("/hooks/zammad", method=method, data=request.body, headers={})
    assert refused.status_code == 401
    for host in ("glpi", "django-helpdesk"):
        other = client.open(f"/hooks/{host}", method=method, data=b"{}")
        assert other.status_code == 405, (host, other.json)
        assert "POST" in other.headers["Allow"]
    rt.close()


def test_setup_keeps_sending_a_signed_test_event_not_a_bearer_one() -> None:
    event = setup_test_event("http://connector.example/hooks/zammad", SECRET)
    assert "X-Hub-Signature" in event.headers and "Authorization" not in event.headers
