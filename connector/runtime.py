"""Wiring: settings → store, catalogue index, mappings, host modules, job queue.

One Runtime per process. The web layer uses it to record deliveries; the job queue hands
its Context to the worker. Nothing here decides anything: that is classify/route (pure)
and the worker.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from pathlib import Path

from connector.classify import CatalogueIndex
from connector.config import ConfigError, Mode, Settings, env_prefix, load_settings
from connector.context import Context
from connector.datadir import secure_data_dir
from connector.hosts import host_classes, settings_models
from connector.hosts.base import Host, HostClient
from connector.indexfile import load_catalogue_cached, load_or_build_index
from connector.jobqueue import JobQueue, make_huey
from connector.learnfile import LearnedFileWatcher
from connector.logs import log_extra
from connector.mapping import Mapping, load_mapping
from connector.store import Store

log = logging.getLogger("bpsm.runtime")


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        index: CatalogueIndex | None = None,
        read_only: bool = False,
    ):
        """`read_only`: for commands that read the store (decisions, report, replay, purge):
        the store must exist (StoreUnavailable otherwise) and nothing is created or migrated
        — neither the data folder, nor the store, nor the embedded queue."""
        self.settings = settings or load_settings(hosts=settings_models())
        data_dir_used = not (self.settings.database_url and self.settings.redis_url)
        if not read_only and (data_dir_used or self.settings.data_dir.exists()):
            secure_data_dir(self.settings.data_dir)
        self.store = Store(self.settings.database, create=not read_only)
        # The catalogue is read (and checked) at once; the index is built by the first
        # process that classifies: web workers never do, and at 10,000 services an index
        # is 1.3 GB per process.
        if index is not None:
            self.catalogue = index.catalogue
        else:  # a large catalogue's parsed form is kept beside its index (indexfile.py)
            keep = None if read_only else self.settings.data_dir
            self.catalogue = load_catalogue_cached(self.settings.catalogue_path, keep)
        self._index = index
        self._index_lock = threading.Lock()
        self._learned = (
            LearnedFileWatcher(self.settings.learned_path) if self.settings.learned_path else None
        )
        self._mappings: dict[str, Mapping] = {}
        self._default_mapped: set[str] = set()  # hosts whose mapping file did not exist yet
        self._hosts: dict[str, Host] = {}
        self._clients: dict[str, HostClient] = {}
        self._lock = threading.Lock()
        # What jobs are handed: the worker and the processes never reach back in here.
        self.context = Context(
            settings=self.settings,
            store=self.store,
            catalogue=self.catalogue,
            index=lambda: self.index,
            mapping=self.mapping,
            mode=self.mode,
            client=self.client,
        )
        self.queue = JobQueue(make_huey(self.settings, read_only=read_only), self.context)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def index(self) -> CatalogueIndex:
        if self._index is None:
            with self._index_lock:
                if self._index is None:
                    started = time.perf_counter()
                    log.info(
                        "building the catalogue index",
                        extra=log_extra({"services": len(self.catalogue.services)}),
                    )
                    # A large catalogue's index is built once per machine and input, then
                    # mapped from its file by every process (connector/indexfile.py). The
                    # cyclic collector stays off until the index is frozen: its first pass
                    # after a load scanned every object just made (0.1 s of a restart).
                    collecting = gc.isenabled()
                    gc.disable()
                    try:
                        self._index, how = load_or_build_index(
                            self.catalogue, self.settings.catalogue_path, self.settings.data_dir
                        )
                        # The index lives as long as the process: keep the cyclic collector
                        # from re-scanning its millions of objects (full collections took
                        # seconds at 10,000 services, landing as latency spikes on some
                        # unlucky ticket).
                        gc.freeze()
                    finally:
                        if collecting:
                            gc.enable()
                    log.info(
                        "catalogue index ready",
                        extra=log_extra(
                            {
                                "services": len(self.catalogue.services),
                                "seconds": round(time.perf_counter() - started, 2),
                                "index": how,
                            }
                        ),
                    )
        if self._learned is not None:  # BPSM_LEARNED, re-read when the file changes
            return self._learned.current(self._index)
        return self._index

    # ----- hosts ----------------------------------------------------------------------------

    def _mapping_path(self, host: str) -> Path:
        return self.settings.mapping_path(host)

    def mapping(self, host: str) -> Mapping:
        """The host's mapping file, read once. Without a file the defaults serve until one
        appears: the admin (or `bpsm setup`) may write it while the service runs, and the
        start-up checks must not pin the defaults for good."""
        if host in self._default_mapped and self._mapping_path(host).exists():
            with self._lock:
                self._default_mapped.discard(host)
                self._mappings.pop(host, None)
                self._hosts.pop(host, None)
                stale = self._clients.pop(host, None)
            if stale is not None:
                stale.close()
        if host not in self._mappings:
            path = self._mapping_path(host)
            if path.exists():
                self._mappings[host] = load_mapping(path)
            else:
                self._mappings[host] = Mapping(host=host)
                self._default_mapped.add(host)
        return self._mappings[host]

    def host(self, name: str) -> Host:
        mapping = self.mapping(name)
        with self._lock:
            if name not in self._hosts:
                cls = host_classes()[name]
                self._hosts[name] = cls(self.settings.host(name), mapping)
            return self._hosts[name]

    def client(self, name: str) -> HostClient:
        host = self.host(name)
        with self._lock:
            if name not in self._clients:
                self._clients[name] = host.client()
            return self._clients[name]

    def mode(self, host: str) -> Mode:
        """dry-run for any host without a URL, whatever BPSM_MODE says."""
        if not self.settings.host(host).configured:
            return "dry-run"
        return self.settings.effective_mode()

    # ----- who may post webhooks ------------------------------------------------------------

    def real_host_configured(self) -> bool:
        return any(h.configured for n, h in self.settings.hosts.items() if n != "demo")

    def host_enabled(self, name: str) -> bool:
        """The demo host takes anyone's text without a signature: only on a machine with no
        real helpdesk, where nothing it records can reach a helpdesk or its statistics."""
        if name not in host_classes():
            return False
        return name != "demo" or not self.real_host_configured()

    def needs_credential(self, name: str) -> bool:
        """True when a webhook for `name` would act on a helpdesk (route or shadow mode) yet
        nothing verifies it, and the admin did not allow that with BPSM_<HOST>_ALLOW_UNSIGNED."""
        settings = self.settings.host(name)
        return (
            name != "demo"
            and self.mode(name) != "dry-run"
            and not settings.allow_unsigned
            and not self.host(name).has_webhook_credential()
        )

    def unsigned_hosts(self) -> list[str]:
        """Hosts whose webhooks act unverified because the admin allowed it."""
        return [
            name
            for name, settings in self.settings.hosts.items()
            if settings.allow_unsigned
            and self.mode(name) != "dry-run"
            and not self.host(name).polling
            and not self.host(name).has_webhook_credential()
        ]

    def check_webhook_credentials(self) -> None:
        """Refuse to start when a host that receives webhooks in route/shadow mode has no
        credential: anyone who can reach the service could otherwise move tickets."""
        missing = [
            name
            for name in self.settings.hosts
            if self.needs_credential(name) and not self.host(name).polling
        ]
        if missing:
            raise ConfigError(
                "; ".join(
                    f"{name} receives webhooks in {self.mode(name)} mode but has no webhook "
                    f"credential: set {env_prefix(name)}WEBHOOK_SECRET_FILE (see `bpsm setup "
                    f"{name}`), or {env_prefix(name)}ALLOW_UNSIGNED=1 to accept unsigned ones"
                    for name in missing
                )
            )
        for name in self.unsigned_hosts():
            log.warning(
                "webhooks accepted without a signature",
                extra=log_extra({"host": name, "setting": env_prefix(name) + "ALLOW_UNSIGNED"}),
            )

    def status_counts(self) -> dict[str, int]:
        return {
            status: self.store.count_deliveries(status)
            for status in ("queued", "processing", "dead")
        }

    def close(self) -> None:
        for client in self._clients.values():
            try:
                client.close()
            except Exception as exc:  # shutting down: report, do not mask other closes
                log.warning("closing client failed", extra=log_extra({"error": repr(exc)}))
        self.store.dispose()
