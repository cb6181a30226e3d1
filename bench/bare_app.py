"""The ingest benchmark's baseline: a bare Flask endpoint that reads the body and answers 202.

Served by bench/ingest.py with exactly the connector's gunicorn settings
(``-c python:connector.gunicorn_conf``, same workers, threads, keep-alive), so the ratio
connector ÷ bare shows what the connector's own work per webhook costs.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/hooks/<host>")
def hook(host: str) -> tuple[Response, int]:
    body = request.get_data(cache=False)
    return jsonify({"status": "queued", "bytes": len(body)}), 202


@app.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify({"status": "ok"}), 200
