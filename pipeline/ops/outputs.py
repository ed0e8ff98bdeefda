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

from collections.abc import Sequence

from aiokafka.errors import KafkaError

from pipeline.apply.loop import Outgoing, Published
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import DurableProducer
from pipeline.settings import Settings


class Outputs(DurableProducer):
    """``async with Outputs(settings) as out: await out.publish(outgoing(result))``."""

    def __init__(self, settings: Settings, *, client_id: str = "switchboard-ops") -> None:
        super().__init__(settings, client_id=client_id)
        self.published = Published()

    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        """Send the messages; return once Kafka has them all."""
        try:
            await self.send_all(
                (self.settings.topic(m.topic), m.key, m.value, m.headers) for m in messages
            )
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
