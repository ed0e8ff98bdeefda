"""What reached the webhook topics between two moments: every record must be a body we
signed validly and the ingress answered 2xx for (nothing unsigned reaches Kafka)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline import topics
from pipeline.kafka import kafka_options
from pipeline.settings import Settings

Offsets = dict[TopicPartition, int]


async def end_offsets(settings: Settings) -> Offsets:
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(0)  # aiokafka issue 647: let the coordinator task start
    try:
        parts = [
            TopicPartition(settings.topic(name), p)
            for name in topics.WEBHOOK_TOPICS
            for p in range(settings.topic_partitions)  # created with this many
        ]
        assert parts, "no webhook topic partitions found"
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def records_since(
    settings: Settings, start: Offsets, expected: int, timeout_s: float
) -> Counter[str]:
    """SHA-256 of each record value after ``start``, waiting until ``expected`` arrived (or
    ``timeout_s``, and then a little longer to catch any extra)."""
    consumer = AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    await asyncio.sleep(0)  # aiokafka issue 647: let the coordinator task start
    seen: Counter[str] = Counter()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        quiet_until = None
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                for message in messages:
                    seen[hashlib.sha256(message.value or b"").hexdigest()] += 1
            total = sum(seen.values())
            now = time.monotonic()
            if total >= expected and quiet_until is None:
                quiet_until = now + 2.0  # anything beyond what we expect shows up too
            if (quiet_until is not None and now >= quiet_until) or now >= deadline:
                return seen
    finally:
        await consumer.stop()


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)
