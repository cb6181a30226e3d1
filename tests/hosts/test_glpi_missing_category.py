"""GLPI 10 polling against a GLPI where the mapping's ITIL category does not exist yet (setup
not run): the ticket is routed and gets its private followup, once, and no dead letter — the
warning about the category used to raise KeyError ('name' is a LogRecord attribute)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from connector.logs import record_fields
from tests.e2e import ConnectorService
from tests.fakes.glpi import FakeGLPI
from tests.hosts.test_glpi_e2e import (
    APP_TOKEN,
    GROUPS,
    OSLO_SUMMER,
    PRINTER,
    USER_TOKEN,
    own_followups,
    polling_env,
    started_polling,
)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def glpi_warnings() -> Iterator[list[logging.LogRecord]]:
    """The client's warnings (the service's JSON set-up replaces the root's handlers)."""
    keep = Keep()
    logger = logging.getLogger("bpsm.glpi")
    logger.addHandler(keep)
    yield keep.records
    logger.removeHandler(keep)


def test_polled_ticket_without_its_category_is_routed_with_one_followup(tmp_path, glpi_warnings):
    with FakeGLPI(version=10, app_token=APP_TOKEN, user_token=USER_TOKEN, tz=OSLO_SUMMER) as glpi:
        for group in GROUPS:
            glpi.add_group(group)  # groups exist, ITIL categories do not
        env = polling_env(glpi, tmp_path)
        env["BPSM_MAINTENANCE_INTERVAL"] = "0"  # only the test's own ticket
        with ConnectorService(tmp_path, env) as service:
            started_polling(service)
            ticket_id = glpi.create_ticket_as_user("Printer jams", PRINTER)
            routing = service.wait_routed("glpi", ticket_id)
            assert routing["outcome"] == "applied", service.runtime.store.list_dead_letters()
            assert service.runtime.store.list_dead_letters() == []
        assert glpi.assigned_group_names(ticket_id) == ["BPSM Reactive"]
        assert len(own_followups(glpi, ticket_id)) == 1
        assert not glpi.ticket(ticket_id).get("itilcategories_id")
    warned = [r for r in glpi_warnings if "ITIL category not found" in r.getMessage()]
    assert warned and record_fields(warned[0])["name"] == "Printer"
