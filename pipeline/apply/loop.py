"""The one apply-and-publish loop: the worker's agents, ``replay``, ``dlq redrive`` and the
tests' stand-in for the worker all run :func:`apply_all`.

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
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
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
    *,
    in_flight: int = 1,
) -> AsyncIterator[Done[B]]:
    """Apply and publish every batch; yield each once it is done, in the order given.

    ``in_flight`` > 1 (the worker): the next batches are taken and applied while the first
    still waits for MySQL or Kafka, each in its own transaction, as two workers would
    apply them side by side (the engine's locks make that safe, docs/integrity.md); but
    a batch is yielded (and so acked) only after every batch before it, so offsets are
    still acknowledged in order and a crash loses none.
    """
    pending: deque[asyncio.Task[Done[B]]] = deque()
    try:
        async for batch in batches:
            pending.append(asyncio.ensure_future(_apply_one(batch, applier, publisher, records_of)))
            if len(pending) >= in_flight:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:  # stopped early (a rebalance, shutdown): none left running
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


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
