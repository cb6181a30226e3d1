"""What every helpdesk package promises, checked for every entry of `host_classes()`: a fifth
host is checked as soon as it is registered, and each failure says what it lacks.

* the package is whole (sansio/client/settings, mapping, guide with its trial, upgrade and
  uninstall sections, fixtures) and its `sansio.py` does no I/O;
* its settings model's keys are read from BPSM_<HOST>_* (secrets also from `_FILE`);
* every recorded webhook fixture is queued, ignored or malformed — by `Host.parse` and
  through the app — never an exception or a 500;
* the loop guard: a fixture of the connector's own note (`*by_connector*`, `*own_note*`) is
  ignored as an own update;
* a retried `apply` (the job's retry after a lost answer) makes no second non-idempotent
  write: such writes (the note) go out once (HttpTransport never retries a POST in the call
  unless the client declares it idempotent) and are looked for before they are repeated;
* `setup` is idempotent: a second run creates nothing.

The writes run against a harness per host (HARNESSES: a fake or a stand-in of its API);
see connector/hosts/README.md for adding one.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from pydantic import SecretStr

from connector.config import HostSettings, env_prefix, load_settings
from connector.events import TicketEvent
from connector.hosts import host_classes, host_settings, settings_models
from connector.hosts.base import (
    BadPayload,
    Host,
    HostClient,
    Ignored,
    MappingOptions,
    WebhookRequest,
    read_mapping_options,
)
from connector.hosts.http import HttpTransport
from connector.mapping import Mapping, load_mapping
from tests.fakes.glpi import FakeGLPI
from tests.fakes.zammad import FakeZammad
from tests.hosts.test_glpi_e2e import APP_TOKEN, USER_TOKEN, api_env, seed
from tests.hosts.test_lost_answers import (
    DJ,
    PRINTER,
    QUEUE_IDS,
    RT,
    HelpdeskStandIn,
    RTStandIn,
    decision_for,
)
from tests.test_security import make_app

HOSTS = sorted(host_classes())
HOOK_URL = "http://connector.example/hooks/"
PACKAGE_FILES = ("__init__.py", "sansio.py", "client.py", "settings.py", "mapping.yaml", "guide.md")
GUIDE_SECTIONS = ("## Try it safely first", "## Upgrading", "## Uninstall")
OWN_NOTE_NAMES = ("by_connector", "own_note")  # fixtures of the connector's own writes
IO_MODULES = ("requests", "socket", "urllib.request", "http.client", "connector.hosts.http")


def is_helpdesk(cls: type[Host]) -> bool:
    """A host with an API client; `demo` has none (it only records what it would do)."""
    return cls.client is not Host.client


HELPDESKS = [name for name in HOSTS if is_helpdesk(host_classes()[name])]


def package(name: str) -> Path:
    return Path(__import__(host_classes()[name].__module__, fromlist=["_"]).__file__).parent


def webhook_fixtures(name: str) -> list[Path]:
    """The recorded payloads: every file of fixtures/ but headers, meta data and notes
    (contract/ keeps the helpdesks' own documentation)."""
    folder = package(name) / "fixtures"
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.name != "README.md"
        and not path.name.endswith((".headers.json", ".meta.json", ".request.json"))
    )


def request_for(path: Path) -> WebhookRequest:
    """The fixture as a request: its headers (`<name>.headers.json`) and, where the helpdesk
    does not POST or the URL carries something, its method and query (`<name>.request.json`)."""
    stem = path.name.rsplit(".", 1)[0]
    headers_file = path.with_name(stem + ".headers.json")
    headers = json.loads(headers_file.read_text()) if headers_file.exists() else {}
    request_file = path.with_name(stem + ".request.json")
    extra = json.loads(request_file.read_text()) if request_file.exists() else {}
    method, query = extra.get("method", "POST"), extra.get("query", {})
    return WebhookRequest(method, headers, path.read_bytes(), query)


def default_mapping(name: str) -> Mapping:
    return load_mapping(package(name) / "mapping.yaml")


FIXTURE_CASES = [(name, path.name) for name in HELPDESKS for path in webhook_fixtures(name)]


