"""RecordBatches (pipeline/ingress/batches.py): a record is acknowledged only when the batch
that carries it is, a failed or late batch fails every record in it (and the hand-off spools
them), batches of a partition reach the producer in order, and keys land on the partition
``send()`` would choose. The producer is a stub with real record batch builders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import CollectorRegistry

from pipeline.errors import KafkaUnavailable
from pipeline.ingress.batches import RecordBatches, murmur2
from pipeline.ingress.handoff import Handoff
from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.producer import KafkaPublisher
from pipeline.ingress.spool import Spool
from tests.unit.ingress_fakes import StubKafkaProducer, make_settings


def batches(stub: StubKafkaProducer, **kw: Any) -> RecordBatches:
    options: dict[str, Any] = {"linger_s": 0.005, "deadline_s": 5.0, "max_record_bytes": 10_000}
    return RecordBatches(stub, **{**options, **kw})  # type: ignore[arg-type]


def key_on(partition: int, partitions: int = 12) -> bytes:
    """A key that the default partitioner puts on ``partition``."""
    for n in range(10_000):
        key = f"call_{n}".encode()
        if DefaultPartitioner()(key, list(range(partitions)), []) == partition:
            return key
    raise AssertionError("no key found")


async def until(condition: Any, timeout_s: float = 2.0) -> None:
    for _ in range(int(timeout_s * 1000)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not met in time")


async def test_a_record_is_acknowledged_only_with_its_batch() -> None:
    stub = StubKafkaProducer()
    rb = batches(stub)
    key = key_on(3)
    tasks = [asyncio.create_task(rb.add("t", key, b"v%d" % i, [("h", b"x")])) for i in range(3)]
    await until(lambda: len(stub.sent) == 1)
    (sent,) = stub.sent  # the three records share one batch
    assert sent.partition == 3
    assert [v for _, v, _ in sent.records] == [b"v0", b"v1", b"v2"]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in tasks), "nothing is acknowledged before the broker acks"
    sent.ack(base_offset=500)
    assert await asyncio.gather(*tasks) == [(3, 500), (3, 501), (3, 502)]
    assert rb.pending == 0


async def test_a_failed_batch_fails_every_record_in_it_and_no_other() -> None:
    stub = StubKafkaProducer()
    rb = batches(stub)
    on_1, on_2 = key_on(1), key_on(2)
    failing = [asyncio.create_task(rb.add("t", on_1, b"a%d" % i, [])) for i in range(2)]
    fine = asyncio.create_task(rb.add("t", on_2, b"b", []))
    await until(lambda: len(stub.sent) == 2)
    by_partition = {s.partition: s for s in stub.sent}
    by_partition[1].fail(KafkaConnectionError("broker gone"))
    by_partition[2].ack(7)
    for task in failing:
        with pytest.raises(KafkaConnectionError):
            await task
    assert await fine == (2, 7)


async def test_records_not_acknowledged_by_the_deadline_time_out() -> None:
    stub = StubKafkaProducer(auto="hang")
    rb = batches(stub, deadline_s=0.1)
    task = asyncio.create_task(rb.add("t", b"k", b"v", []))
    with pytest.raises(TimeoutError):
        await task
    (sent,) = stub.sent
    sent.ack(9)  # a late ack changes nothing for a record already given up (and spooled)


async def test_a_batch_whose_records_all_timed_out_is_not_sent() -> None:
    """The partition's previous batch is stuck in the producer; the next one's records time
    out meanwhile and go to the spool, so sending it later would only make duplicates."""
    stub = StubKafkaProducer(auto="hang")
    rb = batches(stub, deadline_s=0.1, linger_s=0.0)
    key = key_on(0)
    first = asyncio.create_task(rb.add("t", key, b"v1", []))
    await until(lambda: len(stub.sent) == 1)
    stuck, entered = asyncio.Event(), asyncio.Event()

    async def send_batch_blocked(*args: Any, **kw: Any) -> Any:
        entered.set()
        await stuck.wait()  # like add_batch waiting while the previous batch is queued
        return await StubKafkaProducer.send_batch(stub, *args, **kw)

    stub.send_batch = send_batch_blocked  # type: ignore[method-assign]
    second = asyncio.create_task(rb.add("t", key, b"v2", []))
    await entered.wait()  # v2's batch is being handed over; v3 opens the next one
    third = asyncio.create_task(rb.add("t", key, b"v3", []))
    for task in (first, second, third):
        with pytest.raises(TimeoutError):
            await task
    stuck.set()
    await asyncio.sleep(0.02)
    assert [[v for _, v, _ in s.records] for s in stub.sent] == [[b"v1"], [b"v2"]]


async def test_batches_of_a_partition_reach_the_producer_in_order() -> None:
    stub = StubKafkaProducer(auto="ack")
    rb = batches(stub, linger_s=0.0)
    key = key_on(5)
    results = []
    for round_ in range(3):
        tasks = [
            asyncio.create_task(rb.add("t", key, b"%d-%d" % (round_, i), [])) for i in range(4)
        ]
        results += await asyncio.gather(*tasks)
    values = [v for s in stub.sent for _, v, _ in s.records]
    assert values == [b"%d-%d" % (r, i) for r in range(3) for i in range(4)]
    assert {p for p, _ in results} == {5}


async def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    stub = StubKafkaProducer(auto="ack")
    stub.create_batch = lambda: stub._builder(300, 0)  # type: ignore[method-assign]
    rb = batches(stub, linger_s=10.0)  # only a full batch may go before the linger
    key = key_on(4)
    tasks = [asyncio.create_task(rb.add("t", key, b"x" * 100, [])) for _ in range(3)]
    await until(lambda: len(stub.sent) >= 1, timeout_s=1.0)
    assert len(stub.sent[0].records) < 3  # it did not wait 10 s for the linger
    await rb.flush(1.0)
    await asyncio.gather(*tasks)
    assert sum(len(s.records) for s in stub.sent) == 3


async def test_keys_land_where_send_would_put_them() -> None:
    stub = StubKafkaProducer(partitions=12, auto="ack")
    rb = batches(stub, linger_s=0.0)
    for n in range(50):
        key = f"call_{n:04d}".encode()
        partition, _ = await rb.add("t", key, b"v", [])
        assert partition == DefaultPartitioner()(key, list(range(12)), list(range(12)))


def test_murmur2_is_aiokafkas() -> None:
    keys = [b"", b"a", b"ab", b"abc", b"call_bench_00000001", "bk_ünïcode_42".encode()]
    keys += [bytes(range(n % 256)) * (1 + n % 3) for n in range(300)]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key), key


async def test_an_oversized_record_is_refused_before_any_batch() -> None:
    rb = batches(StubKafkaProducer(auto="ack"), max_record_bytes=100)
    with pytest.raises(MessageSizeTooLargeError):
        await rb.add("t", b"k", b"x" * 200, [])


async def test_fail_all_fails_what_was_not_handed_over_and_refuses_more() -> None:
    stub = StubKafkaProducer(auto="hang")
    rb = batches(stub, linger_s=10.0)
    task = asyncio.create_task(rb.add("t", b"k", b"v", []))
    await asyncio.sleep(0.01)
    rb.fail_all(KafkaUnavailable("replaced"))
    with pytest.raises(KafkaUnavailable):
        await task
    with pytest.raises(KafkaUnavailable):
        await rb.add("t", b"k", b"v", [])
    assert stub.sent == []


async def test_a_failed_batch_goes_to_the_spool_through_the_hand_off(tmp_path: Path) -> None:
    """End to end in one process: the publisher's batch fails, every request of it is
    answered only after the spool's fsync, and nothing was counted as sent to Kafka."""
    settings = make_settings()
    stub = StubKafkaProducer()
    publisher = KafkaPublisher(settings)
    publisher._producer = stub  # type: ignore[assignment]
    publisher._batches = publisher._new_batches(stub)  # type: ignore[arg-type]
    publisher._healthy = True
    spool = Spool.claim(tmp_path, max_bytes=1 << 20, max_age_s=3600)
    await spool.start()
    metrics = IngressMetrics(CollectorRegistry())
    handoff = Handoff(settings, publisher, spool, metrics)
    try:
        key = key_on(6)
        tasks = [
            asyncio.create_task(handoff.make_durable("t", key, b"v%d" % i, [])) for i in range(3)
        ]
        await until(lambda: len(stub.sent) == 1)
        assert spool.count == 0
        stub.sent[0].fail(KafkaConnectionError("broker gone"))
        assert await asyncio.gather(*tasks) == ["spool"] * 3
        assert sorted(r.value for r in await spool.head(10)) == [b"v0", b"v1", b"v2"]
        assert metrics.registry.get_sample_value(
            "switchboard_ingress_durable_total", {"via": "kafka"}
        ) in (None, 0.0)
    finally:
        await spool.close()
