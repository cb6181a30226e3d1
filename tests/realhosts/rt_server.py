"""A real Request Tracker 5 for end-to-end tests.

What this module does, and the facts it relies on (checked against Debian 12's
``request-tracker5 5.0.3+dfsg-3~deb12u6``):

* RT comes from Debian: ``request-tracker5`` + ``rt5-db-sqlite``.  The package's own
  SQLite database lives at ``/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb``
  and its site config in ``/etc/request-tracker5/RT_SiteConfig.d/*.pm`` (``http://vm/rt``,
  ``$Timezone`` from ``/etc/timezone``).  The harness uses neither.
* RT reads its site config from ``$RT_SITE_CONFIG`` (instead of
  ``/etc/request-tracker5/RT_SiteConfig.pm``) and its snippets from
  ``$RT_SITE_CONFIG_DIR`` (instead of *both* ``RT_SiteConfig.d`` directories), see
  ``RT::Config::LoadConfig``.  Every server gets its own generated config in its own temp
  directory: database path, ``$WebBaseURL``/``$WebPath``/``$WebDomain``/``$WebPort`` for
  ``http://127.0.0.1:PORT``, ``$Timezone``, outgoing mail to an mbox file (never to the
  local MTA) and its own ``$RT::VarPath``/Mason directories.
* The pristine database is made once per machine with ``rt-setup-database --action init``
  (about 2 s) with ``$BcryptCost`` 4 and cached in :data:`CACHE_DIR`; every server copies
  it into its temp directory.  Cost 4 matters: with Debian's default cost 12 every
  basic-auth (or token) request spends ~0.3 s in bcrypt; with 4 a request takes ~10 ms.
* REST 2 has no resource at ``GET /REST/2.0/`` (404 in 5.0.3); readiness is checked with
  ``GET /REST/2.0/rt`` (200 with ``{"Version": ...}`` for any authenticated user).
* REST 2 in RT 5.0.3 cannot grant rights, apply custom fields to queues or create auth
  tokens.  Those go through :meth:`RTServer.rt_admin`, a small Perl program run with RT's
  own libraries against the same database and config (about 1.2 s per call, batch ops).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import requests
from requests.auth import AuthBase

__all__ = [
    "CACHE_DIR",
    "DEBIAN_PACKAGES",
    "PACKAGE_DB",
    "RTAPIError",
    "RTInstallError",
    "RTServer",
    "RTServerError",
    "TokenAuth",
    "build_pristine_db",
    "decode_attachment_content",
    "ensure_rt_installed",
    "pristine_db",
    "rt_is_installed",
    "rt_version",
]

DEBIAN_PACKAGES: tuple[str, ...] = ("request-tracker5", "rt5-db-sqlite")
RT_PREFIX = Path("/usr/share/request-tracker5")
RT_LIB = RT_PREFIX / "lib"
RT_SERVER = RT_PREFIX / "libexec" / "rt-server"
RT_SETUP_DATABASE = Path("/usr/sbin/rt-setup-database-5")
#: Where the Debian package keeps the database it initialises at install time (not used).
PACKAGE_DB = Path("/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb")
#: Cache of pristine template databases, one per RT version (override with BPSM_RT_CACHE_DIR).
CACHE_DIR = Path(os.environ.get("BPSM_RT_CACHE_DIR", "/var/tmp/bpsm-rt-harness"))
#: Bump when the way the template database is built changes.
TEMPLATE_FORMAT = 1
BCRYPT_COST = 4
ROOT_AUTH: tuple[str, str] = ("root", "password")

_FILES_NEEDED = (RT_SERVER, RT_SETUP_DATABASE, RT_LIB / "RT.pm")


class RTInstallError(RuntimeError):
    """Request Tracker is not installed and could not be installed."""


class RTServerError(RuntimeError):
    """rt-server could not be started, or the database could not be prepared."""


class RTAPIError(RuntimeError):
    """RT answered a request with an unexpected status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")
        self.method = method
        self.url = url
        self.status = status
        self.body = body


