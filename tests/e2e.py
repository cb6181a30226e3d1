"""The connector as a running service inside the test process, for end-to-end tests.

`ConnectorService` serves the real Flask app on a free loopback port (threaded, as gunicorn
would) and runs the real job consumer and pollers. Tests drive a helpdesk (fake or real),
which calls the connector over HTTP, and then read the helpdesk's own state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from connector.catalogue import load_catalogue
from connector.classify import CatalogueIndex, build_index
from connector.config import load_settings
from connector.hosts import settings_models
from connector.jobqueue import BackgroundWorker
from connector.poller import PollerThreads
from connector.runtime import Runtime
from tests.fakes.zammad import FakeZammad
from webhook_app import create_app

ROOT = Path(__file__).resolve().parents[1]
_INDEX: dict[Path, CatalogueIndex] = {}


def example_index(path: Path = ROOT / "catalogue.yaml") -> CatalogueIndex:
    if path not in _INDEX:
        _INDEX[path] = build_index(load_catalogue(path))
    return _INDEX[path]


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class ConnectorService:
    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        consumer_threads: int = 2,
        poll: bool = True,
    ):
        environ = {
            "BPSM_DATA_DIR": str(data_dir),
            "BPSM_RETRY_BASE_DELAY": "0.2",
            "BPSM_RETRY_MAX_DELAY": "1",
            "BPSM_LEASE_SECONDS": "5",
            "BPSM_MAINTENANCE_INTERVAL": "0",  # tests of the proactive process run it
            "BPSM_MAPPINGS_DIR": str(ROOT / "mappings"),
            **(env or {}),
        }
        settings = load_settings(
            environ, hosts=settings_models(), catalogue_path=ROOT / "catalogue.yaml"
        )
        self.runtime = Runtime(settings, index=example_index())
        self.app = create_app(self.runtime)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.background = BackgroundWorker(
            self.runtime.queue, workers=consumer_threads, sweep_interval=1.0
        )
        self.pollers = PollerThreads(self.runtime) if poll else None
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hook_url(self, host: str) -> str:
        return f"{self.url}/hooks/{host}"

    def start(self) -> ConnectorService:
        self._thread.start()
        self.background.start()
        if self.pollers:
            self.pollers.start()
        return self

    def stop(self) -> None:
        if self.pollers:
            self.pollers.stop()
        self.background.stop(graceful=True)
        self.server.shutdown()
        self.runtime.close()

    def __enter__(self) -> ConnectorService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def routing(self, host: str, ticket_id: str | int) -> dict[str, Any] | None:
        return self.runtime.store.routing(host, str(ticket_id))

    def wait_routed(self, host: str, ticket_id: str | int, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the ticket's routing reached a final outcome; return the row."""

        def done() -> dict[str, Any] | None:
            row = self.routing(host, ticket_id)
            return row if row and row["outcome"] != "applying" else None

        result: dict[str, Any] = wait_for(done, timeout, message=f"{host} ticket {ticket_id}")
        return result

    def idle(self) -> bool:
        counts = self.runtime.status_counts()
        return counts["queued"] == 0 and counts["processing"] == 0


# ----- a Zammad-backed connector, as several end-to-end tests need it ------------------------

BPSM_GROUPS = (
    "BPSM Reactive",
    "BPSM Relation",
    "BPSM Change",
    "BPSM Proactive",
    "BPSM Improvement",
    "BPSM Triage",
)
ZAMMAD_TOKEN = "zammad-api-token"


@contextmanager
def zammad_with_bpsm_groups() -> Iterator[FakeZammad]:
    """A fake Zammad whose admin has created the BPSM groups of mappings/zammad.yaml."""
    with FakeZammad(token=ZAMMAD_TOKEN) as fake:
        for group in BPSM_GROUPS:
            fake.add_group(group)
        yield fake


@contextmanager
def zammad_connector(
    data_dir: Path, zammad: FakeZammad, secret: str, env: Mapping[str, str] | None = None
) -> Iterator[ConnectorService]:
    """The connector routing for `zammad`, whose signed trigger webhooks call it."""
    environ = {
        "BPSM_ZAMMAD_URL": zammad.base_url,
        "BPSM_ZAMMAD_TOKEN": ZAMMAD_TOKEN,
        "BPSM_ZAMMAD_WEBHOOK_SECRET": secret,
        **(env or {}),
    }
    with ConnectorService(data_dir, environ) as service:
        zammad.configure_webhook(service.hook_url("zammad"), signature_token=secret)
        yield service


def zammad_setup(
    tmp_path: Path, zammad: FakeZammad, monkeypatch: Any, *extra: str, secret: Path | None = None
) -> Any:
    """`bpsm setup zammad` run as an admin does, in-process; `extra` are more options
    (`--hook-url …`, `--remove`). Returns click's Result."""
    from click.testing import CliRunner

    from connector.cli import main

    token = tmp_path / "token"
    token.write_text(ZAMMAD_TOKEN + "\n")
    monkeypatch.setenv("BPSM_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("BPSM_MAPPINGS_DIR", str(ROOT / "mappings"))
    return CliRunner().invoke(
        main,
        [
            "setup",
            "zammad",
            "--url",
            zammad.base_url,
            "--token-file",
            str(token),
            "--secret-file",
            str(secret or tmp_path / "secret"),
            "--catalogue",
            str(ROOT / "catalogue.yaml"),
            *extra,
        ],
    )
