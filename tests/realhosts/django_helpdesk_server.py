"""Run a real django-helpdesk 2.6 (from PyPI) for end-to-end tests.

The helpdesk lives in its own virtualenv, as an admin would run it beside the
connector: ``ensure_helpdesk_venv()`` builds it once from
``tests/realhosts/django_helpdesk/requirements.txt`` and caches it under
``.cache/django_helpdesk-venv`` (rebuilt when that file changes).

``DjangoHelpdeskServer`` runs the minimal project in ``tests/realhosts/django_helpdesk``
on a fresh SQLite database in a temp dir, with two staff users and a default
queue, served by Django's threaded ``runserver`` on a free loopback port::

    with DjangoHelpdeskServer(webhook_urls=[hook], followup_webhook_urls=[hook]) as hd:
        ids = hd.queues({"bpsm-reactive": "BPSM Reactive"})
        ticket = hd.create_ticket(ids["general"], "Printer on fire", "Help")

Facts the harness relies on (django-helpdesk 2.6.1, ``helpdesk/`` package):

* webhook targets come from the helpdesk process's environment (settings.py:559-578):
  ``HELPDESK_NEW_TICKET_WEBHOOK_URLS`` is split with ``str.split(",")``, while
  ``HELPDESK_FOLLOWUP_WEBHOOK_URLS`` is split with ``re.split(r"[\\s],[\\s]", ...)``,
  i.e. only at a comma with exactly one whitespace character on each side. So
  several follow-up URLs must be joined with ``" , "`` and several new-ticket URLs
  with ``","`` (see ``webhook_env``);
* the webhooks are posted synchronously from the request that created the ticket
  or follow-up (webhooks.py), which is why the server must be threaded;
* there is no queue endpoint: queues come from the ``bpsm_queues`` command of
  ``contrib/django_helpdesk``;
* follow-ups are listed through the ticket (``followup_set`` of
  ``GET /api/tickets/N/``); ``/api/followups/`` lists every follow-up of every
  ticket, paginated, with no ticket filter.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_DIR = Path(__file__).resolve().parent / "django_helpdesk"
REQUIREMENTS = PROJECT_DIR / "requirements.txt"
CONTRIB_DIR = REPO_ROOT / "contrib" / "django_helpdesk"
VENV_DIR = REPO_ROOT / ".cache" / "django_helpdesk-venv"
_STAMP_NAME = ".bpsm-requirements.sha256"

ADMIN_USER = ("admin", "admin-password")
CONNECTOR_USER = ("bpsm", "bpsm-password")
DEFAULT_QUEUES: dict[str, str] = {"general": "General"}

PIP_TIMEOUT_S = 900.0
MANAGE_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 30.0

# Wall-clock seconds of the last venv build / server starts, for the tests to report.
TIMINGS: dict[str, float] = {}


class HelpdeskHarnessError(RuntimeError):
    """The real helpdesk could not be installed, started or driven."""


# --------------------------------------------------------------------------- venv


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _requirements_stamp() -> str:
    """What a cached venv must have been built from: requirements and interpreter."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(f"\npython {sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def _venv_is_current(venv_dir: Path, stamp: str) -> bool:
    stamp_file = venv_dir / _STAMP_NAME
    return (
        _venv_python(venv_dir).exists()
        and stamp_file.exists()
        and stamp_file.read_text().strip() == stamp
    )


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def ensure_helpdesk_venv() -> Path:
    """Return the helpdesk's virtualenv, building it first if needed.

    Built once under ``.cache/django_helpdesk-venv`` and reused while the hash of
    ``django_helpdesk/requirements.txt`` (and the Python minor version) matches. The
    build happens in a sibling temp dir that is renamed into place only after
    ``pip install`` succeeded, under a file lock, so a failed or concurrent build
    never leaves a half-installed venv behind. Raises ``HelpdeskHarnessError``
    (never skips) when the build fails.
    """
    stamp = _requirements_stamp()
    if _venv_is_current(VENV_DIR, stamp):
        return VENV_DIR

    VENV_DIR.parent.mkdir(parents=True, exist_ok=True)
    lock_path = VENV_DIR.parent / (VENV_DIR.name + ".lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_is_current(VENV_DIR, stamp):  # another process built it meanwhile
            return VENV_DIR

        started = time.monotonic()
        build_dir = Path(tempfile.mkdtemp(prefix=VENV_DIR.name + ".build-", dir=VENV_DIR.parent))
        try:
            try:
                venv.EnvBuilder(with_pip=True, clear=True).create(build_dir)
            except Exception as exc:  # noqa: BLE001 - report whatever venv raised
                raise HelpdeskHarnessError(
                    f"could not create the django-helpdesk venv in {build_dir}: {exc}"
                ) from exc
            cmd = [
                str(_venv_python(build_dir)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(REQUIREMENTS),
            ]
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise HelpdeskHarnessError(
                    f"pip install for the django-helpdesk venv took over {PIP_TIMEOUT_S:.0f}s"
                ) from exc
            if proc.returncode != 0:
                raise HelpdeskHarnessError(
                    f"pip install -r {REQUIREMENTS} failed (exit {proc.returncode}); "
                    f"is PyPI reachable?\n--- pip output (tail) ---\n"
                    f"{_tail(proc.stdout + proc.stderr)}"
                )
            (build_dir / _STAMP_NAME).write_text(stamp + "\n")
            if VENV_DIR.exists():
                shutil.rmtree(VENV_DIR)
            build_dir.rename(VENV_DIR)
        finally:
            if build_dir.exists():
                shutil.rmtree(build_dir, ignore_errors=True)
        TIMINGS["venv_build_s"] = time.monotonic() - started
    return VENV_DIR


# ------------------------------------------------------------------------ server

# What the ``django_helpdesk_factory`` fixture (conftest.py) hands a test.
DjangoHelpdeskFactory = Callable[..., "DjangoHelpdeskServer"]


def webhook_env(
    webhook_urls: Sequence[str] = (), followup_webhook_urls: Sequence[str] = ()
) -> dict[str, str]:
    """The environment variables django-helpdesk 2.6 reads its webhook targets from.

    New-ticket URLs are split at "," (settings.py:570-574) and follow-up URLs only
    at a comma with exactly one whitespace character on each side (r"[\\s],[\\s]",
    settings.py:559-563), so the two lists need different separators. An unset
    variable means no webhook.
    """
    for url in (*webhook_urls, *followup_webhook_urls):
        if "," in url or any(ch.isspace() for ch in url):
            raise ValueError(f"webhook URL must not contain a comma or whitespace: {url!r}")
    env: dict[str, str] = {}
    if webhook_urls:
        env["HELPDESK_NEW_TICKET_WEBHOOK_URLS"] = ",".join(webhook_urls)
    if followup_webhook_urls:
        env["HELPDESK_FOLLOWUP_WEBHOOK_URLS"] = " , ".join(followup_webhook_urls)
    return env


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DjangoHelpdeskServer:
    """A real django-helpdesk on a fresh database, served on a free loopback port.

    ``start()`` (or ``with``) creates a temp dir, runs ``migrate``, creates the
    staff superuser ``admin``/``admin-password`` and the staff non-superuser
    ``bpsm``/``bpsm-password`` (for the connector), creates the queue
    ``General=general`` with ``bpsm_queues``, then starts ``manage.py runserver
    --noreload`` (threaded) with the webhook environment variables set.

    ``fast_password_hasher`` (default on) makes the test project hash passwords with
    MD5: with Django's default PBKDF2 every basic-auth request costs ~0.3 s of CPU.
    ``extra_env`` adds or overrides environment variables of the helpdesk process.
    """

    admin_auth: tuple[str, str] = ADMIN_USER
    connector_auth: tuple[str, str] = CONNECTOR_USER

    def __init__(
        self,
        webhook_urls: Sequence[str] = (),
        followup_webhook_urls: Sequence[str] = (),
        *,
        venv_dir: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
        extra_env: Mapping[str, str] | None = None,
        fast_password_hasher: bool = True,
    ) -> None:
        self.webhook_urls = list(webhook_urls)
        self.followup_webhook_urls = list(followup_webhook_urls)
        self._webhook_env = webhook_env(self.webhook_urls, self.followup_webhook_urls)
        self._venv_dir = venv_dir
        self._ready_timeout = ready_timeout
        self._extra_env = dict(extra_env or {})
        self.fast_password_hasher = fast_password_hasher
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._port: int | None = None
        self.timings: dict[str, float] = {}

    # -- paths and URLs ---------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._tmp is None:
            raise HelpdeskHarnessError("helpdesk server is not started")
        return Path(self._tmp.name)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "db.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise HelpdeskHarnessError("helpdesk server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def python(self) -> Path:
        return _venv_python(self._venv_dir or ensure_helpdesk_venv())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no server log)"

    # -- management commands ----------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HELPDESK_", "DJHELPDESK_", "DJANGO_"))
            and k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DJHELPDESK_DB_PATH=str(self.db_path),
            DJHELPDESK_MEDIA_ROOT=str(self.data_dir / "media"),
            BPSM_HELPDESK_CONTRIB_DIR=str(CONTRIB_DIR),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.fast_password_hasher:
            env["DJHELPDESK_FAST_PASSWORD_HASHER"] = "1"
        env.update(self._webhook_env)
        env.update(self._extra_env)
        return env

    def manage(
        self, *args: str, timeout: float = MANAGE_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``manage.py ARGS`` in the helpdesk venv against this server's database."""
        cmd = [str(self.python), "manage.py", *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=PROJECT_DIR,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HelpdeskHarnessError(f"manage.py {' '.join(args)} timed out") from exc
        if proc.returncode != 0:
            raise HelpdeskHarnessError(
                f"manage.py {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout + proc.stderr)}"
            )
        return proc

    def queues(self, create: Mapping[str, str] | None = None) -> dict[str, int]:
        """Run ``bpsm_queues`` (creating ``{slug: title}``) and return ``{slug: id}``.

        Covers every queue of the helpdesk. Idempotent.
        """
        args = ["bpsm_queues", "--json"]
        for slug, title in (create or {}).items():
            args += ["--create", f"{title}={slug}"]
        out = self.manage(*args).stdout
        try:
            parsed = json.loads(out)
        except json.JSONDecodeError as exc:
            raise HelpdeskHarnessError(f"bpsm_queues printed no JSON object: {out!r}") from exc
        return {str(slug): int(pk) for slug, pk in parsed.items()}

    def _create_users(self) -> None:
        code = (
            "from django.contrib.auth import get_user_model\n"
            "User = get_user_model()\n"
            f"User.objects.create_superuser({ADMIN_USER[0]!r}, 'admin@example.com', "
            f"{ADMIN_USER[1]!r})\n"
            f"User.objects.create_user({CONNECTOR_USER[0]!r}, 'bpsm@example.com', "
            f"{CONNECTOR_USER[1]!r}, is_staff=True)\n"
        )
        self.manage("shell", "--no-imports", "-c", code)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        if self._proc is not None:
            raise HelpdeskHarnessError("helpdesk server already started")
        t0 = time.monotonic()
        python = self.python  # builds the venv if needed, before the clock below
        self._tmp = tempfile.TemporaryDirectory(prefix="django_helpdesk-")
        try:
            t1 = time.monotonic()
            self.manage("migrate", "--no-input", "-v", "0")
            t2 = time.monotonic()
            self._create_users()
            self.queues(DEFAULT_QUEUES)
            t3 = time.monotonic()
            self._launch(python)
            t4 = time.monotonic()
        except BaseException:
            self.stop()
            raise
        self.timings.update(
            venv_s=t1 - t0,
            migrate_s=t2 - t1,
            users_queues_s=t3 - t2,
            serve_s=t4 - t3,
            start_total_s=t4 - t1,
        )
        return self

    def _launch(self, python: Path, attempts: int = 3) -> None:
        last_error = ""
        for _ in range(attempts):
            self._port = free_loopback_port()
            self._log_file = self.log_path.open("ab")
            # runserver threads by default (do NOT pass --nothreading): a webhook
            # receiver calls the API back while the request that fired it waits.
            # --noreload keeps it to one process, so SIGTERM reaches the server.
            self._proc = subprocess.Popen(
                [
                    str(python),
                    "manage.py",
                    "runserver",
                    "--noreload",
                    "--skip-checks",
                    f"127.0.0.1:{self._port}",
                ],
                cwd=PROJECT_DIR,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            if self._wait_ready():
                return
            last_error = self.log_tail()
            port_taken = "already in use" in last_error.lower()
            self._terminate()
            if not port_taken:
                break
        raise HelpdeskHarnessError(
            f"django-helpdesk did not become ready within {self._ready_timeout:.0f}s "
            f"on port {self._port}.\n--- server log (tail) ---\n{last_error}"
        )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                resp = requests.get(f"{self.api_url}/tickets/", auth=self.admin_auth, timeout=2)
                if resp.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and delete its temp dir."""
        self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- REST API helpers -----------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None = None,
        json_body: Any = None,
        expect: int | tuple[int, ...] | None = None,
    ) -> requests.Response:
        """Call ``/api/<path>`` (basic auth, admin by default); check the status if asked."""
        # No shared Session: tests call this from webhook-handler threads as well.
        resp = requests.request(
            method,
            f"{self.api_url}/{path.lstrip('/')}",
            auth=auth or self.admin_auth,
            json=json_body,
            timeout=HTTP_TIMEOUT_S,
        )
        wanted = (expect,) if isinstance(expect, int) else expect
        if wanted is not None and resp.status_code not in wanted:
            raise HelpdeskHarnessError(
                f"{method} /api/{path.lstrip('/')} answered {resp.status_code}, expected "
                f"{wanted}: {resp.text[:2000]}\n--- server log (tail) ---\n{self.log_tail(20)}"
            )
        return resp

    def create_ticket(
        self,
        queue_id: int,
        title: str,
        description: str,
        submitter_email: str = "user@example.com",
        priority: int = 3,
        *,
        auth: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/tickets/`` (as admin); returns the created ticket.

        Fires the new-ticket webhooks before it answers.
        """
        body = {
            "queue": queue_id,
            "title": title,
            "description": description,
            "submitter_email": submitter_email,
            "priority": priority,
        }
        result: dict[str, Any] = self.api(
            "POST", "tickets/", auth=auth, json_body=body, expect=201
        ).json()
        return result

    def get_ticket(self, ticket_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"tickets/{ticket_id}/", expect=200).json()
        return result

    def followups(self, ticket_id: int) -> list[dict[str, Any]]:
        """The ticket's follow-ups (public and private), oldest first.

        The API lists them only as ``followup_set`` of the ticket; ``/api/followups/``
        has no ticket filter.
        """
        items: list[dict[str, Any]] = self.get_ticket(ticket_id)["followup_set"]
        return sorted(items, key=lambda f: int(f["id"]))

    def add_followup(
        self,
        ticket_id: int,
        comment: str,
        public: bool = False,
        *,
        auth: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/followups/`` (as the connector by default); fires follow-up webhooks."""
        result: dict[str, Any] = self.api(
            "POST",
            "followups/",
            auth=auth or self.connector_auth,
            json_body={"ticket": ticket_id, "comment": comment, "public": public},
            expect=201,
        ).json()
        return result

    def move_ticket(
        self, ticket_id: int, queue_id: int, *, auth: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """An agent (admin by default) moves the ticket: ``PATCH {"queue": id}``."""
        result: dict[str, Any] = self.api(
            "PATCH",
            f"tickets/{ticket_id}/",
            auth=auth,
            json_body={"queue": queue_id},
            expect=200,
        ).json()
        return result
