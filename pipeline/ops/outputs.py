"""The commands' :class:`~pipeline.apply.loop.Publisher`: what a real ``replay`` or
``redrive`` batch produced goes to Kafka as the worker's does.

After each committed batch its messages (:func:`pipeline.apply.loop.outgoing`: dead
letters to ``webhooks.dlq``, bucket snapshots keyed by company) are sent with an
idempotent ``acks=all`` producer, and every send is awaited before the next batch is
applied, so a command that returns success has made all of it durable.

If Kafka fails after MySQL committed, the command stops with one line saying so. Running
the same replay again heals both: a dead-lettered event is dead-lettered again, and the
apply path republishes the (unchanged) buckets of already-applied events. A redrive run
again skips the events it applied, so after a failed redrive ``switchboard reconcile
--fix`` republishes their buckets from MySQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.apply.loop import Outgoing, Published
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import kafka_options
from pipeline.settings import Settings


class Outputs:
    """``async with Outputs(settings) as out: await out.publish(outgoing(result))``."""

    def __init__(self, settings: Settings, *, client_id: str = "switchboard-ops") -> None:
        self.settings = settings
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

    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        """Send the messages; return once Kafka has them all."""
        try:
            futures = [
                await self._producer.send(
                    self.settings.topic(m.topic), key=m.key, value=m.value, headers=m.headers
                )
                for m in messages
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(
                "Kafka failed after MySQL committed a batch "
                f"({exc.__class__.__name__}); run the same command again (after a redrive, "
                "also `switchboard reconcile --all --fix` for the dashboard)"
            ) from exc
        published = Published.of(messages)
        self.published.dead_letters += published.dead_letters
        self.published.snapshots += published.snapshots
        return published
