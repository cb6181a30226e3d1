"""The review page in a real browser (Debian's chromium, driven by Playwright): log in,
filter, open a decision, correct it and see the helpdesk change, replay a dead letter; and
refusals: anonymous access, a form post without the CSRF token. Each page's screenshot goes
to build/screenshots/ (the run prints the folder)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from connector.ui import write_user
from tests.e2e import ROOT, ConnectorService, wait_for, zammad_connector, zammad_with_bpsm_groups
from tests.fakes.zammad import FakeZammad

SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags a headless chromium needs here: as root, without a GPU, and with no calls home
# (this machine has no internet; chromium would retry them for ever).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "s3cr3t-t0k3n-for-the-browser"
PASSWORD = "a long pass phrase for the lead"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def zammad() -> Iterator[FakeZammad]:
    with zammad_with_bpsm_groups() as fake:
        yield fake


@pytest.fixture
def connector(tmp_path, zammad, monkeypatch) -> Iterator[ConnectorService]:
    users = tmp_path / "ui-users"
    write_user(users, "lead", PASSWORD)
    monkeypatch.setenv("BPSM_UI_USERS_FILE", str(users))
    with zammad_connector(tmp_path / "data", zammad, SECRET) as service:
        yield service


def base(connector: ConnectorService) -> str:
    # "localhost", not 127.0.0.1: browsers keep Secure cookies on http only for localhost.
    return connector.url.replace("127.0.0.1", "localhost") + "/ui"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, connector: ConnectorService) -> None:
    page.goto(base(connector) + "/")
    page.fill("input[name=user]", "lead")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("table#decisions")


def test_anonymous_gets_the_login_page(browser, connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    routing = connector.wait_routed("zammad", ticket)
    page = browser.new_page()
    page.goto(f"{base(connector)}/decisions/{routing['id']}")
    assert page.url.startswith(base(connector) + "/login")
    assert "Printer jams" not in page.content()
    shot(page, "login")
    page.close()


def test_log_in_filter_open_and_correct(browser, connector, zammad):
    printer = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    vague = zammad.create_ticket_as_customer("asdf", "qwerty")
    connector.wait_routed("zammad", printer)
    routing = connector.wait_routed("zammad", vague)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    log_in(page, connector)
    assert "Printer jams" in page.inner_text("table#decisions")
    shot(page, "decisions")

    page.check("input[name=low_confidence]")
    page.click("form.filters button[type=submit]")
    rows = page.inner_text("table#decisions")
    assert "asdf" in rows and "Printer jams" not in rows

    page.click(f"a[href$='/decisions/{routing['id']}']")
    assert "no usable text" in page.content()
    shot(page, "decision")
    page.select_option("form#correct select[name=service]", "printing")
    page.select_option("form#correct select[name=process]", "reactive")
    page.click("form#correct button[type=submit]")
    page.wait_for_selector("p.ok")
    wait_for(lambda: zammad.ticket(vague)["group"] == "BPSM Reactive", 20, message="the move")

    # The worker marks the correction applied just after Zammad's answer: the page may
    # still say pending for that moment.
    def shows_applied() -> bool:
        page.reload()
        return "applied" in page.inner_text("td.status")

    wait_for(shows_applied, 20, interval=0.2, message="the page to show the correction applied")
    shot(page, "corrected")
    page.close()


def test_a_form_post_without_the_csrf_token_is_refused(browser, connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    routing = connector.wait_routed("zammad", ticket)
    page = browser.new_page()
    log_in(page, connector)
    # The browser's own session cookie, but no token: what a forged cross-site form sends.
    answer = page.request.post(
        f"{base(connector)}/decisions/{routing['id']}/correct",
        form={"service": "printing", "process": "change"},
    )
    assert answer.status == 400 and "CSRF" in answer.text()
    assert connector.runtime.store.corrections_since() == []
    page.close()


def test_replay_a_dead_letter(browser, connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    connector.wait_routed("zammad", ticket)
    store = connector.runtime.store
    # Given up on as a job would: claimed again (as for a retry), then dead-lettered.
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE bpsm_deliveries SET status = 'queued' WHERE id = 1")
    delivery = store.claim(1, 60.0)
    assert delivery is not None
    assert store.dead_letter(delivery, "403 Forbidden: no access to group BPSM Reactive")
    page = browser.new_page()
    log_in(page, connector)
    page.click("text=Dead letters")
    assert "no access to group" in page.inner_text("table#dead-letters")
    shot(page, "dead-letters")
    page.click("table#dead-letters button[type=submit]")
    page.wait_for_selector("p.ok")
    assert "No dead letters." in page.inner_text("table#dead-letters")
    page.click("text=Report")
    assert "BPSM report" in page.content()
    shot(page, "report")
    page.close()


def test_pages_fit_a_phone(browser, connector, zammad):
    ticket = zammad.create_ticket_as_customer("Printer jams", "The printer keeps jamming.")
    connector.wait_routed("zammad", ticket)
    page = browser.new_page(viewport={"width": 375, "height": 740})
    log_in(page, connector)
    page.goto(base(connector) + "/report")
    # Nothing wider than the screen: charts shrink, wide tables scroll in their own box.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    shot(page, "report-phone")
    page.close()
