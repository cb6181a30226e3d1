"""The review page under /ui/: decisions, one decision's explanation, corrections, dead
letters and the report, for people who may not have a shell on the server.

Edge code (Flask). It reads the store and records corrections as jobs; it never calls a
helpdesk (the worker applies a correction, as it applies a routing). Every page needs a login:
users and argon2 hashes come from `BPSM_UI_USERS_FILE` (`bpsm ui-user add NAME` writes it);
sessions are signed cookies (HttpOnly, SameSite=Lax, Secure unless
`BPSM_UI_INSECURE_COOKIES=1`), every form carries a CSRF token, and failed logins are
rate-limited per client address and user name.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from connector.catalogue import Catalogue, parse_duration, pick_text
from connector.config import read_secret
from connector.datadir import private_dir, write_atomically
from connector.decisions import DecisionFilter, decision_row
from connector.events import PROCESSES, RoutingDecision, ServiceMatch
from connector.logs import log_extra
from connector.report import kpis, render_html

log = logging.getLogger("bpsm.ui")

LOGIN_FAILURES = 5  # per client address and user name within LOGIN_WINDOW …
LOGIN_WINDOW = 15 * 60.0  # … seconds; then 429 until the oldest failure ages out
MIN_PASSWORD = 12
HASHER = PasswordHasher()
# A hash to verify against when the user does not exist: the answer then takes as long as
# for a real user, so timing does not tell which names exist.
_DUMMY_HASH = HASHER.hash(secrets.token_hex(16))


# ----- users file ----------------------------------------------------------------------------


def read_users(path: Path) -> dict[str, str]:
    """name → argon2 hash, from lines `name:hash` (blank lines and # comments allowed)."""
    users: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, digest = line.partition(":")
        if name and digest:
            users[name] = digest
    return users


def write_user(path: Path, name: str, password: str) -> None:
    """Add or replace one user; the file is written whole (0600) and renamed into place."""
    if not name or ":" in name or name.strip() != name:
        raise ValueError("a user name must be non-empty, without ':' or surrounding spaces")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    users = read_users(path) if path.exists() else {}
    users[name] = HASHER.hash(password)
    _write_users(path, users)


def remove_user(path: Path, name: str) -> bool:
    users = read_users(path) if path.exists() else {}
    if users.pop(name, None) is None:
        return False
    _write_users(path, users)
    return True


def _write_users(path: Path, users: Mapping[str, str]) -> None:
    write_atomically(path, "".join(f"{n}:{h}\n" for n, h in sorted(users.items())))


# ----- settings ------------------------------------------------------------------------------


def _env(name: str, env: Mapping[str, str]) -> str | None:
    """A setting from the environment, or from the file its `_FILE` variant names."""
    value = read_secret(env, name)
    return value.get_secret_value() if value is not None else None


def secret_key(data_dir: Path, env: Mapping[str, str]) -> str:
    """`BPSM_UI_SECRET_KEY` (or _FILE), else a key kept in the data folder (0600), created
    once and shared by every process of the service, so a session survives a restart."""
    configured = _env("BPSM_UI_SECRET_KEY", env)
    if configured:
        return configured
    path = private_dir(data_dir) / "ui-secret-key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process is writing it at this moment
            key = path.read_text(encoding="utf-8").strip()
            if key:
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty; delete it to make a new session key") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key)
    return key


class LoginLimiter:
    """Failed logins per (client address, user name) in a sliding window, in this process.
    With several web workers an attacker gets at most LOGIN_FAILURES tries per worker."""

    def __init__(self, limit: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW):
        self.limit, self.window = limit, window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, key: tuple[str, str], now: float) -> bool:
        with self._lock:
            times = self._failures.get(key)
            while times and times[0] <= now - self.window:
                times.popleft()
            return bool(times) and len(times) >= self.limit  # type: ignore[arg-type]

    def failed(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded: forget the oldest keys
                self._failures.pop(next(iter(self._failures)))
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


class PageSessions(SecureCookieSessionInterface):
    """The review page's signed-cookie sessions, opened for its requests only. Its cookie is
    scoped to /ui (SESSION_COOKIE_PATH), so nothing else carries one; opening a session
    anyway built a cookie signer for every webhook, a measurable share of its CPU."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith("/ui"):
            return None  # Flask uses a null session: nothing is read or written
        return super().open_session(app, request)


# ----- the blueprint -------------------------------------------------------------------------


def install(app: Flask, runtime: Any, env: Mapping[str, str] | None = None) -> None:
    """Mount /ui/ on the app: sessions, CSRF, login and the pages."""
    env = os.environ if env is None else env
    users_file = _env("BPSM_UI_USERS_FILE", env)
    app.secret_key = secret_key(runtime.settings.data_dir, env)
    app.session_interface = PageSessions()
    app.config.update(
        SESSION_COOKIE_NAME="bpsm_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=env.get("BPSM_UI_INSECURE_COOKIES") != "1",
        SESSION_COOKIE_PATH="/ui",
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    limiter = LoginLimiter()
    ui = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates")

    @ui.before_request
    def _guard() -> BaseResponse | None:
        if request.method == "POST":
            sent = request.form.get("csrf", "")
            expected = session.get("csrf", "")
            if not expected or not hmac.compare_digest(sent, expected):
                abort(400, "missing or wrong CSRF token: reload the page and try again")
        if request.endpoint in ("ui.login", "ui.login_post"):
            return None
        if "user" not in session:
            return redirect(url_for("ui.login", next=request.full_path))
        return None

    @ui.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    @ui.app_context_processor
    def _context() -> dict[str, Any]:
        return {"csrf": _csrf_token, "user": session.get("user")}

    @ui.get("/login")
    def login() -> str:
        return render_template(
            "ui/login.html",
            error=None,
            enabled=bool(users_file),
            next=_safe_next(request.args.get("next")),
        )

    @ui.post("/login")
    def login_post() -> BaseResponse | tuple[str, int]:
        name = request.form.get("user", "")[:100]
        password = request.form.get("password", "")[:1000]
        key = (request.remote_addr or "-", name)
        now = time.time()
        if limiter.blocked(key, now):
            log.warning("login rate-limited", extra=log_extra({"ui_user": name}))
            return _login_error("Too many failed logins. Try again in 15 minutes.", 429)
        if not users_file:
            return _login_error("The review page has no users yet: see the README.", 403)
        digest = _users(users_file).get(name)
        if not _verify(digest, password):
            limiter.failed(key, now)
            log.warning("login failed", extra=log_extra({"ui_user": name}))
            return _login_error("Wrong user name or password.", 401)
        limiter.succeeded(key)
        session.clear()
        session["user"] = name
        session["csrf"] = secrets.token_urlsafe(32)
        session.permanent = True
        log.info("login", extra=log_extra({"ui_user": name}))
        return redirect(_safe_next(request.form.get("next")) or url_for("ui.decisions"))

    @ui.post("/logout")
    def logout() -> BaseResponse:
        session.clear()
        return redirect(url_for("ui.login"))

    @ui.get("/")
    def decisions() -> str:
        wanted, problems = _filter(request.args)
        rows = [decision_row(r, runtime.catalogue) for r in runtime.store.decision_rows(wanted)]
        return render_template(
            "ui/decisions.html",
            rows=rows,
            args=request.args,
            problems=problems,
            services=_services(runtime.catalogue),
            processes=PROCESSES,
            title="Low confidence" if wanted.low_confidence else "Decisions",
        )

    @ui.get("/low-confidence")
    def low_confidence() -> BaseResponse:
        return redirect(url_for("ui.decisions", low_confidence="1"))

    @ui.get("/decisions/<int:routing_id>")
    def decision(routing_id: int) -> str:
        found = runtime.store.decision_rows(DecisionFilter(routing_id=routing_id, limit=1))
        if not found:
            abort(404, f"no decision {routing_id}")
        raw = found[0]
        row = decision_row(raw, runtime.catalogue)
        made = RoutingDecision.model_validate_json(raw["decision"])
        match = ServiceMatch.model_validate_json(raw["match"])
        history = [c for c in runtime.store.corrections_since() if c["routing"] == routing_id]
        return render_template(
            "ui/decision.html",
            row=row,
            decision=made,
            match=match,
            runner_up=_service_name(runtime.catalogue, match.runner_up, made.language),
            rule=_rule(made, match),
            corrections=history,
            services=_services(runtime.catalogue),
            processes=[p for p in PROCESSES if p in ("reactive", "relation", "change")],
        )

    @ui.post("/decisions/<int:routing_id>/correct")
    def correct(routing_id: int) -> BaseResponse:
        service = request.form.get("service") or None
        process = request.form.get("process", "")
        if process not in ("reactive", "relation", "change"):
            abort(400, "process must be reactive, relation or change")
        if service is not None and service not in {s.id for s in runtime.catalogue.services}:
            abort(400, f"unknown service {service!r}")
        if process == "reactive" and service is None:
            abort(400, "a reactive ticket needs a service")
        try:
            correction_id = runtime.store.record_correction(
                routing_id, service, process, actor=str(session["user"])
            )
        except KeyError:
            abort(404, f"no decision {routing_id}")
        log.info(
            "correction recorded",
            extra=log_extra(
                {"routing": routing_id, "correction": correction_id, "ui_user": session["user"]}
            ),
        )
        return redirect(url_for("ui.decision", routing_id=routing_id, corrected=correction_id))

    @ui.get("/dead-letters")
    def dead_letters() -> str:
        return render_template("ui/dead_letters.html", rows=runtime.store.list_dead_letters())

    @ui.post("/dead-letters/<int:dead_letter_id>/replay")
    def replay(dead_letter_id: int) -> BaseResponse:
        replayed = runtime.store.replay(dead_letter_id)
        if not replayed:
            abort(404, f"no dead letter {dead_letter_id} waiting for a replay")
        log.info("dead letter replayed", extra=log_extra({"dead_letter": dead_letter_id}))
        return redirect(url_for("ui.dead_letters", replayed=dead_letter_id))

    @ui.get("/report")
    def report() -> Response:
        now = time.time()
        since = now - 30 * 86400
        figures = kpis(
            runtime.store.all_routings(since=since),
            now,
            since=since,
            service_names={
                s.id: s.text("name", _lang(runtime.catalogue)) for s in runtime.catalogue.services
            },
        )
        return Response(render_html(figures), mimetype="text/html")

    app.register_blueprint(ui)


def _csrf_token() -> str:
    """The session's CSRF token; a visitor who is not logged in gets one for the login form."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def _users(path: str) -> dict[str, str]:
    try:
        return read_users(Path(path))
    except OSError as exc:
        log.error("cannot read BPSM_UI_USERS_FILE", extra=log_extra({"error": str(exc)}))
        return {}


def _verify(digest: str | None, password: str) -> bool:
    try:
        return HASHER.verify(digest or _DUMMY_HASH, password) and digest is not None
    except (VerificationError, InvalidHashError):
        return False


def _login_error(message: str, status: int) -> tuple[str, int]:
    return render_template("ui/login.html", error=message, enabled=True, next=None), status


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site under /ui/ (no open redirect to another host)."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return None


def _filter(args: Mapping[str, str]) -> tuple[DecisionFilter, list[str]]:
    problems: list[str] = []
    since = None
    if args.get("since"):
        try:
            since = time.time() - parse_duration(args["since"]).total_seconds()
        except ValueError as exc:
            problems.append(f"since: {exc}")
    process = args.get("process") or None
    if process is not None and process not in PROCESSES:
        problems.append(f"process: {process!r} is not a BPSM process")
        process = None
    try:
        limit = max(1, min(int(args.get("limit") or 50), 1000))
    except ValueError:
        problems.append("limit: not a number")
        limit = 50
    return (
        DecisionFilter(
            since=since,
            service=args.get("service") or None,
            process=process,
            low_confidence=args.get("low_confidence") == "1",
            overridden=args.get("overridden") == "1",
            limit=limit,
        ),
        problems,
    )


def _lang(catalogue: Catalogue) -> str:
    return catalogue.languages[0] if catalogue.languages else "en"


def _services(catalogue: Catalogue) -> list[tuple[str, str]]:
    language = _lang(catalogue)
    return sorted(
        ((s.id, pick_text(s.name, language)) for s in catalogue.services), key=lambda x: x[1]
    )


def _service_name(catalogue: Catalogue, service_id: str | None, language: str) -> str | None:
    if not service_id:
        return None
    try:
        return f"{pick_text(catalogue.service(service_id).name, language)} ({service_id})"
    except KeyError:
        return service_id


RULES: dict[str, Callable[[RoutingDecision, ServiceMatch], bool]] = {
    "corrected in the review page": lambda d, m: "corrected" in d.reasons,
    "no usable text": lambda d, m: "no-usable-text" in d.reasons,
    "a matter outside IT that no service covers → relation": lambda d, m: bool(m.outside),
    "no service matches → relation": lambda d, m: d.service is None,
    "a private matter → relation": lambda d, m: m.private_matter and d.process == "relation",
    "the service is not supported → relation": lambda d, m: d.process == "relation",
    "a request to change the service → change": lambda d, m: d.process == "change",
    "a supported service → reactive, with its SLA": lambda d, m: d.process == "reactive",
}


def _rule(decision: RoutingDecision, match: ServiceMatch) -> str:
    """Which BPSM rule decided, in the order route.py applies them."""
    for text, applies in RULES.items():
        if applies(decision, match):
            return text
    return decision.process


__all__ = ["install", "read_users", "remove_user", "write_user"]
