"""gunicorn settings used by `bpsm serve` (override any of them with GUNICORN_CMD_ARGS)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from prometheus_client import multiprocess

bind = os.environ.get("BPSM_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("BPSM_WEB_WORKERS", "2"))
threads = int(os.environ.get("BPSM_WEB_THREADS", "4"))
# A webhook is answered in milliseconds; anything slower is stuck and should be recycled.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None  # the app logs every webhook as JSON already
errorlog = "-"
loglevel = "warning"
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Counters from every worker are summed in /metrics.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bpsm-metrics-"))


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
