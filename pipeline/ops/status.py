"""``switchboard status``: the whole pipeline on one screen, without Kafka's Java scripts.

Each part is gathered on its own, and a part that cannot be reached says why instead of
stopping the others (the point of a status screen is the day something is down):

* **lag**: per topic and partition, the consumer group's committed offset against the end
  (no commit yet: counted from the partition's first offset), from Kafka's admin API;
  the group's state and members;
* **workers**: the group's members, each with the URL Faust advertises in its member
  metadata (the ``canonical_url`` that table routing uses), its assigned partitions, and
  what its ``/readyz`` (table recovery) and ``/metrics`` say; ``--worker-url`` adds
  workers that are not (yet) in the group;
* **dead letters**: records on ``webhooks.dlq`` and the events still pending, by reason
  (:func:`pipeline.ops.dlq.list_dead_letters`);
* **ingress**: each ``--ingress-url``'s ``/readyz`` (the spool: records, bytes, oldest),
  or its ``switchboard_ingress_spool_*`` metrics; "unknown" when it does not answer;
* **freshness**: the newest applied event in ``webhook_events`` and its age, the
  unroutable count, the schema revision against the code's head, and the periodic
  backfill's watermark per provider (``backfill_watermarks``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError
from sqlalchemy import Engine, func, inspect, select

from pipeline import database, kafka_reader, topics
from pipeline.errors import SwitchboardError
from pipeline.kafka import kafka_options
from pipeline.models import backfill_watermarks, webhook_events
from pipeline.ops.dlq import list_dead_letters
from pipeline.ops.probes import HTTP_TIMEOUT_S, Ingress, Worker, ingress_state, workers_state
from pipeline.settings import Settings

T = TypeVar("T")


@dataclass
class PartitionLag:
    topic: str
    partition: int
    end: int
    committed: int | None  # None: the group never committed here
    lag: int


@dataclass
class Status:
    at: str
    group: str
    kafka: str = "ok"  # ok | "unreachable: ..."
    database: str = "ok"
    group_state: str | None = None
    lag: list[PartitionLag] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    dlq_records: int | None = None
    dlq_pending: dict[str, int] | None = None
    ingress: list[Ingress] = field(default_factory=list)
    newest_applied: str | None = None
    freshness_s: float | None = None
    unroutable: int | None = None
    schema: str | None = None
    schema_head: str | None = None
    backfill: list[dict[str, Any]] = field(default_factory=list)  # watermarks per provider

    @property
    def ok(self) -> bool:
        return self.kafka == "ok" and self.database == "ok"

    def lag_by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for row in self.lag:
            totals[row.topic] = totals.get(row.topic, 0) + row.lag
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "lag_by_topic": self.lag_by_topic()}


async def _guard(work: Awaitable[T], *, on_error: Callable[[str], None]) -> T | None:
    try:
        return await work
    except SwitchboardError as exc:
        on_error(str(exc))
    except (TimeoutError, KafkaError, OSError) as exc:
        on_error(f"unreachable ({exc.__class__.__name__})")
    except Exception as exc:  # a part of the screen, never the whole command
        on_error(f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:120]}")
    return None


async def gather(
    settings: Settings,
    *,
    ingress_urls: list[str],
    worker_urls: list[str],
    fallback_worker_url: str | None = None,
    engine: Engine | None = None,
    now: datetime | None = None,
) -> Status:
    now = now or datetime.now(UTC)
    status = Status(at=now.isoformat(timespec="seconds"), group=settings.consumer_group)
    own_engine = engine is None
    engine = engine or database.create_db_engine(settings, pool_size=1)
    try:

        def kafka_failed(why: str) -> None:
            status.kafka = why if why.startswith("Kafka") else f"Kafka {why}"

        def database_failed(why: str) -> None:
            status.database = why if why.startswith("MySQL") else f"MySQL {why}"

        members = await _guard(_kafka_part(settings, status), on_error=kafka_failed)
        await _guard(
            asyncio.to_thread(_database_part, settings, engine, status, now),
            on_error=database_failed,
        )
        if status.kafka == "ok" and status.database == "ok":
            await _guard(_dlq_part(settings, engine, status), on_error=kafka_failed)
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        ) as http:
            if not members and not worker_urls and fallback_worker_url:
                worker_urls = [fallback_worker_url]  # nobody in the group: is one up at all?
            status.workers = await workers_state(http, members or [], worker_urls)
            status.ingress = list(
                await asyncio.gather(*[ingress_state(http, u) for u in ingress_urls])
            )
    finally:
        if own_engine:
            engine.dispose()
    return status


# --- Kafka: lag, group, members ----------------------------------------------------------


async def _kafka_part(settings: Settings, status: Status) -> list[Worker]:
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
        described = await admin.describe_consumer_groups([settings.consumer_group])
    finally:
        await admin.close()
    group = described[0].to_object()["groups"][0] if described else None
    members: list[Worker] = []
    if group is not None and not group["error_code"]:
        status.group_state = group.get("state") or None
        members = [_member(m) for m in group["members"]]
    watched = [settings.topic(t) for t in (*topics.WEBHOOK_TOPICS, topics.SNAPSHOTS)]
    names = sorted({tp.topic for tp in committed} | set(watched))
    status.lag = await partition_lag(settings, names, committed)
    return members


def _member(raw: dict[str, Any]) -> Worker:
    """A group member and the URL its Faust worker advertises (its ``canonical_url``)."""
    url, partitions = "", None
    try:
        metadata = ConsumerProtocolMemberMetadata.decode(raw["member_metadata"])
        url = str(orjson.loads(metadata.user_data).get("url", ""))
    except Exception:
        url = ""  # not a Faust worker (or metadata we do not know): still a member
    try:
        assignment = ConsumerProtocolMemberAssignment.decode(raw["member_assignment"])
        partitions = sum(len(parts) for _, parts in assignment.assignment)
    except Exception:
        partitions = None
    return Worker(
        url=url.rstrip("/"),
        member=f"{raw['client_id']}@{raw['client_host'].lstrip('/')}",
        partitions=partitions,
    )


async def partition_lag(
    settings: Settings, names: list[str], committed: dict[TopicPartition, Any]
) -> list[PartitionLag]:
    """Per partition of ``names``: the end offset against the group's commit (no commit:
    against the first offset still on the topic, as nothing was consumed)."""
    consumer = kafka_reader._consumer(settings)
    await kafka_reader._start(consumer, settings)
    try:
        tps = [tp for name in names for tp in await _partitions(consumer, name)]
        if not tps:
            return []
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    rows = []
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else None
        lag = ends[tp] - (done if done is not None else starts[tp])
        rows.append(PartitionLag(tp.topic, tp.partition, ends[tp], done, max(0, lag)))
    return rows


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions ([] if it does not exist); a consumer knows only the topics
    its metadata was asked about, so ask once more before concluding."""
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions or ())]


