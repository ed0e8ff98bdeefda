"""The worker's apply-and-publish loop with batches in flight: the next batch is applied while
an earlier one still waits, but batches are acked in the order they were taken, each as
soon as it and the ones before are done, and a loop stopped early leaves no batch running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson

from pipeline.apply.loop import Done, Outgoing, Published, apply_in_order, records
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


async def given(
    *names: str, then: asyncio.Event | None = None
) -> AsyncIterator[list[WebhookRecord]]:
    """The batches named, then (with ``then``) no more until it is set: traffic stopped."""
    for name in names:
        yield batch(name)
    if then is not None:
        await then.wait()


class Acks:
    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, done: Done[list[WebhookRecord]]) -> None:
        self.names.append(name_of(done.records))


def run(
    applier: GatedApplier, acks: Acks, source: AsyncIterator[list[WebhookRecord]], in_flight: int
) -> asyncio.Task[None]:
    return asyncio.ensure_future(
        apply_in_order(source, applier, Nothing(), records, acks, in_flight=in_flight)  # type: ignore[arg-type]
    )


def test_a_later_batch_is_applied_meanwhile_but_acked_after_the_earlier() -> None:
    async def go() -> tuple[list[str], list[str], list[str]]:
        applier, acks = GatedApplier(), Acks()
        loop = run(applier, acks, given("a", "b", "c"), in_flight=2)
        await asyncio.sleep(0.01)
        running = list(applier.started)  # a and b both started; c waits for a free slot
        applier.gates["b"].set()  # b finishes first ...
        await asyncio.sleep(0.01)
        early = list(acks.names)  # ... but is not acked before a
        applier.gates["a"].set()
        await asyncio.sleep(0.01)
        applier.gates.setdefault("c", asyncio.Event()).set()
        await asyncio.wait_for(loop, 5)
        return running, early, acks.names

    running, early, order = asyncio.run(go())
    assert running == ["a", "b"]
    assert early == []
    assert order == ["a", "b", "c"]


def test_a_finished_batch_is_acked_though_no_later_batch_comes() -> None:
    """The defect: with batches in flight, a loop that handed a batch back only once enough
    later ones were taken never acked the last batches of a burst, and a rebalance, which
    waits for every taken record to be acked, waited for ever."""

    async def go() -> list[str]:
        applier, acks, quiet = GatedApplier(), Acks(), asyncio.Event()
        loop = run(applier, acks, given("a", "b", then=quiet), in_flight=8)
        await asyncio.sleep(0.01)
        applier.gates["a"].set()
        applier.gates["b"].set()
        for _ in range(100):
            if len(acks.names) == 2:
                break
            await asyncio.sleep(0.01)
        quiet.set()
        await asyncio.wait_for(loop, 5)
        return acks.names

    assert asyncio.run(go()) == ["a", "b"]


def test_one_in_flight_applies_one_batch_at_a_time() -> None:
    async def go() -> list[str]:
        applier, acks = GatedApplier(), Acks()
        loop = run(applier, acks, given("a", "b"), in_flight=1)
        await asyncio.sleep(0.01)
        running = list(applier.started)
        applier.gates["a"].set()
        await asyncio.sleep(0.01)
        applier.gates.setdefault("b", asyncio.Event()).set()
        await asyncio.wait_for(loop, 5)
        return running

    assert asyncio.run(go()) == ["a"]


def test_a_loop_stopped_early_cancels_the_batches_it_had_started() -> None:
    async def go() -> tuple[GatedApplier, Acks]:
        applier, acks = GatedApplier(), Acks()
        loop = run(applier, acks, given("a", "b", then=asyncio.Event()), in_flight=2)
        await asyncio.sleep(0.01)
        loop.cancel()  # the agent stops (shutdown) while a and b run
        await asyncio.gather(loop, return_exceptions=True)
        return applier, acks

    applier, acks = asyncio.run(go())
    assert applier.started == ["a", "b"]
    assert sorted(applier.cancelled) == ["a", "b"]
    assert acks.names == []
