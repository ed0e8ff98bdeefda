"""``switchboard replay``: re-apply a stretch of a webhook topic through the worker's own
apply path.

Why it is safe next to running workers, and safe to repeat:

* it calls :class:`~pipeline.apply.applier.Applier` exactly as the agents do, one transaction
  per batch read: the apply path locks the rows it touches (``SELECT ... FOR UPDATE``), and
  a duplicate-key race with a worker is retried as transient;
* dedup is by ``webhook_events (provider, event_id)``: an event already applied adds no
  counter and no event row, and its row effects merge idempotently, so replaying an
  applied stretch changes nothing (not even ``updated_at``), and replaying it after rows
  were lost (deleted, restored from an older backup) restores them;
* it reads with a group-less consumer: no consumer group's offsets move.

After each committed batch the bucket snapshots it produced and its dead letters are
published as the worker would (:mod:`pipeline.ops.outputs`). A dry run applies each batch
in a transaction that is rolled back and publishes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack

from sqlalchemy import Engine

from pipeline import database
from pipeline.apply.applier import Applier, parked_fetcher
from pipeline.apply.loop import Discard, Publisher, apply_all
from pipeline.apply.loop import records as as_is
from pipeline.kafka_reader import Stretch
from pipeline.ops.arguments import resolve_topic
from pipeline.ops.outputs import Outputs
from pipeline.ops.report import RunReport
from pipeline.ops.stretch import read_stretch
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

#: Called after every batch with the running totals and the batch's last record.
Progress = Callable[[RunReport, WebhookRecord], None]

DEFAULT_BATCH_SIZE = 500


async def replay(
    settings: Settings,
    topic: str,
    stretch: Stretch,
    *,
    partitions: Iterable[int] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine: Engine | None = None,
    on_progress: Progress | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> RunReport:
    """Re-apply ``stretch`` of ``topic`` (``webhooks.retell``/``webhooks.calcom``, the
    settings' prefix applied); return the totals."""
    full_topic = resolve_topic(settings, topic)
    report = RunReport(dry_run=dry_run)
    async with AsyncExitStack() as stack:
        engine = await engine_for(stack, settings, engine)
        # Opened before anything is applied: an unreachable Kafka stops the run before
        # MySQL commits a batch whose snapshots could then not be published.
        publisher = await publisher_for(stack, settings, dry_run)
        applier = Applier(engine, fetch=parked_fetcher(settings), dry_run=dry_run)
        batches = read_stretch(
            settings,
            full_topic,
            stretch,
            partitions,
            batch_size=batch_size,
            on_plan=on_plan,
        )
        if dry_run:
            batches = _regroup(batches, batch_size)
        async for done in apply_all(batches, applier, publisher, as_is):
            report.add(len(done.batch), done.result, done.published)
            if on_progress is not None:
                on_progress(report, done.batch[-1])
    return report


async def engine_for(
    stack: AsyncExitStack, settings: Settings, engine: Engine | None, *, pool_size: int = 2
) -> Engine:
    """The caller's engine, or one of our own disposed with ``stack``; MySQL answers (else
    :class:`~pipeline.errors.DatabaseUnavailable`, one line)."""
    if engine is None:
        engine = database.create_db_engine(settings, pool_size=pool_size)
        stack.callback(engine.dispose)
    await asyncio.to_thread(database.check_database, engine)
    return engine


async def publisher_for(stack: AsyncExitStack, settings: Settings, dry_run: bool) -> Publisher:
    """Kafka for a real run (opened now, so an unreachable broker stops the run before
    anything is applied); nothing for a dry run, whose transactions are rolled back."""
    if dry_run:
        return Discard()
    return await stack.enter_async_context(Outputs(settings))


async def _regroup(
    batches: AsyncIterator[list[WebhookRecord]], size: int
) -> AsyncIterator[list[WebhookRecord]]:
    """Fill dry-run batches across partitions: every dry-run batch is rolled back, so
    fewer, fuller batches count a row touched from two partitions (a reschedule touches
    the old booking, whose events are on another partition) once instead of twice."""
    pending: list[WebhookRecord] = []
    async for batch in batches:
        pending.extend(batch)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending
