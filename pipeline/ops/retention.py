"""``switchboard retention apply``: raw bodies and ``webhook_events`` rows do not grow forever.

**Raw bodies** (``webhooks.retell``, ``webhooks.calcom``, ``webhooks.dlq``) hold personal
data; Kafka deletes them after the topic's ``retention.ms``. The command sets
``SWITCHBOARD_TOPIC_RETENTION_DAYS`` on each of them, key by key (IncrementalAlterConfigs,
:func:`pipeline.topics.alter_configs`), only where the topic has no ``retention.ms`` of its
own: a value an operator set on the topic is kept and reported, never overwritten, unless
the operator names that topic with ``--release`` (then switchboard's value replaces it).

**``webhook_events`` rows** are the dedup guarantee: a record applied again after its row
is gone would be applied twice (rows *and* counters). So rows are deleted only once no
record can come back, i.e. older than the longest effective retention of those topics
(whatever set it) plus a segment (Kafka deletes whole segments, up to ``segment.ms`` late)
plus a day, and never younger than ``SWITCHBOARD_EVENTS_RETENTION_DAYS`` (at least 401:
reconcile recounts the 400 days of day buckets from the rows these mark applied). A topic
that keeps records forever (``retention.ms=-1``) keeps the rows forever too, and the
command says so. Rows go in chunks of 5,000 (index on ``created_at``), each its own short
transaction, so the workers are never held up.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from sqlalchemy import Engine, delete, func, select

from pipeline import database, topics
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import kafka_options
from pipeline.models import webhook_events
from pipeline.ops import BadArguments
from pipeline.settings import Settings

CHUNK = 5_000
MARGIN = timedelta(days=1)


@dataclass
class TopicRetention:
    topic: str
    action: str  # set | ok | kept | replaced (prefixed "would " in a dry run)
    retention_ms: int  # effective after the command (-1: forever)
    previous_ms: int | None
    overridden: bool  # the topic had a retention.ms of its own before
    segment_ms: int


@dataclass
class RetentionReport:
    dry_run: bool
    topic_days: int
    events_days: int
    topics: list[TopicRetention] = field(default_factory=list)
    horizon: str | None = None  # rows processed before this are deleted; None: none are
    why: str = ""
    rows_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        out = []
        for t in self.topics:
            forever = "forever" if t.retention_ms < 0 else f"{t.retention_ms / 86_400_000:g} d"
            note = {
                "set": "set to switchboard's",
                "ok": "already switchboard's",
                "kept": "kept: an operator's value on the topic (--release TOPIC to replace it)",
                "replaced": "operator's value replaced (--release)",
            }[t.action.removeprefix("would ")]
            prefix = "would be " if self.dry_run and t.action.startswith("would") else ""
            out.append(f"{t.topic:40} retention {forever:>8}  {prefix}{note}")
        verb = "would delete" if self.dry_run else "deleted"
        if self.horizon is None:
            out.append(f"webhook_events: nothing deleted ({self.why})")
        else:
            out.append(
                f"webhook_events: {verb} {self.rows_deleted:,} row(s) processed before "
                f"{self.horizon} ({self.why})"
            )
        return out


def _ms(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _topics_part(
    settings: Settings, release: set[str], dry_run: bool
) -> list[TopicRetention]:
    wanted = topics.retention_ms(settings)
    names = {settings.topic(t): t for t in topics.RETAINED}
    unknown = release - set(names) - set(names.values())
    if unknown:
        raise BadArguments(f"--release: not a topic with raw bodies: {', '.join(sorted(unknown))}")
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"Kafka unreachable at {settings.kafka_bootstrap}: {exc.__class__.__name__}"
        ) from exc
    try:
        present = set(await admin.list_topics())
        existing = [t for t in names if t in present]
        configs = await topics.describe_configs(admin, existing)
        changes: dict[str, dict[str, str | None]] = {}
        found = []
        for topic in existing:
            current = configs[topic].get("retention.ms")
            segment = (
                _ms(configs[topic]["segment.ms"].value) if "segment.ms" in configs[topic] else None
            )
            previous = _ms(current.value) if current is not None else None
            overridden = bool(current is not None and current.overridden)
            released = topic in release or names[topic] in release
            if overridden and previous == int(wanted):
                action, effective = "ok", previous
            elif overridden and not released:
                action, effective = "kept", previous if previous is not None else -1
            else:
                action, effective = ("replaced" if overridden else "set"), int(wanted)
                changes[topic] = {"retention.ms": wanted}
            found.append(
                TopicRetention(
                    topic=topic,
                    action=f"would {action}" if dry_run and topic in changes else action,
                    retention_ms=effective if effective is not None else -1,
                    previous_ms=previous,
                    overridden=overridden,
                    segment_ms=segment or 7 * 86_400_000,
                )
            )
        if changes and not dry_run:
            await topics.alter_configs(admin, changes)
        return found
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka failed at {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        await admin.close()


def horizon(
    settings: Settings, retained: list[TopicRetention], now: datetime
) -> tuple[datetime | None, str]:
    """Before when ``webhook_events`` rows may go (naive UTC), and why; None: keep all."""
    forever = [t.topic for t in retained if t.retention_ms < 0]
    if forever:
        return None, f"{', '.join(forever)} keep records forever, so the rows are kept too"
    floor = timedelta(days=settings.events_retention_days)
    longest = max(
        (timedelta(milliseconds=t.retention_ms + t.segment_ms) + MARGIN for t in retained),
        default=timedelta(0),
    )
    keep = max(floor, longest)
    days = math.ceil(keep / timedelta(days=1))
    why = (
        f"kept {days} d: SWITCHBOARD_EVENTS_RETENTION_DAYS"
        if keep == floor
        else f"kept {days} d: the longest topic retention + a segment + a day"
    )
    return (now - keep).replace(tzinfo=None), why


def _delete_rows(engine: Engine, before: datetime, dry_run: bool) -> int:
    if dry_run:
        with engine.connect() as conn:
            query = select(func.count()).select_from(webhook_events)
            return int(conn.execute(query.where(webhook_events.c.created_at < before)).scalar_one())
    total = 0
    while True:
        with engine.begin() as conn:
            # MySQL and MariaDB take LIMIT on a single-table DELETE: short transactions.
            statement = (
                delete(webhook_events)
                .where(webhook_events.c.created_at < before)
                .with_dialect_options(mysql_limit=CHUNK)
            )
            done = conn.execute(statement).rowcount
        total += int(done)
        if done < CHUNK:
            return total


async def apply(
    settings: Settings,
    *,
    dry_run: bool = False,
    release: set[str] | None = None,
    engine: Engine | None = None,
    now: datetime | None = None,
) -> RetentionReport:
    """Topics first (the rows' horizon depends on what the topics keep), then rows."""
    now = now or datetime.now(UTC)
    report = RetentionReport(
        dry_run=dry_run,
        topic_days=settings.topic_retention_days,
        events_days=settings.events_retention_days,
    )
    report.topics = await _topics_part(settings, release or set(), dry_run)
    before, report.why = horizon(settings, report.topics, now)
    if before is None:
        return report
    report.horizon = before.isoformat(timespec="seconds") + "Z"
    own = engine is None
    engine = engine or database.create_db_engine(settings, pool_size=1)
    try:
        await asyncio.to_thread(database.check_database, engine)
        report.rows_deleted = await asyncio.to_thread(_delete_rows, engine, before, dry_run)
    finally:
        if own:
            engine.dispose()
    return report
