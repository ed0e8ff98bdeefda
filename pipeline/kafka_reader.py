"""Reading webhook records back from Kafka by coordinates, and the bounds of a stretch.

Used by un-parking, ``events show``, ``dlq`` and ``replay`` (whose stretch reader, with
stall detection, is :mod:`pipeline.ops.stretch`). A plain, group-less aiokafka
consumer with manual assignment: reading never moves any consumer group's offsets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.errors import KafkaUnavailable
from pipeline.records import WebhookRecord, decode_headers


@dataclass(frozen=True, slots=True, order=True)
class Coordinates:
    topic: str
    partition: int
    offset: int


def to_record(message: object) -> WebhookRecord:
    return WebhookRecord(
        topic=message.topic,  # type: ignore[attr-defined]
        partition=message.partition,  # type: ignore[attr-defined]
        offset=message.offset,  # type: ignore[attr-defined]
        key=message.key,  # type: ignore[attr-defined]
        value=message.value or b"",  # type: ignore[attr-defined]
        headers=decode_headers(message.headers),  # type: ignore[attr-defined]
        timestamp_ms=message.timestamp,  # type: ignore[attr-defined]
    )


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=15_000,
        isolation_level="read_committed",
    )


async def _start(consumer: AIOKafkaConsumer, bootstrap: str) -> None:
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise KafkaUnavailable(
            f"Kafka unreachable at {bootstrap}: {exc.__class__.__name__}"
        ) from exc


async def fetch(bootstrap: str, coordinates: Iterable[Coordinates]) -> list[WebhookRecord]:
    """The records at exactly these coordinates (missing ones, e.g. expired, are skipped)."""
    wanted: dict[TopicPartition, set[int]] = defaultdict(set)
    for c in coordinates:
        wanted[TopicPartition(c.topic, c.partition)].add(c.offset)
    if not wanted:
        return []
    consumer = _consumer(bootstrap)
    await _start(consumer, bootstrap)
    found: list[WebhookRecord] = []
    try:
        consumer.assign(list(wanted))
        ends = await consumer.end_offsets(list(wanted))
        for tp, offsets in wanted.items():
            for offset in sorted(offsets):
                if offset >= ends[tp]:
                    continue
                consumer.seek(tp, offset)
                batch = await consumer.getmany(tp, timeout_ms=5_000, max_records=1)
                for message in batch.get(tp, []):
                    if message.offset == offset:
                        found.append(to_record(message))
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
