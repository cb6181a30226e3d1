"""`bpsm setup` keeps the webhook secret it generates safe: written first (0600, O_EXCL), so a
setup that fails after the helpdesk's webhook exists does not lose the key it signs with."""

from __future__ import annotations

import os
from pathlib import Path

from connector.secretfile import claim_secret
from tests.e2e import zammad_setup
from tests.fakes.zammad import FakeZammad


def test_a_setup_failing_after_the_webhook_keeps_its_secret(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    # No admin.trigger: setup creates the groups and the webhook, then fails on the triggers.
    perms = ("admin.group", "admin.webhook", "ticket.agent")
    with FakeZammad(token="zammad-api-token", token_permissions=perms) as zammad:
        code, output = setup_zammad(tmp_path, zammad, secret, monkeypatch)
        assert code == 1 and "setup failed" in output, output
        webhooks = [w for w in zammad.db.webhooks.values() if w["name"] == "bpsm-connector"]
        assert len(webhooks) == 1
        assert oct(secret.stat().st_mode & 0o777) == "0o600"
        assert secret.read_text().strip() == webhooks[0]["signature_token"]
        assert f"the webhook secret is kept in {secret}" in output


def test_an_existing_secret_file_is_made_private_and_reused(tmp_path):
    path = tmp_path / "secret"
    path.write_text("an-earlier-secret-of-enough-bytes\n")
    os.chmod(path, 0o644)
    assert claim_secret(path) == "an-earlier-secret-of-enough-bytes"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text("exactly-16-bytes\n")  # the shortest secret the service accepts
    assert claim_secret(path) == "exactly-16-bytes"
    # A file too short to be a secret is replaced, still owner-only.
    path.write_text("fifteen-bytes!!\n")
    fresh = claim_secret(path)
    assert len(fresh) >= 16 and path.read_text().strip() == fresh
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_new_secret_file_is_created_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "etc" / "bpsm" / "secret"  # folders made as needed
        secret = claim_secret(path)
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.read_text() == secret + "\n"


def setup_zammad(tmp_path: Path, zammad: FakeZammad, secret: Path, monkeypatch) -> tuple[int, str]:
    hook = ("--hook-url", "http://127.0.0.1:9/hooks/zammad")
    result = zammad_setup(tmp_path, zammad, monkeypatch, *hook, secret=secret)
    return result.exit_code, result.output
