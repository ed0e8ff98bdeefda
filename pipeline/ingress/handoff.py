"""The hand-off: how a verified webhook becomes durable, Kafka first and the spool second.

docs/architecture.md, invariant 1: a 2xx means the record is acknowledged by Kafka
(``acks=all``) or fsynced in this process's spool, from which the forwarder publishes it.
The order of tries:

1. While the spool is empty and the producer is connected, the record goes to Kafka and the
   request waits for the ack, **for at most the ack budget, waiting for a publish slot
   included**. Admission control: at most ``ingress_max_in_flight`` records of this process
   wait on Kafka at once; beyond that a request waits for a slot (no CPU spent), and when the
   budget runs out it goes to the spool like any slow ack. Nothing waits longer than the
   budget for Kafka. A request that gets a slot at once arms no timer of its own: the
   deadline of the record batch it joins is the budget (pipeline/ingress/batches.py).
2. Otherwise (spool not empty, producer disconnected, budget spent, broker error) the record
   is appended to the spool and the request waits for its fsync. While the spool holds
   anything, new records queue behind it, so a key's records reach Kafka in order.
3. Only when the spool is past its bound does the caller get :class:`SpoolFull` (503).

A record that timed out may still be delivered by the producer later, and its spooled copy
too: a duplicate, which the workers deduplicate on ``(provider, event_id)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pipeline.errors import KafkaUnavailable
from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.producer import Headers, Publisher, RecordTooLarge
from pipeline.ingress.slots import Slots
from pipeline.ingress.spool import Spool
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class Handoff:
    def __init__(
        self, settings: Settings, publisher: Publisher, spool: Spool, metrics: IngressMetrics
    ) -> None:
        self._budget = settings.ack_budget_s
        self._slots = Slots(settings.ingress_max_in_flight)
        self.publisher = publisher
        self.spool = spool
        self._metrics = metrics
        self._via_kafka = metrics.child(metrics.durable, "kafka")
        self._via_spool = metrics.child(metrics.durable, "spool")

    def _slot_timeouts(self, topic: str) -> Any:
        return self._metrics.child(self._metrics.publish_failures, topic, "ingress_timeout")

    async def make_durable(self, topic: str, key: bytes, value: bytes, headers: Headers) -> str:
        """Return ``"kafka"`` or ``"spool"`` once the record is durable there; raise
        :class:`~pipeline.ingress.spool.SpoolFull` past the bound, or another
        :class:`KafkaUnavailable` when it cannot be made durable at all."""
        if not self.spool.depth and self.publisher.is_connected():
            slots = self._slots
            try:
                if (
                    slots.try_take()
                ):  # no wait for a slot: the publisher's deadline is the only timer
                    try:
                        await self.publisher.publish(topic, key, value, headers)
                    finally:
                        slots.give()
                else:  # admission control: wait for a slot, within the budget
                    async with asyncio.timeout(self._budget):
                        await slots.take()
                        try:
                            await self.publisher.publish(topic, key, value, headers)
                        finally:
                            slots.give()
                self._via_kafka.inc()
                return "kafka"
            except TimeoutError:
                self._slot_timeouts(topic).inc()
            except RecordTooLarge:
                raise  # the spool could never forward it either
            except KafkaUnavailable:
                pass  # counted by the publisher
        await self.spool.append(topic, key, value, list(headers))
        self._via_spool.inc()
        return "spool"
