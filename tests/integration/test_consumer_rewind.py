"""After a rebalance the worker's consumer rewinds every webhook partition, committed or
not, on the real broker (agents/consumer.py).

A group consumer has read every record of three partitions, as Faust's fetcher does
before it drops the rest of a batch at a rebalance. Partition 0 was never committed,
partition 1 was committed at 2, partition 2 stands for a table's changelog. The seek must
put partition 0 back at its first record, partition 1 at 2, and leave partition 2 alone.
aiokafka's own ``seek_to_committed`` leaves partition 0 past its records: the records a
survivor fetched from a dead worker's quiet partition and dropped were never read again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from agents.consumer import seek_to_committed
from pipeline.settings import Settings
from tests.integration.conftest import base_settings

pytestmark = pytest.mark.integration

RECORDS = {0: 3, 1: 5, 2: 4}  # partition -> records on it
COMMITTED_P1 = 2
READ_TIMEOUT_S = 20.0


@pytest.fixture
async def consumer() -> AsyncIterator[tuple[AIOKafkaConsumer, str]]:
    """A group consumer of a fresh three-partition topic that has read every record, with
    partition 1 committed at COMMITTED_P1 and the others never committed."""
    settings: Settings = base_settings()
    name = f"test-rewind-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(name=name, num_partitions=len(RECORDS), replication_factor=1)]
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    for partition, count in RECORDS.items():
        for n in range(count):
            await producer.send_and_wait(name, f"{partition}-{n}".encode(), partition=partition)
    await producer.stop()
    group = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"test-rewind-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await group.start()
    try:
        group.assign([TopicPartition(name, p) for p in RECORDS])
        read = 0
        async with asyncio.timeout(READ_TIMEOUT_S):
            while read < sum(RECORDS.values()):
                batches = await group.getmany(timeout_ms=500)
                read += sum(len(records) for records in batches.values())
        await group.commit({TopicPartition(name, 1): OffsetAndMetadata(COMMITTED_P1, "")})
        yield group, name
    finally:
        await group.stop()
        await admin.delete_topics([name])
        await admin.close()


async def positions(group: AIOKafkaConsumer, name: str) -> dict[int, int]:
    return {p: await group.position(TopicPartition(name, p)) for p in RECORDS}


async def test_every_stream_partition_goes_back_to_its_committed_offset_or_its_start(
    consumer: tuple[AIOKafkaConsumer, str],
) -> None:
    group, name = consumer
    assert await positions(group, name) == RECORDS  # everything read, as the fetcher had

    committed = await seek_to_committed(group, rewinds=lambda tp: tp.partition != 2)

    assert committed == {
        TopicPartition(name, 0): None,
        TopicPartition(name, 1): COMMITTED_P1,
        TopicPartition(name, 2): None,
    }
    assert await positions(group, name) == {0: 0, 1: COMMITTED_P1, 2: RECORDS[2]}
    again = await group.getmany(TopicPartition(name, 0), timeout_ms=5000)
    assert [r.value for r in again[TopicPartition(name, 0)]] == [b"0-0", b"0-1", b"0-2"]


async def test_aiokafka_alone_leaves_an_uncommitted_partition_past_its_records(
    consumer: tuple[AIOKafkaConsumer, str],
) -> None:
    """The trap, kept visible: if aiokafka starts rewinding such partitions, this fails
    and agents/consumer.py can go."""
    group, name = consumer
    await group.seek_to_committed()
    assert await positions(group, name) == {0: RECORDS[0], 1: COMMITTED_P1, 2: RECORDS[2]}
