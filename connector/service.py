"""Process supervision for `bpsm serve` and `bpsm worker`.

`serve` = gunicorn (HTTP, N processes) + this process running the job consumer and pollers.
Start-up, in this order, so that a failure leaves nothing half-running:

1. SIGTERM/SIGINT handlers: from the first instant a signal stops whatever has started.
2. A fresh Prometheus multiprocess directory, before prometheus_client is imported anywhere:
   gunicorn's workers and this process's consumer all count into it.
3. The port, bound here and handed to gunicorn as a file descriptor: a port in use is one
   clear line and a non-zero exit before anything else starts.
4. The database and the job queue, retried with backoff for BPSM_START_TIMEOUT seconds.
5. gunicorn, whose master and workers die with their parent (Linux PR_SET_PDEATHSIG, else a
   thread watching the parent), so a `kill -9` of `bpsm serve` leaves nothing on the port.
6. Once /healthz answers, the job consumers and pollers; then "service started". The first
   consumer runs in this process, each further one (`--consumers N`) in a child process of
   its own (classification is CPU-bound: threads of one process share one core through the
   GIL), which dies with us like gunicorn. Everything started after gunicorn runs at a lower
   CPU priority (`--consumer-nice`): under a burst of webhooks the web workers get the cores
   and the consumers catch up afterwards — every 202 is a committed row, nothing is lost by
   waiting.

SIGTERM/SIGINT: gunicorn finishes in-flight requests, the consumers finish in-flight jobs
(a job cut short keeps its lease and is retaken after a restart), then we exit.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from connector.logs import log_extra, quiet_queue_outages

# Not imported at the top: they import prometheus_client, which must not be imported before
# MetricsDir.prepare has chosen the multiprocess directory (see MetricsDir). The functions
# that start them import them once it has.
if TYPE_CHECKING:
    from connector.config import Settings
    from connector.jobqueue import BackgroundWorker
    from connector.poller import PollerThreads
    from connector.runtime import Runtime

log = logging.getLogger("bpsm.service")
T = TypeVar("T")

METRICS_DIR_PREFIX = "bpsm-metrics-"
SUPERVISOR_PID = "BPSM_SUPERVISOR_PID"  # gunicorn's master checks it is still our child
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0  # seconds between start-up attempts


class StartupError(Exception):
    """The service cannot start; the message is the one line the operator reads."""


class Stopped(Exception):
    """A signal arrived while starting."""


class Stopper:
    """SIGTERM/SIGINT set an event that every start-up step and the main loop look at."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    def check(self) -> None:
        if self.event.is_set():
            raise Stopped


# ----- dying with the parent ---------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send us SIGTERM when `parent_pid` (our parent) dies.

    Called in gunicorn's master (parent: `bpsm serve`) and in each gunicorn worker (parent:
    the master). Without it a `kill -9` of `bpsm serve` left gunicorn holding the port and
    answering 202 with no consumer running. Where prctl is missing, a thread watches."""
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    if not armed:
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="bpsm-parent-watch", daemon=True
        ).start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


# ----- consumers ---------------------------------------------------------------------------


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_consumers(web_workers: int, cores: int | None = None) -> int:
    """Consumer processes for `bpsm serve`: one per core the web workers leave free, at
    least one (1 on a 2-core machine with 2 web workers)."""
    return max(1, (available_cores() if cores is None else cores) - web_workers)


def lower_priority(increment: int) -> None:
    """Lower the CPU priority of the calling thread by `increment` (nice). On Linux the nice
    value is per thread and inherited by the threads and processes it starts afterwards, so
    call it after gunicorn has started and before the consumers: they yield to the web
    workers when the cores are busy and run at full speed when they are not. Raising the
    value needs no privilege; a failure (a sandbox forbidding it) is only logged."""
    if increment <= 0:
        return
    try:
        os.nice(increment)
    except OSError as exc:
        log.warning("cannot lower the consumers' priority", extra=log_extra({"error": str(exc)}))


def consumer_command(threads: int) -> list[str]:
    """A further consumer of `bpsm serve`: the hidden `bpsm consume` command."""
    return [sys.executable, "-m", "connector.cli", "consume", "--threads", str(threads)]


class ConsumerProcesses:
    """The consumers of `bpsm serve` beyond the one in its own process. Each is a child with
    its own BackgroundWorker (no pollers: they run once, in `bpsm serve`), counting into the
    same metrics directory (inherited through PROMETHEUS_MULTIPROC_DIR) and dying with us."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, count: int, threads: int) -> None:
        env = dict(os.environ)
        env[SUPERVISOR_PID] = str(os.getpid())
        for _ in range(count):
            self.children.append(subprocess.Popen(consumer_command(threads), env=env))

    def exited(self) -> subprocess.Popen[bytes] | None:
        """A child that has exited, if any."""
        return next((child for child in self.children if child.poll() is not None), None)

    def terminate(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            _mark_dead(child.pid)


def _mark_dead(pid: int) -> None:
    """Drop a gone process's live gauges from the metrics directory (as gunicorn_conf does)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# ----- metrics directory -------------------------------------------------------------------


class MetricsDir:
    """Where every process of one `bpsm serve` writes its counters (prometheus_client's
    multiprocess mode). Ours (a fresh temporary folder) is removed at exit; folders a killed
    `bpsm serve` left behind are removed at the next start. One the operator set with
    PROMETHEUS_MULTIPROC_DIR is emptied at start and kept."""

    def __init__(self, path: Path, owned: bool):
        self.path = path
        self.owned = owned

    @classmethod
    def prepare(cls) -> MetricsDir:
        if "prometheus_client" in sys.modules:
            # Its value store was chosen at import: counters would stay in one process.
            raise RuntimeError("prometheus_client was imported before the metrics directory")
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if given:
            path = Path(given)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink(missing_ok=True)
            return cls(path, owned=False)
        remove_abandoned_metrics_dirs()
        prefix = f"{METRICS_DIR_PREFIX}{os.getpid()}-"
        path = Path(tempfile.mkdtemp(prefix=prefix))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        return cls(path, owned=True)

    def cleanup(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned_metrics_dirs(parent: Path | None = None) -> list[Path]:
    """Folders `bpsm-metrics-<pid>-…` of ours whose process is gone (killed with SIGKILL)."""
    removed = []
    for folder in (parent or Path(tempfile.gettempdir())).glob(f"{METRICS_DIR_PREFIX}*"):
        pid = folder.name[len(METRICS_DIR_PREFIX) :].split("-", 1)[0]
        try:
            if folder.stat().st_uid != os.getuid() or not pid.isdigit() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----- the port ----------------------------------------------------------------------------


def bind_listener(host: str, port: int, option: str = "--port") -> socket.socket:
    """Bind and listen now, so that a taken port fails before anything has started."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is already in use (another `bpsm serve`?): stop it "
                f"or choose another with {option}"
            ) from exc
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _local_url(listener: socket.socket, path: str) -> str:
    host, port = listener.getsockname()[:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


# ----- database and queue ------------------------------------------------------------------


class Unreachable(Exception):
    """A backend that may come back: worth waiting for at start."""


def masked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return " ".join(lines[0].split()).rstrip(".") if lines else type(cause).__name__


def retry_start(
    attempt: Callable[[], T], stopper: Stopper, timeout: float, sleep_first: float = BACKOFF_FIRST
) -> T:
    """Run `attempt` until it stops raising Unreachable: backoff doubling up to 10 s, one
    log line per failure, StartupError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = sleep_first
    tries = 0
    while True:
        stopper.check()
        tries += 1
        try:
            return attempt()
        except Unreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartupError(
                    f"{exc}; gave up after {tries} attempts in {timeout:g} s (BPSM_START_TIMEOUT)"
                ) from None
            pause = min(delay, left)
            log.warning(
                f"{exc}; retrying in {pause:.1f} s",
                extra=log_extra({"attempt": tries, "retry_in": round(pause, 1)}),
            )
            if stopper.wait(pause):
                raise Stopped from None
            delay = min(delay * 2, BACKOFF_MAX)


def _database_name(settings: Settings) -> str:
    if settings.database_url:
        return f"the database at BPSM_DATABASE_URL={masked_url(settings.database_url)}"
    return f"the store in BPSM_DATA_DIR={settings.data_dir}"


def connect_runtime(settings: Settings, stopper: Stopper) -> Runtime:
    """The Runtime, once the database and the job queue answer."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    from connector.runtime import Runtime  # after MetricsDir.prepare: see the TYPE_CHECKING

    def database() -> Runtime:
        try:
            return Runtime(settings)
        except (OperationalError, InterfaceError) as exc:
            raise Unreachable(
                f"cannot reach {_database_name(settings)}: {_first_line(exc)}"
            ) from exc

    runtime = retry_start(database, stopper, settings.start_timeout)

    where = (
        f"Redis at BPSM_REDIS_URL={masked_url(settings.redis_url)}"
        if settings.redis_url
        else f"the job queue in BPSM_DATA_DIR={settings.data_dir}"
    )
    quiet_queue_outages(where)

    def queue() -> None:
        try:
            runtime.queue.pending_count()
        except Exception as exc:  # the driver's own errors (redis, sqlite): all worth a wait
            raise Unreachable(f"cannot reach {where}: {_first_line(exc)}") from exc

    try:
        retry_start(queue, stopper, settings.start_timeout)
    except BaseException:
        runtime.close()
        raise
    return runtime


# ----- serve -------------------------------------------------------------------------------


class Service:
    """The parts of `bpsm serve` that have started, so that any stop stops exactly those."""

    def __init__(self, stopper: Stopper, metrics: MetricsDir):
        self.stopper = stopper
        self.metrics = metrics
        self.listener: socket.socket | None = None
        self.runtime: Runtime | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.background: BackgroundWorker | None = None
        self.consumers = ConsumerProcesses()
        self.pollers: PollerThreads | None = None

    def start_web(self, web_workers: int) -> None:
        assert self.listener is not None
        env = dict(os.environ)
        env["BPSM_BIND"] = f"fd://{self.listener.fileno()}"
        env["BPSM_WEB_WORKERS"] = str(web_workers)
        env[SUPERVISOR_PID] = str(os.getpid())
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:connector.gunicorn_conf",
            "webhook_app:create_app()",
        ]
        self.listener.set_inheritable(True)
        self.web = subprocess.Popen(command, env=env, pass_fds=(self.listener.fileno(),))
        # gunicorn holds the socket now; ours would keep the port after gunicorn is gone.
        self.listener.close()

    def start_consumers(self, consumers: int, consumer_threads: int, nice: int) -> None:
        from connector.jobqueue import BackgroundWorker  # after MetricsDir.prepare
        from connector.poller import PollerThreads

        assert self.runtime is not None
        lower_priority(nice)  # gunicorn has started: only what starts from here on
        self.consumers.start(consumers - 1, consumer_threads)
        self.background = BackgroundWorker(self.runtime.queue, workers=consumer_threads)
        self.background.quiet_signals()
        self.background.start()
        self.stopper.check()
        self.pollers = PollerThreads(self.runtime)
        self.pollers.start()

    def wait_until_serving(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.stopper.check()
            self.check_web()
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:  # 503 degraded: it answers, that is what we need
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"the web server did not answer {url} within {timeout:g} s "
                        "(BPSM_START_TIMEOUT)"
                    ) from None
                self.stopper.wait(0.1)

    def check_web(self) -> None:
        if self.web is not None and self.web.poll() is not None:
            raise StartupError(
                f"the web server (gunicorn) exited with code {self.web.returncode} while "
                "starting; its error is above"
            )

    def run(self) -> int:
        assert self.web is not None
        while not self.stopper.wait(0.5):
            if self.web.poll() is not None:
                log.error("web server exited", extra=log_extra({"code": self.web.returncode}))
                return self.web.returncode or 1
            gone = self.consumers.exited()
            if gone is not None:  # like the web server: stop, and let the supervisor restart
                log.error(
                    "consumer process exited",
                    extra=log_extra({"pid": gone.pid, "code": gone.returncode}),
                )
                return gone.returncode or 1
        log.info("stopping", extra=log_extra({"signal": self.stopper.signum}))
        return 0

    def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.web is not None and self.web.poll() is None:
            self.web.send_signal(signal.SIGTERM)
        self.consumers.terminate()
        if self.pollers is not None:
            self.pollers.stop()
        if self.background is not None:
            self.background.stop(graceful=True)
        self.consumers.wait(timeout=30)
        if self.web is not None:
            try:
                self.web.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait()
        if self.runtime is not None:
            self.runtime.close()
        self.metrics.cleanup()


