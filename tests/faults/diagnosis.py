"""What a failed fault scenario leaves behind for its post-mortem, gathered before the
world is torn down (its topics and database are deleted at the end).

Per webhook partition: the log end offset, the consumer group's committed offset, the
highest offset ``webhook_events`` holds a row from; and every record on the topic whose
event has no row at all (an accepted webhook never applied), with its offset. A missing
record below the committed offset was committed without being applied (the offset moved
past it); one at or above it was never handed over (still waiting, or the group stalled).
Written to ``var/faults/<fault>-logs/post-mortem.json``, next to the processes' logs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine, func, select

from pipeline import topics
from pipeline.kafka_reader import Stretch
from pipeline.models import webhook_events
from pipeline.ops.stretch import read_stretch
from pipeline.providers import PROVIDERS
from pipeline.records import WebhookRecord
from pipeline.settings import Settings


@dataclass
class Missing:
    offset: int
    event_id: str
    correlation_id: str | None


@dataclass
class PartitionState:
    topic: str
    partition: int
    end: int  # log end offset
    committed: int | None  # the group's committed offset (the next it would read)
    applied_max: int | None  # the highest offset a webhook_events row came from
    missing: list[Missing] = field(default_factory=list)

    @property
    def committed_past_missing(self) -> int:
        """Missing records below the committed offset: acknowledged, never applied."""
        return sum(
            1 for m in self.missing if self.committed is not None and m.offset < self.committed
        )

    def line(self) -> str:
        offsets = ",".join(str(m.offset) for m in self.missing[:20])
        return (
            f"{self.topic}/{self.partition}: end {self.end}, committed {self.committed}, "
            f"applied up to {self.applied_max}, {len(self.missing)} never applied"
            + (f" at {offsets} ({self.committed_past_missing} below the commit)" if offsets else "")
        )


def event_id_of(record: WebhookRecord) -> tuple[str, str] | None:
    provider = record.provider
    if provider not in PROVIDERS:
        return None
    try:
        payload = orjson.loads(record.value)
        return provider, PROVIDERS[provider].event_id(payload, record.value)
    except Exception:  # noqa: BLE001 - undecodable bodies are dead-lettered, not missing
        return None


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(settings.consumer_group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def diagnose(settings: Settings, engine: Engine) -> list[PartitionState]:
    with engine.connect() as conn:
        applied = {
            (provider, event_id)
            for provider, event_id in conn.execute(
                select(webhook_events.c.provider, webhook_events.c.event_id)
            )
        }
        highest = {
            (topic, partition): offset
            for topic, partition, offset in conn.execute(
                select(
                    webhook_events.c.kafka_topic,
                    webhook_events.c.kafka_partition,
                    func.max(webhook_events.c.kafka_offset),
                ).group_by(webhook_events.c.kafka_topic, webhook_events.c.kafka_partition)
            )
        }
    committed = await committed_offsets(settings)
    states: dict[tuple[str, int], PartitionState] = {}
    for name in topics.WEBHOOK_TOPICS:
        topic = settings.topic(name)
        async for batch in read_stretch(settings, topic, Stretch()):
            for record in batch:
                key = (record.topic, record.partition)
                state = states.get(key)
                if state is None:
                    tp = TopicPartition(record.topic, record.partition)
                    state = states[key] = PartitionState(
                        record.topic, record.partition, 0, committed.get(tp), highest.get(key)
                    )
                state.end = max(state.end, record.offset + 1)
                identity = event_id_of(record)
                if identity is not None and identity not in applied:
                    state.missing.append(Missing(record.offset, identity[1], record.correlation_id))
    return [states[k] for k in sorted(states)]


def as_json(states: list[PartitionState]) -> bytes:
    rows: list[dict[str, Any]] = [
        {**asdict(s), "committed_past_missing": s.committed_past_missing} for s in states
    ]
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2)
