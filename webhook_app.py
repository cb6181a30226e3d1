"""The web layer: HTTP in, queue out. It never calls a helpdesk during a request.

POST /hooks/<host>  202 queued · 200 ignored/duplicate · 400 malformed · 401 bad signature
                    · 404 unknown host · 413 too large (PUT/PATCH/DELETE too where the host
                    declares them in `webhook_methods`, e.g. Zammad 7; else 405)
GET  /hooks/<host>  answers a host's verification challenge (GLPI's crc_token)
GET  /healthz       store and queue reachable
GET  /metrics       Prometheus text format
/ui/                the review page (login required; see connector/ui.py)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from connector.config import Settings, env_prefix, load_settings
from connector.hosts import host_classes, settings_models
from connector.hosts.base import BadPayload, Ignored, Unauthorized, WebhookRequest
from connector.logs import log_extra, setup_logging
from connector.metrics import EVENTS, render
from connector.runtime import Runtime
from connector.ui import install as install_ui

log = logging.getLogger("bpsm.web")


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit`. One byte more than the limit
    is read: werkzeug cuts a chunked body at the limit without saying so, which made an
    oversized body look like malformed JSON (400) instead of 413."""
    request.max_content_length = limit + 1
    body = request.get_data(cache=False)
    return None if len(body) > limit else body


def create_app(config: Mapping[str, Any] | Settings | Runtime | None = None) -> Flask:
    """App factory. `config` may be a Runtime, Settings, or overrides for load_settings."""
    if isinstance(config, Runtime):
        runtime = config
    else:
        if isinstance(config, Settings):
            settings = config
        else:
            settings = load_settings(hosts=settings_models(), **dict(config or {}))
        runtime = Runtime(settings)
    setup_logging(runtime.settings.log_level)
    runtime.check_webhook_credentials()  # refuse to serve unverified webhooks in route/shadow mode
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    app.extensions["bpsm"] = runtime
    install_ui(app, runtime)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if request.path.startswith("/ui/") and status != 413:
            return exc  # the review page's errors are pages for people, not JSON
        if isinstance(exc, RequestEntityTooLarge):
            return _error(413, f"body larger than {runtime.settings.max_body_bytes} bytes")
        return _error(status, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return _error(500, "internal error; see the service log")

    @app.route("/hooks/<host>", methods=["POST", "PUT", "PATCH", "DELETE"])
    def hook(host: str) -> tuple[Response, int]:
        if not runtime.host_enabled(host):
            known = ", ".join(h for h in host_classes() if runtime.host_enabled(h))
            return _error(404, f"unknown host {host!r}; known: {known}")
        adapter = runtime.host(host)  # once: each lookup re-checks a defaulted mapping file
        allowed = adapter.webhook_methods
        if request.method not in allowed:
            answer, status = _error(
                405, f"{host} webhooks are sent with {', '.join(sorted(allowed))}"
            )
            answer.headers["Allow"] = ", ".join(sorted(allowed | {"GET"}))
            return answer, status
        if runtime.needs_credential(host):
            # A polled host has no webhook to verify: a POST here can only be forged.
            EVENTS.labels(host, "rejected", "signature").inc()
            return _error(401, f"{host} is polled and has no webhook credential")
        length = request.content_length
        if length is not None and length > runtime.settings.max_body_bytes:
            EVENTS.labels(host, "rejected", "too-large").inc()
            return _error(413, f"body larger than {runtime.settings.max_body_bytes} bytes")
        body = _read_body(runtime.settings.max_body_bytes)
        if body is None:  # a chunked body carries no length: known only once read
            EVENTS.labels(host, "rejected", "too-large").inc()
            return _error(413, f"body larger than {runtime.settings.max_body_bytes} bytes")
        webhook = WebhookRequest(
            method=request.method, headers=request.headers, body=body, query=request.args
        )
        try:
            adapter.verify(webhook)
        except Unauthorized as exc:
            EVENTS.labels(host, "rejected", "signature").inc()
            log.warning("rejected webhook", extra=log_extra({"host": host, "reason": str(exc)}))
            return _error(401, str(exc))
        try:
            parsed = adapter.parse(webhook)
        except BadPayload as exc:
            EVENTS.labels(host, "rejected", "malformed").inc()
            log.warning("malformed webhook", extra=log_extra({"host": host, "reason": str(exc)}))
            return _error(400, str(exc), field=exc.field)
        except ValidationError as exc:  # a value the event cannot hold, e.g. a 300-char id
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            EVENTS.labels(host, "rejected", "malformed").inc()
            log.warning(
                "malformed webhook", extra=log_extra({"host": host, "reason": first["msg"]})
            )
            return _error(400, f"{field}: {first['msg']}", field=field)
        if isinstance(parsed, Ignored):
            EVENTS.labels(host, "ignored", parsed.metric_label).inc()
            log.info(
                "ignored event",
                extra=log_extra(
                    {"host": host, "ticket": parsed.ticket_id, "reason": parsed.reason}
                ),
            )
            return jsonify({"status": "ignored", "reason": parsed.reason}), 200
        pk = runtime.store.record_delivery(parsed)
        fields = {"host": host, "delivery": parsed.delivery_id, "ticket": parsed.ticket_id}
        if pk is None:
            EVENTS.labels(host, "ignored", "duplicate").inc()
            log.info("duplicate delivery", extra=log_extra(fields))
            return jsonify({"status": "duplicate", "delivery": parsed.delivery_id}), 200
        EVENTS.labels(host, "queued", "").inc()
        log.info("queued", extra=log_extra(fields))
        return jsonify({"status": "queued", "delivery": parsed.delivery_id, "id": pk}), 202

    @app.get("/hooks/<host>")
    def challenge(host: str) -> tuple[Response, int]:
        if not runtime.host_enabled(host):
            return _error(404, f"unknown host {host!r}")
        webhook = WebhookRequest(
            method="GET", headers=request.headers, body=b"", query=request.args
        )
        answer = runtime.host(host).challenge(webhook)
        if answer is None:
            return _error(405, "POST webhooks here")
        return Response(answer, mimetype="text/plain"), 200

    unsigned = runtime.unsigned_hosts()

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        checks: dict[str, str] = {}
        started = time.perf_counter()
        try:
            runtime.store.ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {type(exc).__name__}"
        try:
            runtime.queue.pending_count()
            checks["queue"] = "ok"
        except Exception as exc:
            checks["queue"] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return jsonify(
            {
                "status": "ok" if ok else "degraded",
                "checks": checks,
                "mode": runtime.settings.effective_mode(),
                "warnings": [
                    f"{name}: webhooks accepted without a signature "
                    f"({env_prefix(name)}ALLOW_UNSIGNED=1)"
                    for name in unsigned
                ],
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        ), (200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render(runtime.status_counts), mimetype="text/plain; version=0.0.4")

    return app
