"""Process supervision for `bpsm serve` and `bpsm worker`.

`serve` = gunicorn (HTTP, N processes) + this process running the job consumer and pollers.
SIGTERM/SIGINT: gunicorn finishes in-flight requests, the consumer finishes in-flight jobs
(a job cut short keeps its lease and is retaken after a restart), then we exit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from types import FrameType

from connector.logs import log_extra
from connector.poller import PollerThreads
from connector.runtime import BackgroundWorker, Runtime

log = logging.getLogger("bpsm.service")


def _wait_for_signal(extra: subprocess.Popen[bytes] | None = None) -> int:
    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.is_set():
        if extra is not None and extra.poll() is not None:
            log.error("web server exited", extra=log_extra({"code": extra.returncode}))
            return extra.returncode or 1
        stop.wait(0.5)
    log.info("stopping", extra=log_extra({"signal": received[0] if received else None}))
    return 0


def run_worker(rt: Runtime, consumer_threads: int = 2) -> int:
    background = BackgroundWorker(rt, workers=consumer_threads)
    pollers = PollerThreads(rt)
    background.start()
    pollers.start()
    log.info(
        "worker started",
        extra=log_extra({"mode": rt.settings.effective_mode(), "pollers": pollers.hosts}),
    )
    # huey's consumer set its own handlers in start(); ours take over for a clean stop.
    code = _wait_for_signal()
    pollers.stop()
    background.stop(graceful=True)
    rt.close()
    return code


def run_service(rt: Runtime, bind: str, port: int, web_workers: int, consumer_threads: int) -> int:
    env = dict(os.environ)
    env["BPSM_BIND"] = f"{bind}:{port}"
    env["BPSM_WEB_WORKERS"] = str(web_workers)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:connector.gunicorn_conf",
        "webhook_app:create_app()",
    ]
    web = subprocess.Popen(command, env=env)
    background = BackgroundWorker(rt, workers=consumer_threads)
    pollers = PollerThreads(rt)
    background.start()
    pollers.start()
    log.info(
        "service started",
        extra=log_extra(
            {
                "bind": f"{bind}:{port}",
                "web_workers": web_workers,
                "mode": rt.settings.effective_mode(),
                "pollers": pollers.hosts,
            }
        ),
    )
    code = _wait_for_signal(web)
    if web.poll() is None:
        web.send_signal(signal.SIGTERM)
    pollers.stop()
    background.stop(graceful=True)
    try:
        web.wait(timeout=30)
    except subprocess.TimeoutExpired:
        web.kill()
    rt.close()
    return code
