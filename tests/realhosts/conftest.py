"""Fixtures for end-to-end tests against real helpdesk servers running on this machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .django_helpdesk_server import (
    DjangoHelpdeskFactory,
    DjangoHelpdeskServer,
    ensure_helpdesk_venv,
)
from .rt_server import RTServer, ensure_rt_installed

# -- django-helpdesk (tests/realhosts/django_helpdesk_server.py) ---------------------------


@pytest.fixture(scope="session")
def django_helpdesk_venv() -> Path:
    """The django-helpdesk virtualenv (built once, cached under .cache/django_helpdesk-venv)."""
    return ensure_helpdesk_venv()


@pytest.fixture
def django_helpdesk_factory(django_helpdesk_venv: Path) -> Iterator[DjangoHelpdeskFactory]:
    """Start real django-helpdesk servers; every one is stopped when the test ends.

    ``django_helpdesk_factory(webhook_urls=[...], followup_webhook_urls=[...], **kwargs)``
    returns a started ``DjangoHelpdeskServer`` (fresh database, staff users ``admin``
    and ``bpsm``, queue ``general``); keyword arguments go to its constructor
    (``extra_env``, ``fast_password_hasher``, ``ready_timeout``).
    """
    servers: list[DjangoHelpdeskServer] = []

    def make(*args: Any, **kwargs: Any) -> DjangoHelpdeskServer:
        kwargs.setdefault("venv_dir", django_helpdesk_venv)
        server = DjangoHelpdeskServer(*args, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


# -- Request Tracker 5 -----------------------------------------------------------------


@pytest.fixture(scope="session")
def rt_server() -> Iterator[RTServer]:
    """A real Request Tracker 5 on 127.0.0.1, fresh database, for the whole session.

    Installs Debian's request-tracker5 + rt5-db-sqlite when missing (needs root and the
    Debian mirror; fails, never skips, when that is impossible).  Tests share it, so they
    should use their own queue/user names or tolerate each other's tickets.
    """
    install_s = ensure_rt_installed()
    t0 = time.monotonic()
    with RTServer() as rt:
        timings = {"install_s": install_s, **rt.timings, "fixture_s": time.monotonic() - t0}
        print(
            "\n[rt_server] "
            + ", ".join(f"{k}={v:.2f}" for k, v in timings.items())
            + f" url={rt.url} dir={rt.tmpdir}"
        )
        yield rt
