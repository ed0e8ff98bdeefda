"""Publish slots (pipeline/ingress/slots.py) and admission control in the hand-off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.ingress.handoff import Handoff
from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.producer import Headers, Published
from pipeline.ingress.slots import Slots
from pipeline.ingress.spool import Spool
from tests.unit.ingress_fakes import FakePublisher, make_settings


def test_free_slots_are_taken_and_given_back_without_waiting() -> None:
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    slots.give()
    assert slots.free == 1
    assert slots.try_take()


async def test_a_slot_given_back_goes_to_the_oldest_waiter() -> None:
    slots = Slots(1)
    assert slots.try_take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    first = asyncio.create_task(wait("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait("second"))
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.give()
    await first
    assert order == ["first"] and slots.free == 0  # handed over, never counted as free
    assert not slots.try_take()  # a newcomer does not jump the queue
    slots.give()
    await second
    assert order == ["first", "second"]
    slots.give()
    assert slots.free == 1


async def test_a_cancelled_wait_holds_no_slot() -> None:
    slots = Slots(1)
    assert slots.try_take()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slots.take()
    assert slots.waiting == 0
    slots.give()
    assert slots.free == 1  # not handed to the request that gave up


async def test_a_slot_handed_to_a_wait_as_it_is_cancelled_is_passed_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    late = asyncio.create_task(slots.take())
    nxt = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # resolves late's waiter...
    late.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    await nxt  # the slot went on to the next waiter
    assert slots.free == 0
    slots.give()
    assert slots.free == 1


class HeldPublisher(FakePublisher):
    """Acks only when ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = 0  # publishes started (each holds a slot)

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> Published:
        self.entered += 1
        await self.release.wait()
        return await super().publish(topic, key, value, headers)


async def test_a_request_without_a_slot_goes_to_the_spool_after_the_budget(
    tmp_path: Path,
) -> None:
    settings = make_settings(ingress_max_in_flight=1, ack_budget_s=0.05)
    publisher = HeldPublisher()
    spool = Spool.claim(tmp_path, max_bytes=1 << 20, max_age_s=3600)
    await spool.start()
    metrics = IngressMetrics(CollectorRegistry())
    handoff = Handoff(settings, publisher, spool, metrics)
    try:
        holder = asyncio.create_task(handoff.make_durable("t", b"k1", b"v1", []))
        await asyncio.sleep(0)
        assert await handoff.make_durable("t", b"k2", b"v2", []) == "spool"
        assert (
            metrics.registry.get_sample_value(
                "switchboard_ingress_kafka_publish_failures_total",
                {"topic": "t", "reason": "ingress_timeout"},
            )
            == 1.0
        )
        publisher.release.set()
        assert await holder == "kafka"
        assert [r.value for r in publisher.records] == [b"v1"]
        assert [r.value for r in await spool.head(10)] == [b"v2"]
    finally:
        await spool.close()


async def test_waits_that_ran_out_of_budget_hold_no_slot(tmp_path: Path) -> None:
    """Requests that gave up waiting for a slot leave every slot to the ones after them."""
    settings = make_settings(ingress_max_in_flight=2, ack_budget_s=0.05)
    publisher = HeldPublisher()
    spool = Spool.claim(tmp_path, max_bytes=1 << 20, max_age_s=3600)
    await spool.start()
    handoff = Handoff(settings, publisher, spool, IngressMetrics(CollectorRegistry()))
    try:
        holders = [
            asyncio.create_task(handoff.make_durable("t", b"k", b"held", [])) for _ in range(2)
        ]
        await asyncio.sleep(0)
        assert publisher.entered == 2
        waiting = [handoff.make_durable("t", b"k", b"late", []) for _ in range(3)]
        assert await asyncio.gather(*waiting) == ["spool"] * 3
        publisher.release.set()
        assert await asyncio.gather(*holders) == ["kafka"] * 2
        await spool.delete(await spool.head(10))  # as the forwarder does once Kafka has them
        publisher.release.clear()
        again = [
            asyncio.create_task(handoff.make_durable("t", b"k", b"again", [])) for _ in range(2)
        ]
        await asyncio.sleep(0)
        assert publisher.entered == 4  # both slots free again, taken without waiting
        publisher.release.set()
        assert await asyncio.gather(*again) == ["kafka"] * 2
    finally:
        await spool.close()