def run_service(
    settings: Settings,
    stopper: Stopper,
    metrics: MetricsDir,
    bind: str,
    port: int,
    web_workers: int,
    consumer_threads: int,
    consumers: int = 1,
    consumer_nice: int = 0,
) -> int:
    """`bpsm serve`; StartupError for what the operator must fix (the caller prints it)."""
    service = Service(stopper, metrics)
    try:
        service.listener = bind_listener(bind, port)
        health = _local_url(service.listener, "/healthz")
        actual_port = service.listener.getsockname()[1]
        service.runtime = connect_runtime(settings, stopper)
        # Before anything serves: no unverified webhook may act on a helpdesk (ConfigError).
        service.runtime.check_webhook_credentials()
        stopper.check()
        service.start_web(web_workers)
        # Webhooks are accepted (and stored) while the consumer builds the catalogue index.
        service.wait_until_serving(health, settings.start_timeout)
        service.start_consumers(consumers, consumer_threads, consumer_nice)
        service.check_web()
        log.info(
            "service started",
            extra=log_extra(
                {
                    "bind": f"{bind}:{actual_port}",
                    "web_workers": web_workers,
                    "consumers": consumers,
                    "consumer_nice": consumer_nice,
                    "mode": settings.effective_mode(),
                    "pollers": service.pollers.hosts if service.pollers else [],
                    "metrics_dir": str(metrics.path),
                }
            ),
        )
        return service.run()
    except Stopped:
        log.info("stopped while starting", extra=log_extra({"signal": stopper.signum}))
        return 0
    finally:
        service.shutdown()


