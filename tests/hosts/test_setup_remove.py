"""`bpsm setup <host> --remove [--queues]`: the way out, against the fake Zammad and GLPI.

It removes what setup created to deliver events; with --queues also the mapping's queues, but
only those no ticket refers to. Running it twice is harmless."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.hosts import host_settings
from connector.hosts.glpi import GlpiHost
from connector.mapping import load_mapping
from tests.e2e import ROOT, zammad_setup
from tests.fakes.glpi import FakeGLPI
from tests.fakes.zammad import FakeZammad

BPSM_GROUPS = {"BPSM Reactive", "BPSM Relation", "BPSM Change", "BPSM Proactive"}


def test_zammad_remove_takes_away_webhook_and_triggers_then_empty_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeZammad(token="zammad-api-token") as zammad:
        made = zammad_setup(
            tmp_path, zammad, monkeypatch, "--hook-url", "http://connector.example/hooks/zammad"
        )
        assert made.exit_code == 0, made.output
        triggers_before = {t["name"] for t in zammad.db.triggers.values()}
        ticket = zammad.create_ticket_as_customer("Printer", "The printer is jammed again.")
        with zammad._lock:  # an agent put it in one of the BPSM groups
            relation = next(g for g in zammad.db.groups.values() if g["name"] == "BPSM Relation")
            zammad.db.tickets[ticket]["group_id"] = relation["id"]

        removed = zammad_setup(tmp_path, zammad, monkeypatch, "--remove")
        assert removed.exit_code == 0, removed.output
        assert "trigger removed: bpsm-connector: ticket created" in removed.output
        assert "webhook removed: http://connector.example/hooks/zammad" in removed.output
        assert not [w for w in zammad.db.webhooks.values() if w["name"] == "bpsm-connector"]
        left = {t["name"] for t in zammad.db.triggers.values()}
        assert left == {n for n in triggers_before if not n.startswith("bpsm-connector")}
        groups = {g["name"] for g in zammad.db.groups.values()}
        assert groups >= BPSM_GROUPS  # without --queues the groups stay

        queues = zammad_setup(tmp_path, zammad, monkeypatch, "--remove", "--queues")
        assert queues.exit_code == 0, queues.output
        assert "no webhook named bpsm-connector" in queues.output  # a second run is harmless
        assert "group kept: BPSM Relation holds tickets" in queues.output
        assert "group removed: BPSM Reactive" in queues.output
        groups = {g["name"] for g in zammad.db.groups.values()}
        assert "BPSM Relation" in groups and "Users" in groups
        assert not (BPSM_GROUPS - {"BPSM Relation"}) & groups
        assert zammad.ticket(ticket)["group"] == "BPSM Relation"


def test_queues_without_remove_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeZammad(token="zammad-api-token") as zammad:
        result = zammad_setup(tmp_path, zammad, monkeypatch, "--queues")
        assert result.exit_code == 2 and "--queues only goes with --remove" in result.output
        assert not zammad.db.webhooks


def test_glpi_remove_takes_away_webhooks_then_groups_no_ticket_refers_to() -> None:
    with FakeGLPI(version=11, app_token="app-token", user_token="user-token") as fake:
        env = {
            "BPSM_GLPI_URL": fake.url,
            "BPSM_GLPI_APP_TOKEN": "app-token",
            "BPSM_GLPI_USER_TOKEN": "user-token",
        }
        host = GlpiHost(host_settings("glpi", env), load_mapping(ROOT / "mappings" / "glpi.yaml"))
        client = host.client()
        client.setup(host.mapping, "http://connector.example/hooks/glpi")
        other = fake.add_webhook("http://elsewhere.example/", "s3cr3t-s3cr3t", "Ticket", ["new"])
        ticket = fake.create_ticket_as_user("Printer", "The printer is jammed again.")
        fake.assign_group_as_agent(ticket, "BPSM Change")

        lines = client.teardown(host.mapping, queues=False)
        assert "webhook removed: bpsm-connector: Ticket new" in lines
        assert "webhook removed: bpsm-connector: ITILFollowup new" in lines
        with fake._lock:
            assert list(fake._tables["Webhook"]) == other  # the admin's own stays
            groups = {row["name"] for row in fake._tables["Group"].values()}
        assert groups >= BPSM_GROUPS

        lines = client.teardown(host.mapping, queues=True)
        assert "no webhook named bpsm-connector" in lines
        assert "group kept: BPSM Change holds tickets (move or delete them first)" in lines
        assert "group removed: BPSM Reactive" in lines
        with fake._lock:
            groups = {row["name"] for row in fake._tables["Group"].values()}
        assert "BPSM Change" in groups and not (BPSM_GROUPS - {"BPSM Change"}) & groups
        assert fake.assigned_group_names(ticket) == ["BPSM Change"]
        client.close()