async def _dlq_part(settings: Settings, engine: Engine, status: Status) -> None:
    topic = settings.topic(topics.DLQ)
    consumer = kafka_reader._consumer(settings)
    await kafka_reader._start(consumer, settings)
    try:
        tps = await _partitions(consumer, topic)
        starts = await consumer.beginning_offsets(tps) if tps else {}
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    status.dlq_records = sum(ends[tp] - starts[tp] for tp in tps)
    pending: dict[str, int] = {}
    if status.dlq_records:
        for item in await list_dead_letters(settings, pending_only=True, engine=engine):
            reason = item.entry.info.reason or "unknown"
            pending[reason] = pending.get(reason, 0) + 1
    status.dlq_pending = dict(sorted(pending.items()))


# --- MySQL: freshness, unroutable, schema ------------------------------------------------


def _database_part(settings: Settings, engine: Engine, status: Status, now: datetime) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        newest = conn.execute(
            select(func.max(webhook_events.c.created_at)).where(
                webhook_events.c.status == "applied"
            )
        ).scalar_one()
        status.unroutable = int(
            conn.execute(
                select(func.count())
                .select_from(webhook_events)
                .where(webhook_events.c.status == "unroutable")
            ).scalar_one()
        )
        status.schema = MigrationContext.configure(conn).get_current_revision()
        if inspect(conn).has_table("backfill_watermarks"):  # older schemas: see "schema"
            status.backfill = [
                {
                    "provider": r.provider,
                    "covered_until": _iso(r.covered_until),
                    "last_success_at": _iso(r.last_success_at),
                    "last_written": int(r.last_written),
                    "last_error": r.last_error,
                }
                for r in conn.execute(
                    select(backfill_watermarks).order_by(backfill_watermarks.c.provider)
                )
            ]
    status.schema_head = ScriptDirectory.from_config(
        database.alembic_config(settings)
    ).get_current_head()
    if newest is not None:
        status.newest_applied = _iso(newest)
        status.freshness_s = round(max(0.0, (now - newest.replace(tzinfo=UTC)).total_seconds()), 1)


