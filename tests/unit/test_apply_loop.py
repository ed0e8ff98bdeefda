"""The apply-and-publish loop with batches in flight: the next batch is applied while an
earlier one still waits, but batches come back (to be acked) in the order they were taken,
and a loop stopped early leaves no batch running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson

from pipeline.apply.loop import Outgoing, Published, apply_all, records
from pipeline.apply.published import PublishedBuckets
from pipeline.apply.results import BatchResult
from pipeline.records import WebhookRecord
from testbed.records import record


class GatedApplier:
    """Each batch's apply waits until the test opens its gate; records who started when."""

    def __init__(self) -> None:
        self.published = PublishedBuckets()
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def apply(self, batch: Sequence[WebhookRecord]) -> BatchResult:
        name = name_of(batch)
        self.started.append(name)
        gate = self.gates.setdefault(name, asyncio.Event())
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        return BatchResult()


class Nothing:
    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        return Published.of(messages)


def batch(name: str) -> list[WebhookRecord]:
    """A one-record batch named by its record's offset."""
    body = orjson.dumps({"event": "call_started", "call": {"call_id": f"call_{name}"}})
    return [record("retell", body, offset=ord(name))]


def name_of(batch: Sequence[WebhookRecord]) -> str:
    return chr(batch[0].offset)


async def given(*names: str) -> AsyncIterator[list[WebhookRecord]]:
    for name in names:
        yield batch(name)


def test_a_later_batch_is_applied_meanwhile_but_comes_back_after_the_earlier() -> None:
    async def go() -> tuple[list[str], list[str]]:
        applier = GatedApplier()
        loop = apply_all(given("a", "b", "c"), applier, Nothing(), records, in_flight=2)  # type: ignore[arg-type]
        first = asyncio.ensure_future(anext(loop))
        await asyncio.sleep(0.01)
        running = list(applier.started)  # a and b both started; c waits for a free slot
        applier.gates["b"].set()  # b finishes first ...
        await asyncio.sleep(0.01)
        assert not first.done()  # ... but is not handed back before a
        applier.gates["a"].set()
        order = [name_of((await first).records)]
        applier.gates.setdefault("c", asyncio.Event()).set()
        order += [name_of(done.records) async for done in loop]
        return running, order

    running, order = asyncio.run(go())
    assert running == ["a", "b"]
    assert order == ["a", "b", "c"]


def test_one_in_flight_applies_one_batch_at_a_time() -> None:
    async def go() -> list[str]:
        applier = GatedApplier()
        loop = apply_all(given("a", "b"), applier, Nothing(), records)  # type: ignore[arg-type]
        first = asyncio.ensure_future(anext(loop))
        await asyncio.sleep(0.01)
        running = list(applier.started)
        applier.gates["a"].set()
        await first
        applier.gates.setdefault("b", asyncio.Event()).set()
        await anext(loop)
        return running

    assert asyncio.run(go()) == ["a"]


def test_a_loop_stopped_early_cancels_the_batches_it_had_started() -> None:
    async def go() -> GatedApplier:
        applier = GatedApplier()
        loop = apply_all(given("a", "b"), applier, Nothing(), records, in_flight=2)  # type: ignore[arg-type]
        first = asyncio.ensure_future(anext(loop))
        await asyncio.sleep(0.01)
        first.cancel()  # the agent stops (a rebalance, shutdown) while a and b run
        await asyncio.gather(first, return_exceptions=True)
        await loop.aclose()
        return applier

    applier = asyncio.run(go())
    assert applier.started == ["a", "b"]
    assert sorted(applier.cancelled) == ["a", "b"]
