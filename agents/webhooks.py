"""The apply agents: ``webhooks.retell`` and ``webhooks.calcom`` → MySQL, exactly once.

Thin on purpose. Each agent takes batches per stream (``noack_take``), hands them to the
:class:`~pipeline.apply.applier.Applier` (which never raises for a record and retries transient
failures while the stream waits), publishes dead letters and bucket snapshots, and only
then acks the batch. Nothing reaches Faust's exception handling: Faust would ack and lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy import Engine

from agents.metrics import WorkerMetrics
from pipeline import topics
from pipeline.apply.applier import Applier
from pipeline.apply.deadletters import dlq_headers
from pipeline.apply.results import BatchResult
from pipeline.dashboard.snapshots import company_key, encode
from pipeline.kafka_reader import Coordinates, fetch
from pipeline.records import WebhookRecord, decode_headers
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """Where an agent writes besides MySQL."""

    dlq: faust.TopicT
    snapshots: faust.TopicT


def record_of(event: Any) -> WebhookRecord:
    message = event.message
    return WebhookRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value or b"",
        headers=decode_headers(message.headers),
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
    )


async def publish(outputs: Outputs, result: BatchResult, metrics: WorkerMetrics) -> None:
    """Dead letters are awaited (durable before the source is acked); snapshots are sent
    and flushed by Faust before it commits offsets."""
    for letter in result.dead_letters:
        await _until_sent(
            lambda letter=letter: outputs.dlq.send(
                key=letter.record.key, value=letter.record.value, headers=dlq_headers(letter)
            ),
            metrics,
        )
        metrics.dead_letters.labels(letter.record.provider or "unknown", letter.reason).inc()
        log.warning(
            "dead-lettered %s: %s",
            letter.record.coordinates,
            letter.reason,
            extra={"correlation_id": letter.record.correlation_id, "reason": letter.reason},
        )
    for snapshot in result.snapshots:
        await outputs.snapshots.send(
            key=company_key(snapshot.key.company_id), value=encode(snapshot)
        )
        metrics.snapshots.labels("out").inc()


async def _until_sent(send: Any, metrics: WorkerMetrics) -> None:
    delay = 0.2
    while True:
        try:
            future = await send()
            await future
            return
        except Exception as exc:  # Kafka down: wait, never drop the dead letter
            log.warning("dead-letter publish failed, retrying in %.1fs: %s", delay, exc)
            metrics.transient_retries.labels("kafka_unavailable").inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)


def register(app: faust.App, settings: Settings, engine: Engine, metrics: WorkerMetrics) -> Outputs:
    """Define the two apply agents on ``app``."""
    outputs = Outputs(
        dlq=app.topic(settings.topic(topics.DLQ), key_serializer="raw", value_serializer="raw"),
        snapshots=app.topic(
            settings.topic(topics.SNAPSHOTS), key_serializer="raw", value_serializer="raw"
        ),
    )

    async def fetch_parked(coords: list[Coordinates]) -> list[WebhookRecord]:
        return await fetch(settings, coords)

    applier = Applier(
        engine,
        fetch=fetch_parked,
        on_retry=lambda reason, delay: metrics.transient_retries.labels(reason).inc(),
    )
    for name in topics.WEBHOOK_TOPICS:
        provider = name.split(".", 1)[1]
        topic = app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw")
        app.agent(topic, name=f"apply-{provider}")(
            _agent(provider, applier, outputs, metrics, settings)
        )
    return outputs


def _agent(
    provider: str, applier: Applier, outputs: Outputs, metrics: WorkerMetrics, settings: Settings
) -> Any:
    async def apply_stream(stream: faust.StreamT) -> None:
        # noack_take: Faust must not ack a batch before it is applied (the typed StreamT
        # protocol lacks the method; faust.Stream has it).
        async for events in stream.noack_take(  # type: ignore[attr-defined]
            settings.worker_batch_size, settings.worker_batch_within_s
        ):
            started = time.perf_counter()
            records = [record_of(e) for e in events]
            result = await applier.apply(records)
            await publish(outputs, result, metrics)
            for outcome in result.outcomes:
                metrics.events.labels(outcome.provider, outcome.status).inc()
                if outcome.status == "unroutable":
                    metrics.unroutable.labels(outcome.provider, outcome.reason or "unknown").inc()
                    log.info(
                        "unroutable %s %s: %s",
                        outcome.provider,
                        outcome.event_type,
                        outcome.reason,
                        extra={"correlation_id": outcome.correlation_id},
                    )
            for event in events:
                await stream.ack(event)
            metrics.observe_commit(provider, records, result.outcomes)
            metrics.batch_seconds.labels(provider).observe(time.perf_counter() - started)
            metrics.batch_size.labels(provider).observe(len(records))

    apply_stream.__name__ = f"apply_{provider}"
    return apply_stream
