"""The apply agents: one per provider topic (``webhooks.retell``, ``webhooks.calcom``) →
MySQL, exactly once.

Thin on purpose. Each agent takes batches per stream (``noack_take``) and runs them through
the apply-and-publish loop (:func:`pipeline.apply.loop.apply_in_order`): the
:class:`~pipeline.apply.applier.Applier` never raises for a record's sake and waits out
transient failures while the stream waits; the batch's dead letters and bucket snapshots
are published; only then is the batch acked. Nothing reaches Faust's exception handling:
Faust would ack and lose.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.errors import MessageSizeTooLargeError
from sqlalchemy import Engine

from agents.metrics import WorkerMetrics
from pipeline import topics
from pipeline.apply import deadletters
from pipeline.apply.applier import Applier, parked_fetcher
from pipeline.apply.loop import Done, Outgoing, Published, apply_in_order
from pipeline.apply.process import ApplyProcess
from pipeline.apply.results import BatchResult
from pipeline.providers import PROVIDERS
from pipeline.records import WebhookRecord, from_message
from pipeline.retry import until_done
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """The worker's :class:`~pipeline.apply.loop.Publisher`: Faust topics.

    Dead letters are awaited until Kafka has them (the source is acked next), however long
    Kafka is away; snapshots are sent, and Faust flushes its producer before it commits
    the source offsets.
    """

    dlq: faust.TopicT
    snapshots: faust.TopicT
    metrics: WorkerMetrics

    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        for message in messages:
            if message.letter is not None:
                await until_done(
                    functools.partial(self._durable, self.dlq, message),
                    retry_on=Exception,
                    on_retry=self._kafka_retry,
                )
                self._dead_lettered(message)
            else:
                await self.snapshots.send(key=message.key, value=message.value)
                self.metrics.snapshots.labels("out").inc(message.snapshots)
        return Published.of(messages)

    async def _durable(self, topic: faust.TopicT, message: Outgoing) -> None:
        try:
            sent = await topic.send(key=message.key, value=message.value, headers=message.headers)
            await sent
        except MessageSizeTooLargeError:
            # Never retried for ever: the dead letter goes as a reference to its source
            # record (docs/integrity.md); the encoder does that by size already, this is
            # for a producer configured with a smaller limit.
            assert message.letter is not None
            key, _, headers = deadletters.encode(message.letter, limit=0)
            sent = await topic.send(key=key, value=b"", headers=headers)
            await sent

    def _kafka_retry(self, failure: BaseException, delay: float) -> None:
        # Kafka down: wait, never drop the dead letter.
        log.warning("dead-letter publish failed, retrying in %.1fs: %s", delay, failure)
        self.metrics.transient_retries.labels("kafka_unavailable").inc()

    def _dead_lettered(self, message: Outgoing) -> None:
        letter = message.letter
        assert letter is not None
        self.metrics.dead_letters.labels(letter.record.provider or "unknown", letter.reason).inc()
        log.warning(
            "dead-lettered %s: %s",
            letter.record.coordinates,
            letter.reason,
            extra={"correlation_id": letter.record.correlation_id, "reason": letter.reason},
        )


def record_of(event: Any) -> WebhookRecord:
    return from_message(event.message)


def records_of(events: Sequence[Any]) -> list[WebhookRecord]:
    return [record_of(e) for e in events]


def register(
    app: faust.App,
    settings: Settings,
    engine: Engine,
    metrics: WorkerMetrics,
    process: ApplyProcess | None = None,
) -> Outputs:
    """Define the apply agents on ``app``, one per provider topic; their batches are applied
    by ``process`` when given, else in threads of this process."""
    outputs = Outputs(
        dlq=app.topic(settings.topic(topics.DLQ), key_serializer="raw", value_serializer="raw"),
        snapshots=app.topic(
            settings.topic(topics.SNAPSHOTS), key_serializer="raw", value_serializer="raw"
        ),
        metrics=metrics,
    )
    applier = Applier(
        engine,
        fetch=parked_fetcher(settings),
        on_retry=lambda reason, delay: metrics.transient_retries.labels(reason).inc(),
        process=process,
    )
    for name, provider in PROVIDERS.items():
        topic = app.topic(
            settings.topic(provider.TOPIC), key_serializer="raw", value_serializer="raw"
        )
        app.agent(topic, name=f"apply-{name}")(_agent(name, applier, outputs, metrics, settings))

    async def forget_published(*args: Any, **kwargs: Any) -> None:
        # A rebalance: records a dead worker committed but never published may come next.
        applier.published.forget()

    app.on_partitions_revoked.connect(forget_published)
    app.on_partitions_assigned.connect(forget_published)
    return outputs


def _agent(
    provider: str, applier: Applier, outputs: Outputs, metrics: WorkerMetrics, settings: Settings
) -> Any:
    async def apply_stream(stream: faust.StreamT[Any]) -> None:
        # noack_take: Faust must not ack a batch before it is applied (the typed StreamT
        # protocol lacks the method; faust.Stream has it).
        batches = stream.noack_take(  # type: ignore[attr-defined]
            settings.worker_batch_size, settings.worker_batch_within_s
        )

        async def acknowledge(done: Done[Any]) -> None:
            count_result(done.result, metrics)
            for event in done.batch:
                await stream.ack(event)
            metrics.observe_commit(provider, done.records, done.result.outcomes)
            metrics.batch_seconds.labels(provider).observe(done.seconds)
            metrics.batch_size.labels(provider).observe(len(done.batch))

        await apply_in_order(
            batches,
            applier,
            outputs,
            records_of,
            acknowledge,
            in_flight=settings.worker_batches_in_flight,
        )

    apply_stream.__name__ = f"apply_{provider}"
    return apply_stream


def count_result(result: BatchResult, metrics: WorkerMetrics) -> None:
    for outcome in result.outcomes:
        metrics.events.labels(outcome.provider, outcome.status).inc()
        for name, action in outcome.clipped:
            metrics.fields_clipped.labels(outcome.provider, name, action).inc()
        if outcome.status == "unroutable":
            metrics.unroutable.labels(outcome.provider, outcome.reason or "unknown").inc()
            log.info(
                "unroutable %s %s: %s",
                outcome.provider,
                outcome.event_type,
                outcome.reason,
                extra={"correlation_id": outcome.correlation_id},
            )
