"""``switchboard dlq``: read, filter and redrive the dead letters on ``webhooks.dlq``.

A dead letter is the source record (key, raw body, headers) plus headers naming its source
coordinates and reason (:mod:`pipeline.apply.deadletters`). Kafka is append-only, so one event
can have several dead letters: the worker's, then one more for every redrive or replay
that failed again (carrying ``previous_reason``). ``list`` and ``redrive`` therefore work
on the **latest dead letter of each event** (by ``provider`` + ``event_id``), and look up
the event's current ``webhook_events`` status: an event that is ``applied`` by now (a
redrive, a replay, a fixed retry from the provider) is resolved.

Redrive puts the latest dead letter of every matching, unresolved event back through the
normal path: the record is rebuilt with its **source** topic/partition/offset (so
``webhook_events`` keeps the original coordinates) and its original headers, and applied
with the worker's :class:`~pipeline.apply.applier.Applier`; snapshots and new dead letters are
published like the worker's. Dedup is the apply path's: redriving an event that is applied
already changes nothing. Running the same redrive twice applies nothing twice; an event
that is still poison gets one more dead letter per run (the newest supersedes the others).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, tuple_

from pipeline import database, topics
from pipeline.apply.applier import Applier, parked_fetcher
from pipeline.apply.deadletters import DlqHeaders, parse_dlq_headers, source_record
from pipeline.apply.loop import apply_all
from pipeline.kafka_reader import Coordinates, Stretch, fetch
from pipeline.models import webhook_events
from pipeline.ops import NotFound
from pipeline.ops.replay import DEFAULT_BATCH_SIZE, Progress, engine_for, publisher_for
from pipeline.ops.report import RunReport
from pipeline.ops.stretch import read_stretch
from pipeline.records import WebhookRecord
from pipeline.settings import Settings

RESOLVED = "applied"


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One record of the DLQ topic, with its headers read."""

    record: WebhookRecord
    info: DlqHeaders

    @property
    def partition(self) -> int:
        return self.record.partition

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def position(self) -> str:
        """``PARTITION:OFFSET``, what ``dlq show`` takes."""
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def provider(self) -> str | None:
        return self.record.headers.get("provider")

    @property
    def event_id(self) -> str | None:
        return self.record.headers.get("event_id")

    @property
    def event_type(self) -> str | None:
        return self.record.headers.get("event_type")

    @property
    def source(self) -> str:
        if not self.info.has_source:
            return "-"
        return f"{self.info.source_topic}/{self.info.source_partition}@{self.info.source_offset}"

    @property
    def identity(self) -> tuple[str, str]:
        """The event this dead letter is about: ``(provider, event_id)``, else its source."""
        if self.provider and self.event_id:
            return self.provider, self.event_id
        return "?", self.source if self.info.has_source else self.position

    def source_record(self, body: bytes | None = None) -> WebhookRecord | None:
        """The record as it was on its source topic (None: the headers do not say where
        it came from); :func:`pipeline.apply.deadletters.source_record`. A dead letter
        that references its body needs ``body`` (:func:`resolve_source` fetches it)."""
        return source_record(self.record, self.info, body)


async def resolve_source(settings: Settings, entry: DeadLetterEntry) -> WebhookRecord | None:
    """The dead letter's source record, with its body: inline, or (a dead letter too large
    to carry it, docs/integrity.md) read back from the source coordinates and checked
    against the SHA-256 the reference names. None when the source is gone (retention) or
    holds another body."""
    info = entry.info
    if not info.body_reference:
        return entry.source_record()
    if not info.has_source or info.source_topic is None:
        return None
    assert info.source_partition is not None and info.source_offset is not None
    found = await fetch(
        settings, [Coordinates(info.source_topic, info.source_partition, info.source_offset)]
    )
    return entry.source_record(found[0].value) if found else None


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """``--since``, ``--reason``, ``--provider``, ``--event-type``, ``--event-id``: all that
    are given must match (exactly; ``reason`` is the latest dead letter's reason)."""

    since_ms: int | None = None
    reason: str | None = None
    provider: str | None = None
    event_type: str | None = None
    event_id: str | None = None

    def names(self, entry: DeadLetterEntry) -> bool:
        """Whether ``entry`` is a dead letter of an event this filter can match."""
        return (self.provider is None or self.provider == entry.provider) and (
            self.event_id is None or self.event_id == entry.event_id
        )

    def matches(self, entry: DeadLetterEntry) -> bool:
        if self.since_ms is not None:
            stamp = entry.info.dead_lettered_at_ms or entry.record.timestamp_ms
            if stamp is None or stamp < self.since_ms:
                return False
        checks = (
            (self.reason, entry.info.reason),
            (self.provider, entry.provider),
            (self.event_type, entry.event_type),
            (self.event_id, entry.event_id),
        )
        return all(wanted is None or wanted == actual for wanted, actual in checks)


