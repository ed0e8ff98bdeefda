"""Publishing what a real ``replay`` or ``redrive`` batch produced, as the worker does.

After each committed batch: its dead letters go to ``webhooks.dlq`` with the worker's
headers (:func:`pipeline.apply.deadletters.dlq_headers`), and the bucket snapshots the batch read
back go to the snapshot topic, keyed by company, so the dashboard tables catch up. The
producer is idempotent with ``acks=all``, and every send is awaited before the next batch
is applied, so a command that returns success has made all of it durable.

If Kafka fails after MySQL committed, the command stops with one line saying so. Running
the same replay again heals both: a dead-lettered event is dead-lettered again, and the
apply path republishes the (unchanged) buckets of already-applied events. A redrive run
again skips the events it applied, so after a failed redrive ``switchboard reconcile
--fix`` republishes their buckets from MySQL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline import topics
from pipeline.apply.deadletters import dlq_headers
from pipeline.apply.results import BatchResult
from pipeline.dashboard.snapshots import company_key, encode
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import kafka_options
from pipeline.settings import Settings


@dataclass
class Published:
    dead_letters: int = 0
    snapshots: int = 0


class Outputs:
    """``async with Outputs(settings) as out: await out.publish(result)``."""

    def __init__(self, settings: Settings, *, client_id: str = "switchboard-ops") -> None:
        self.settings = settings
        self.dlq_topic = settings.topic(topics.DLQ)
        self.snapshot_topic = settings.topic(topics.SNAPSHOTS)
        self.published = Published()
        self._producer = AIOKafkaProducer(
            **kafka_options(settings),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=15_000,
        )

    async def __aenter__(self) -> Outputs:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise KafkaUnavailable(
                f"Kafka unreachable at {self.settings.kafka_bootstrap}: {exc.__class__.__name__}"
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(self, result: BatchResult) -> Published:
        """Send the batch's dead letters and snapshots; return once Kafka has them all."""
        futures = []
        try:
            for letter in result.dead_letters:
                futures.append(
                    await self._producer.send(
                        self.dlq_topic,
                        key=letter.record.key,
                        value=letter.record.value,
                        headers=dlq_headers(letter),
                    )
                )
            for snapshot in result.snapshots:
                futures.append(
                    await self._producer.send(
                        self.snapshot_topic,
                        key=company_key(snapshot.key.company_id),
                        value=encode(snapshot),
                    )
                )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(
                "Kafka failed after MySQL committed a batch "
                f"({exc.__class__.__name__}); run the same command again (after a redrive, "
                "also `switchboard reconcile --all --fix` for the dashboard)"
            ) from exc
        self.published.dead_letters += len(result.dead_letters)
        self.published.snapshots += len(result.snapshots)
        return Published(len(result.dead_letters), len(result.snapshots))