# ----- the package ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HELPDESKS)
def test_the_package_is_whole(name: str) -> None:
    cls = host_classes()[name]
    folder = package(name)
    assert (folder / "__init__.py").exists(), f"{name}: make it a package, connector/hosts/<x>/"
    missing = [f for f in PACKAGE_FILES if not (folder / f).is_file()]
    assert not missing, f"{name}: the package lacks {missing} (see connector/hosts/README.md)"
    assert webhook_fixtures(name), f"{name}: record its webhooks or API answers in fixtures/"
    guide = (folder / "guide.md").read_text()
    absent = [s for s in GUIDE_SECTIONS if s not in guide]
    assert not absent, f"{name}: guide.md lacks the sections {absent}"
    assert f"bpsm setup {name}" in guide, f"{name}: the guide must show `bpsm setup {name}`"
    assert cls.settings_model is not HostSettings, f"{name}: declare its settings model"
    assert cls.settings_model.__module__.endswith(".settings")
    assert issubclass(cls.options_model, MappingOptions)
    mapping = default_mapping(name)
    assert mapping.host in (None, name), f"{name}: mapping.yaml names host {mapping.host!r}"
    read_mapping_options(name, cls.options_model, mapping.options)  # the defaults are valid


@pytest.mark.parametrize("name", HELPDESKS)
def test_sansio_does_no_io(name: str) -> None:
    tree = ast.parse((package(name) / "sansio.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    io = sorted(m for m in imported if m.startswith(IO_MODULES))
    assert not io, f"{name}: sansio.py imports {io}; I/O belongs in client.py"


def full_environment(name: str, folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A value for every key the host declares (secrets through `_FILE`), and the values
    its settings should then hold."""
    model = host_classes()[name].settings_model
    prefix = env_prefix(name)
    env: dict[str, str] = {}
    expected: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        if key in model.not_from_env:
            continue
        variable = prefix + model.env_names.get(key, key.upper())
        kinds = str(info.annotation)
        if "SecretStr" in kinds:
            secret = folder / key
            secret.write_text(f"{key}-secret-of-more-than-16-bytes\n")
            env[variable + "_FILE"] = str(secret)
            expected[key] = f"{key}-secret-of-more-than-16-bytes"
        elif "bool" in kinds:
            env[variable], expected[key] = "1", True
        elif "float" in kinds:
            env[variable], expected[key] = "2.5", 2.5
        elif key == "url":
            env[variable], expected[key] = "http://helpdesk.example/", "http://helpdesk.example"
        elif key == "api_version":  # GLPI's, read as a version number
            env[variable], expected[key] = "11", "11"
        else:
            env[variable], expected[key] = f"{key}-value", f"{key}-value"
    return env, expected


@pytest.mark.parametrize("name", HOSTS)
def test_every_declared_key_is_read_from_the_environment(name: str, tmp_path: Path) -> None:
    env, expected = full_environment(name, tmp_path)
    settings = host_settings(name, env)
    assert isinstance(settings, host_classes()[name].settings_model)
    for key, value in expected.items():
        read = getattr(settings, key)
        read = read.get_secret_value() if isinstance(read, SecretStr) else read
        assert read == value, f"{name}: {key} was not read from its variable"


@pytest.mark.parametrize("name", HELPDESKS)
def test_the_client_waits_bpsm_http_timeout(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, _ = full_environment(name, tmp_path)
    env.pop(env_prefix(name) + "POLL_INTERVAL", None)
    settings = load_settings({**env, "BPSM_HTTP_TIMEOUT": "3.5"}, hosts=settings_models(name))
    timeouts: list[float] = []
    build = HttpTransport.__init__

    def init(self: HttpTransport, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        timeouts.append(self.timeout)

    monkeypatch.setattr(HttpTransport, "__init__", init)
    mapping = default_mapping(name)
    if name == "django-helpdesk":
        mapping = mapping.model_copy(update={"options": {"queue_ids": QUEUE_IDS}})
    host_classes()[name](settings.host(name), mapping).client().close()
    assert timeouts and set(timeouts) == {3.5}, f"{name}: pass settings.http_timeout on"


# ----- webhooks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fixture", FIXTURE_CASES)
def test_a_recorded_fixture_is_queued_ignored_or_malformed(name: str, fixture: str) -> None:
    host = host_classes()[name](HostSettings(name=name), default_mapping(name))
    try:
        outcome = host.parse(request_for(package(name) / "fixtures" / fixture))
    except BadPayload:
        return
    assert isinstance(outcome, TicketEvent | Ignored), outcome


@pytest.mark.parametrize("name,fixture", FIXTURE_CASES)
def test_a_recorded_fixture_through_the_app_never_fails(
    name: str, fixture: str, tmp_path: Path
) -> None:
    app, runtime = make_app(tmp_path)  # dry-run, no secret: nothing to verify against
    request = request_for(package(name) / "fixtures" / fixture)
    answer = app.test_client().open(
        f"/hooks/{name}",
        method=request.method,
        data=request.body,
        headers=dict(request.headers),  # type: ignore[call-overload]
        query_string=dict(request.query),
    )
    runtime.close()
    assert answer.status_code in (200, 202, 400), (answer.status_code, answer.json)


@pytest.mark.parametrize("name", HELPDESKS)
def test_the_connectors_own_note_is_ignored(name: str) -> None:
    cls = host_classes()[name]
    own = [p for p in webhook_fixtures(name) if any(m in p.name for m in OWN_NOTE_NAMES)]
    if cls.polling:  # no webhooks (RT): the poller's own guard is the client's business
        assert not own
        return
    assert own, (
        f"{name}: record a webhook of the connector's own note, written by its own API user, "
        f"as fixtures/<...>{OWN_NOTE_NAMES[0]}.json"
    )
    host = cls(HostSettings(name=name), default_mapping(name))
    for path in own:
        outcome = host.parse(request_for(path))
        assert isinstance(outcome, Ignored) and outcome.label == "own-update", (path, outcome)


# ----- writes ----------------------------------------------------------------------------------


@dataclass
class Write:
    method: str
    path: str
    once: bool  # not retried within the call


@dataclass
class Recorder:
    writes: list[Write] = field(default_factory=list)

    def creations(self) -> list[Write]:
        """The writes that went out once: those that are not safe to repeat (POSTs that
        create something), as opposed to those the client declares idempotent."""
        return [w for w in self.writes if w.once]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Every write any HttpTransport sends, and whether it may be retried in the call."""
    found = Recorder()
    send = HttpTransport.request

    def request(self: HttpTransport, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        idempotent = kwargs.get("idempotent")
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
        if method.upper() not in ("GET", "HEAD", "OPTIONS"):
            path_only = urlsplit(self.url(path)).path
            once = not idempotent or self.attempts == 1
            found.writes.append(Write(method.upper(), path_only, once))
        return send(self, method, path, *args, **kwargs)

    monkeypatch.setattr(HttpTransport, "request", request)
    return found


@dataclass
class Harness:
    """A client against a working stand-in of the helpdesk, and a ticket event for it."""

    client: HostClient
    event: TicketEvent
    mapping: Mapping


@contextmanager
def zammad_harness() -> Iterator[Harness]:
    with FakeZammad(token="zammad-api-token") as fake:
        for group in ("BPSM Reactive", "BPSM Relation", "BPSM Triage"):
            fake.add_group(group)
        ticket = fake.create_ticket_as_customer("Printer", PRINTER)
        env = {"BPSM_ZAMMAD_URL": fake.base_url, "BPSM_ZAMMAD_TOKEN": "zammad-api-token"}
        host = host_classes()["zammad"](host_settings("zammad", env), default_mapping("zammad"))
        event = TicketEvent(host="zammad", delivery_id="d", ticket_id=str(ticket), body=PRINTER)
        yield Harness(host.client(), event, host.mapping)


@contextmanager
def glpi_harness() -> Iterator[Harness]:
    with FakeGLPI(version=11, app_token=APP_TOKEN, user_token=USER_TOKEN) as fake:
        seed(fake)
        ticket = fake.create_ticket_as_user("Printer jams", f"<p>{PRINTER}</p>")
        host = host_classes()["glpi"](host_settings("glpi", api_env(fake)), default_mapping("glpi"))
        event = TicketEvent(host="glpi", delivery_id="d", ticket_id=str(ticket), body=PRINTER)
        yield Harness(host.client(), event, host.mapping)


class RTSetupStandIn(RTStandIn):
    """RTStandIn plus what setup touches: queues, the custom field, the connector's user."""

    def __init__(self, rsps: responses.RequestsMock):
        super().__init__(rsps, "504")
        self.named_queues: set[str] = {"General"}
        self.fields: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        if found := re.fullmatch(r"/queue/(.+)", path):
            name = found[1].replace("%20", " ")
            if name in self.named_queues:
                return 200, {"Name": name, "TicketCustomFields": [{"name": "BPSM Service"}]}
            return 404, {"message": "Not found"}
        if path == "/queue" and method == "POST":
            self.named_queues.add(body["Name"])
            return 201, {"id": len(self.named_queues)}
        if path == "/customfields":
            wanted = json.loads(query["query"][0])[0]["value"]
            return 200, {"items": [{"Name": wanted}] if wanted in self.fields else []}
        if path == "/customfield" and method == "POST":
            self.fields.add(body["Name"])
            return 201, {"id": 1}
        if found := re.fullmatch(r"/user/(.+)", path):
            user = self.users.get(found[1])
            return (200, user) if user else (404, {"message": "Not found"})
        if path == "/user" and method == "POST":
            self.users[body["Name"]] = {**body, "Privileged": "1"}
            return 201, {"id": 7}
        return super().route(method, path, query, body)


@contextmanager
def rt_harness() -> Iterator[Harness]:
    env = {"BPSM_RT_URL": RT.removesuffix("/REST/2.0"), "BPSM_RT_TOKEN": "1-2-abc"}
    mapping = default_mapping("rt")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        RTSetupStandIn(rsps)
        host = host_classes()["rt"](host_settings("rt", env), mapping)
        event = TicketEvent(
            host="rt", delivery_id="d", ticket_id="1", body=PRINTER, queue="General"
        )
        yield Harness(host.client(), event, mapping)


@contextmanager
def django_helpdesk_harness() -> Iterator[Harness]:
    env = {
        "BPSM_DJANGO_HELPDESK_URL": DJ,
        "BPSM_DJANGO_HELPDESK_USER": "bpsm",
        "BPSM_DJANGO_HELPDESK_PASSWORD": "secret",
    }
    name = "django-helpdesk"
    mapping = default_mapping(name).model_copy(update={"options": {"queue_ids": QUEUE_IDS}})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        HelpdeskStandIn(rsps, "504")
        host = host_classes()[name](host_settings(name, env), mapping)
        event = TicketEvent(
            host=name, delivery_id="d", ticket_id="1", body=PRINTER, queue="general"
        )
        yield Harness(host.client(), event, mapping)


HARNESSES: dict[str, Callable[[], AbstractContextManager[Harness]]] = {
    "zammad": zammad_harness,
    "glpi": glpi_harness,
    "rt": rt_harness,
    "django-helpdesk": django_helpdesk_harness,
}


def harness(name: str) -> AbstractContextManager[Harness]:
    assert name in HARNESSES, (
        f"{name}: add a harness to tests/hosts/test_conformance.py (a fake or a stand-in of "
        "its API, as the others) so that its writes can be checked"
    )
    return HARNESSES[name]()


@pytest.mark.parametrize("name", HELPDESKS)
def test_a_retried_apply_writes_nothing_twice(name: str, recorder: Recorder) -> None:
    with harness(name) as stand_in:
        decision = decision_for(name, stand_in.event.queue)
        stand_in.client.apply(stand_in.event, decision, "route")
        assert recorder.creations(), f"{name}: apply wrote no note (or retried it in the call)"
        recorder.writes.clear()
        # The job's retry after a lost answer: everything was saved the first time.
        stand_in.client.apply(stand_in.event, decision, "route")
        again = recorder.creations()
        assert not again, f"{name}: a retried apply wrote again (look for it first): {again}"
        stand_in.client.close()


@pytest.mark.parametrize("name", HELPDESKS)
def test_setup_twice_creates_nothing_new(name: str, recorder: Recorder, tmp_path: Path) -> None:
    with harness(name) as stand_in:
        stand_in.client.secret_file = tmp_path / "secret"
        first = stand_in.client.setup(stand_in.mapping, HOOK_URL + name)
        assert first.lines, f"{name}: setup must say what it did"
        recorder.writes.clear()
        second = stand_in.client.setup(stand_in.mapping, HOOK_URL + name)
        assert not recorder.creations(), f"{name}: setup created again: {recorder.creations()}"
        assert not [line for line in second.lines if " created:" in line], second.lines
        kept = (None, first.webhook_secret)
        assert second.webhook_secret in kept, f"{name}: a second setup made a new secret"
        stand_in.client.close()
