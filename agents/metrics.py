"""Prometheus metrics of the worker (served at ``/metrics`` on the worker's web port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.snapshots = Counter(
            "switchboard_worker_snapshots_total",
            "Bucket snapshots published (out) and kept in the table (kept) or ignored as stale.",
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
