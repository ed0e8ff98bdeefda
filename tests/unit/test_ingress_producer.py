"""KafkaPublisher: acks=all + idempotence, a bounded wait for every ack, and honest
``is_connected``. The broker is replaced by a stub; tests/integration covers the real one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, OutOfOrderSequenceNumber

from pipeline.errors import KafkaUnavailable
from pipeline.ingress.producer import KafkaPublisher, Published
from tests.unit.ingress_fakes import StubKafkaProducer, make_settings


def StubProducer(mode: str = "ok") -> StubKafkaProducer:  # noqa: N802 - reads like a class
    """``ok`` acks every batch at once; ``hang`` never answers; the other modes fail the
    batch with the error the broker would give."""
    errors: dict[str, BaseException] = {
        "error": KafkaConnectionError("broker gone"),
        "too_large": MessageSizeTooLargeError(),
        "out_of_order": OutOfOrderSequenceNumber(),
    }
    if mode == "ok":
        return StubKafkaProducer(auto="ack")
    if mode == "hang":
        return StubKafkaProducer(auto="hang")
    return StubKafkaProducer(auto="fail", error=errors[mode])


@dataclass
class Hooks:
    failures: list[tuple[str, str]] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def publisher(self, **settings: Any) -> KafkaPublisher:
        return KafkaPublisher(
            make_settings(**settings),
            on_failure=lambda t, r: self.failures.append((t, r)),
            on_latency=lambda t, s: self.latencies.append((t, s)),
        )


def connected(pub: KafkaPublisher, stub: StubKafkaProducer) -> KafkaPublisher:
    pub._producer = stub  # type: ignore[assignment]
    pub._batches = pub._new_batches(stub)  # type: ignore[arg-type]
    pub._healthy = True
    return pub


async def test_producer_is_idempotent_with_acks_all() -> None:
    settings = make_settings(kafka_linger_ms=7, kafka_max_batch_bytes=256 * 1024)
    producer = KafkaPublisher(settings)._new_producer()
    try:
        assert producer._sender._acks == -1
        assert producer._txn_manager is not None  # idempotence enabled
        assert producer._message_accumulator._linger_time == pytest.approx(0.007)
        assert producer._message_accumulator._batch_size == 256 * 1024
    finally:
        await producer.stop()


async def test_publish_passes_key_value_headers_and_returns_coordinates() -> None:
    hooks, stub = Hooks(), StubProducer()
    pub = connected(hooks.publisher(), stub)
    result = await pub.publish("t", b"k", b"{}", [("provider", b"retell")])
    (sent,) = stub.sent
    assert result == Published("t", sent.partition, 41)
    assert (sent.topic, sent.records) == ("t", [(b"k", b"{}", [("provider", b"retell")])])
    assert [t for t, _ in hooks.latencies] == ["t"]
    assert pub.is_connected()


async def test_publish_times_out_within_the_budget() -> None:
    hooks = Hooks()
    pub = connected(hooks.publisher(ack_budget_s=0.1), StubProducer(mode="hang"))
    # The stub never acknowledges: only the budget can end this publish.
    with pytest.raises(KafkaUnavailable, match="0.1s"):
        await asyncio.wait_for(pub.publish("t", b"k", b"{}", []), timeout=60)
    assert hooks.failures == [("t", "timeout")]
    # a late ack alone is not a lost broker (under a saturating load acks are late while
    # the broker is fine); the health probe decides whether the producer is connected
    assert pub.is_connected()


@pytest.mark.parametrize("mode,reason", [("error", "KafkaConnectionError"), ("too_large", "record_too_large")])  # fmt: skip
async def test_kafka_errors_become_kafka_unavailable(mode: str, reason: str) -> None:
    hooks = Hooks()
    pub = connected(hooks.publisher(), StubProducer(mode=mode))
    with pytest.raises(KafkaUnavailable):
        await pub.publish("t", b"k", b"{}", [])
    assert hooks.failures == [("t", reason)]


async def test_unreachable_broker_does_not_block_start_and_fails_fast() -> None:
    hooks = Hooks()
    pub = hooks.publisher(kafka_bootstrap="127.0.0.1:1")
    await asyncio.wait_for(pub.start(), timeout=60)  # returns although no broker answers
    assert not pub.is_connected()
    with pytest.raises(KafkaUnavailable, match="not connected"):
        await pub.publish("t", b"k", b"{}", [])
    assert hooks.failures == [("t", "not_connected")]
    await pub.close()


async def test_close_flushes_and_refuses_new_records() -> None:
    stub = StubProducer()
    pub = connected(KafkaPublisher(make_settings()), stub)
    await pub.close()
    assert stub.stopped
    assert not pub.is_connected()
    with pytest.raises(KafkaUnavailable):
        await pub.publish("t", b"k", b"{}", [])


async def test_a_producer_the_broker_no_longer_knows_is_replaced() -> None:
    """A broker that restarted and lost the idempotent producer's state answers every batch
    with OutOfOrderSequenceNumber; aiokafka never recovers from that by itself, so the
    publisher drops the producer (the maintenance task connects a new producer id)."""
    stub = StubProducer(mode="out_of_order")
    pub = connected(Hooks().publisher(), stub)
    with pytest.raises(KafkaUnavailable):
        await pub.publish("t", b"k", b"{}", [])
    assert pub.replaced == 1 and not pub.is_connected() and pub._producer is None
    await asyncio.sleep(0)  # the old producer is stopped in the background
    await asyncio.sleep(0)
    assert stub.stopped


class SendStub:
    """``AIOKafkaProducer.send`` as the forwarder's path uses it: one future per record,
    answered as ``script`` says (``ack``, ``hang``, ``cancel``, an exception to fail the
    future with), or ``send`` itself raises ``raise_at`` for that record's index."""

    def __init__(self, script: list[Any], raise_at: int | None = None) -> None:
        self.script = script
        self.raise_at = raise_at
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.futures: list[asyncio.Future[object]] = []
        self.stopped = False

    async def send(
        self, topic: str, *, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[object]:
        if len(self.sent) == self.raise_at:
            raise KafkaConnectionError("broker gone")
        self.sent.append((topic, key, value, headers))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        answer = self.script[len(self.futures)]
        if answer == "ack":
            future.set_result(object())
        elif answer == "cancel":
            future.cancel()
        elif isinstance(answer, BaseException):
            future.set_exception(answer)
        self.futures.append(future)
        return future

    async def stop(self) -> None:
        self.stopped = True


def many(n: int) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    return [("t", f"k{i}".encode(), b"{}", [("h", b"v")]) for i in range(n)]


async def test_publish_many_sends_in_order_and_reports_each_record() -> None:
    """The forwarder's path: every record enqueued in order, one outcome per record (None
    once acknowledged), and a late future cancelled rather than left to resolve."""
    boom = KafkaConnectionError("refused")
    stub = SendStub(["ack", boom, "cancel", "hang"])
    pub = connected(Hooks().publisher(), stub)  # type: ignore[arg-type]
    pub._healthy = False
    outcomes = await pub.publish_many(many(4), timeout_s=0.05)
    assert stub.sent == many(4)
    assert outcomes[0] is None and outcomes[1] is boom
    assert isinstance(outcomes[2], KafkaUnavailable) and str(outcomes[2]) == "cancelled"
    assert isinstance(outcomes[3], KafkaUnavailable)
    assert str(outcomes[3]) == "no acknowledgement in time"
    assert stub.futures[3].cancelled()
    assert pub.is_connected() and pub.replaced == 0  # one ack proves the broker is there


async def test_publish_many_fails_the_records_it_could_not_enqueue() -> None:
    stub = SendStub(["ack", "ack", "ack"], raise_at=1)
    pub = connected(Hooks().publisher(), stub)  # type: ignore[arg-type]
    outcomes = await pub.publish_many(many(3), timeout_s=1.0)
    assert outcomes[0] is None
    for outcome in outcomes[1:]:
        assert isinstance(outcome, KafkaUnavailable)
        assert str(outcome) == "not enqueued: KafkaConnectionError"
    assert pub.is_connected()  # the first record was acknowledged


async def test_publish_many_without_any_ack_marks_the_producer_down() -> None:
    stub = SendStub([], raise_at=0)
    pub = connected(Hooks().publisher(), stub)  # type: ignore[arg-type]
    outcomes = await pub.publish_many(many(2), timeout_s=1.0)
    assert [str(o) for o in outcomes] == ["not enqueued: KafkaConnectionError"] * 2
    assert not pub.is_connected() and pub.replaced == 0


async def test_publish_many_replaces_a_producer_the_broker_no_longer_knows() -> None:
    fatal = OutOfOrderSequenceNumber()
    stub = SendStub(["ack", fatal])
    pub = connected(Hooks().publisher(), stub)  # type: ignore[arg-type]
    outcomes = await pub.publish_many(many(2), timeout_s=1.0)
    assert outcomes == [None, fatal]
    assert pub.replaced == 1 and pub._producer is None
    await asyncio.sleep(0)  # the old producer is stopped in the background
    await asyncio.sleep(0)
    assert stub.stopped


async def test_publish_many_without_a_producer_fails_every_record() -> None:
    pub = Hooks().publisher()
    outcomes = await pub.publish_many(many(3), timeout_s=1.0)
    assert len(outcomes) == 3
    assert all(isinstance(o, KafkaUnavailable) for o in outcomes)