@dataclass
class Listed:
    entry: DeadLetterEntry
    status: str | None  # the event's webhook_events status now; None: no row
    copies: int = 1  # dead letters of this event read (the latest is shown)


class LatestPerEvent:
    """The newest dead letter of each event (by dead-lettered time, then position), with
    how many there were, kept while reading: one dead letter per event in memory, not
    every copy (an event redriven many times has many, each with its whole body)."""

    def __init__(self) -> None:
        self.best: dict[tuple[str, str], DeadLetterEntry] = {}
        self.copies: Counter[tuple[str, str]] = Counter()

    def add(self, entry: DeadLetterEntry) -> None:
        key = entry.identity
        self.copies[key] += 1
        current = self.best.get(key)
        if current is None or _newness(entry) > _newness(current):
            self.best[key] = entry

    def result(self) -> list[tuple[DeadLetterEntry, int]]:
        """In the order of the newest."""
        chosen = sorted(self.best.items(), key=lambda kv: _newness(kv[1]))
        return [(entry, self.copies[key]) for key, entry in chosen]


def latest_per_event(entries: Iterable[DeadLetterEntry]) -> list[tuple[DeadLetterEntry, int]]:
    """:class:`LatestPerEvent` over ``entries``."""
    latest = LatestPerEvent()
    for entry in entries:
        latest.add(entry)
    return latest.result()


def _newness(entry: DeadLetterEntry) -> tuple[int, int, int]:
    stamp = entry.info.dead_lettered_at_ms or entry.record.timestamp_ms or 0
    return stamp, entry.partition, entry.offset


async def read_dead_letters(
    settings: Settings, since_ms: int | None = None
) -> list[DeadLetterEntry]:
    """Every record of the DLQ topic (from ``since_ms`` by record time, if given)."""
    stretch = Stretch(from_time_ms=since_ms) if since_ms is not None else Stretch(from_offset=0)
    out: list[DeadLetterEntry] = []
    async for batch in read_stretch(settings, settings.topic(topics.DLQ), stretch):
        out += [DeadLetterEntry(r, parse_dlq_headers(r.headers)) for r in batch]
    return out


async def _latest_dead_letters(
    settings: Settings, flt: DlqFilter
) -> list[tuple[DeadLetterEntry, int]]:
    """The newest dead letter of each event that ``flt`` matches, read batch by batch.
    Provider and event id name the event, so they filter before the newest is chosen; the
    other filters apply to the newest (an event whose latest reason differs is not shown
    by an older one)."""
    stretch = (
        Stretch(from_time_ms=flt.since_ms) if flt.since_ms is not None else Stretch(from_offset=0)
    )
    latest = LatestPerEvent()
    async for batch in read_stretch(settings, settings.topic(topics.DLQ), stretch):
        for record in batch:
            entry = DeadLetterEntry(record, parse_dlq_headers(record.headers))
            if flt.names(entry):
                latest.add(entry)
    return [(e, n) for e, n in latest.result() if flt.matches(e)]


