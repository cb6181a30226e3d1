"""Prometheus metrics.

Counters live in the process that counts (web workers: events; job consumers: decisions,
apply latency, retries, dead letters). Under `bpsm serve` every process writes them to one
multiprocess directory (see connector.service) and /metrics of any web worker sums them;
`bpsm worker --metrics-port` serves its own. Queue depth and pending dead letters are read
from the store at scrape time, so they are right whatever process did the work.

The environment variable PROMETHEUS_MULTIPROC_DIR must be set before this module is first
imported: prometheus_client picks its value store at import time.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

EVENTS = Counter(
    "bpsm_events_total", "Webhook events by host and result", ["host", "result", "reason"]
)
DECISIONS = Counter(
    "bpsm_decisions_total",
    "Routing decisions by host, process and outcome",
    ["host", "process", "outcome"],
)
APPLY_SECONDS = Histogram(
    "bpsm_apply_seconds",
    "Time to apply a decision through the host API",
    ["host"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES = Counter("bpsm_retries_total", "Job-level retries (host unavailable)", ["host"])
DEAD = Counter("bpsm_dead_letters_total", "Deliveries moved to dead letters", ["host"])
BURSTS = Counter("bpsm_bursts_total", "Bursts of webhooks during which routing waited")
BURST_WAIT = Counter(
    "bpsm_burst_wait_seconds_total", "Seconds jobs waited for a burst of webhooks to end"
)


def package_version() -> str:
    try:
        return version("bpsm-connector")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class StoreCollector(Collector):
    """Gauges read from the store at scrape time, and the build's identity."""

    def __init__(self, counts: Callable[[], dict[str, int]]):
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "bpsm_build_info",
            "Version of bpsm-connector and of Python",
            labels=["version", "python"],
        )
        build.add_metric([package_version(), platform.python_version()], 1)
        yield build
        counts = self.counts()
        depth = GaugeMetricFamily("bpsm_queue_depth", "Deliveries waiting or in progress")
        depth.add_metric([], counts.get("queued", 0) + counts.get("processing", 0))
        yield depth
        # Not `bpsm_dead_letters`: that is the family of the counter bpsm_dead_letters_total.
        pending = GaugeMetricFamily(
            "bpsm_dead_letters_pending", "Deliveries in dead letters, not replayed"
        )
        pending.add_metric([], counts.get("dead", 0))
        yield pending


class _ProcessCounters(Collector):
    """This process's own counters (no multiprocess directory: `bpsm worker`, tests)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_registry(counts: Callable[[], dict[str, int]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The counters of every process that wrote to the directory, summed.
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessCounters())
    registry.register(StoreCollector(counts))
    return registry


def render(counts: Callable[[], dict[str, int]]) -> bytes:
    return generate_latest(metrics_registry(counts))
