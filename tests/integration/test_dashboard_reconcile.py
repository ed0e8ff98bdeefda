"""``reconcile`` against the real MariaDB and broker, without workers: its locking claims
(a fix never loses or double-counts a batch applied at the same time), what ``--fix``
publishes, ranges and granularities, a timezone change, and the command's failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Engine, select, text, update

from pipeline import database, topics
from pipeline.apply import write
from pipeline.apply.batch import apply_batch
from pipeline.dashboard import drift, reconcile
from pipeline.dashboard.aggregates import BucketKey
from pipeline.models import companies, dashboard_buckets
from pipeline.settings import Settings
from testbed.processes import SWITCHBOARD, free_port
from tests.support.dashboard_story import (
    LA,
    TENANTS,
    Call,
    Story,
    build_story,
    seed_tenants,
    story_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def loaded(stack_settings: Settings) -> Iterator[tuple[Settings, Engine, Story]]:
    engine = database.create_db_engine(stack_settings, pool_size=4)
    seed_tenants(engine)
    story = build_story(datetime.now(UTC).replace(tzinfo=None), seed=11, calls_per_company=6)
    for batch in story.batches():
        apply_batch(engine, batch)
    try:
        yield stack_settings, engine, story
    finally:
        engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scope(**kw: Any) -> drift.Scope:
    now = _now()
    return drift.Scope(
        kw.get("grans", ("hour", "day")),
        kw.get("start"),
        kw.get("end", now + timedelta(days=1)),
        now,
    )


def _run(settings: Settings, engine: Engine, **kw: Any) -> reconcile.Report:
    options = reconcile.Options(
        company_ids=kw.pop("companies", None), scope=kw.pop("scope", _scope()), settle_s=0, **kw
    )
    return reconcile.run(settings, engine, options)


def _row(engine: Engine, key: BucketKey) -> dict | None:
    t = dashboard_buckets
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(t).where(
                    t.c.company_id == key.company_id,
                    t.c.granularity == key.granularity,
                    t.c.bucket_start == key.bucket_start,
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def _corrupt(engine: Engine, key: BucketKey, **values: Any) -> None:
    t = dashboard_buckets
    with engine.begin() as conn:
        conn.execute(
            update(t)
            .where(
                t.c.company_id == key.company_id,
                t.c.granularity == key.granularity,
                t.c.bucket_start == key.bucket_start,
            )
            .values(**values, version=t.c.version + 1)
        )


def _current_hour_key(company_id: int) -> BucketKey:
    return BucketKey(company_id, "hour", _now().replace(minute=0, second=0, microsecond=0))


def _late_call(story: Story, n: int) -> list:
    """A new call of company 1 in the current hour: one batch, as a worker would apply it."""
    at = _now().replace(minute=0, second=1, microsecond=0)
    call = Call(
        f"call_late_{n}",
        LA,
        "inbound",
        "+14155550777",
        at,
        at + timedelta(seconds=40),
        "user_hangup",
        None,
        story.calls[0].cost,
        analyzed=False,
    )
    story.calls.append(call)
    return [story_record("retell", body, when, 10_000 + n) for body, when in call.bodies()]


def test_a_clean_load_has_no_drift(loaded: tuple[Settings, Engine, Story]) -> None:
    settings, engine, _ = loaded
    report = _run(settings, engine)
    assert report.ok and not report.drift_found
    assert [c.company_id for c in report.companies] == [t.company_id for t in TENANTS]
    assert all(c.buckets > 0 and c.api is None for c in report.companies)


def test_fix_waits_for_a_batch_in_flight_and_counts_it_once(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    """The batch holds its rows when the fix starts: the fix waits, then sees it."""
    settings, engine, story = loaded
    key = _current_hour_key(LA.company_id)
    _corrupt(engine, key, calls_total=dashboard_buckets.c.calls_total + 9)
    batch = _late_call(story, 1)
    started = threading.Event()
    release = threading.Event()
    real_add = write.add_to_buckets

    def slow_add(*args: Any, **kwargs: Any) -> Any:
        out = real_add(*args, **kwargs)  # bucket rows now locked by the batch
        started.set()
        release.wait(10)
        return out

    write.add_to_buckets, restore = slow_add, write.add_to_buckets  # type: ignore[assignment]
    try:
        applier = threading.Thread(target=apply_batch, args=(engine, batch))
        applier.start()
        assert started.wait(10)
        results: dict[str, int] = {}
        fixer = threading.Thread(
            target=lambda: results.update(
                n=reconcile.rewrite_company(engine, LA.company_id, LA.timezone, _scope(), _now())
            )
        )
        fixer.start()
        time.sleep(0.8)
        assert fixer.is_alive(), "the fix must wait for the batch's bucket locks"
        release.set()
        applier.join(20)
        fixer.join(20)
    finally:
        write.add_to_buckets = restore  # type: ignore[assignment]
        release.set()
    assert results["n"] == 1  # only the corrupted row
    expected = story.expected()[(key.company_id, key.granularity, key.bucket_start)]
    assert _row(engine, key)["calls_total"] == expected["calls_total"]
    assert _run(settings, engine).ok


def test_a_batch_arriving_during_the_fix_adds_on_top_of_true_values(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    """The fix holds the range when the batch comes: the batch waits, then adds its delta."""
    settings, engine, story = loaded
    key = _current_hour_key(LA.company_id)
    _corrupt(engine, key, calls_total=dashboard_buckets.c.calls_total + 9)
    batch = _late_call(story, 2)
    real_truth = reconcile.read_truth
    done: dict[str, Any] = {}

    def truth_after_the_batch_is_waiting(*args: Any, **kwargs: Any) -> Any:
        # The range is locked; start the batch now and give it time to block on it.
        applier = threading.Thread(target=lambda: done.update(result=apply_batch(engine, batch)))
        applier.start()
        done["thread"] = applier
        time.sleep(1.0)
        assert applier.is_alive(), "the batch must wait for the fix's lock"
        return real_truth(*args, **kwargs)

    reconcile.read_truth = truth_after_the_batch_is_waiting  # type: ignore[assignment]
    try:
        rewritten = reconcile.rewrite_company(engine, LA.company_id, LA.timezone, _scope(), _now())
    finally:
        reconcile.read_truth = real_truth  # type: ignore[assignment]
    done["thread"].join(30)
    assert rewritten == 1
    assert {o.status for o in done["result"].outcomes} == {"applied"}
    expected = story.expected()[(key.company_id, key.granularity, key.bucket_start)]
    row = _row(engine, key)
    assert row["calls_total"] == expected["calls_total"]  # the late call counted once
    assert _run(settings, engine).ok


def test_fix_publishes_every_bucket_of_the_range_forced(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    settings, engine, _ = loaded
    start = _now() - timedelta(days=2)
    scope = _scope(start=start)
    report = _run(settings, engine, companies=[2], scope=scope, fix=True)
    assert report.ok
    entry = report.companies[0]
    tz = TENANTS[1].timezone
    in_range = {BucketKey(2, g, s) for g in ("hour", "day") for s in scope.bucket_starts(g, tz)}
    messages = asyncio.run(_read_snapshots(settings))
    assert {m["key"] for m in messages} == {b"2"}
    # Breakdown entries are reset first (branch and agent of every bucket in range), then
    # their groups are published like the company's buckets.
    resets = [m for m in messages if m["value"].get("reset")]
    assert len(resets) == 2 * len(in_range)
    groups = [m for m in messages if m["value"].get("dimension") and not m["value"].get("reset")]
    assert groups and all(m["value"]["force"] and m["value"]["version"] > 0 for m in groups)
    messages = [m for m in messages if not m["value"].get("dimension")]
    assert entry.published - len(groups) + entry.tombstones == len(in_range)
    seen = {
        BucketKey(2, m["value"]["granularity"], datetime.fromisoformat(m["value"]["bucket_start"]))
        for m in messages
    }
    assert seen == in_range
    assert all(m["value"]["force"] for m in messages)
    stones = [m for m in messages if m["value"]["version"] == 0]
    assert len(stones) == entry.tombstones
    assert all(not any(float(v) for v in m["value"]["counters"].values()) for m in stones)
    # Published values are the rows' values and versions.
    with_rows = [m for m in messages if m["value"]["version"] > 0]
    for m in with_rows[:20]:
        key = BucketKey(
            2, m["value"]["granularity"], datetime.fromisoformat(m["value"]["bucket_start"])
        )
        row = _row(engine, key)
        assert row is not None and row["version"] == m["value"]["version"]
        assert m["value"]["counters"]["calls_total"] == row["calls_total"]


async def _read_snapshots(settings: Settings) -> list[dict]:
    topic = settings.topic(topics.SNAPSHOTS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out += [{"key": r.key, "value": orjson.loads(r.value)} for r in records]
        return out
    finally:
        await consumer.stop()


def test_a_redelivered_batch_republishes_the_buckets_it_touched(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    _, engine, story = loaded
    batch = _late_call(story, 3)
    first = apply_batch(engine, batch)
    assert first.snapshots  # ... lost: the worker died before Faust flushed its producer
    again = apply_batch(engine, batch)  # the redelivery, since no offset was committed
    assert {o.status for o in again.outcomes} == {"already_applied"}
    assert {s.key for s in again.snapshots} == {s.key for s in first.snapshots}


def test_ranges_and_granularities_limit_what_is_checked_and_fixed(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    settings, engine, story = loaded
    recent = _current_hour_key(LA.company_id)
    old_day = next(
        BucketKey(*k)
        for k in sorted(story.expected())
        if k[0] == LA.company_id
        and k[1] == "day"
        and _now() - timedelta(days=30) < k[2] < _now() - timedelta(days=5)
    )
    _corrupt(engine, recent, calls_total=99)
    _corrupt(engine, old_day, appointments_booked=42)
    # Only the last day, hours only: the old day bucket is out of scope.
    narrow = _scope(start=_now() - timedelta(days=1), grans=("hour",))
    report = _run(settings, engine, companies=[LA.company_id], scope=narrow)
    assert {d.key for d in report.companies[0].mysql} == {recent}
    days = _scope(grans=("day",))
    report = _run(settings, engine, companies=[LA.company_id], scope=days)
    assert {d.key for d in report.companies[0].mysql} == {old_day}
    report = _run(settings, engine, companies=[LA.company_id], scope=days, fix=True)
    assert report.ok and report.companies[0].rewritten == 1
    assert _row(engine, recent)["calls_total"] == 99  # outside the fixed scope: untouched
    assert not _run(settings, engine).ok


def test_a_timezone_change_rebuckets_the_days_with_fix(
    loaded: tuple[Settings, Engine, Story],
) -> None:
    settings, engine, _ = loaded
    with engine.begin() as conn:
        conn.execute(update(companies).where(companies.c.id == 4).values(timezone="Asia/Tokyo"))
    report = _run(settings, engine, companies=[4])
    drifting = {d.key for d in report.companies[0].mysql}
    assert drifting and all(k.granularity == "day" for k in drifting)
    assert any(k.bucket_start.hour == 15 for k in drifting)  # Tokyo midnight is 15:00Z
    fixed = _run(settings, engine, companies=[4], fix=True)
    assert fixed.ok
    with engine.connect() as conn:
        live = (
            conn.execute(
                text(
                    "SELECT bucket_start FROM dashboard_buckets WHERE company_id = 4 AND granularity"
                    " = 'day' AND calls_total + appointments_booked + appointments_cancelled"
                    " + appointments_rescheduled + appointments_no_show + sentiment_neutral"
                    " + sentiment_positive + sentiment_negative + calls_successful > 0"
                    " AND bucket_start > :floor"
                ),
                {"floor": _now() - timedelta(days=400)},
            )
            .scalars()
            .all()
        )
    assert live and all(start.hour == 15 for start in live)


# --- the command ----------------------------------------------------------------------------


def _cli(settings: Settings, *args: str, **env_over: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_DATABASE_URL=settings.database_url.reveal(),
        SWITCHBOARD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SWITCHBOARD_TOPIC_PREFIX=settings.topic_prefix,
        SWITCHBOARD_TOPIC_PARTITIONS=str(settings.topic_partitions),
    )
    env.update(env_over)
    return subprocess.run(
        [SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_command_failures_are_one_line(loaded: tuple[Settings, Engine, Story]) -> None:
    settings, engine, _ = loaded
    usage = _cli(settings, "reconcile")
    assert usage.returncode == 2 and "--company" in usage.stderr
    both = _cli(settings, "reconcile", "--all", "--company", "1")
    assert both.returncode == 2
    unknown = _cli(settings, "reconcile", "--company", "77")
    assert (
        unknown.returncode == 1
        and unknown.stderr.strip() == "switchboard: unknown company id(s): 77"
    )
    bad_range = _cli(settings, "reconcile", "--all", "--from", "2026-11-02", "--to", "2026-11-01")
    assert bad_range.returncode == 2 and "--from" in bad_range.stderr
    not_iso = _cli(settings, "reconcile", "--all", "--from", "last tuesday")
    assert not_iso.returncode == 2
    no_token = _cli(settings, "reconcile", "--all", "--worker-url", "http://127.0.0.1:1")
    assert no_token.returncode == 2 and "token" in no_token.stderr
    down_db = settings.database_url.reveal().replace(":3306/", f":{free_port()}/")
    db = _cli(settings, "reconcile", "--all", SWITCHBOARD_DATABASE_URL=down_db)
    assert db.returncode == 1 and db.stderr.count("\n") == 1 and "MySQL unreachable" in db.stderr
    assert "switchboard:switchboard" not in db.stderr  # no password
    key = _current_hour_key(LA.company_id)
    _corrupt(engine, key, calls_total=55)
    no_kafka = _cli(
        settings,
        "reconcile",
        "--all",
        "--fix",
        SWITCHBOARD_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    )
    assert no_kafka.returncode == 1 and "nothing was changed" in no_kafka.stderr
    assert no_kafka.stderr.count("\n") == 1
    assert _row(engine, key)["calls_total"] == 55
    found = _cli(settings, "reconcile", "--all")
    assert found.returncode == 1 and "DRIFT" in found.stdout
    fixed = _cli(settings, "reconcile", "--all", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "after the fix: no drift (MySQL agrees with the recount)" in fixed.stdout
    assert _cli(settings, "reconcile", "--company", "1", "--company", "3").returncode == 0
