"""``switchboard events reapply``: apply unroutable events again, once their branch exists.

An ``unroutable`` event found no branch (an unknown number, agent or event type, an
inactive branch; docs/data-model.md). Nothing of it was attributed to any company, and its
``webhook_events`` row says why. Once the tenant data is fixed (``switchboard tenants
import``), the events can be applied: this reads their records back from Kafka at the
coordinates of their rows and puts them through the worker's apply path, exactly as a
replay would. The apply path treats an ``unroutable`` row as not applied yet, so an event
that now has a home becomes ``applied`` once (its row flips, its counters are added in the
same transaction), and any later delivery, replay or re-apply finds it applied and adds
nothing. Events that still have no home stay ``unroutable``.

Rows are read in pages (keyset on ``(created_at, id)`` of the ``(status, created_at)``
index) and records fetched per batch, so memory stays bounded by ``--batch-size``. A
record deleted by retention cannot be re-applied; the command counts it and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from pipeline.apply.applier import Applier, parked_fetcher
from pipeline.apply.loop import apply_all
from pipeline.apply.loop import records as as_is
from pipeline.errors import SwitchboardError
from pipeline.kafka_reader import Coordinates, fetch
from pipeline.models import webhook_events
from pipeline.ops.events import Listing
from pipeline.ops.replay import DEFAULT_BATCH_SIZE, Progress, engine_for, publisher_for
from pipeline.ops.report import RunReport
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

GONE = "record no longer on Kafka (retention)"
OTHER = "record at the stored coordinates is another event (topic recreated?)"


@dataclass(frozen=True, slots=True)
class Candidate:
    coordinates: Coordinates
    sha256: str


def _matching(what: Listing) -> Any:
    conditions = [webhook_events.c.status == "unroutable"]
    if what.reason is not None:
        conditions.append(webhook_events.c.error == what.reason)
    if what.provider is not None:
        conditions.append(webhook_events.c.provider == what.provider)
    if what.since is not None:
        conditions.append(webhook_events.c.created_at >= what.since)
    if what.until is not None:
        conditions.append(webhook_events.c.created_at <= what.until)
    return and_(*conditions)


def count(engine: Engine, what: Listing) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(webhook_events).where(_matching(what))
        return int(conn.execute(query).scalar_one())


def pages(engine: Engine, what: Listing, size: int) -> Iterator[list[Candidate]]:
    """The matching rows' coordinates, oldest first, ``size`` at a time."""
    after: tuple[datetime, int] | None = None
    while True:
        query = select(
            webhook_events.c.id,
            webhook_events.c.created_at,
            webhook_events.c.kafka_topic,
            webhook_events.c.kafka_partition,
            webhook_events.c.kafka_offset,
            webhook_events.c.payload_sha256,
        ).where(_matching(what))
        if after is not None:
            stamp, last_id = after
            query = query.where(
                or_(
                    webhook_events.c.created_at > stamp,
                    and_(webhook_events.c.created_at == stamp, webhook_events.c.id > last_id),
                )
            )
        query = query.order_by(webhook_events.c.created_at, webhook_events.c.id).limit(size)
        with engine.connect() as conn:
            rows = list(conn.execute(query))
        if not rows:
            return
        yield [
            Candidate(
                Coordinates(r.kafka_topic, r.kafka_partition, r.kafka_offset), r.payload_sha256
            )
            for r in rows
        ]
        after = (rows[-1].created_at, rows[-1].id)


async def _records(
    settings: Settings, page: list[Candidate], report: RunReport
) -> list[WebhookRecord]:
    """The page's records from Kafka; gone or mismatching ones are counted, not applied."""
    records = await fetch(settings, [c.coordinates for c in page])
    found = {Coordinates(r.topic, r.partition, r.offset): r for r in records}
    out = []
    for candidate in page:
        record = found.get(candidate.coordinates)
        if record is None:
            report.skipped[GONE] += 1
        elif sha256_hex(record.value) != candidate.sha256:
            report.skipped[OTHER] += 1
        else:
            out.append(record)
    return out


