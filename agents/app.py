"""The Faust app, built by a factory from Settings (nothing is configured at import).

``at_least_once`` on purpose: Faust's ``exactly_once`` has open correctness bugs, and the
exactness comes from MySQL instead (docs/architecture.md, invariant 4). Faust flushes its producer
before committing source offsets, so snapshots and dead letters sent while processing a
record are on Kafka before that record is committed.
"""

from __future__ import annotations

from pathlib import Path

import faust

from pipeline.settings import Settings


def create_faust_app(settings: Settings, *, store: str | None = None) -> faust.App:
    url = f"http://{settings.worker_host}:{settings.worker_port}"
    datadir = Path(settings.data_dir).resolve() / f"worker-{settings.worker_port}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=store or settings.worker_store,
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        broker_commit_every=1000,
        # A crashed worker's partitions (and its companies in the analyst API) move to the
        # others after this, not after Faust's default 60 s.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=2 * settings.worker_batch_size,
        datadir=str(datadir),
        web_enabled=True,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        web_bind=settings.worker_host,
        canonical_url=url,
        web_tables_enabled=False,
        table_cleanup_interval=60.0,
        logging_config=None,
    )
