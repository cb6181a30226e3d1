"""gunicorn settings used by `bpsm serve` (override any of them with GUNICORN_CMD_ARGS).

Also usable on its own (`gunicorn -c python:connector.gunicorn_conf 'webhook_app:create_app()'`
beside `bpsm worker` processes): it then makes its own metrics directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from connector.service import METRICS_DIR_PREFIX, SUPERVISOR_PID, die_with_parent

bind = os.environ.get("BPSM_BIND", "127.0.0.1:8080")  # `bpsm serve`: fd://N, bound by it
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

# Counters from every worker are summed in /metrics. `bpsm serve` made the directory (and
# counts into it too); on our own we make one here, before any worker imports
# prometheus_client, and remove it at exit.
_OWN_METRICS_DIR = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR


def on_starting(server: Any) -> None:
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor:  # started by `bpsm serve`: stop when it is gone, whatever killed it
        die_with_parent(int(supervisor))


def post_fork(server: Any, worker: Any) -> None:
    die_with_parent(server.pid)  # a worker never outlives its master


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
