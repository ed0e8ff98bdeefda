"""Faust's Kafka consumer, made to rewind every webhook partition after a rebalance.

Faust drops records it has already taken from aiokafka in two places: ``Consumer.getmany``
stops yielding when the flow stops or the generation changes mid-batch (a rebalance), and
the records left in that batch are gone. aiokafka's position has moved past them. Faust
relies on its "seek to the committed offsets" after every rebalance to read them again,
and aiokafka's ``seek_to_committed`` moves only partitions whose committed offset is
above 0. A partition the group has never committed keeps the position the fetcher left
it at, past the dropped records, and nobody reads them again.

That is the quiet partition of a worker that died: records that arrived after the worker
died and before the rebalance moved its partitions are fetched by the survivor while the
rebalance finishes, dropped, and never applied (``tests/faults/test_quiet_takeover.py``).

:func:`seek_to_committed` sends each stream partition without a committed offset back to
the beginning of its log, as a consumer with no committed offset and
``auto_offset_reset=earliest`` starts there. Records read twice are harmless: the workers
deduplicate by provider and event id. Changelog partitions are left to table recovery,
which positions them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


async def seek_to_committed(
    consumer: AIOKafkaConsumer, rewinds: Callable[[TopicPartition], bool]
) -> dict[TopicPartition, int | None]:
    """Every assigned partition to its committed offset, and each one with none for which
    ``rewinds`` is true to the beginning of its log. Returns the committed offsets."""
    committed: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        committed[tp] = offset = await consumer.committed(tp)
        if offset is not None:
            consumer.seek(tp, offset)
    unanchored = [tp for tp, offset in committed.items() if offset is None and rewinds(tp)]
    if unanchored:
        # The start offsets, then a plain seek: never a moment without a position, which
        # seek_to_beginning leaves until its reset is done, and Faust's livelock detector
        # reads a partition's position from the other thread, asserting there is one.
        for tp, start in (await consumer.beginning_offsets(unanchored)).items():
            consumer.seek(tp, start)
    return committed


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with :func:`seek_to_committed`."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        thread = self._thread
        committed: Any = await thread.call_thread(
            seek_to_committed, thread._ensure_consumer(), self._rewinds
        )
        return committed  # type: ignore[no-any-return]

    def _rewinds(self, tp: TopicPartition) -> bool:
        return not self._is_changelog_tp(tp)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
