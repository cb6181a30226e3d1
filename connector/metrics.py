"""Prometheus metrics. Counters live in each process; queue depth and dead letters are read
from the store at scrape time, so they are right whatever process did the work."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
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


class StoreCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]):
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.counts()
        depth = GaugeMetricFamily("bpsm_queue_depth", "Deliveries waiting or in progress")
        depth.add_metric([], counts.get("queued", 0) + counts.get("processing", 0))
        yield depth
        dead = GaugeMetricFamily("bpsm_dead_letters", "Deliveries in dead letters, not replayed")
        dead.add_metric([], counts.get("dead", 0))
        yield dead


def render(counts: Callable[[], dict[str, int]]) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # gunicorn: sum the counters of every worker
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
        return generate_latest(registry) + generate_latest(_store_registry(counts))
    registry.register(StoreCollector(counts))
    return generate_latest(registry)


def _store_registry(counts: Callable[[], dict[str, int]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(counts))
    return registry
