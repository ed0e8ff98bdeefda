"""Prometheus metrics of the ingress, on a registry owned by one app (no global state).

A per-app :class:`CollectorRegistry` keeps tests independent: two apps in one process never
collide on metric names. With ``switchboard ingress --processes N`` each process counts for
itself and the CLI sets ``PROMETHEUS_MULTIPROC_DIR``; prometheus-client then keeps values in
per-process files, and :func:`render` aggregates every process into one answer, so a scrape
that lands on any process sees the whole ingress.

In one process the request path counts through :meth:`IngressMetrics.child`, whose children
add to plain numbers and bucket lists; :meth:`IngressMetrics.flush` hands the sums to
prometheus-client in bulk, and runs before every read of the registry (a collector
registered first), so a scrape or a test sees every count. Per webhook (two counters, two
histograms) that is about 2 µs instead of 4-5 µs of prometheus-client's locked updates.
With ``--processes N`` a scrape reads the other processes' files, which nothing would flush
in time, so there the children are prometheus-client's own.

Label values are bounded: ``event_type`` is one of the provider's known event types or
``other`` (an authenticated sender can still invent event names; they must not create series).
"""

from __future__ import annotations

import os
import platform
import time
from bisect import bisect_left
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from pipeline.providers import PROVIDERS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

KNOWN_EVENT_TYPES: frozenset[str] = frozenset().union(
    *(provider.EVENT_TYPES for provider in PROVIDERS.values())
)