def _iso(value: datetime | None) -> str | None:
    """A naive UTC DATETIME as ``2026-01-05T17:02:11.482Z``."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the screen --------------------------------------------------------------------------


def _size(value: Any) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def lines(status: Status, *, all_partitions: bool = False) -> list[str]:
    """The text screen. Partitions with lag are listed (all of them with ``all_partitions``);
    every topic gets its total."""
    out = [f"switchboard status at {status.at} (consumer group {status.group})"]
    kafka = "ok" if status.kafka == "ok" else status.kafka
    state = f", group {status.group_state}" if status.group_state else ""
    out.append(f"kafka      {kafka}{state}")
    if status.lag:
        totals = status.lag_by_topic()
        out.append(
            "lag        " + ", ".join(f"{topic} {n:,}" for topic, n in sorted(totals.items()))
        )
        shown = [r for r in status.lag if all_partitions or r.lag]
        for row in shown:
            committed = "-" if row.committed is None else f"{row.committed:,}"
            out.append(
                f"             {row.topic}[{row.partition}]  end {row.end:,}  "
                f"committed {committed}  lag {row.lag:,}"
            )
    out.append("workers" + ("    none found" if not status.workers else ""))
    for worker in status.workers:
        recovered = ""
        if worker.recovered is not None:
            recovered = ", tables recovered" if worker.recovered else ", tables NOT recovered"
        where = worker.url or "(no URL advertised)"
        member = f" member {worker.member}," if worker.member else " not in the group,"
        parts = "" if worker.partitions is None else f" {worker.partitions} partition(s),"
        detail = f" ({worker.detail})" if worker.detail else ""
        out.append(f"  {where}{member}{parts} {worker.ready}{recovered}{detail}")
    if status.dlq_records is None:
        out.append("dlq        unknown")
    else:
        pending = status.dlq_pending or {}
        by_reason = ", ".join(f"{r} {n}" for r, n in pending.items()) or "none"
        out.append(
            f"dlq        {status.dlq_records:,} record(s); pending events by reason: {by_reason}"
        )
    for ingress in status.ingress:
        spool = ingress.spool
        if spool is None:
            spool_text = "spool unknown"
        else:
            spool_text = (
                f"spool {spool.get('records', '?')} record(s), {_size(spool.get('bytes'))}"
                f" of {_size(spool.get('limit_bytes'))}, oldest {_age(spool.get('oldest_age_s'))}"
            )
        detail = f" ({ingress.detail})" if ingress.detail else ""
        state = "unknown (does not answer)" if ingress.state == "down" else ingress.state
        out.append(f"ingress    {ingress.url} {state}{detail}; {spool_text}")
    if status.database != "ok":
        out.append(f"mysql      {status.database}")
    else:
        newest = status.newest_applied or "none yet"
        age = "" if status.freshness_s is None else f" ({_age(status.freshness_s)} ago)"
        out.append(f"freshness  newest applied event {newest}{age}")
        out.append(f"unroutable {status.unroutable or 0:,} event(s)")
        schema = status.schema or "none"
        note = (
            ""
            if status.schema == status.schema_head
            else f" (code expects {status.schema_head}: run switchboard migrate)"
        )
        out.append(f"schema     revision {schema}{note}")
        for mark in status.backfill:
            error = f", last error: {mark['last_error']}" if mark["last_error"] else ""
            out.append(
                f"backfill   {mark['provider']}: covered until {mark['covered_until'] or '-'}, "
                f"last success {mark['last_success_at'] or 'never'}, "
                f"{mark['last_written']} written last run{error}"
            )
    return out
