"""Near misses of every signing host's check: a compare that accepts a truncated signature,
only its first characters, or a signature of another body must fail here."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from connector.config import HostSettings
from connector.hosts.base import Host, Unauthorized, WebhookRequest
from connector.hosts.django_helpdesk import DjangoHelpdeskHost
from connector.hosts.glpi import GlpiHost
from connector.hosts.zammad import ZammadHost
from connector.mapping import Mapping

SECRET = "near-miss-secret-of-32-bytes-abc"
BODY = b'{"ticket":{"id":81},"article":{"body":"printer"}}'
OTHER = b'{"ticket":{"id":82},"article":{"body":"printer"}}'
STAMP = str(int(time.time()))


def settings(name: str) -> HostSettings:
    return HostSettings(name=name, webhook_secret=SecretStr(SECRET))


def zammad_request(signature: str, body: bytes = BODY) -> WebhookRequest:
    return WebhookRequest("POST", {"X-Hub-Signature": signature}, body)


def zammad_signature(body: bytes) -> str:
    return "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()


def glpi_request(signature: str, body: bytes = BODY) -> WebhookRequest:
    headers = {"X-GLPI-signature": signature, "X-GLPI-timestamp": STAMP}
    return WebhookRequest("POST", headers, body)


def glpi_signature(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body + STAMP.encode(), hashlib.sha256).hexdigest()


def django_request(token: str, body: bytes = BODY) -> WebhookRequest:
    return WebhookRequest("POST", {}, body, query={"token": token})


def flip_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


HOSTS: dict[str, tuple[Host, Callable[[bytes], str], Callable[..., WebhookRequest]]] = {
    "zammad": (ZammadHost(settings("zammad"), Mapping()), zammad_signature, zammad_request),
    "glpi": (GlpiHost(settings("glpi"), Mapping()), glpi_signature, glpi_request),
    "django-helpdesk": (
        DjangoHelpdeskHost(settings("django-helpdesk"), Mapping()),
        lambda body: SECRET,  # the URL token does not depend on the body
        django_request,
    ),
}

NEAR_MISSES: dict[str, Callable[[str], str]] = {
    "truncated by one": lambda good: good[:-1],
    "first 12 characters": lambda good: good[:12],
    "empty": lambda good: "",
    "last character flipped": flip_last,
    "one character longer": lambda good: good + "0",
    "upper case": lambda good: good.upper() if good.upper() != good else good + "X",
}


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_exact_signature_is_accepted(host):
    verifier, sign, request = HOSTS[host]
    verifier.verify(request(sign(BODY)))


@pytest.mark.parametrize("miss", sorted(NEAR_MISSES))
@pytest.mark.parametrize("host", sorted(HOSTS))
def test_near_misses_are_refused(host, miss):
    verifier, sign, request = HOSTS[host]
    good = sign(BODY)
    bad = NEAR_MISSES[miss](good)
    if host in ("zammad", "glpi") and miss == "upper case":
        verifier.verify(request(good.upper()))  # the same hex digest in capitals: accepted
        bad = flip_last(good.upper())
    with pytest.raises(Unauthorized):
        verifier.verify(request(bad))


@pytest.mark.parametrize("host", ["zammad", "glpi"])
def test_a_valid_signature_of_another_body_is_refused(host):
    verifier, sign, request = HOSTS[host]
    with pytest.raises(Unauthorized, match="does not match"):
        verifier.verify(request(sign(OTHER), BODY))


def test_django_helpdesk_a_prefix_or_extension_of_the_token_is_refused():
    verifier, _, request = HOSTS["django-helpdesk"]
    for token in (SECRET[:-1], SECRET[:16], SECRET + "x", " " + SECRET):
        with pytest.raises(Unauthorized):
            verifier.verify(request(token))


def test_glpi_signature_with_the_timestamp_moved_is_refused():
    verifier, sign, _ = HOSTS["glpi"]
    moved = str(int(STAMP) + 1)
    headers = {"X-GLPI-signature": sign(BODY), "X-GLPI-timestamp": moved}
    with pytest.raises(Unauthorized, match="does not match"):
        verifier.verify(WebhookRequest("POST", headers, BODY))


def test_same_refuses_a_missing_value_and_any_difference():
    """The shared compare itself (a mutation test found `same(None, …)` untested: every
    host checks for a missing header before it compares)."""
    from connector.hosts.base import same

    assert same(SECRET, SECRET)
    assert not same(None, SECRET) and not same(None, "")
    assert not same(SECRET[:-1], SECRET) and not same(SECRET, SECRET[:-1])
    assert not same("", SECRET)