def event_statuses(engine: Engine, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``webhook_events.status`` of each ``(provider, event_id)`` that has a row."""
    wanted = sorted(set(keys))
    found: dict[tuple[str, str], str] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            query = select(
                webhook_events.c.provider, webhook_events.c.event_id, webhook_events.c.status
            ).where(tuple_(webhook_events.c.provider, webhook_events.c.event_id).in_(chunk))
            found.update({(r.provider, r.event_id): r.status for r in conn.execute(query)})
    return found


async def list_dead_letters(
    settings: Settings,
    flt: DlqFilter = DlqFilter(),
    *,
    pending_only: bool = False,
    engine: Engine | None = None,
) -> list[Listed]:
    """The latest dead letter of each event matching ``flt``, oldest first, with the
    event's current status (``pending_only``: leave out events applied by now)."""
    async with AsyncExitStack() as stack:
        engine = await engine_for(stack, settings, engine, pool_size=1)
        latest = await _latest_dead_letters(settings, flt)
        statuses = await asyncio.to_thread(
            event_statuses, engine, [e.identity for e, _ in latest if e.identity[0] != "?"]
        )
    listed = [Listed(e, statuses.get(e.identity), n) for e, n in latest]
    if pending_only:
        listed = [item for item in listed if item.status != RESOLVED]
    return listed


async def show_dead_letters(
    settings: Settings, partition: int | None, offset: int
) -> list[DeadLetterEntry]:
    """The dead letters at ``offset`` of ``partition``, or of every partition of the DLQ
    topic (``None``: each partition numbers its records from 0, so a bare offset can name
    one on several), in partition order; NotFound if none."""
    topic = settings.topic(topics.DLQ)
    found = []
    stretch = Stretch(from_offset=offset, to_offset=offset)
    chosen = None if partition is None else [partition]
    async for batch in read_stretch(settings, topic, stretch, chosen):
        found += [r for r in batch if r.offset == offset]
    if not found:
        where = (
            f"{partition}:{offset}"
            if partition is not None
            else f"offset {offset} of any partition"
        )
        raise NotFound(f"no dead letter at {where} on {topic}")
    found.sort(key=lambda r: r.partition)
    return [DeadLetterEntry(r, parse_dlq_headers(r.headers)) for r in found]


@dataclass
class RedriveReport(RunReport):
    redriven: list[str] = field(default_factory=list)  # positions of the dead letters taken


async def redrive(
    settings: Settings,
    flt: DlqFilter = DlqFilter(),
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    engine: Engine | None = None,
    on_progress: Progress | None = None,
) -> RedriveReport:
    """Apply the latest dead letter of every matching, unresolved event again."""
    report = RedriveReport(dry_run=dry_run)
    async with AsyncExitStack() as stack:
        if engine is None:
            engine = database.create_db_engine(settings, pool_size=2)
            stack.callback(engine.dispose)
        listed = await list_dead_letters(settings, flt, engine=engine)
        publisher = await publisher_for(stack, settings, dry_run)
        todo: list[tuple[DeadLetterEntry, WebhookRecord]] = []
        for item in listed:
            if item.status == RESOLVED:
                report.skipped["event already applied"] += 1
                continue
            record = await resolve_source(settings, item.entry)
            if record is not None:
                todo.append((item.entry, record))
            elif item.entry.info.body_reference and item.entry.info.has_source:
                report.skipped["referenced body no longer on its source topic"] += 1
            else:
                report.skipped["no source coordinates in its headers"] += 1
        todo.sort(key=lambda pair: (pair[1].topic, pair[1].partition, pair[1].offset))

        applier = Applier(engine, fetch=parked_fetcher(settings), dry_run=dry_run)
        chunks = _chunks(todo, batch_size)
        async for done in apply_all(chunks, applier, publisher, _records):
            report.add(len(done.batch), done.result, done.published)
            report.redriven += [entry.position for entry, _ in done.batch]
            if on_progress is not None:
                on_progress(report, done.batch[-1][1])
    return report


Todo = list[tuple[DeadLetterEntry, WebhookRecord]]


async def _chunks(todo: Todo, size: int) -> AsyncIterator[Todo]:
    for start in range(0, len(todo), size):
        yield todo[start : start + size]


def _records(chunk: Todo) -> list[WebhookRecord]:
    return [record for _, record in chunk]
