"""Zammad's pure part (connector/hosts/zammad/sansio.py): error hints and the test event
`bpsm setup zammad` sends. Webhook parsing and signatures: tests/test_fixtures_app.py and
tests/test_signatures.py; the client: test_zammad_e2e.py, test_zammad_setup.py."""

from __future__ import annotations

from typing import Any

import requests
from pydantic import SecretStr

from connector.hosts.base import Ignored, WebhookRequest
from connector.hosts.zammad import ZammadHost
from connector.hosts.zammad.sansio import setup_test_event, zammad_error_text
from connector.hosts.zammad.settings import ZammadSettings
from connector.mapping import Mapping

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
