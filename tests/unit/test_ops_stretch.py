"""Reading a stretch never stops short in silence: empty fetches are retried, gaps in the
offsets (transaction markers, compaction) are stepped over, and a partition that makes no
progress fails loudly. Driven with a fake consumer: no broker needed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from pipeline import kafka_reader
from pipeline.errors import KafkaUnavailable
from pipeline.kafka_reader import Stretch
from pipeline.ops import stretch
from pipeline.settings import Settings


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None = b"k"
    value: bytes = b"{}"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


class FakeConsumer:
    """One partition of topic ``t`` holding ``offsets``; fetches return nothing
    ``empty_fetches`` times first (a slow or restarting broker)."""

    def __init__(self, offsets: Iterable[int], end: int, *, empty_fetches: int = 0) -> None:
        self.offsets = sorted(offsets)
        self.end = end
        self.empty_fetches = empty_fetches
        self.next = 0
        self.stopped = False

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic == "t" else None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def assignment(self) -> set[TopicPartition]:
        return set(getattr(self, "assigned", []))

    def pause(self, *tps: TopicPartition) -> None:
        pass

    def resume(self, *tps: TopicPartition) -> None:
        pass

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.next = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.next

    async def getmany(
        self, tp: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Message]]:
        if self.empty_fetches > 0:
            self.empty_fetches -= 1
            return {}
        found = [o for o in self.offsets if o >= self.next][:max_records]
        if not found:
            # Like the real fetcher: past records that are not messages, the position moves.
            self.next = self.end
            return {}
        self.next = found[-1] + 1
        return {tp: [Message("t", 0, o) for o in found]}

    async def stop(self) -> None:
        self.stopped = True


def _install(monkeypatch: pytest.MonkeyPatch, consumer: FakeConsumer) -> None:
    async def start(c: Any, bootstrap: str) -> None:
        return None

    monkeypatch.setattr(kafka_reader, "_consumer", lambda bootstrap: consumer)
    monkeypatch.setattr(kafka_reader, "_start", start)


async def _offsets(stretch_: Stretch, batch_size: int = 500) -> list[int]:
    out = []
    async for batch in stretch.read_stretch(Settings(), "t", stretch_, batch_size=batch_size):
        out += [r.offset for r in batch]
    return out


async def test_empty_fetches_are_retried_not_taken_for_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = FakeConsumer(range(10), 10, empty_fetches=3)
    _install(monkeypatch, consumer)
    assert await _offsets(Stretch(from_offset=0), batch_size=4) == list(range(10))
    assert consumer.stopped


async def test_gaps_at_the_end_of_the_stretch_are_stepped_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Offsets 5 and 6 hold transaction markers: no message, but the position moves on.
    consumer = FakeConsumer([0, 1, 2, 3, 4], 7)
    _install(monkeypatch, consumer)
    assert await _offsets(Stretch(from_offset=2, to_offset=6)) == [2, 3, 4]


async def test_a_partition_without_progress_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(range(10), 10, empty_fetches=10**9)
    _install(monkeypatch, consumer)
    monkeypatch.setattr(stretch, "STALL_S", 0.05)
    with pytest.raises(KafkaUnavailable, match="stalled at offset 0 .the stretch ends at 9."):
        await _offsets(Stretch(from_offset=0))
    assert consumer.stopped


async def test_unknown_topic_and_absent_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(range(3), 3)
    _install(monkeypatch, consumer)

    class Client:
        async def force_metadata_update(self) -> bool:
            return True

    consumer._client = Client()  # type: ignore[attr-defined]
    with pytest.raises(KafkaUnavailable, match="topic nope does not exist"):
        async for _ in stretch.read_stretch(Settings(), "nope", Stretch(from_offset=0)):
            pass
    got = [b async for b in stretch.read_stretch(Settings(), "t", Stretch(from_offset=0), [5])]
    assert got == []


async def test_records_deleted_under_the_reader_fail_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiokafka.errors import OffsetOutOfRangeError

    from pipeline.ops import RecordsGone

    consumer = FakeConsumer(range(10), 10)

    async def gone(tp: TopicPartition, timeout_ms: int, max_records: int) -> Any:
        raise OffsetOutOfRangeError({tp: 0})

    consumer.getmany = gone  # type: ignore[method-assign]
    _install(monkeypatch, consumer)
    with pytest.raises(RecordsGone, match="t partition 0: offset 0 is gone") as caught:
        await _offsets(Stretch(from_offset=0))
    assert "\n" not in str(caught.value) and consumer.stopped


class StrictConsumer:
    """Several partitions of topic ``t``, some empty; checks aiokafka's rule at every await:
    every assigned partition has a position, and the assignment is made once (a partition
    without a position, or a second assignment just before ``stop()``, hangs the real
    consumer's ``stop()`` forever)."""

    def __init__(self, held: dict[int, list[int]]) -> None:
        self.held = held
        self.assigned: list[TopicPartition] = []
        self.assignments = 0
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.fetched_from: list[int] = []
        self.stopped = False

    def _check(self) -> None:
        missing = [tp for tp in self.assigned if tp not in self.positions]
        assert not missing, f"assigned without a position at an await: {missing}"

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.held) if topic == "t" else None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assignments += 1
        self.assigned = list(tps)
        self.positions = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp in self.assigned
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._check()
        return {tp: 0 for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._check()
        return {tp: (max(self.held[tp.partition], default=-1) + 1) for tp in tps}

    async def offsets_for_times(self, wanted: dict[TopicPartition, int]) -> dict[Any, Any]:
        self._check()
        return {tp: None for tp in wanted}

    async def position(self, tp: TopicPartition) -> int:
        self._check()
        return self.positions[tp]

    async def getmany(
        self, tp: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Message]]:
        self._check()
        assert tp not in self.paused, f"read from paused {tp}"
        assert set(self.assigned) - self.paused == {tp}, "the fetcher works elsewhere"
        self.fetched_from.append(tp.partition)
        start = self.positions[tp]
        found = [o for o in self.held[tp.partition] if o >= start][:max_records]
        if found:
            self.positions[tp] = found[-1] + 1
        return {tp: [Message("t", tp.partition, o) for o in found]} if found else {}

    async def stop(self) -> None:
        self._check()
        self.stopped = True


