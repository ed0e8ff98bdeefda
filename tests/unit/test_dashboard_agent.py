"""The dashboard agent driven through Faust's ``test_context`` (memory store): highest
version wins whatever the order, a forced snapshot replaces, a forced tombstone drops the
bucket; and the table's keys route like the snapshot topic's (table_route)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents.worker import build_worker
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, empty_counters
from pipeline.dashboard.drift import tombstone
from pipeline.dashboard.snapshots import FORMAT, bundles, company_key, encode, table_key
from pipeline.settings import Settings

KEY = BucketKey(7, "hour", datetime(2026, 11, 28, 15))


def snap(version: int, calls: int, key: BucketKey = KEY) -> BucketSnapshot:
    counters: dict[str, Any] = empty_counters()
    counters["calls_total"] = calls
    return BucketSnapshot(key, counters, version)


async def feed(messages: list[bytes]) -> dict[str, Any]:
    worker = build_worker(Settings(topic_partitions=3), store="memory://")
    app = worker.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    table = worker.table
    # The changelog needs a running producer; the agent's decisions are what we test.
    with mock.patch.object(type(table), "_send_changelog", lambda *a, **k: None):
        agent = app.agents["dashboard-snapshots"]
        async with agent.test_context() as ctx:
            for value in messages:
                await ctx.put(value, key=company_key(KEY.company_id))
            await asyncio.sleep(0.05)
        return {k: table.get(k) for k in list(table.keys())}


def test_highest_version_wins_in_any_order() -> None:
    stored = asyncio.run(feed([encode(snap(3, 30)), encode(snap(1, 10)), encode(snap(2, 20))]))
    assert stored[table_key(KEY)]["v"] == 3
    assert stored[table_key(KEY)]["c"]["calls_total"] == 30


def test_force_replaces_a_higher_version() -> None:
    messages = [encode(snap(9, 90)), encode(snap(4, 40), force=True), encode(snap(5, 50))]
    stored = asyncio.run(feed(messages))
    assert stored[table_key(KEY)]["v"] == 5  # forced to 4, then a newer 5 is taken again


def test_forced_tombstone_drops_the_bucket_and_an_unforced_one_is_stale() -> None:
    other = BucketKey(7, "day", datetime(2026, 11, 28, 8))
    messages = [
        encode(snap(3, 30)),
        encode(snap(2, 20, other)),
        encode(tombstone(KEY), force=True),
        encode(tombstone(other)),  # not forced: version 0 is simply stale
    ]
    stored = asyncio.run(feed(messages))
    assert table_key(KEY) not in stored
    assert stored[table_key(other)]["v"] == 2


def test_a_bundle_keeps_each_of_its_buckets_and_a_newer_format_is_refused() -> None:
    other = BucketKey(7, "day", datetime(2026, 11, 28))
    branch = KEY.in_group("branch", 12)
    [(_, bundle, _)] = bundles([snap(3, 30), snap(2, 20, other), snap(1, 5, branch)])
    newer = orjson.dumps({**orjson.loads(bundle), "format": FORMAT + 1})
    stored = asyncio.run(feed([encode(snap(4, 40)), bundle, newer]))
    assert stored[table_key(KEY)]["v"] == 4  # the bundle's version 3 is stale
    assert stored[table_key(other)]["c"]["calls_total"] == 20
    assert stored[table_key(branch)]["g"]["12"]["v"] == 1
    assert len(stored) == 3  # the newer format changed nothing


@pytest.mark.parametrize("company_id", [1, 2, 3, 4, 17, 123, 98765])
def test_table_route_hashes_company_ids_like_the_snapshot_topic(company_id: int) -> None:
    """table_route picks the worker by the changelog's serialized route key; the snapshots
    that fill the table are keyed by ``company_key``: both must be the same bytes, or a
    company's requests go to a worker that does not hold its buckets."""
    worker = build_worker(Settings(topic_partitions=3), store="memory://")
    changelog = worker.table.changelog_topic
    routed = changelog.prepare_key(str(company_id), None)[0]
    assert routed == company_key(company_id)
    partitions = list(range(12))
    partitioner = DefaultPartitioner()
    assert partitioner(routed, partitions, partitions) == partitioner(
        company_key(company_id), partitions, partitions
    )


def test_an_expire_message_drops_only_that_companys_buckets_past_retention() -> None:
    from pipeline.dashboard.snapshots import expire_message

    now = datetime(2026, 11, 28, 16)
    old_hour = BucketKey(7, "hour", now - timedelta(days=14, hours=1))
    kept_hour = BucketKey(7, "hour", now - timedelta(days=13))
    old_day = BucketKey(7, "day", now - timedelta(days=401))
    other = BucketKey(8, "hour", now - timedelta(days=20))  # another company: not asked
    messages = [encode(snap(1, 1, k)) for k in (old_hour, kept_hour, old_day, other)]
    messages.append(expire_message(now))
    stored = asyncio.run(feed(messages))
    assert set(stored) == {table_key(kept_hour), table_key(other)}