class TokenAuth(AuthBase):
    """``Authorization: token <auth string>`` as REST 2 expects for RT::AuthToken."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"token {self.token}"
        return r


Auth = tuple[str, str] | AuthBase


# --------------------------------------------------------------------------------------
# installation


def rt_is_installed() -> bool:
    """True when the Debian packages are installed and RT's files are in place."""
    if not all(p.exists() for p in _FILES_NEEDED):
        return False
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Status}\n", *DEBIAN_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    states = res.stdout.split()
    return (
        res.returncode == 0
        and len(states) == len(DEBIAN_PACKAGES)
        and all(s == "installed" for s in states)
    )


def rt_version() -> str:
    """The installed ``request-tracker5`` package version, e.g. ``5.0.3+dfsg-3~deb12u6``."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "request-tracker5"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0 or not res.stdout.strip():
        raise RTInstallError("request-tracker5 is not installed")
    return res.stdout.strip()


def _apt(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", DEBCONF_NONINTERACTIVE_SEEN="true")
    try:
        return subprocess.run(
            ["apt-get", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RTInstallError(
            "Request Tracker 5 could not be installed: apt-get is not available "
            f"on this machine ({exc})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise RTInstallError(
            f"Request Tracker 5 could not be installed: 'apt-get {' '.join(args)}' "
            f"did not finish within {timeout:.0f} s"
        ) from exc


def _apt_knows_packages() -> bool:
    res = subprocess.run(
        ["apt-cache", "policy", *DEBIAN_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        res.returncode == 0
        and "Candidate: (none)" not in res.stdout
        and (res.stdout.count("Candidate:") == len(DEBIAN_PACKAGES))
    )


def ensure_rt_installed(timeout: float = 900.0) -> float:
    """Install RT 5 with SQLite from Debian if it is missing.

    Returns the seconds spent installing (0.0 when RT was already there).  Runs
    ``apt-get update`` only when apt does not know the packages yet, or when the
    install failed once.  Raises :class:`RTInstallError` (never skips) when not root or
    when apt fails, with apt's output.
    """
    if rt_is_installed():
        return 0.0
    if os.geteuid() != 0:
        raise RTInstallError(
            "Request Tracker 5 could not be installed: it is missing and installing "
            f"{' '.join(DEBIAN_PACKAGES)} with apt-get needs root (running as uid "
            f"{os.geteuid()}). Install them once as root: apt-get install -y "
            f"--no-install-recommends {' '.join(DEBIAN_PACKAGES)}"
        )
    started = time.monotonic()
    install = ["install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]
    updated = False
    if not _apt_knows_packages():
        upd = _apt(["update"], timeout)
        if upd.returncode != 0:
            raise RTInstallError(
                f"Request Tracker 5 could not be installed: apt-get update failed "
                f"(exit {upd.returncode}):\n{(upd.stdout + upd.stderr)[-3000:]}"
            )
        updated = True
    res = _apt(install, timeout)
    if res.returncode != 0 and not updated:
        _apt(["update"], timeout)
        res = _apt(install, timeout)
    if res.returncode != 0 or not rt_is_installed():
        raise RTInstallError(
            f"Request Tracker 5 could not be installed: apt-get {' '.join(install)} "
            f"failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}"
        )
    return time.monotonic() - started


# --------------------------------------------------------------------------------------
# configuration and pristine database


def _perl_str(value: str) -> str:
    """A single-quoted Perl string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _site_config(
    *,
    db_path: Path,
    var_dir: Path,
    port: int | None,
    timezone: str,
    extra: str = "",
) -> str:
    base_url = f"http://127.0.0.1:{port}" if port else "http://127.0.0.1"
    lines = [
        "# Generated by tests/realhosts/rt_server.py for one test run. Not for production.",
        "Set($rtname, 'bpsm-test');",
        "Set($Organization, 'bpsm-test.example');",
        "Set($CorrespondAddress, 'rt@bpsm-test.example');",
        "Set($CommentAddress, 'rt-comment@bpsm-test.example');",
        f"Set($Timezone, {_perl_str(timezone)});",
        "Set($DatabaseType, 'SQLite');",
        f"Set($DatabaseName, {_perl_str(str(db_path))});",
        "Set($WebDomain, '127.0.0.1');",
        f"Set($WebPort, {port or 80});",
        "Set($WebPath, '');",
        f"Set($WebBaseURL, {_perl_str(base_url)});",
        f"Set($BcryptCost, {BCRYPT_COST});",
        # Outgoing mail (autoreplies, notifications) goes to $RT::VarPath/<time>.mbox.
        "Set($MailCommand, 'mbox');",
        "Set($LogToSyslog, undef);",
        "Set($LogToFile, undef);",
        "Set($LogToSTDERR, 'warning');",
        # The config file is Perl run in package RT, so RT's path globals can be moved too.
        f"$RT::VarPath = {_perl_str(str(var_dir))};",
        f"$RT::MasonDataDir = {_perl_str(str(var_dir / 'mason_data'))};",
        f"$RT::MasonSessionDir = {_perl_str(str(var_dir / 'session_data'))};",
        extra,
        "1;",
        "",
    ]
    return "\n".join(lines)


