"""The apply-and-publish loop: ``replay``, ``dlq redrive`` and the tests' stand-in for the
worker run :func:`apply_all` (a batch at a time), the worker's agents
:func:`apply_in_order` (batches in flight, handed back in order).

For each batch: apply it (:class:`~pipeline.apply.applier.Applier`: one transaction,
transient failures waited out), then publish what it produced (:func:`outgoing`: its dead
letters, then the snapshots of the buckets it touched), and only then hand the batch back
to the caller, who acks it (the worker) or counts it (the commands). So nothing is acked
before MySQL committed it and Kafka holds its dead letters.

How a message reaches Kafka is the :class:`Publisher`'s business: Faust topics in the
worker (:mod:`agents.webhooks`), an idempotent aiokafka producer in the commands
(:mod:`pipeline.ops.outputs`), nothing in a dry run (:class:`Discard`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pipeline import topics
from pipeline.apply import deadletters
from pipeline.apply.applier import Applier
from pipeline.apply.results import BatchResult, DeadLetter
from pipeline.dashboard import snapshots
from pipeline.records import Headers, WebhookRecord

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message a batch publishes; ``topic`` is the unprefixed name (``webhooks.dlq``)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    letter: DeadLetter | None = None  # what a dead letter is about, for logs and metrics
    snapshots: int = 0  # the bucket snapshots a snapshot bundle carries


def outgoing(result: BatchResult) -> list[Outgoing]:
    """What ``result`` publishes: dead letters first, then bucket snapshots, one bundle
    per company (keyed by company, so every snapshot of a company lands on its dashboard
    table partition)."""
    out = [Outgoing(topics.DLQ, *deadletters.encode(d), letter=d) for d in result.dead_letters]
    out += [
        Outgoing(topics.SNAPSHOTS, key, value, [], snapshots=count)
        for key, value, count in snapshots.bundles(result.snapshots)
    ]
    return out


@dataclass
class Published:
    dead_letters: int = 0
    snapshots: int = 0

    @classmethod
    def of(cls, messages: Sequence[Outgoing]) -> Published:
        letters = sum(1 for m in messages if m.topic == topics.DLQ)
        return cls(letters, sum(m.snapshots for m in messages))


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        """Send ``messages``; return once they are as durable as the transport promises
        (dead letters always: the batch is acked next)."""
        ...


class Discard:
    """A dry run's publisher: its transactions were rolled back, so nothing is sent."""

    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        return Published()


def records(batch: Sequence[WebhookRecord]) -> Sequence[WebhookRecord]:
    """``records_of`` for batches that are lists of records already."""
    return batch


@dataclass(frozen=True, slots=True)
class Done(Generic[B]):
    """A batch (as it was given) applied and published."""

    batch: B
    records: Sequence[WebhookRecord]  # the batch's records, as applied
    result: BatchResult
    published: Published
    seconds: float  # applying and publishing it, retries included


async def apply_all(
    batches: AsyncIterable[B],
    applier: Applier,
    publisher: Publisher,
    records_of: Callable[[B], Sequence[WebhookRecord]],
) -> AsyncIterator[Done[B]]:
    """Apply and publish every batch, one at a time; yield each once it is done (the
    commands: ``replay``, ``dlq redrive``)."""
    async for batch in batches:
        yield await _apply_one(batch, applier, publisher, records_of)


async def apply_in_order(
    batches: AsyncIterable[B],
    applier: Applier,
    publisher: Publisher,
    records_of: Callable[[B], Sequence[WebhookRecord]],
    done: Callable[[Done[B]], Awaitable[None]],
    *,
    in_flight: int,
) -> None:
    """Apply and publish every batch with up to ``in_flight`` of them at once (the worker's
    agents), and call ``done`` (which acks) for each in the order they were taken.

    The next batches are taken and handed to the applier while the first still waits for
    MySQL or Kafka, each applied in its own transaction (one after another by the worker's
    apply process; side by side in threads without one, as two workers would, which the
    engine's locks make safe, docs/integrity.md). A batch is handed to ``done`` as soon as
    it and every batch before it are done, whether or not more batches come: a batch that
    waited for a later one to be taken would never be acked when the traffic stops, and a
    rebalance waits for every taken record to be acked (it would wait for ever). Never
    before an earlier one, so offsets are acknowledged in order and a crash loses none.
    """
    previous: asyncio.Task[None] | None = None
    running: set[asyncio.Task[None]] = set()
    try:
        async for batch in batches:
            task = asyncio.ensure_future(
                _apply_then(batch, previous, applier, publisher, records_of, done)
            )
            running.add(task)
            task.add_done_callback(running.discard)
            previous = task
            while len(running) >= in_flight:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            if previous.done():
                previous.result()  # a failure (none is expected) stops the loop here
        if previous is not None:
            await previous
    finally:
        for task in running:  # stopped early (shutdown): none left running
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _apply_then(
    batch: B,
    previous: asyncio.Task[None] | None,
    applier: Applier,
    publisher: Publisher,
    records_of: Callable[[B], Sequence[WebhookRecord]],
    done: Callable[[Done[B]], Awaitable[None]],
) -> None:
    finished = await _apply_one(batch, applier, publisher, records_of)
    if previous is not None:
        await previous  # the batches before this one are acked first
    await done(finished)


async def _apply_one(
    batch: B,
    applier: Applier,
    publisher: Publisher,
    records_of: Callable[[B], Sequence[WebhookRecord]],
) -> Done[B]:
    started = time.perf_counter()
    records = records_of(batch)
    epoch = applier.published.epoch
    result = await applier.apply(records)
    published = await publisher.publish(outgoing(result))
    applier.published.remember((s.key for s in result.snapshots), epoch)
    return Done(batch, records, result, published, time.perf_counter() - started)
