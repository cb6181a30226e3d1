"""A helpdesk that refuses the connector's user (Zammad: no agent access to the source or
the target group; GLPI: a right missing from the profile) ends as a permanent dead letter
whose reason tells the admin what to grant — after one try, not a retry budget later."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import ConnectorService
from tests.fakes.glpi import FakeGLPI
from tests.fakes.zammad import FakeZammad
from tests.hosts.test_glpi_e2e import (  # noqa: F401 - pytest fixtures
    PRINTER,
    api_calls,
    connector11,
    glpi11,
    settle,
)

SECRET = "denial-webhook-secret-32-bytes!!"
BPSM_GROUPS = ["BPSM Reactive", "BPSM Relation", "BPSM Change", "BPSM Triage"]
PRINTER_JAM = "The printer on the 2nd floor keeps jamming and prints blank pages."


@pytest.fixture
def api() -> str:
    """The rights named here are the legacy API's (profile rights per apirest.php call)."""
    return "v1"


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with FakeZammad(token="zammad-api-token") as fake:
        for group in [*BPSM_GROUPS, "BPSM Proactive", "BPSM Improvement"]:
            fake.add_group(group)
        yield fake


@pytest.fixture
def connector(tmp_path, zammad) -> Iterator[ConnectorService]:
    env = {
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": "zammad-api-token",
        "BPSM_ZAMMAD_WEBHOOK_SECRET": SECRET,
        "BPSM_MAINTENANCE_INTERVAL": "0",
    }
    with ConnectorService(tmp_path, env) as service:
        zammad.configure_webhook(service.hook_url("zammad"), signature_token=SECRET)
        yield service


@pytest.mark.parametrize(
    "access,refused",
    [
        (BPSM_GROUPS, "GET"),  # no access to the source group: not even readable
        (["Users"], "PUT"),  # the source only: the move into BPSM Reactive is refused
    ],
)
def test_zammad_group_access_denied_is_a_permanent_dead_letter(zammad, connector, access, refused):
    zammad.restrict_group_access("bpsm-connector", access)
    ticket_id = zammad.create_ticket_as_customer("Printer jams", PRINTER_JAM)
    routing = connector.wait_routed("zammad", ticket_id)
    assert routing["outcome"] == "failed"
    letters = connector.runtime.store.list_dead_letters()
    assert len(letters) == 1
    assert "403" in letters[0]["reason"]
    assert "lacks ticket.agent on the ticket's groups" in letters[0]["reason"]
    denied = [c for c in zammad.api_calls if c.status == 403]
    assert [c.method for c in denied] == [refused]  # tried once: a 403 is not retried
    assert zammad.ticket(ticket_id)["group"] == "Users"
    assert not [a for a in zammad.articles(ticket_id) if a["internal"]]


@pytest.mark.parametrize(
    "itemtype,right,hint",
    [
        ("Group_Ticket", "create", "Assistance > Tickets: Update and Assign a ticket"),
        ("ITILFollowup", "create", "Assistance > Followups: Add to all tickets"),
    ],
)
def test_glpi_right_missing_is_a_permanent_dead_letter_naming_the_right(
    glpi11: FakeGLPI,  # noqa: F811
    connector11: ConnectorService,  # noqa: F811
    itemtype,
    right,
    hint,
):
    settle(glpi11)
    glpi11.deny(itemtype, right)
    ticket_id = glpi11.create_ticket_as_user("Printer", PRINTER)
    routing = connector11.wait_routed("glpi", ticket_id)
    assert routing["outcome"] == "failed"
    letters = connector11.runtime.store.list_dead_letters()
    assert len(letters) == 1
    assert "You don't have permission to perform this action" in letters[0]["reason"]
    assert f"the API user's profile lacks the right '{hint}'" in letters[0]["reason"]
    refused = [
        c
        for c in api_calls(glpi11, "POST", itemtype)
        if c.status >= 400 and ticket_id in (c.body.get("input") or {}).values()
    ]
    assert len(refused) == 1  # GLPI answers 400 ERROR_GLPI_ADD: permanent, not retried