def _write_config(dest_dir: Path, config: str) -> dict[str, str]:
    """Write RT_SiteConfig.pm and an empty RT_SiteConfig.d; return the env that selects them."""
    snippets = dest_dir / "RT_SiteConfig.d"
    snippets.mkdir(parents=True, exist_ok=True)
    site = dest_dir / "RT_SiteConfig.pm"
    site.write_text(config, encoding="utf-8")
    return {"RT_SITE_CONFIG": str(site), "RT_SITE_CONFIG_DIR": str(snippets)}


def _db_looks_pristine(path: Path) -> bool:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT Password FROM Users WHERE Name = 'root'").fetchone()
            tickets = con.execute("SELECT COUNT(*) FROM Tickets").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return bool(row) and str(row[0]).startswith(f"!bcrypt!{BCRYPT_COST:02d}!") and tickets == (0,)


def build_pristine_db(dest: Path, *, timeout: float = 120.0) -> None:
    """Create a fresh RT database at ``dest`` with ``rt-setup-database --action init``.

    This is what the Debian package does at install time, but with the harness's config
    (``$BcryptCost`` 4, so ``root``/``password`` is cheap to check).
    """
    with tempfile.TemporaryDirectory(prefix="bpsm-rt-init-") as tmp:
        tmpdir = Path(tmp)
        db = tmpdir / "rtdb"
        env = dict(os.environ)
        env.update(
            _write_config(
                tmpdir,
                _site_config(db_path=db, var_dir=tmpdir / "var", port=None, timezone="UTC"),
            )
        )
        (tmpdir / "var").mkdir()
        res = subprocess.run(
            [str(RT_SETUP_DATABASE), "--action", "init", "--skip-create"],
            env=env,
            cwd=tmpdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0 or not _db_looks_pristine(db):
            raise RTServerError(
                f"rt-setup-database --action init failed (exit {res.returncode}):\n"
                f"{(res.stdout + res.stderr)[-3000:]}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(db, partial)
        os.replace(partial, dest)  # atomic: concurrent builders never see half a file


def pristine_db(cache_dir: Path | None = None) -> Path:
    """Path of the cached pristine template database for the installed RT version."""
    cache = cache_dir or CACHE_DIR
    safe_version = "".join(c if c.isalnum() or c in ".+-" else "_" for c in rt_version())
    path = cache / f"rtdb-{safe_version}-f{TEMPLATE_FORMAT}.sqlite"
    if not _db_looks_pristine(path):
        build_pristine_db(path)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# --------------------------------------------------------------------------------------
# the Perl side (things REST 2 in RT 5.0.3 cannot do)

_ADMIN_PERL = r"""
use strict;
use warnings;
use JSON ();
use RT;
RT::LoadConfig();
RT->Config->Set(LogToSTDERR => 'error');
RT::Init();

my $json = JSON->new->utf8->canonical;
my $ops = $json->decode(do { local $/; <STDIN> });
my @results;
for my $op (@$ops) {
    my $name = $op->{op} // '';
    my $handler = main->can("op_$name") or die "unknown op '$name'\n";
    push @results, $handler->($op);
}
print $json->encode(\@results);

sub load_user {
    my $name = shift;
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($name);
    die "no such user '$name'\n" unless $user->Id;
    return $user;
}

sub load_principal {
    my $op = shift;
    return load_user($op->{user})->PrincipalObj if defined $op->{user};
    my $name = $op->{group} // die "need user or group\n";
    my $group = RT::Group->new(RT->SystemUser);
    if ($name =~ /^(Everyone|Privileged|Unprivileged)$/) {
        $group->LoadSystemInternalGroup($name);
    } else {
        $group->LoadUserDefinedGroup($name);
    }
    die "no such group '$name'\n" unless $group->Id;
    return $group->PrincipalObj;
}

sub load_queue {
    my $name = shift;
    my $queue = RT::Queue->new(RT->SystemUser);
    $queue->Load($name);
    die "no such queue '$name'\n" unless $queue->Id;
    return $queue;
}

sub load_objects {
    my $op = shift;
    my @objects = map { load_queue($_) } @{ $op->{queues} || [] };
    for my $id (@{ $op->{custom_fields} || [] }) {
        my $cf = RT::CustomField->new(RT->SystemUser);
        $cf->Load($id);
        die "no such custom field '$id'\n" unless $cf->Id;
        push @objects, $cf;
    }
    push @objects, RT->System unless @objects;
    return @objects;
}

sub op_grant {
    my $op = shift;
    my $principal = load_principal($op);
    my @done;
    for my $object (load_objects($op)) {
        for my $right (@{ $op->{rights} }) {
            my ($ok, $msg) = $principal->GrantRight(Right => $right, Object => $object);
            die "granting $right on " . ref($object) . " " . $object->Id . ": $msg\n"
                unless $ok || $msg =~ /already has the right/;
            push @done, { right => $right, object => ref($object) . '-' . $object->Id };
        }
    }
    return \@done;
}

sub op_revoke {
    my $op = shift;
    my $principal = load_principal($op);
    my @done;
    for my $object (load_objects($op)) {
        for my $right (@{ $op->{rights} }) {
            my ($ok, $msg) = $principal->RevokeRight(Right => $right, Object => $object);
            push @done, { right => $right, object => ref($object) . '-' . $object->Id,
                          ok => ($ok ? JSON::true : JSON::false), message => "$msg" };
        }
    }
    return \@done;
}

sub op_auth_token {
    my $op = shift;
    my $user = load_user($op->{user});
    my $token = RT::AuthToken->new(RT->SystemUser);
    my ($id, $msg, $auth) = $token->Create(
        Owner => $user->Id, Description => $op->{description} // 'bpsm test token');
    die "creating auth token for $op->{user}: $msg\n" unless $id;
    return { id => $id, token => $auth };
}

sub op_apply_custom_field {
    my $op = shift;
    my $cf = RT::CustomField->new(RT->SystemUser);
    $cf->Load($op->{id});
    die "no such custom field '$op->{id}'\n" unless $cf->Id;
    my @targets = map { load_queue($_) } @{ $op->{queues} || [] };
    @targets = (RT::Queue->new(RT->SystemUser)) unless @targets;    # no id: all queues
    my @done;
    for my $queue (@targets) {
        unless ($cf->IsAdded($queue->Id || 0)) {
            my ($ok, $msg) = $cf->AddToObject($queue);
            die "applying custom field $op->{id}: $msg\n" unless $ok;
        }
        push @done, $queue->Id || 0;
    }
    return \@done;
}
"""


# --------------------------------------------------------------------------------------
# the server


class RTServer:
    """One ``rt-server`` (Starlet) on a free loopback port with its own copy of the DB.

    Use as a context manager::

        with RTServer() as rt:
            rt.create_queue("BPSM Reactive")
            requests.get(rt.rest_url + "/tickets", params={"query": "id > 0"},
                         auth=rt.root_auth)

    ``timezone`` is RT's ``$Timezone``: the zone in which TicketSQL date values are read
    for users without their own Timezone preference (see the smoke test).
    """

    def __init__(
        self,
        *,
        timezone: str = "UTC",
        template_db: Path | None = None,
        workers: int = 4,
        startup_timeout: float = 60.0,
        keep_dir: bool = False,
        request_timeout: float = 30.0,
    ) -> None:
        self.timezone = timezone
        self.template_db = template_db
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir
        self.request_timeout = request_timeout
        self.root_auth: tuple[str, str] = ROOT_AUTH
        self.port = 0
        self.tmpdir: Path | None = None
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._env: dict[str, str] = {}
        self._session = requests.Session()
        self._session.auth = self.root_auth
        self._queue_ids: dict[str, int] = {}

    # -- paths -------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.tmpdir is None:
            raise RTServerError("RTServer is not started")
        return self.tmpdir

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (RT's $WebBaseURL; $WebPath is empty)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT/REST/2.0`` (no trailing slash)."""
        return f"{self.url}/REST/2.0"

    @property
    def db_path(self) -> Path:
        return self._dir() / "rtdb"

    @property
    def log_path(self) -> Path:
        return self._dir() / "rt-server.log"

    @property
    def var_dir(self) -> Path:
        """$RT::VarPath; outgoing mail lands in ``*.mbox`` files here."""
        return self._dir() / "var"

    def outgoing_mail(self) -> str:
        """Everything RT has 'sent' so far (its $MailCommand is 'mbox')."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.var_dir.glob("*.mbox")))

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> RTServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> RTServer:
        if self._proc is not None:
            raise RTServerError("RTServer already started")
        if not rt_is_installed():
            raise RTServerError("Request Tracker is not installed; call ensure_rt_installed()")
        t0 = time.monotonic()
        template = self.template_db or pristine_db()
        self.timings["template_db_s"] = time.monotonic() - t0
        self.tmpdir = Path(tempfile.mkdtemp(prefix="bpsm-rt-"))
        shutil.copyfile(template, self.db_path)
        for sub in ("", "mason_data", "session_data"):
            (self.var_dir / sub).mkdir(parents=True, exist_ok=True)
        last_error: RTServerError | None = None
        for _attempt in range(3):  # a port grabbed by someone else between pick and bind
            self.port = _free_port()
            try:
                self._launch()
                self.timings["total_start_s"] = time.monotonic() - t0
                atexit.register(self.stop)
                return self
            except RTServerError as exc:
                last_error = exc
                self._kill()
                if "couldn't start up a web server" not in str(exc):
                    break
        self._cleanup_dir()
        assert last_error is not None
        raise last_error

    def _launch(self) -> None:
        tmp = self._dir()
        self._env = dict(os.environ)
        self._env.pop("HARNESS_ACTIVE", None)
        self._env.update(
            _write_config(
                tmp,
                _site_config(
                    db_path=self.db_path,
                    var_dir=self.var_dir,
                    port=self.port,
                    timezone=self.timezone,
                ),
            )
        )
        cmd = [
            str(RT_SERVER),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--max-workers",
            str(self.workers),
        ]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals all workers
            )
        deadline = t0 + self.startup_timeout
        probe = f"{self.rest_url}/rt"
        while True:
            if self._proc.poll() is not None:
                raise RTServerError(
                    f"rt-server exited with {self._proc.returncode} before answering "
                    f"(port {self.port}); log tail:\n{self.log_tail()}"
                )
            try:
                r = requests.get(probe, auth=self.root_auth, timeout=2)
                if r.status_code == 200 and "Version" in r.json():
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RTServerError(
                    f"rt-server did not answer GET {probe} within "
                    f"{self.startup_timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.timings["rt_server_start_s"] = time.monotonic() - t0

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Starlet's workers normally leave with the parent; make sure none linger.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)

    def _cleanup_dir(self) -> None:
        if self.tmpdir is not None and not self.keep_dir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def stop(self) -> None:
        """SIGTERM the server's process group (SIGKILL after 10 s), remove the temp dir."""
        atexit.unregister(self.stop)
        self._kill()
        self._session.close()
        self._cleanup_dir()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- HTTP --------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        auth: Auth | None = None,
        expected: Iterable[int] | None = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """A REST 2 request; ``path`` is relative to ``/REST/2.0/`` (or a full URL).

        ``auth`` defaults to root.  Raises :class:`RTAPIError` when the status is not in
        ``expected`` (pass ``expected=None`` to accept anything).
        """
        url = path if path.startswith("http") else f"{self.rest_url}/{path.lstrip('/')}"
        kwargs.setdefault("timeout", self.request_timeout)
        if auth is None:
            r = self._session.request(method, url, **kwargs)
        else:
            r = requests.request(method, url, auth=auth, **kwargs)
        if expected is not None and r.status_code not in set(expected):
            raise RTAPIError(method, url, r.status_code, r.text)
        return r

    def get_json(self, path: str, *, auth: Auth | None = None, **kwargs: Any) -> Any:
        return self.api("GET", path, auth=auth, **kwargs).json()

    def paged(
        self, path: str, params: Mapping[str, str] | None = None, *, auth: Auth | None = None
    ) -> Iterator[dict[str, Any]]:
        """All ``items`` of a REST 2 collection.

        Follows ``next_page`` when RT gives one.  RT leaves ``total``/``pages`` null (and
        so gives no ``next_page``) when it cannot count what the user may see, e.g. a
        ticket's ``history`` for a user without a *global* ShowTicket; then pages are
        fetched until one comes back short.
        """
        query = {"per_page": "100", "page": "1", **(params or {})}
        page: Any = self.get_json(path, auth=auth, params=query)
        number = 1
        while True:
            yield from page["items"]
            nxt = page.get("next_page")
            if nxt:
                page = self.get_json(nxt, auth=auth)
            elif page.get("total") is None and page["count"] >= page["per_page"]:
                number += 1
                page = self.get_json(path, auth=auth, params={**query, "page": str(number)})
            else:
                return

    # -- Perl admin helper -------------------------------------------------------------

    def rt_admin(self, ops: Sequence[Mapping[str, Any]], *, timeout: float = 120.0) -> list[Any]:
        """Run admin ops with RT's own Perl libraries against this server's database.

        Ops: ``grant``/``revoke`` (``user`` or ``group``, ``rights``, optional ``queues``
        and/or ``custom_fields``; neither = global), ``auth_token`` (``user``,
        ``description``), ``apply_custom_field`` (``id``, ``queues``; none = global).
        The running server sees the changes on its next request (RT re-reads ACLs per
        request).
        """
        if not self._env:
            raise RTServerError("RTServer is not started")
        res = subprocess.run(
            ["perl", f"-I{RT_LIB}", "-e", _ADMIN_PERL],
            input=json.dumps(list(ops)),
            env=self._env,
            cwd=self._dir(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0:
            raise RTServerError(f"RT admin ops {list(ops)!r} failed:\n{res.stderr[-3000:]}")
        result: list[Any] = json.loads(res.stdout)
        return result

    # -- queues ------------------------------------------------------------------------

    def queue_id(self, name: str) -> int | None:
        items = self.get_json(
            "queues", params={"query": json.dumps([{"field": "Name", "value": name}])}
        )["items"]
        return int(items[0]["id"]) if items else None

    def create_queue(self, name: str, **fields: Any) -> int:
        """Create a queue (idempotent: returns the existing queue's id)."""
        if name in self._queue_ids:
            return self._queue_ids[name]
        existing = self.queue_id(name)
        if existing is None:
            r = self.api("POST", "queue", json={"Name": name, **fields}, expected=(201, 400))
            existing = int(r.json()["id"]) if r.status_code == 201 else self.queue_id(name)
            if existing is None:
                raise RTAPIError("POST", f"{self.rest_url}/queue", r.status_code, r.text)
        self._queue_ids[name] = existing
        return existing

    # -- tickets -----------------------------------------------------------------------

    def create_ticket(
        self,
        queue: str | int,
        subject: str,
        content: str,
        requestor: str = "user@example.com",
        *,
        via: Literal["rest", "email"] = "rest",
        custom_fields: Mapping[str, Any] | None = None,
        auth: Auth | None = None,
        **fields: Any,
    ) -> int:
        """Create a ticket with a text/plain body from ``requestor``; returns its id.

        ``via="rest"``: ``POST /REST/2.0/ticket`` (Creator is the API user, root by
        default; Requestor is ``requestor``).  ``via="email"``: a real e-mail through RT's
        mail gateway (``/REST/1.0/NoAuth/mail-gateway``, what ``rt-mailgate`` posts to);
        RT then creates the requestor as an unprivileged user who is also the Creator.
        That needs ``Everyone`` (or ``Unprivileged``) to have ``CreateTicket`` on the
        queue: ``grant_rights(["CreateTicket", "ReplyToTicket"], group="Everyone",
        queues=[queue])``.
        """
        if via == "email":
            if custom_fields or fields or auth is not None:
                raise ValueError("via='email' takes only queue, subject, content, requestor")
            return self._create_ticket_by_email(queue, subject, content, requestor)
        body: dict[str, Any] = {
            "Queue": queue,
            "Subject": subject,
            "Requestor": requestor,
            "Content": content,
            "ContentType": "text/plain",
            **fields,
        }
        if custom_fields:
            body["CustomFields"] = dict(custom_fields)
        r = self.api("POST", "ticket", json=body, auth=auth, expected=(201,))
        return int(r.json()["id"])

    def _create_ticket_by_email(
        self, queue: str | int, subject: str, content: str, requestor: str
    ) -> int:
        msg = EmailMessage()
        msg["From"] = requestor
        msg["To"] = "rt@bpsm-test.example"
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="customer.example")
        msg.set_content(content)
        r = requests.post(
            f"{self.url}/REST/1.0/NoAuth/mail-gateway",
            # rt-mailgate sends the raw message as an ordinary form field
            data={"queue": str(queue), "action": "correspond", "message": msg.as_bytes()},
            timeout=self.request_timeout,
        )
        if r.status_code != 200 or not r.text.startswith("ok"):
            raise RTAPIError(
                "POST",
                r.url,
                r.status_code,
                f"{r.text.strip()} (does Everyone have CreateTicket on queue {queue!r}?)"
                f"\nlog tail:\n{self.log_tail(5)}",
            )
        # The gateway answers only "ok" (ticket numbers only in DevelMode): find it.
        sql = (
            f"Requestor.EmailAddress = {_sql_quote(requestor)} AND Subject = {_sql_quote(subject)}"
        )
        page = self.get_json(
            "tickets", params={"query": sql, "orderby": "id", "order": "DESC", "per_page": "1"}
        )
        if not page["items"]:
            raise RTAPIError("GET", f"{self.rest_url}/tickets", 200, f"no ticket for {sql}")
        return int(page["items"][0]["id"])

    def get_ticket(self, ticket_id: int, *, auth: Auth | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json(f"ticket/{ticket_id}", auth=auth)
        return result

    def ticket_history(self, ticket_id: int, *, auth: Auth | None = None) -> list[dict[str, Any]]:
        """The ticket's transactions, oldest first, each with its attachments.

        Each dict has REST 2's transaction fields (``id`` as str, ``Type``, ``Field``,
        ``OldValue``, ``NewValue``, ``Created`` (UTC, ...Z), ``Creator`` (object with the
        user name as ``id``), ``Description``, ``Data``), plus ``attachments`` (dicts with
        ``ContentType``, ``Subject``, ``Filename``, ``Content`` as text) and ``content``:
        the first text/plain attachment's text ("" when none).
        """
        fields = "Type,Field,OldValue,NewValue,Created,Creator,Description,Data,TimeTaken"
        txns = list(self.paged(f"ticket/{ticket_id}/history", {"fields": fields}, auth=auth))
        by_txn: dict[int, list[dict[str, Any]]] = {}
        for att in self.paged(
            f"ticket/{ticket_id}/attachments",
            {"fields": "TransactionId,ContentType,Subject,Filename,Content"},
            auth=auth,
        ):
            txn_ref = att["TransactionId"]
            txn_id = int(txn_ref["id"] if isinstance(txn_ref, dict) else txn_ref)
            by_txn.setdefault(txn_id, []).append(att)
        for txn in txns:
            atts = sorted(by_txn.get(int(txn["id"]), []), key=lambda a: int(a["id"]))
            txn["attachments"] = atts
            txn["content"] = next(
                (str(a.get("Content") or "") for a in atts if a.get("ContentType") == "text/plain"),
                "",
            )
        return txns

    def comment(self, ticket_id: int, text: str, *, auth: Auth | None = None) -> list[str]:
        """``POST /ticket/N/comment`` with text/plain; returns RT's messages."""
        r = self.api(
            "POST",
            f"ticket/{ticket_id}/comment",
            data=text.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            auth=auth,
            expected=(201,),
        )
        messages: list[str] = r.json()
        return messages

    # -- users, groups, rights, tokens ---------------------------------------------------

    def user_id(self, name: str) -> int | None:
        r = self.api("GET", f"user/{urllib.parse.quote(name, safe='')}", expected=(200, 404))
        return int(r.json()["id"]) if r.status_code == 200 else None

    def create_user(
        self,
        name: str,
        password: str,
        privileged: bool = True,
        *,
        email: str | None = None,
        timezone: str | None = None,
    ) -> int:
        """Create a user (idempotent by name) and return its numeric id.

        REST 2's create answer names the user (``"id": "<name>"``); the number comes
        from ``GET /user/<name>``.
        """
        existing = self.user_id(name)
        if existing is not None:
            return existing
        body: dict[str, Any] = {
            "Name": name,
            "Password": password,
            "Privileged": 1 if privileged else 0,
            "EmailAddress": email or f"{name}@bpsm-test.example",
        }
        if timezone:
            body["Timezone"] = timezone
        self.api("POST", "user", json=body, expected=(201,))
        uid = self.user_id(name)
        if uid is None:
            raise RTAPIError("GET", f"{self.rest_url}/user/{name}", 404, "user vanished")
        return uid

    def create_group(self, name: str, members: Sequence[str] = ()) -> int:
        """Create a user-defined group (idempotent) and add users (by name) to it."""
        items = self.get_json(
            "groups", params={"query": json.dumps([{"field": "Name", "value": name}])}
        )["items"]
        if items:
            gid = int(items[0]["id"])
        else:
            gid = int(self.api("POST", "group", json={"Name": name}, expected=(201,)).json()["id"])
        ids = [self.user_id(m) for m in members]
        if any(i is None for i in ids):
            raise ValueError(f"unknown users among {members!r}")
        if ids:
            self.api("PUT", f"group/{gid}/members", json=ids)
        return gid

    def grant_rights(
        self,
        rights: Sequence[str],
        *,
        user: str | None = None,
        group: str | None = None,
        queues: Sequence[str | int] | None = None,
        custom_fields: Sequence[int] | None = None,
    ) -> None:
        """Grant ``rights`` to a user or group (``Everyone``, ``Privileged``,
        ``Unprivileged`` or a user-defined group) on queues / custom fields, or globally
        when neither is given.  Idempotent.  (RT 5.0.3's REST 2 has no ACL endpoint.)
        """
        self.rt_admin([self._acl_op("grant", rights, user, group, queues, custom_fields)])

    def revoke_rights(
        self,
        rights: Sequence[str],
        *,
        user: str | None = None,
        group: str | None = None,
        queues: Sequence[str | int] | None = None,
        custom_fields: Sequence[int] | None = None,
    ) -> None:
        self.rt_admin([self._acl_op("revoke", rights, user, group, queues, custom_fields)])

    @staticmethod
    def _acl_op(
        op: str,
        rights: Sequence[str],
        user: str | None,
        group: str | None,
        queues: Sequence[str | int] | None,
        custom_fields: Sequence[int] | None,
    ) -> dict[str, Any]:
        if (user is None) == (group is None):
            raise ValueError("give exactly one of user= or group=")
        if isinstance(rights, str):
            raise TypeError("rights must be a sequence of right names")
        result: dict[str, Any] = {"op": op, "rights": list(rights)}
        result["user" if user is not None else "group"] = user if user is not None else group
        if queues:
            result["queues"] = [str(q) for q in queues]
        if custom_fields:
            result["custom_fields"] = [int(c) for c in custom_fields]
        return result

    def create_auth_token(self, user: str, description: str = "bpsm test token") -> str:
        """Create an RT::AuthToken for ``user``; use it as ``Authorization: token <it>``
        (:class:`TokenAuth`).  The string looks like ``1-<user id>-<32 hex>``."""
        (result,) = self.rt_admin([{"op": "auth_token", "user": user, "description": description}])
        return str(result["token"])

    def create_ticket_custom_field(
        self,
        name: str,
        queues: Sequence[str | int] = (),
        *,
        type: str = "Freeform",
        max_values: int = 1,
        values: Sequence[str] = (),
    ) -> int:
        """Create a ticket custom field (REST 2) and apply it to ``queues`` (RT's Perl
        API; no queues = all queues).  ``type``: Freeform, Select, Text, Date, DateTime...
        ``values``: the choices for a Select field.  Returns the field's id.
        """
        r = self.api(
            "POST",
            "customfield",
            json={
                "Name": name,
                "Type": type,
                "LookupType": "RT::Queue-RT::Ticket",
                "MaxValues": max_values,
            },
            expected=(201,),
        )
        cf_id = int(r.json()["id"])
        for value in values:
            self.api("POST", f"customfield/{cf_id}/value", json={"Name": value}, expected=(201,))
        self.rt_admin(
            [{"op": "apply_custom_field", "id": cf_id, "queues": [str(q) for q in queues]}]
        )
        return cf_id


def _sql_quote(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def decode_attachment_content(content: str) -> bytes:
    """``GET /attachment/N`` returns ``Content`` base64-encoded (collections with
    ``fields=Content`` return it as text)."""
    return base64.b64decode(content)
