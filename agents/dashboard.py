"""The dashboard agent: bucket snapshots → the dashboard table (highest version wins; a
forced snapshot from ``reconcile --fix`` replaces, a forced tombstone drops the bucket),
and the retention timer that expires buckets past docs/analyst.md's windows."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from sqlalchemy import Engine, delete

from agents.metrics import WorkerMetrics
from pipeline.dashboard import snapshots
from pipeline.dashboard.aggregates import DAY, HOUR, RETENTION, BucketSnapshot, expired
from pipeline.models import dashboard_buckets, dashboard_group_buckets
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def register(
    app: faust.App,
    settings: Settings,
    table: faust.Table[str, Any],
    snapshot_topic: faust.TopicT,
    engine: Engine,
    metrics: WorkerMetrics,
) -> None:
    @app.agent(snapshot_topic, name="dashboard-snapshots")
    async def keep_snapshots(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                data = orjson.loads(event.value)
                if _housekeeping(table, event.key, data):
                    continue
                received = snapshots.decode(data)
            except Exception as exc:  # a malformed snapshot must not stop the table
                known = isinstance(exc, snapshots.SnapshotFormatError)
                log.error("ignoring a snapshot message: %s", exc if known else type(exc).__name__)
                metrics.snapshots.labels("refused").inc()
                continue
            kept = Counter(keep(table, snapshot, force) for snapshot, force in received)
            for what, count in kept.items():
                if what is not None:
                    metrics.snapshots.labels(what).inc(count)

    @app.timer(interval=600.0, on_leader=False)
    async def expire_buckets() -> None:
        """Ask the owner of each local company to drop its expired buckets (the delete must
        happen inside the stream, where Faust knows the changelog partition)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        companies = {key.split("|", 1)[0] for key in list(table.keys())}
        for company in sorted(companies):
            await snapshot_topic.send(key=company.encode(), value=snapshots.expire_message(now))

    @app.timer(interval=3600.0, on_leader=True)
    async def prune_mysql() -> None:
        """dashboard_buckets keeps the same windows as the table (hour 14 d, day 400 d)."""
        try:
            removed = await asyncio.to_thread(prune, engine, datetime.now(UTC).replace(tzinfo=None))
            if removed:
                log.info("pruned %d expired dashboard_buckets rows", removed)
        except Exception as exc:
            log.warning(
                "dashboard_buckets prune failed (will retry next hour): %s", exc.__class__.__name__
            )


def prune(engine: Engine, now: datetime) -> int:
    """Delete the bucket rows (company and breakdown groups) past retention; return how many."""
    removed = 0
    with engine.begin() as conn:
        for table in (dashboard_buckets, dashboard_group_buckets):
            for granularity in (HOUR, DAY):
                removed += conn.execute(
                    delete(table).where(
                        table.c.granularity == granularity,
                        table.c.bucket_start < now - RETENTION[granularity],
                    )
                ).rowcount
    return removed


def keep(table: Any, snapshot: BucketSnapshot, force: bool) -> str | None:
    """Put ``snapshot`` in the table if it is newer (or forced); a forced tombstone drops
    the bucket. Returns what happened: ``kept``, ``stale``, ``dropped`` (None: a tombstone
    for a bucket the table does not hold)."""
    key = snapshots.table_key(snapshot.key)
    if snapshot.key.grouped:
        return _keep_group(table, key, snapshot, force)
    if snapshots.is_tombstone(snapshot, force):
        if key in table:
            del table[key]
            return "dropped"
        return None
    if snapshots.newer(table.get(key), snapshot, force):
        table[key] = snapshots.table_value(snapshot)
        return "kept"
    return "stale"


def _housekeeping(table: Any, company: bytes | str | None, data: dict[str, Any]) -> bool:
    """Messages that are not snapshots: expiry (retention) and breakdown resets
    (reconcile --fix). True when ``data`` was one of them."""
    if snapshots.EXPIRE in data:
        _expire(table, company, datetime.fromisoformat(data[snapshots.EXPIRE]))
        return True
    if data.get(snapshots.RESET):
        reset = snapshots.reset_key(data)
        if reset in table:
            del table[reset]
        return True
    return False


def _keep_group(table: Any, key: str, snapshot: BucketSnapshot, force: bool) -> str | None:
    """A breakdown group: its company bucket's entry for the dimension holds every group."""
    entry = snapshots.keep_group(table.get(key), snapshot, force)
    if entry is None:
        return None if snapshots.is_tombstone(snapshot, force) else "stale"
    if entry["g"]:
        table[key] = entry
        return "kept"
    del table[key]
    return "dropped"


def _expire(table: faust.Table[str, Any], company: bytes | str | None, now: datetime) -> None:
    if company is None:
        return
    prefix = (company.decode() if isinstance(company, bytes) else company) + "|"
    for key in [k for k in list(table.keys()) if k.startswith(prefix)]:
        if expired(snapshots.parse_table_key(key), now):
            del table[key]
