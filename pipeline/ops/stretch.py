"""Reading a stretch of a topic for replay and redrive, never stopping short in silence.

A naive reader ends a partition at the first fetch that returns nothing, so a broker that
is slow or restarting makes a replay report success over fewer records than the stretch
holds. Here an empty fetch is retried;
the fetch position is consulted (it moves past offsets that hold no record, such as
transaction markers and compacted-away records); and a partition that makes no progress
for ``STALL_S`` raises :class:`KafkaUnavailable` instead; records deleted under the
reader (retention reaching the stretch) raise :class:`~pipeline.ops.RecordsGone`.

The bounds of every partition are resolved first; only partitions with something to read
are assigned, once, each at its first offset (:func:`pipeline.kafka_reader.assign_at`: a
partition assigned without a position made the consumer's ``stop()`` hang forever), and
they are read one at a time (resumed, read, paused), so the fetcher never works on a
partition we are not reading.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from pipeline import kafka_reader
from pipeline.errors import KafkaUnavailable
from pipeline.kafka_reader import Stretch, to_record
from pipeline.ops import RecordsGone
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

#: Seconds a partition may make no progress before the read fails (never stops short).
STALL_S = 60.0


async def read_stretch(
    settings: Settings,
    topic: str,
    stretch: Stretch,
    partitions: Iterable[int] | None = None,
    batch_size: int = 500,
    on_plan: Callable[[int], None] | None = None,
) -> AsyncIterator[list[WebhookRecord]]:
    """Batches of records of ``topic`` within ``stretch``, partition by partition.

    ``on_plan`` is told the size of the stretch in offsets once its bounds are resolved,
    before the first record (an upper bound of the records: transaction markers take
    offsets too), so progress can show a total and the time left."""
    consumer = kafka_reader._consumer(settings)
    await kafka_reader._start(consumer, settings)
    try:
        available = await _partitions_of(consumer, topic)
        chosen = sorted(set(partitions) if partitions is not None else available)
        tps = [TopicPartition(topic, p) for p in chosen if p in available]
        if not tps:
            if on_plan is not None:
                on_plan(0)
            return
        try:
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        except KafkaError as exc:
            raise KafkaUnavailable(f"reading {topic} failed: {exc.__class__.__name__}") from exc
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp in tps:
            try:
                first, last = await kafka_reader.bounds(consumer, tp, stretch, starts[tp], ends[tp])
            except KafkaError as exc:
                raise KafkaUnavailable(f"reading {topic} failed: {exc.__class__.__name__}") from exc
            if first <= last:
                ranges[tp] = (first, last)
        kafka_reader.assign_at(consumer, {tp: first for tp, (first, _) in ranges.items()})
        if on_plan is not None:
            on_plan(sum(last - first + 1 for first, last in ranges.values()))
        for tp, (first, last) in ranges.items():
            consumer.resume(tp)
            async for records in _partition(consumer, tp, first, last, batch_size):
                yield records
            consumer.pause(tp)
    finally:
        await consumer.stop()


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partitions of ``topic`` (:class:`KafkaUnavailable` if it does not exist)."""
    consumer = kafka_reader._consumer(settings)
    await kafka_reader._start(consumer, settings)
    try:
        return sorted(await _partitions_of(consumer, topic))
    finally:
        await consumer.stop()


async def _partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    available = consumer.partitions_for_topic(topic)
    if available is None:
        await consumer._client.force_metadata_update()
        available = consumer.partitions_for_topic(topic)
    if not available:
        raise KafkaUnavailable(f"topic {topic} does not exist")
    return set(available)


async def _partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, last: int, batch_size: int
) -> AsyncIterator[list[WebhookRecord]]:
    position = first
    progress_at = time.monotonic()
    where = f"{tp.topic} partition {tp.partition}"
    while position <= last:
        try:
            batch = await consumer.getmany(tp, timeout_ms=1_000, max_records=batch_size)
        except OffsetOutOfRangeError as exc:
            raise RecordsGone(
                f"{where}: offset {position} is gone (deleted by retention while reading?); "
                "run the command again to replay what is left"
            ) from exc
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"reading {where} failed at offset {position}: {exc.__class__.__name__}"
            ) from exc
        messages = batch.get(tp, [])
        if messages:
            records = [to_record(m) for m in messages if m.offset <= last]
            position = messages[-1].offset + 1
            progress_at = time.monotonic()
            if records:
                yield records
            continue
        moved = await consumer.position(tp)
        if moved > position:
            position, progress_at = moved, time.monotonic()
        elif time.monotonic() - progress_at > STALL_S:
            raise KafkaUnavailable(
                f"reading {where} stalled at offset {position} (the stretch ends at {last}); "
                "nothing after it was read"
            )
