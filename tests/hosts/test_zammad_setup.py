"""`bpsm setup zammad` against the fake Zammad: groups, signed webhook, triggers that exclude
the connector, idempotent on a second run; then the configured triggers route a ticket."""

from __future__ import annotations

from pathlib import Path

from connector.notes import NOTE_MARKER
from tests.e2e import ConnectorService, zammad_setup
from tests.fakes.zammad import FakeZammad


def test_setup_is_idempotent_and_routes_afterwards(tmp_path, monkeypatch):
    with FakeZammad(token="zammad-api-token") as zammad:
        # The connector must run with the secret setup generates: start it afterwards.
        probe = ConnectorService(tmp_path / "probe")
        hook_url = probe.hook_url("zammad")
        probe.runtime.close()
        first = run_setup(tmp_path, zammad, hook_url, monkeypatch)
        assert "group created: BPSM Reactive" in first
        assert "webhook created" in first and "trigger created" in first
        secret_file = tmp_path / "secret"
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
        secret = secret_file.read_text().strip()
        assert secret not in first  # the secret goes to the file, not the terminal

        second = run_setup(tmp_path, zammad, hook_url, monkeypatch)
        assert "group created" not in second and "webhook exists" in second
        assert "trigger exists" in second
        webhooks = [w for w in zammad.db.webhooks.values() if w["name"] == "bpsm-connector"]
        assert len(webhooks) == 1 and webhooks[0]["ssl_verify"] is True

        env = {
            "BPSM_ZAMMAD_URL": zammad.base_url,
            "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
            "BPSM_ZAMMAD_WEBHOOK_SECRET_FILE": str(secret_file),
        }
        with ConnectorService(tmp_path / "svc", env) as service:
            for webhook in webhooks:
                with zammad._lock:
                    zammad.db.webhooks[webhook["id"]]["endpoint"] = service.hook_url("zammad")
            ticket_id = zammad.create_ticket_as_customer(
                "Printer", "The printer on the 2nd floor keeps jamming and prints blank pages."
            )
            routing = service.wait_routed("zammad", ticket_id)
            assert routing["outcome"] == "applied"
            assert zammad.ticket(ticket_id)["group"] == "BPSM Reactive"
            notes = [a for a in zammad.articles(ticket_id) if NOTE_MARKER in str(a["body"])]
            assert len(notes) == 1
            # Creation fires both triggers (the first one wins, the other is a duplicate);
            # the connector's own note fires neither.
            zammad.wait_for_jobs()
            senders = [d.json()["article"].get("sender") for d in zammad.deliveries]
            assert senders == ["Customer", "Customer"]


def run_setup(tmp_path: Path, zammad: FakeZammad, hook_url: str, monkeypatch) -> str:
    result = zammad_setup(tmp_path, zammad, monkeypatch, "--hook-url", hook_url)
    assert result.exit_code == 0, result.output
    return result.output
