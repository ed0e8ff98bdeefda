"""Record batches the ingress builds itself: one open batch per partition, handed to the
producer whole (aiokafka's ``create_batch`` / ``send_batch``).

Why: ``AIOKafkaProducer.send()`` costs a few tens of microseconds of Python per record
(a metadata wait, a size estimate, a partition lookup, a future and a ``RecordMetadata``
per record, and a coroutine around it all), and a request that waits with
``asyncio.timeout`` arms a timer of its own. Here a record is appended to its partition's
open batch (the C record builder) and its request waits on one plain future; a batch has
one linger timer and one deadline timer, whatever the number of records in it.

docs/architecture.md, invariant 1, holds per record:

* A record's future resolves only when the broker acknowledged (``acks=all``, idempotent
  producer) the batch that carries it; its result is the record's offset.
* If that batch fails (any error of ``send_batch`` or of the produce request) every record
  of it gets the error; if it is not acknowledged within ``deadline_s`` of its first
  record, every record still waiting gets :class:`TimeoutError`. Either way the hand-off
  then spools the record, and a late acknowledgement only makes a duplicate, which the
  workers drop.
* A batch takes new records for at most ``join_window_s`` after its first one, so every
  record has at least ``deadline_s - join_window_s`` to be acknowledged.

Order: one flusher hands the batches to the producer, each partition's in the order they
were opened, and the partition of a key is the one ``send()`` would choose (murmur2 of the
key, as aiokafka's ``DefaultPartitioner`` and the Java client compute it), so a key's records
stay in order on one partition whichever path they take.

Flushing: one linger timer for all partitions (``linger_s`` after the first record that found
the flusher idle); the flusher then hands over every partition's batches, round after round
while records keep arriving (``send_batch`` waits while a partition's previous batch is still
queued in the producer, and records that arrive meanwhile fill the next batch, so batches
grow with the load). A full batch starts the flusher at once.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

Headers = Sequence[tuple[str, bytes]]


def murmur2(data: bytes, _unpack: Any = struct.unpack_from) -> int:
    """Kafka's murmur2 of ``data``, equal to ``aiokafka.partitioner.murmur2`` (tested) at
    about half its cost: the 4-byte words are unpacked in one call."""
    m = 0x5BD1E995
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in _unpack(f"<{words}I", data) if words else ():
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra, tail = length & 3, length & ~3
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


class _Batch:
    """One record batch of one partition and the futures of the requests waiting on it."""

    __slots__ = ("builder", "waiters", "opened", "expiry")

    def __init__(self, builder: Any, opened: float) -> None:
        self.builder = builder
        self.waiters: list[tuple[asyncio.Future[int], int]] = []  # (future, relative offset)
        self.opened = opened
        self.expiry: asyncio.TimerHandle | None = None


class _Partition:
    """The batches of one topic-partition not yet handed to the producer, oldest first
    (only the last may still take records)."""

    __slots__ = ("topic", "partition", "batches")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: deque[_Batch] = deque()


class RecordBatches:
    """Appends records to per-partition batches of one producer; see the module doc."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        linger_s: float,
        deadline_s: float,
        max_record_bytes: int,
        join_window_s: float | None = None,
    ) -> None:
        self._producer = producer
        self._linger_s = linger_s
        self._deadline_s = deadline_s
        self._join_s = deadline_s / 4 if join_window_s is None else join_window_s
        self._max_record_bytes = max_record_bytes
        self._topics: dict[str, list[int]] = {}  # topic -> all partitions, sorted
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._due: dict[_Partition, None] = {}  # partitions with batches, in arrival order
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._closed: BaseException | None = None

    @property
    def pending(self) -> int:
        """Records appended and not yet handed to the producer, acknowledged or failed."""
        return sum(
            sum(1 for w, _ in b.waiters if not w.done())
            for part in self._parts.values()
            for b in part.batches
        )

    async def add(self, topic: str, key: bytes, value: bytes, headers: Headers) -> tuple[int, int]:
        """Append one record; return its partition and offset once its batch is
        acknowledged. Raises the batch's error, :class:`TimeoutError` past the deadline, or
        ``MessageSizeTooLargeError`` for a record no batch can carry."""
        if self._closed is not None:
            raise copy.copy(self._closed)
        partitions = self._topics.get(topic)
        if partitions is None:
            partitions = await self._load_partitions(topic)
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        part = self._parts.get((topic, partition))
        if part is None:
            part = self._parts[(topic, partition)] = _Partition(topic, partition)
        future: asyncio.Future[int] = self._loop.create_future()
        self._append(part, key, value, headers, future)
        if self._flusher is None and self._timer is None:
            self._timer = self._loop.call_later(self._linger_s, self._start_flush)
        return partition, await future

    def _append(
        self,
        part: _Partition,
        key: bytes,
        value: bytes,
        headers: Headers,
        future: asyncio.Future[int],
    ) -> None:
        now = self._loop.time()
        batch = part.batches[-1] if part.batches else None
        if batch is not None and batch.opened + self._join_s < now:
            batch.builder.close()  # old enough: later records get a fresh deadline
        meta = (
            None
            if batch is None
            else batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        )
        if meta is None:  # no open batch, or the open one is full or closed
            if len(value) + len(key) > self._max_record_bytes:
                raise MessageSizeTooLargeError(f"the record is {len(value)} bytes")
            full = batch is not None
            batch = self._open(part, now)
            meta = batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
            if meta is None:  # larger than an empty batch may be
                part.batches.pop()
                self._cancel(batch)
                raise MessageSizeTooLargeError(f"the record is {len(value)} bytes")
            if full and self._flusher is None:  # a full batch does not wait for the linger
                self._start_flush()
        assert batch is not None
        batch.waiters.append((future, meta.offset))

    def _open(self, part: _Partition, now: float) -> _Batch:
        batch = _Batch(self._producer.create_batch(), now)
        batch.expiry = self._loop.call_later(self._deadline_s, self._expire, batch)
        part.batches.append(batch)
        self._due[part] = None
        return batch

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is None and self._due and self._closed is None:
            self._flusher = self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Hand every due partition's batches to the producer, round after round until none
        is left; a partition gets the batches it had when its turn came, so a busy one
        cannot hold the others back."""
        try:
            while self._due:
                due, self._due = self._due, {}
                for part in due:
                    for _ in range(len(part.batches)):
                        await self._hand_over(part, part.batches.popleft())
                    if part.batches:
                        self._due[part] = None
        finally:
            self._flusher = None

    async def _hand_over(self, part: _Partition, batch: _Batch) -> None:
        batch.builder.close()
        if all(w.done() for w, _ in batch.waiters):
            self._cancel(batch)  # every record already timed out to the spool
            return
        try:
            acked = await self._producer.send_batch(
                batch.builder, part.topic, partition=part.partition
            )
        except (KafkaError, OSError, RuntimeError) as exc:
            self._settle(batch, exc)
            return
        except BaseException as exc:  # cancelled at close: fail, then re-raise
            self._settle(batch, KafkaError(f"not sent: {type(exc).__name__}"))
            raise
        acked.add_done_callback(functools.partial(self._acked, batch))

    def _acked(self, batch: _Batch, acked: asyncio.Future[Any]) -> None:
        if acked.cancelled():
            self._settle(batch, KafkaError("batch cancelled"))
            return
        error = acked.exception()
        self._settle(batch, error if error is not None else acked.result().offset)

    def _settle(self, batch: _Batch, outcome: int | BaseException) -> None:
        """Resolve every still-waiting record of ``batch``: its offset, or the error."""
        self._cancel(batch)
        if isinstance(outcome, BaseException):
            for waiter, _ in batch.waiters:
                if not waiter.done():
                    # a copy each: one exception object raised in many tasks would chain
                    # every task's traceback onto it
                    waiter.set_exception(copy.copy(outcome))
            return
        for waiter, relative in batch.waiters:
            if not waiter.done():
                waiter.set_result(outcome + relative)

    @staticmethod
    def _expire(batch: _Batch) -> None:
        batch.expiry = None
        batch.builder.close()
        for waiter, _ in batch.waiters:
            if not waiter.done():
                waiter.set_exception(TimeoutError())

    @staticmethod
    def _cancel(batch: _Batch) -> None:
        if batch.expiry is not None:
            batch.expiry.cancel()
            batch.expiry = None

    async def _load_partitions(self, topic: str) -> list[int]:
        """The topic's partitions, waiting for metadata the first time (bounded by the
        producer's own metadata timeout)."""
        found = await self._producer.partitions_for(topic)
        partitions = sorted(found)
        self._topics[topic] = partitions
        return partitions

    def refresh_partitions(self) -> None:
        """Pick up partitions added to a topic (called with the producer's health probe)."""
        cluster = self._producer.client.cluster
        for topic in list(self._topics):
            found = cluster.partitions_for_topic(topic)
            if found:
                self._topics[topic] = sorted(found)

    def fail_all(self, error: BaseException) -> None:
        """Fail every record not yet handed to the producer (the producer is being replaced
        or closed) and refuse new ones; batches already handed over settle through their
        own futures."""
        self._closed = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flusher is not None:
            self._flusher.cancel()
        self._due.clear()
        for part in self._parts.values():
            while part.batches:
                self._settle(part.batches.popleft(), error)

    async def flush(self, timeout_s: float) -> None:
        """Hand every batch to the producer now and wait (bounded) until that is done: the
        first half of a clean close (the producer's ``stop()`` waits for the acks)."""
        self._start_flush()
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=timeout_s)