async def reapply(
    settings: Settings,
    what: Listing = Listing(),
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine: Engine | None = None,
    on_progress: Progress | None = None,
    on_plan: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> RunReport:
    """Apply the matching ``unroutable`` events again (at most ``limit``, oldest first)."""
    report = RunReport(dry_run=dry_run)
    async with AsyncExitStack() as stack:
        engine = await engine_for(stack, settings, engine)
        total = await asyncio.to_thread(count, engine, what)
        if limit is not None:
            total = min(total, limit)
        if on_plan is not None:
            on_plan(total)
        # Kafka only when something will be written (a dry run or nothing to do: no broker).
        publisher = await publisher_for(stack, settings, dry_run or not total)
        applier = Applier(engine, fetch=parked_fetcher(settings), dry_run=dry_run)
        batches = _batches(settings, engine, what, batch_size, total, report)
        async for done in apply_all(batches, applier, publisher, as_is):
            report.add(len(done.batch), done.result, done.published)
            if on_progress is not None:
                on_progress(report, done.batch[-1])
    return report


async def _batches(
    settings: Settings, engine: Engine, what: Listing, size: int, total: int, report: RunReport
) -> AsyncIterator[list[WebhookRecord]]:
    """The records of the matching events, a page at a time, at most ``total`` events."""
    taken = 0
    source = pages(engine, what, size)
    while taken < total:
        page = await asyncio.to_thread(next, source, None)
        if page is None:
            break
        page = page[: total - taken]
        taken += len(page)
        records = await _records(settings, page, report)
        if records:
            yield records


#: ``tenants import`` tries at most this many unroutable events (a dry run) to say how many
#: now have a home; beyond it, it says so and points at ``events reapply --dry-run``.
PREVIEW_LIMIT = 5_000


@dataclass
class Preview:
    unroutable: int  # unroutable rows in webhook_events
    checked: int = 0  # of which were tried (oldest first)
    applicable: int = 0  # would be applied now
    still: int = 0  # would stay unroutable
    gone: int = 0  # records retention deleted: cannot be applied again
    failed: str | None = None  # why the check could not run

    def lines(self) -> list[str]:
        """What ``tenants import`` prints after the import."""
        if not self.unroutable:
            return []
        if self.failed is not None:
            return [
                f"{self.unroutable} unroutable event(s) on record; could not check which "
                f"have a home now ({self.failed}).",
                "  see: switchboard events reapply --dry-run",
            ]
        scope = (
            f"of the {self.checked} oldest checked" if self.checked < self.unroutable else "checked"
        )
        lines = [
            f"{self.unroutable} unroutable event(s) on record; {scope}: "
            f"{self.applicable} now have a home, {self.still} still have none"
            + (f", {self.gone} no longer on Kafka" if self.gone else "")
            + "."
        ]
        if self.applicable:
            lines += [
                "  apply them: switchboard events reapply --dry-run   (what would change)",
                "              switchboard events reapply             (applies; safe to repeat)",
            ]
        return lines


async def preview(settings: Settings, engine: Engine, limit: int = PREVIEW_LIMIT) -> Preview:
    """How many unroutable events the tenant directory can place now: a dry-run
    re-apply (every batch rolled back) of up to ``limit`` of them."""
    total = await asyncio.to_thread(count, engine, Listing())
    found = Preview(unroutable=total)
    if not total:
        return found
    try:
        report = await reapply(settings, Listing(), dry_run=True, engine=engine, limit=limit)
    except SwitchboardError as exc:
        found.failed = str(exc)
        return found
    found.gone = sum(report.skipped.values())
    found.checked = report.read + found.gone
    found.applicable = report.counts.get("applied", 0)
    found.still = report.counts.get("unroutable", 0)
    return found
