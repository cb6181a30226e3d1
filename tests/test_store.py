"""Store details that need no helpdesk: which URLs are files, in-memory databases."""

from __future__ import annotations

import pytest

from connector.store import Store, _sqlite_file


@pytest.mark.parametrize(
    "url,expected",
    [
        ("sqlite:////var/lib/bpsm/bpsm.db", "/var/lib/bpsm/bpsm.db"),
        ("sqlite:///data/bpsm.db", "data/bpsm.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql+psycopg://bpsm@db/bpsm", None),
    ],
)
def test_sqlite_file_of_a_url(url, expected):
    assert _sqlite_file(url) == expected


def test_an_in_memory_store_needs_no_lock_files():
    store = Store("sqlite://")  # used to try a lock file named "sqlite:/.migrate.lock"
    assert store.count_deliveries() == 0
