"""The Faust app, built by a factory from Settings (nothing is configured at import).

``at_least_once`` on purpose: Faust's ``exactly_once`` has open correctness bugs, and the
exactness comes from MySQL instead (docs/architecture.md, invariant 4). Faust flushes its producer
before committing source offsets, so snapshots and dead letters sent while processing a
record are on Kafka before that record is committed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import faust

from agents.consumer import Transport
from agents.recovery import SafeTableManager
from pipeline.errors import ConfigError
from pipeline.kafka import faust_credentials
from pipeline.settings import UNROUTABLE_HOSTS, Settings


def advertised_url(settings: Settings) -> str:
    """The URL the other workers use to reach this one; refuse one nobody can connect to.

    Faust routes an analyst request by comparing the owner's advertised URL with its own:
    if every worker advertised ``http://0.0.0.0:6066``, each would think it owns every
    company and answer 404 or zeros from its own table, without an error.
    """
    url = settings.worker_url()
    host = urlsplit(url).hostname or ""
    if host in UNROUTABLE_HOSTS or host.strip("[]") in UNROUTABLE_HOSTS:
        raise ConfigError(
            [
                f"the worker would advertise {url}, which other workers cannot reach: set "
                "SWITCHBOARD_WORKER_ADVERTISED_URL (e.g. http://worker-0.workers:6066) "
                "or bind SWITCHBOARD_WORKER_HOST to a routable address"
            ]
        )
    return url


class App(faust.App):
    """Faust's app whose consumer rewinds uncommitted webhook partitions after every
    rebalance (agents/consumer.py); its producer transport stays Faust's own."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)


def create_faust_app(settings: Settings, *, store: str | None = None) -> faust.App:
    url = advertised_url(settings)
    datadir = Path(settings.data_dir).resolve() / f"worker-{settings.worker_port}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
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
        # Stops the flow before the webhook partitions are handed back after a rebalance:
        # Faust's own order loses records (agents/recovery.py).
        TableManager=SafeTableManager,
        logging_config=None,
    )