# ----- worker ------------------------------------------------------------------------------


def run_consumer(settings: Settings, stopper: Stopper, consumer_threads: int) -> int:
    """A further consumer of `bpsm serve` (`bpsm consume`, started by it): dies with it."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor:
        die_with_parent(int(supervisor))
    return run_worker(settings, stopper, consumer_threads, pollers_too=False)


def run_worker(
    settings: Settings,
    stopper: Stopper,
    consumer_threads: int = 2,
    metrics_bind: tuple[str, int] | None = None,
    pollers_too: bool = True,
) -> int:
    """`bpsm worker`: the consumer and pollers; with `metrics_bind`, its own /metrics.
    Without `pollers_too`: the consumer alone (a further consumer of `bpsm serve`)."""
    from connector.jobqueue import BackgroundWorker  # after MetricsDir.prepare
    from connector.poller import PollerThreads

    listener = bind_listener(*metrics_bind, option="--metrics-port") if metrics_bind else None
    runtime: Runtime | None = None
    background: BackgroundWorker | None = None
    pollers: PollerThreads | None = None
    try:
        runtime = connect_runtime(settings, stopper)
        if listener is not None:
            serve_metrics(listener, runtime)
        background = BackgroundWorker(runtime.queue, workers=consumer_threads)
        background.quiet_signals()
        background.start()
        if pollers_too:
            pollers = PollerThreads(runtime)
            pollers.start()
        log.info(
            "worker started" if pollers_too else "consumer started",
            extra=log_extra(
                {
                    "mode": settings.effective_mode(),
                    "pollers": pollers.hosts if pollers else [],
                    "metrics": _local_url(listener, "/metrics") if listener else None,
                }
            ),
        )
        stopper.event.wait()
        log.info("stopping", extra=log_extra({"signal": stopper.signum}))
        return 0
    except Stopped:
        return 0
    finally:
        if pollers is not None:
            pollers.stop()
        if background is not None:
            background.stop(graceful=True)
        if listener is not None:
            listener.close()
        if runtime is not None:
            runtime.close()


def serve_metrics(listener: socket.socket, runtime: Runtime) -> None:
    """/metrics of this worker process on its own port (a daemon thread)."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    from prometheus_client import make_wsgi_app

    from connector.metrics import metrics_registry

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(WSGIServer):
        address_family = listener.family

        def server_bind(self) -> None:  # bound already, by bind_listener
            host, port = self.socket.getsockname()[:2]
            self.server_address = (host, port)
            self.server_name, self.server_port = host, port
            self.setup_environ()

    server = Server(listener.getsockname()[:2], Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_bind()
    server.set_app(make_wsgi_app(metrics_registry(runtime.status_counts)))
    threading.Thread(target=server.serve_forever, name="bpsm-metrics", daemon=True).start()
