"""Prometheus metrics of the ingress, on a registry owned by one app (no global state).

A per-app :class:`CollectorRegistry` keeps tests independent: two apps in one process never
collide on metric names. With ``switchboard ingress --processes N`` each process counts for
itself and the CLI sets ``PROMETHEUS_MULTIPROC_DIR``; prometheus-client then keeps values in
per-process files, and :func:`render` aggregates every process into one answer, so a scrape
that lands on any process sees the whole ingress.

Label values are bounded: ``event_type`` is one of the provider's known event types or
``other`` (an authenticated sender can still invent event names; they must not create series).
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from pipeline.providers import calcom, retell

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

KNOWN_EVENT_TYPES: frozenset[str] = frozenset(
    retell.KNOWN_EVENTS
    | {retell.INBOUND_EVENT, retell.SMS_INBOUND_EVENT}
    | calcom.BOOKING_EVENTS
    | calcom.FLAT_EVENTS
    | {calcom.NO_SHOW_EVENT}
)

# Ingress answers in milliseconds; Kafka acks under load in a few ms; the ack budget is 2 s.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def event_type_label(event_type: str | None) -> str:
    """A bounded label value for ``event_type``."""
    if not event_type:
        return "none"
    return event_type if event_type in KNOWN_EVENT_TYPES else "other"


class IngressMetrics:
    """Every metric the ingress exports. Names are listed in docs/ingress.md."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
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
        self.routing_age = Gauge(
            "switchboard_ingress_routing_cache_age_seconds",
            "Seconds since the routing cache last loaded from MySQL (-1: never loaded).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.routing_refresh_failures = Counter(
            "switchboard_ingress_routing_refresh_failures_total",
            "Routing cache refreshes that failed (the last good copy keeps answering).",
            registry=registry,
        )
        self.routing_age.set(-1)

    def observe_routing(self, entries: int, loaded_at: float | None) -> None:
        """Record the cache's size and age (``loaded_at`` is a ``time.monotonic()``)."""
        self.routing_size.set(entries)
        self.routing_age.set(-1 if loaded_at is None else time.monotonic() - loaded_at)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text for ``registry``, or for every process in multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged, path=path)
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
