"""What a replay republishes: the keys-only bucket functions name exactly the buckets the
counter functions fill, and the consumer's memory of published buckets forgets on a
rebalance, ignores batches that straddle one, and stays bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pipeline.apply.loop import Outgoing, Published, apply_all, records
from pipeline.apply.published import PublishedBuckets
from pipeline.apply.results import BatchResult
from pipeline.dashboard import aggregates
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.records import WebhookRecord

T0 = datetime(2026, 3, 8, 9, 59, 30)  # a DST change in Los Angeles that day
ZONES = st.sampled_from([None, "UTC", "America/Los_Angeles", "Asia/Kathmandu"])
TIMES = st.one_of(
    st.none(), st.integers(-48 * 60, 48 * 60).map(lambda m: T0 + timedelta(minutes=m))
)

calls = st.fixed_dictionaries(
    {
        "company_id": st.sampled_from([None, 1, 2]),
        "branch_id": st.sampled_from([None, 11, 12]),
        "agent_id": st.sampled_from([None, "agent_a"]),
        "direction": st.sampled_from(["inbound", "outbound"]),
        "started_at": TIMES,
        "ended_at": TIMES,
        "last_event_at": TIMES,
        "sentiment": st.sampled_from(["Positive", "odd", None]),
        "successful": st.sampled_from([True, False, 1, 0, None]),
    }
)
appointments = st.fixed_dictionaries(
    {
        "company_id": st.sampled_from([None, 1]),
        "branch_id": st.sampled_from([None, 11]),
        "retell_call_id": st.sampled_from([None, "call_a"]),
        "booked_at": TIMES,
        "cancelled_at": TIMES,
        "rescheduled_at": TIMES,
        "no_show_at": TIMES,
    }
)


@given(calls, st.booleans(), st.booleans(), ZONES)
def test_call_buckets_are_the_buckets_call_counters_fills(
    row: dict, ended: bool, analyzed: bool, zone: str | None
) -> None:
    counted = aggregates.call_counters(row, ended, analyzed, timezone=zone)
    assert set(aggregates.call_buckets(row, ended, analyzed, timezone=zone)) == set(counted)


@given(appointments, ZONES)
def test_appointment_buckets_are_the_buckets_appointment_counters_fills(
    row: dict, zone: str | None
) -> None:
    counted = aggregates.appointment_counters(row, timezone=zone)
    assert aggregates.appointment_buckets(row, timezone=zone) == set(counted)


def key(n: int) -> BucketKey:
    return BucketKey(1, "hour", T0.replace(minute=0, second=0) + timedelta(hours=n))


def test_the_memory_forgets_on_a_rebalance_and_ignores_batches_that_straddle_one() -> None:
    memory = PublishedBuckets()
    memory.remember([key(1), key(2)], memory.epoch)
    assert memory.unpublished([key(1), key(2), key(3)]) == {key(3)}
    started = memory.epoch
    memory.forget()
    memory.remember([key(3)], started)  # read before the rebalance: not remembered
    assert memory.unpublished([key(1), key(3)]) == {key(1), key(3)}


def test_the_memory_is_bounded_and_forgetting_only_costs_republishes() -> None:
    memory = PublishedBuckets(limit=3)
    memory.remember([key(n) for n in range(3)], memory.epoch)
    assert len(memory) == 3
    memory.remember([key(3)], memory.epoch)
    assert len(memory) == 0
    assert memory.unpublished([key(0)]) == {key(0)}


steps = st.lists(
    st.one_of(
        st.tuples(st.just("remember"), st.sets(st.integers(0, 6), max_size=3), st.booleans()),
        st.tuples(st.just("forget"), st.none(), st.none()),
        st.tuples(st.just("tell"), st.none(), st.none()),
        st.tuples(st.just("new reader"), st.none(), st.none()),
    ),
    max_size=25,
)


@given(steps)
def test_a_copy_kept_up_to_date_by_news_knows_exactly_what_its_original_knows(
    script: list[tuple[str, set[int] | None, bool | None]],
) -> None:
    """The apply process's copy (pipeline/apply/process.py): whatever the original went
    through (remembers, stale batches, rebalances, its limit), a copy told the news knows
    the same keys: never one the original forgot, or a republish would be skipped."""
    original = PublishedBuckets(limit=4)
    reader: object = object()
    copy = PublishedBuckets(limit=4)
    for action, numbers, current in script:
        if action == "remember":
            assert numbers is not None
            epoch = original.epoch if current else original.epoch - 1
            original.remember([key(n) for n in numbers], epoch)
        elif action == "forget":
            original.forget()
        elif action == "new reader":  # the apply process died and was replaced
            reader, copy = object(), PublishedBuckets(limit=4)
        else:  # a batch goes to the apply process, with the news since the last one
            copy.receive(original.news(reader))
            assert known(copy) == known(original)
    copy.receive(original.news(reader))
    assert known(copy) == known(original)


def known(memory: PublishedBuckets) -> set[BucketKey]:
    everything = [key(n) for n in range(7)]
    return set(everything) - memory.unpublished(everything)


class FakeApplier:
    """The loop's view of an Applier: a memory, and a batch result per call."""

    def __init__(self, result: BatchResult, rebalance_during_apply: bool = False) -> None:
        self.published = PublishedBuckets()
        self.result = result
        self.rebalance = rebalance_during_apply

    async def apply(self, batch: Sequence[WebhookRecord]) -> BatchResult:
        if self.rebalance:
            self.published.forget()
        return self.result


class FailingPublisher:
    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        raise ConnectionError("kafka away")


class Collecting:
    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        return Published.of(messages)


async def one_batch() -> AsyncIterator[list[WebhookRecord]]:
    yield []


def run(applier: FakeApplier, publisher: object) -> None:
    async def go() -> None:
        async for _ in apply_all(one_batch(), applier, publisher, records):  # type: ignore[arg-type]
            pass

    asyncio.run(go())


def snapshot_result() -> BatchResult:
    return BatchResult(snapshots=[BucketSnapshot(key(0), aggregates.empty_counters(), 3)])


def test_the_loop_remembers_what_it_published_only_after_the_publish() -> None:
    applier = FakeApplier(snapshot_result())
    run(applier, Collecting())
    assert key(0) in applier.published

    failing = FakeApplier(snapshot_result())
    try:
        run(failing, FailingPublisher())
    except ConnectionError:
        pass
    assert key(0) not in failing.published

    straddling = FakeApplier(snapshot_result(), rebalance_during_apply=True)
    run(straddling, Collecting())
    assert key(0) not in straddling.published
