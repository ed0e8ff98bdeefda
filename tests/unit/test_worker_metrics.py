"""The worker's added series: freshness, last commit, bounded per-company rates, the DB pool,
Kafka send failures by topic, and the standard process/build series."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prometheus_client import generate_latest
from sqlalchemy import create_engine
from sqlalchemy.pool import QueuePool

from agents.metrics import OTHER_COMPANY, WorkerMetrics, _KafkaSensor
from pipeline.apply.results import Outcome
from pipeline.pool_collector import PoolCollector
from pipeline.records import WebhookRecord
from pipeline.settings import Settings


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def record(received_ms: int | None) -> WebhookRecord:
    headers = {"received_at": str(received_ms)} if received_ms is not None else {}
    return WebhookRecord(topic="t", partition=0, offset=0, key=b"k", value=b"{}", headers=headers)


def outcome(company: int | None, status: str = "applied") -> Outcome:
    return Outcome("retell", "e", "call_ended", status, company, None, "t/0@0", None)


def test_freshness_is_receipt_to_commit_and_last_commit_is_set() -> None:
    metrics = WorkerMetrics()
    now_ms = int(time.time() * 1000)
    metrics.observe_commit("retell", [record(now_ms - 3_000), record(None)], [])
    assert (
        sample(metrics, "switchboard_worker_event_freshness_seconds_count", provider="retell") == 1
    )
    took = sample(metrics, "switchboard_worker_event_freshness_seconds_sum", provider="retell")
    assert took is not None and 3.0 <= took < 60
    last = sample(metrics, "switchboard_worker_last_commit_timestamp_seconds", provider="retell")
    assert last is not None and abs(last - time.time()) < 60


def test_company_labels_are_bounded_by_the_limit() -> None:
    metrics = WorkerMetrics(company_limit=2)
    outcomes = [outcome(c) for c in (1, 2, 3, 4, 1)] + [outcome(None), outcome(5, "unroutable")]
    metrics.observe_commit("retell", [], outcomes)
    text = generate_latest(metrics.registry).decode()
    companies = {
        line.split('company="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("switchboard_worker_company_events_total{")
    }
    assert companies == {"1", "2", OTHER_COMPANY}
    name = "switchboard_worker_company_events_total"
    assert sample(metrics, name, company="1", provider="retell") == 2
    assert sample(metrics, name, company=OTHER_COMPANY, provider="retell") == 2
    assert WorkerMetrics(company_limit=0).company_label(9) == OTHER_COMPANY


def test_every_worker_registry_has_process_and_build_series() -> None:
    text = generate_latest(WorkerMetrics().registry).decode()
    for name in ("process_resident_memory_bytes", "python_gc_objects_collected_total",
                 "python_info", "switchboard_build_info"):  # fmt: skip
        assert f"\n{name}" in text, name


def test_pool_series_show_in_use_and_threads_waiting(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'pool.db'}", poolclass=QueuePool, pool_size=1, max_overflow=0,
        pool_timeout=30,
    )  # fmt: skip
    metrics = WorkerMetrics()
    metrics.registry.register(PoolCollector(engine, "worker"))
    held = engine.connect()
    waiter = threading.Thread(target=lambda: engine.connect().close(), daemon=True)
    waiter.start()
    try:
        deadline = time.monotonic() + 30
        while sample(metrics, "switchboard_db_pool_waiting_threads", role="worker") != 1:
            assert time.monotonic() < deadline, "the waiting thread never showed"
            time.sleep(0.05)
        assert sample(metrics, "switchboard_db_pool_connections_in_use", role="worker") == 1
        assert sample(metrics, "switchboard_db_pool_connections_max", role="worker") == 1
    finally:
        held.close()
        waiter.join(30)
        engine.dispose()
    assert sample(metrics, "switchboard_db_pool_waiting_threads", role="worker") == 0


def test_send_failures_are_counted_by_our_topic_names_only() -> None:
    metrics = WorkerMetrics()
    settings = Settings(topic_prefix="t1.", consumer_group="switchboard")
    sensor = _KafkaSensor(metrics, settings)
    for topic in ("t1.switchboard-bucket-snapshots", "t1.webhooks.dlq",
                  "switchboard-dashboard-changelog", "someone-elses-topic"):  # fmt: skip
        sensor.on_send_error(
            None, RuntimeError("broker gone"), sensor.on_send_initiated(None, topic, None, 1, 1)
        )
    name = "switchboard_worker_kafka_send_failures_total"
    for label in ("switchboard-bucket-snapshots", "webhooks.dlq", "changelog", "other"):
        assert sample(metrics, name, topic=label) == 1, label
