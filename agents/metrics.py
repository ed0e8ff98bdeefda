"""Prometheus metrics of the worker (served at ``/metrics`` on the worker's web port).

The catalogue, with what each series means to the on-call person and which alert uses it,
is docs/observability.md.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import faust
from faust.sensors import Sensor
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from sqlalchemy import Engine

from pipeline.apply.results import Outcome
from pipeline.pool_collector import PoolCollector
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

# Seconds from the ingress's 202 to the worker's commit: milliseconds normally, minutes in
# an outage or a backlog; the alert budget is in docs/observability.md.
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
OTHER_COMPANY = "other"


def _version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


class WorkerMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, company_limit: int = 50
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_* (memory, CPU, fds), python_gc_*, python_info, as every registry should.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "switchboard_build_info",
            "Always 1; the labels say which Switchboard and Python run.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(_version(), platform.python_version()).set(1)
        self.freshness = Histogram(
            "switchboard_worker_event_freshness_seconds",
            "Seconds from the ingress accepting a webhook (its received_at header) to the "
            "worker committing it to MySQL, by provider.",
            ["provider"],
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.last_commit = Gauge(
            "switchboard_worker_last_commit_timestamp_seconds",
            "Unix time of this worker's last committed batch that held records, by provider.",
            ["provider"],
            registry=r,
        )
        self.company_events = Counter(
            "switchboard_worker_company_events_total",
            "Records attributed to a company, by company id and provider. At most "
            "SWITCHBOARD_METRICS_COMPANY_LIMIT companies per worker get their own label; "
            'the rest count under company="other".',
            ["company", "provider"],
            registry=r,
        )
        self.send_failures = Counter(
            "switchboard_worker_kafka_send_failures_total",
            "Records the worker failed to write to Kafka, by topic (snapshots, dead letters, "
            "the table changelog).",
            ["topic"],
            registry=r,
        )
        self.apply_process_restarts = Counter(
            "switchboard_worker_apply_process_restarts_total",
            "Times the worker's apply process died and was replaced (its batch is sent to "
            "the new one).",
            registry=r,
        )
        self.rebalances = Counter(
            "switchboard_worker_rebalances_total",
            "Consumer-group rebalances this worker took part in (the analyst API answers 503 "
            "while one runs).",
            registry=r,
        )
        self._company_limit = company_limit
        self._companies: set[int] = set()
        self.events = Counter(
            "switchboard_worker_events_total",
            "Webhook records processed, by provider and outcome "
            "(applied, already_applied, unroutable, dead_lettered).",
            ["provider", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "switchboard_worker_dead_letters_total",
            "Records sent to the dead-letter topic, by reason.",
            ["provider", "reason"],
            registry=r,
        )
        self.unroutable = Counter(
            "switchboard_worker_unroutable_total",
            "Events that no tenant rule could attribute, by reason.",
            ["provider", "reason"],
            registry=r,
        )
        self.fields_clipped = Counter(
            "switchboard_worker_fields_clipped_total",
            "Optional fields too long for their column, stored truncated or dropped instead "
            "of dead-lettering the event, by provider, field and action (truncated, dropped).",
            ["provider", "field", "action"],
            registry=r,
        )
        self.transient_retries = Counter(
            "switchboard_worker_transient_retries_total",
            "Waits and retries of the apply path, by cause: mysql_<errno>_<name> (e.g. "
            "mysql_1290_read_only, mysql_1213_deadlock, mysql_1062_duplicate_key), "
            "pool_timeout, connection_lost, kafka_unavailable.",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "switchboard_worker_batch_seconds",
            "Time to apply one batch in MySQL, retries included.",
            ["provider"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.batch_size = Histogram(
            "switchboard_worker_batch_size",
            "Records per applied batch.",
            ["provider"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.snapshots = Counter(
            "switchboard_worker_snapshots_total",
            "Bucket snapshots published (out), kept in the table (kept), ignored as stale, "
            "dropped by a tombstone, or refused (messages this worker cannot read).",
            ["direction"],
            registry=r,
        )
        self.api_requests = Counter(
            "switchboard_analyst_requests_total",
            "Analyst API requests by route and status (every answer: 2xx, 4xx, 5xx).",
            ["route", "status"],
            registry=r,
        )
        self.api_duration = Histogram(
            "switchboard_analyst_request_duration_seconds",
            "Analyst API latency as answered by this worker (forwarding included).",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.api_fallbacks = Counter(
            "switchboard_analyst_fallbacks_total",
            "Analyst API answers read from MySQL because the table could not answer, by "
            "reason (recovering, rebalancing, owner_unavailable).",
            ["reason"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "switchboard_worker_consumer_lag",
            "Records on the partition not yet committed by this worker's group (end offset "
            "minus committed offset), per webhook topic partition this worker owns.",
            ["topic", "partition"],
            registry=r,
        )
        self.recovered = Gauge(
            "switchboard_worker_tables_recovered",
            "1 when table recovery has completed and no rebalance is in progress (the "
            "analyst API answers from the table); refreshed every second.",
            registry=r,
        )

    def company_label(self, company_id: int) -> str:
        """The company's own label while fewer than the limit have one; else ``other``."""
        if company_id in self._companies:
            return str(company_id)
        if len(self._companies) < self._company_limit:
            self._companies.add(company_id)
            return str(company_id)
        return OTHER_COMPANY

    def observe_commit(
        self, provider: str, records: Iterable[WebhookRecord], outcomes: Iterable[Outcome]
    ) -> None:
        """After a batch is committed (and acked): freshness, last commit, per-company rates."""
        now = time.time()
        seen = False
        for record in records:
            seen = True
            received = record.headers.get("received_at")
            if received and received.isdigit():
                self.freshness.labels(provider).observe(max(0.0, now - int(received) / 1000))
        if seen:
            self.last_commit.labels(provider).set(now)
        for outcome in outcomes:
            if outcome.company_id is not None and outcome.status == "applied":
                self.company_events.labels(
                    self.company_label(outcome.company_id), outcome.provider
                ).inc()

    def attach(self, app: faust.App, settings: Settings, engine: Engine) -> None:
        """Series that come from the app and the engine: send failures, rebalances, pool."""
        self.registry.register(PoolCollector(engine, "worker"))
        app.sensors.add(_KafkaSensor(self, settings))


class _KafkaSensor(Sensor):
    """Counts Faust's failed sends by topic (labels bounded to our topics) and rebalances."""

    def __init__(self, metrics: WorkerMetrics, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics
        self._prefix = settings.topic_prefix
        self._group = settings.consumer_group

    def _label(self, topic: str) -> str:
        name = topic[len(self._prefix) :] if topic.startswith(self._prefix) else topic
        if name.startswith(self._group) and name.endswith("-changelog"):
            return "changelog"
        return name if name.startswith(("webhooks.", "switchboard-")) else "other"

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        return topic

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self._metrics.send_failures.labels(self._label(str(state))).inc()

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        self._metrics.rebalances.inc()
        return super().on_rebalance_start(app)
