"""The shared HTTP transport: environment settings read once, at start."""

from __future__ import annotations

import responses

from connector.hosts.http import HttpTransport


def test_proxy_and_ca_bundle_come_from_the_environment_at_start(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    transport = HttpTransport("https://helpdesk.example.org", "zammad")
    assert transport.session.proxies["https"] == "http://proxy.example:3128"
    assert transport.session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert transport.session.trust_env is False  # not looked up again per request


def test_no_proxy_for_the_helpdesk_is_respected(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "helpdesk.example.org")
    transport = HttpTransport("https://helpdesk.example.org", "zammad")
    assert "https" not in transport.session.proxies


@responses.activate
def test_requests_still_go_out_after_the_environment_is_frozen(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    responses.get("https://helpdesk.example.org/api/v1/users/me", json={"id": 3})
    transport = HttpTransport("https://helpdesk.example.org", "zammad")
    assert transport.request("GET", "/api/v1/users/me").json() == {"id": 3}
