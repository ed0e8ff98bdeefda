"""aiokafka against the real broker: what we write is what we read, headers included.

Everything else (ingress, worker, DLQ) rests on this: raw bodies byte for byte, keys, and
the docs/architecture.md headers surviving the trip, in order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline import topics
from pipeline.settings import Settings
from tests.integration.conftest import base_settings

pytestmark = pytest.mark.integration

PARTITIONS = 3
READ_TIMEOUT_S = 20.0


@pytest.fixture
async def topic() -> AsyncIterator[tuple[Settings, str]]:
    """A topic of this test's own, created with the admin client and deleted afterwards."""
    settings = base_settings()
    name = f"test-roundtrip-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=name, num_partitions=PARTITIONS, replication_factor=1)]
        )
        # Metadata lags creation (longest right after a broker restart): wait as `topics` does.
        visible = await topics.await_visible(admin, [name], within_s=15)
        assert visible.get(name) == PARTITIONS
        yield settings, name
    finally:
        await admin.delete_topics([name])
        await admin.close()


async def read(settings: Settings, name: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records from every partition from the start (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(name, p) for p in range(PARTITIONS)])
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(READ_TIMEOUT_S):
            while len(records) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for part in batch.values():
                    records += part
        return records
    finally:
        await consumer.stop()


async def test_round_trip_keeps_bytes_keys_and_headers(topic: tuple[Settings, str]) -> None:
    settings, name = topic
    sent = []
    for i in range(30):
        key = f"call_{i % 7}".encode()
        # Raw bodies are bytes, not text: include bytes that are not valid UTF-8.
        value = b'{"event":"call_ended","n":%d}\xff\x00\xfe' % i
        headers = [
            ("provider", b"retell"),
            ("event_id", f"call_ended:call_{i}".encode()),
            ("event_type", b"call_ended"),
            ("correlation_id", str(uuid.uuid4()).encode()),
            ("received_at", b"1764288000123"),
            ("repeated", b"first"),
            ("repeated", b"second"),  # Kafka allows repeated keys; order must survive
            ("empty", b""),
        ]
        sent.append((key, value, headers))

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    started_ms = int(time.time() * 1000)
    try:
        metadata = [
            await producer.send_and_wait(name, value=v, key=k, headers=h) for k, v, h in sent
        ]
    finally:
        await producer.stop()

    records = await read(settings, name, len(sent))
    assert len(records) == len(sent)
    by_coordinates = {(r.partition, r.offset): r for r in records}
    key_partition: dict[bytes, int] = {}
    for (key, value, headers), meta in zip(sent, metadata, strict=True):
        record = by_coordinates[(meta.partition, meta.offset)]
        assert record.key == key
        assert record.value == value
        assert list(record.headers) == headers
        assert abs(record.timestamp - started_ms) < 60_000  # CreateTime, set by the producer
        # Same key, same partition: per-call ordering depends on it.
        assert key_partition.setdefault(key, record.partition) == record.partition
    # Offsets within a partition follow the order of sending.
    for partition in range(PARTITIONS):
        in_partition = [m.offset for m in metadata if m.partition == partition]
        assert in_partition == sorted(in_partition)


async def test_null_key_and_no_headers(topic: tuple[Settings, str]) -> None:
    settings, name = topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(name, value=b"{}")
    finally:
        await producer.stop()
    (record,) = await read(settings, name, 1)
    assert record.key is None
    assert record.value == b"{}"
    assert list(record.headers) == []
