"""Reading webhook records back from Kafka by coordinates, and the bounds of a stretch.

Used by un-parking, ``events show``, ``dlq`` and ``replay`` (whose stretch reader, with
stall detection, is :mod:`pipeline.ops.stretch`). A plain, group-less aiokafka
consumer with manual assignment: reading never moves any consumer group's offsets.

**Every assigned partition has a position, and the assignment never changes** (see
:func:`assign_at`). aiokafka 0.14.0's fetcher gives a partition that was assigned without
a position to a task that waits for the group's committed offset; without a group, the
consumer's coordinator answers that wait, but ``stop()`` shuts the coordinator down
first, so the wait is never answered. And when the assignment changes just before
``stop()``, the fetcher swallows its own cancellation while it drops the old assignment's
tasks (``contextlib.suppress(CancelledError)`` around ``await task``), then keeps looping.
Either way ``stop()`` never returned: a replay whose last partition had nothing to read
hung after its last record. So the partitions to read are assigned once, each sought to
its first offset before the event loop runs again, and paused; the reader resumes one
partition at a time, so the fetcher still works only where we read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.errors import KafkaUnavailable
from pipeline.kafka import kafka_options
from pipeline.records import WebhookRecord, from_message
from pipeline.settings import Settings


@dataclass(frozen=True, slots=True, order=True)
class Coordinates:
    topic: str
    partition: int
    offset: int


def to_record(message: object) -> WebhookRecord:
    return from_message(message)


FETCH_WAIT_MS = 10
FETCH_PARTITION_BYTES = 8 * 1024 * 1024


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=15_000,
        isolation_level="read_committed",
        # A stretch's records are all there already: no long poll. The default (500 ms)
        # made every partition of a replay wait for the fetch in flight when it was
        # resumed, half a second per partition whatever its size.
        fetch_max_wait_ms=FETCH_WAIT_MS,
        # A replay batch of 500 records of a few KiB each in one fetch (the default, 1 MiB
        # per partition, cut them to about 350).
        max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
    )


async def _start(consumer: AIOKafkaConsumer, settings: Settings) -> None:
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise KafkaUnavailable(
            f"Kafka unreachable at {settings.kafka_bootstrap}: {exc.__class__.__name__}"
        ) from exc
    # start() creates the group-less coordinator's background task without letting it run;
    # a stop() before its first step cancels it unstarted and raises CancelledError out of
    # stop() (aiokafka issue 647). One turn of the loop lets it start.
    await asyncio.sleep(0)


def assign_at(consumer: AIOKafkaConsumer, positions: Mapping[TopicPartition, int]) -> None:
    """Assign exactly these partitions, each at its offset, all paused; once per consumer.

    Synchronous on purpose: the fetcher only runs when the caller next awaits, and by then
    every assigned partition has its position (see the module docstring for why a
    partition without one, or a second assignment, makes ``stop()`` hang). Nothing to read
    means no assignment at all. Read a partition between ``consumer.resume(tp)`` and
    ``consumer.pause(tp)``.
    """
    if consumer.assignment():
        raise RuntimeError("assign_at: this consumer already has an assignment")
    if not positions:
        return
    consumer.assign(list(positions))
    for tp, offset in positions.items():
        consumer.seek(tp, offset)
    consumer.pause(*positions)


async def fetch(settings: Settings, coordinates: Iterable[Coordinates]) -> list[WebhookRecord]:
    """The records at exactly these coordinates (missing ones, e.g. expired, are skipped)."""
    wanted: dict[TopicPartition, set[int]] = defaultdict(set)
    for c in coordinates:
        wanted[TopicPartition(c.topic, c.partition)].add(c.offset)
    if not wanted:
        return []
    consumer = _consumer(settings)
    await _start(consumer, settings)
    found: list[WebhookRecord] = []
    try:
        ends = await consumer.end_offsets(list(wanted))
        readable = {
            tp: sorted(o for o in offsets if o < ends[tp]) for tp, offsets in wanted.items()
        }
        readable = {tp: offsets for tp, offsets in readable.items() if offsets}
        assign_at(consumer, {tp: offsets[0] for tp, offsets in readable.items()})
        for tp, offsets in readable.items():
            consumer.resume(tp)
            for offset in offsets:
                consumer.seek(tp, offset)
                batch = await consumer.getmany(tp, timeout_ms=5_000, max_records=1)
                for message in batch.get(tp, []):
                    if message.offset == offset:
                        found.append(to_record(message))
            consumer.pause(tp)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.topic, r.partition, r.offset))


@dataclass(frozen=True, slots=True)
class Stretch:
    """Where a read starts and stops, per partition: offsets, or times (ms) resolved to offsets."""

    from_offset: int | None = None
    to_offset: int | None = None  # inclusive
    from_time_ms: int | None = None
    to_time_ms: int | None = None  # inclusive


async def bounds(
    consumer: AIOKafkaConsumer, tp: TopicPartition, stretch: Stretch, start: int, end: int
) -> tuple[int, int]:
    first, last = start, end - 1
    if stretch.from_offset is not None:
        first = max(first, stretch.from_offset)
    if stretch.to_offset is not None:
        last = min(last, stretch.to_offset)
    if stretch.from_time_ms is not None:
        found = await consumer.offsets_for_times({tp: stretch.from_time_ms})
        first = max(first, found[tp].offset if found.get(tp) else end)
    if stretch.to_time_ms is not None:
        found = await consumer.offsets_for_times({tp: stretch.to_time_ms + 1})
        last = min(last, (found[tp].offset - 1) if found.get(tp) else end - 1)
    return first, last