@pytest.mark.parametrize(
    "partitions",
    [None, [0, 1], [1, 2], [2, 3], [4, 5], [0, 5]],
    ids=["all", "empty-first", "empty-last", "empty-between", "only-empty", "ends"],
)
async def test_empty_partitions_are_never_assigned_and_the_assignment_is_made_once(
    monkeypatch: pytest.MonkeyPatch, partitions: list[int] | None
) -> None:
    # 0 empty before, 1 and 3 hold records, 2 between, 4 and 5 after.
    held = {0: [], 1: [0, 1, 2], 2: [], 3: [0, 1], 4: [], 5: []}
    consumer = StrictConsumer(held)
    monkeypatch.setattr(kafka_reader, "_consumer", lambda bootstrap: consumer)

    async def start(c: Any, bootstrap: str) -> None:
        return None

    monkeypatch.setattr(kafka_reader, "_start", start)
    got = []
    async for batch in stretch.read_stretch(Settings(), "t", Stretch(from_offset=0), partitions):
        got += [(r.partition, r.offset) for r in batch]
    chosen = sorted(held) if partitions is None else partitions
    assert got == [(p, o) for p in chosen for o in held[p]]
    assert consumer.assignments == (1 if got else 0)
    assert {tp.partition for tp in consumer.assigned} == {p for p, _ in got}
    assert consumer.stopped


async def test_fetch_assigns_only_readable_partitions_each_at_a_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.kafka_reader import Coordinates, fetch

    consumer = StrictConsumer({0: [], 1: [0, 1, 2], 2: [5]})
    monkeypatch.setattr(kafka_reader, "_consumer", lambda bootstrap: consumer)

    async def start(c: Any, bootstrap: str) -> None:
        return None

    monkeypatch.setattr(kafka_reader, "_start", start)
    wanted = [Coordinates("t", 0, 0), Coordinates("t", 1, 2), Coordinates("t", 1, 9)]
    wanted += [Coordinates("t", 1, 0), Coordinates("t", 2, 5)]
    found = await fetch(Settings(), wanted)
    assert [(r.partition, r.offset) for r in found] == [(1, 0), (1, 2), (2, 5)]
    assert consumer.assignments == 1 and consumer.stopped
    assert {tp.partition for tp in consumer.assigned} == {1, 2}


def test_a_stretch_reader_does_not_long_poll_and_fetches_a_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stretch's records are on the broker already. With aiokafka's default long poll
    (fetch_max_wait_ms 500) every partition resumed in turn waited for the fetch in flight:
    a replay of a short window over 12 partitions spent 6 s waiting. And a batch of 500
    records of a few KiB must fit one fetch of a partition (the default is 1 MiB)."""
    seen: dict[str, Any] = {}

    def consumer(**options: Any) -> object:
        seen.update(options)
        return object()

    monkeypatch.setattr(kafka_reader, "AIOKafkaConsumer", consumer)
    kafka_reader._consumer(Settings())
    assert seen["fetch_max_wait_ms"] <= 50
    assert seen["max_partition_fetch_bytes"] >= 500 * 8 * 1024
    assert seen["group_id"] is None and seen["isolation_level"] == "read_committed"
