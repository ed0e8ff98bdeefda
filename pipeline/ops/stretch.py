"""Reading a stretch of a topic: :func:`pipeline.kafka_reader.read_stretch`, with its
metadata fallback working.

Why this copy exists: with aiokafka 0.14 a group-less consumer with nothing assigned has no
metadata for any topic right after ``start()``, so ``read_stretch`` always takes its
fallback, which calls ``AIOKafkaConsumer.force_metadata_update()``, a method the consumer
does not have (it is the client's) → ``AttributeError``. Until ``kafka_reader`` is fixed
(one line: ``await consumer._client.force_metadata_update()``), the ops commands read
through this function, which has the same signature and reuses ``kafka_reader``'s bounds
and record conversion; switching back is one import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiokafka import TopicPartition

from pipeline import kafka_reader
from pipeline.errors import KafkaUnavailable
from pipeline.kafka_reader import Stretch, to_record
from pipeline.records import WebhookRecord


async def read_stretch(
    bootstrap: str,
    topic: str,
    stretch: Stretch,
    partitions: Iterable[int] | None = None,
    batch_size: int = 500,
) -> AsyncIterator[list[WebhookRecord]]:
    """Batches of records of ``topic`` within ``stretch``, partition by partition."""
    consumer = kafka_reader._consumer(bootstrap)
    await kafka_reader._start(consumer, bootstrap)
    try:
        available = consumer.partitions_for_topic(topic)
        if available is None:
            await consumer._client.force_metadata_update()
            available = consumer.partitions_for_topic(topic)
        if not available:
            raise KafkaUnavailable(f"topic {topic} does not exist")
        chosen = sorted(set(partitions) if partitions is not None else available)
        tps = [TopicPartition(topic, p) for p in chosen if p in available]
        if not tps:
            return
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            first, last = await kafka_reader._bounds(consumer, tp, stretch, starts[tp], ends[tp])
            if first > last:
                continue
            consumer.seek(tp, first)
            position = first
            while position <= last:
                batch = await consumer.getmany(tp, timeout_ms=5_000, max_records=batch_size)
                messages = batch.get(tp, [])
                if not messages:
                    break
                records = [to_record(m) for m in messages if m.offset <= last]
                position = messages[-1].offset + 1
                if records:
                    yield records
    finally:
        await consumer.stop()