# call_inbound is answered while the caller hears ringing: its SLI needs sub-ms resolution.
_INBOUND_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# Ingress answers in milliseconds; Kafka acks under load in a few ms; the ack budget is 2 s.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def event_type_label(event_type: str | None) -> str:
    """A bounded label value for ``event_type``."""
    if not event_type:
        return "none"
    return event_type if event_type in KNOWN_EVENT_TYPES else "other"


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class _Count:
    """A counter child's increments, held until :meth:`flush`."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class _Observations:
    """A histogram child's observations as bucket counts and a sum, held until :meth:`flush`
    (a value goes to the first bucket whose upper bound is at least the value, as
    prometheus-client's ``observe`` puts it)."""

    __slots__ = ("child", "bounds", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.counts = [0] * len(counts)
        total, self.total = self.total, 0.0
        self.child._sum.inc(total)
        buckets = self.child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)


class _FlushFirst:
    """A collector with no metrics of its own, registered before the others: each read of
    the registry flushes what the request path counted since the last one."""

    def __init__(self, metrics: IngressMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._metrics.flush()
        return iter(())


class IngressMetrics:
    """Every metric the ingress exports. Names are listed in docs/ingress.md."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[Any, ...], Any] = {}
        self._held: list[_Count | _Observations] = []
        self._hold = not os.environ.get(MULTIPROC_ENV)  # see the module doc
        registry.register(_FlushFirst(self))
        if not os.environ.get(MULTIPROC_ENV) and registry is not _default_registry():
            # process_*, python_gc_*, python_info: one process, so its own numbers. With
            # --processes N, render() adds the answering process's (see its docstring).
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.build_info = Gauge(
            "switchboard_build_info",
            "Always 1; the labels say which Switchboard and Python run.",
            ["version", "python"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(_version(), platform.python_version()).set(1)
        self.call_inbound_latency = Histogram(
            "switchboard_ingress_call_inbound_duration_seconds",
            "Time from request start to the call_inbound answer (the caller hears ringing).",
            buckets=_INBOUND_BUCKETS,
            registry=registry,
        )
        self.durable = Counter(
            "switchboard_ingress_durable_total",
            "Records made durable, by where: kafka (acknowledged) or spool (fsynced locally).",
            ["via"],
            registry=registry,
        )
        self.spool_records = Gauge(
            "switchboard_ingress_spool_records",
            "Records in the spool waiting for Kafka (all processes summed).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spool_bytes = Gauge(
            "switchboard_ingress_spool_bytes",
            "Bytes of record payload in the spool (all processes summed).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spool_limit_bytes = Gauge(
            "switchboard_ingress_spool_limit_bytes",
            "The spool's byte bound (all processes summed); past it, 503.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spool_oldest_age = Gauge(
            "switchboard_ingress_spool_oldest_record_age_seconds",
            "Age of the oldest spooled record (0 when the spool is empty).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.spool_forwarded = Counter(
            "switchboard_ingress_spool_forwarded_total",
            "Spooled records Kafka acknowledged and the spool forgot.",
            registry=registry,
        )
        self.spool_commits = Counter(
            "switchboard_ingress_spool_commits_total",
            "fsynced spool transactions (each carries one or more records: group commit).",
            registry=registry,
        )
        self.connections_refused = Counter(
            "switchboard_ingress_connections_refused_total",
            "Connections closed at once because SWITCHBOARD_INGRESS_MAX_CONNECTIONS were open.",
            registry=registry,
        )
        self.producer_connected = Gauge(
            "switchboard_ingress_kafka_producer_connected",
            "1 while the Kafka producer reaches the broker (the minimum over processes).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.requests = Counter(
            "switchboard_ingress_requests_total",
            "HTTP requests answered, by provider, event type and status code.",
            ["provider", "event_type", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "switchboard_ingress_request_duration_seconds",
            "Time from request start to answer, by provider.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejections = Counter(
            "switchboard_ingress_rejections_total",
            "Requests refused, by provider and reason (the error code of the answer).",
            ["provider", "reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "switchboard_ingress_requests_in_flight",
            "Webhook requests being handled right now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.publish_latency = Histogram(
            "switchboard_ingress_kafka_publish_duration_seconds",
            "Time from send to Kafka acknowledgement (acks=all), by topic.",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.publish_failures = Counter(
            "switchboard_ingress_kafka_publish_failures_total",
            "Records Kafka did not acknowledge in time, by topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.call_inbound = Counter(
            "switchboard_ingress_call_inbound_total",
            "call_inbound answers: routed to a branch, or unrouted (with why).",
            ["result", "reason"],
            registry=registry,
        )
        self.caller_lookups = Counter(
            "switchboard_ingress_caller_lookups_total",
            "Caller-context lookups for call_inbound: hit, miss, cached, timeout, error, shed.",
            ["result"],
            registry=registry,
        )
        self.background_failures = Counter(
            "switchboard_ingress_call_inbound_publish_failures_total",
            "call_inbound records that could not be written to Kafka after the answer.",
            registry=registry,
        )
        self.routing_size = Gauge(
            "switchboard_ingress_routing_cache_entries",
            "Active branch phone numbers in the routing cache.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.routing_loaded = Gauge(
            "switchboard_ingress_routing_cache_loaded",
            "1 once the routing cache has loaded at least once (the minimum over processes).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.routing_last_success = Gauge(
            "switchboard_ingress_routing_cache_last_success_timestamp_seconds",
            "Unix time of the routing cache's last successful load (0: never; the stalest process).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.routing_refresh_failures = Counter(
            "switchboard_ingress_routing_refresh_failures_total",
            "Routing cache refreshes that failed (the last good copy keeps answering).",
            registry=registry,
        )

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised, for a counter's ``inc`` or a histogram's
        ``observe``, held until :meth:`flush` in one process (see the module doc); other
        metrics' children as they are. The request path calls this per request."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*labels)
            if self._hold and isinstance(metric, Counter | Histogram):
                found = _Count(found) if isinstance(metric, Counter) else _Observations(found)
                self._held.append(found)
            self._children[key] = found
        return found

    def flush(self) -> None:
        """Add what :meth:`child`'s children counted since the last flush to the metrics."""
        for held in self._held:
            held.flush()

    def observe_routing(self, entries: int, loaded_at: float | None) -> None:
        """Record the cache's size and last load (``loaded_at`` is a ``time.monotonic()``)."""
        self.routing_size.set(entries)
        self.routing_loaded.set(0 if loaded_at is None else 1)
        if loaded_at is not None:
            self.routing_last_success.set(time.time() - (time.monotonic() - loaded_at))

    def observe_spool(self, records: int, size: int, limit: int, oldest_age_s: float) -> None:
        self.spool_records.set(records)
        self.spool_bytes.set(size)
        self.spool_limit_bytes.set(limit)
        self.spool_oldest_age.set(oldest_age_s)


def _default_registry() -> CollectorRegistry:
    from prometheus_client import REGISTRY

    return REGISTRY


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text for ``registry``, or for every process in multiprocess mode.

    In multiprocess mode the ``process_*`` metrics are those of the process that answered
    the scrape (prometheus-client cannot merge them); the ``switchboard_*`` ones cover all.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged, path=path)
        ProcessCollector(registry=merged)
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
