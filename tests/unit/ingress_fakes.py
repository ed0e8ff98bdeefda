"""Fakes for the ingress unit tests: a Publisher and a Router that record what they see.

They implement the same protocols as the real ``KafkaPublisher`` and ``RoutingCache``, so
the app under test is the production app with only the I/O swapped out.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import KafkaUnavailable
from pipeline.ingress.producer import Headers, Published
from pipeline.ingress.routing import CallerContext, Route
from pipeline.providers import calcom, retell
from pipeline.settings import Secret, Settings

RETELL_KEY = "test-retell-key"
CALCOM_SECRET = "test-calcom-secret"


def make_settings(**changes: Any) -> Settings:
    base = Settings(
        retell_api_keys=(Secret(RETELL_KEY),),
        calcom_webhook_secrets=(Secret(CALCOM_SECRET),),
        ack_budget_s=0.3,
        retry_after_s=7,
        topic_prefix="unit.",
        max_body_bytes=4096,
        spool_dir=Path(tempfile.mkdtemp(prefix="switchboard-unit-spool-")),
    )
    return base.with_(**changes) if changes else base


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed(provider: str, body: bytes, *, at_ms: int | None = None) -> dict[str, str]:
    """Headers a provider would send for ``body`` (Content-Type included)."""
    if provider == "retell":
        return retell.sign(body, RETELL_KEY, now_ms() if at_ms is None else at_ms)
    return calcom.sign(body, CALCOM_SECRET, now_ms())


@dataclass
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> bytes:
        return dict(self.headers)[name]


@dataclass
class FakePublisher:
    """``mode``: ``ok`` records and acks; ``down`` raises at once; ``hang`` never acks, so,
    like the real publisher, it gives up after ``ack_budget_s`` (the batch deadline)."""

    mode: str = "ok"
    connected: bool = True
    delay_s: float = 0.0
    ack_budget_s: float = 0.3
    records: list[Record] = field(default_factory=list)
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def is_connected(self) -> bool:
        return self.connected

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> Published:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "down":
            raise KafkaUnavailable("Kafka producer is not connected")
        if self.mode == "hang":
            await asyncio.sleep(self.ack_budget_s)
            raise KafkaUnavailable(f"Kafka did not acknowledge within {self.ack_budget_s:g}s")
        self.records.append(Record(topic, key, value, list(headers)))
        return Published(topic, 0, len(self.records) - 1)

    async def publish_many(
        self, records: Sequence[tuple[str, bytes, bytes, Headers]], *, timeout_s: float
    ) -> list[BaseException | None]:
        if self.mode != "ok" or not self.connected:
            return [KafkaUnavailable("fake Kafka is down")] * len(records)
        for topic, key, value, headers in records:
            self.records.append(Record(topic, key, value, list(headers)))
        return [None] * len(records)


def route(
    company_id: int = 7,
    branch_id: int = 70,
    *,
    agent: str | None = "agent_bayview",
    tz: str = "America/Los_Angeles",
) -> Route:
    from zoneinfo import ZoneInfo

    return Route(
        company_id=company_id,
        company_name=f"Company {company_id}",
        branch_id=branch_id,
        branch_name=f"Branch {branch_id}",
        retell_agent_id=agent,
        timezone=ZoneInfo(tz),
    )


@dataclass
class FakeRouter:
    routes: dict[str, Route] = field(default_factory=dict)
    inactive: set[str] = field(default_factory=set)
    contexts: dict[tuple[int, str], CallerContext] = field(default_factory=dict)
    is_loaded: bool = True
    lookups: list[tuple[int, str]] = field(default_factory=list)

    @property
    def loaded(self) -> bool:
        return self.is_loaded

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def lookup(self, phone: str) -> Route | None:
        return self.routes.get(phone)

    def unrouted_reason(self, phone: str) -> str:
        return "inactive_number" if phone in self.inactive else "unknown_number"

    async def caller_context(self, company_id: int, phone: str) -> CallerContext | None:
        self.lookups.append((company_id, phone))
        return self.contexts.get((company_id, phone))


def context(name: str | None, at: datetime | None) -> CallerContext:
    return CallerContext(customer_name=name, next_appointment=at)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


@dataclass
class SentBatch:
    """One batch the code under test handed to :class:`StubKafkaProducer`."""

    topic: str
    partition: int
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]  # key, value, headers
    acked: asyncio.Future[Any]

    def ack(self, base_offset: int = 100) -> None:
        self.acked.set_result(_Meta(self.topic, self.partition, base_offset))

    def fail(self, error: BaseException) -> None:
        self.acked.set_exception(error)


@dataclass(frozen=True)
class _Meta:
    topic: str
    partition: int
    offset: int


class _Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


class StubKafkaProducer:
    """The part of ``AIOKafkaProducer`` that :class:`~pipeline.ingress.batches.RecordBatches`
    uses, with real record batch builders and acknowledgements the test gives by hand
    (``auto``: ``ack`` acks every batch at once, ``fail`` fails it with ``error``, ``hang``
    never answers; ``None``: the test answers ``self.sent[i]`` itself)."""

    def __init__(
        self, partitions: int = 12, auto: str | None = None, error: BaseException | None = None
    ) -> None:
        from aiokafka.producer.message_accumulator import BatchBuilder

        self._builder = BatchBuilder
        self.client = type("Client", (), {"cluster": _Cluster(partitions)})()
        self.auto = auto
        self.error = error
        self.sent: list[SentBatch] = []
        self.stopped = False
        self.handed: list[Any] = []  # builders, in the order send_batch got them

    def create_batch(self) -> Any:
        return self._builder(512 * 1024, 0)

    async def partitions_for(self, topic: str) -> set[int]:
        return self.client.cluster.partitions_for_topic(topic)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        from aiokafka.record.default_records import DefaultRecordBatch

        self.handed.append(batch)
        records = [
            (r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(bytes(batch._build()))
        ]
        sent = SentBatch(topic, partition, records, asyncio.get_running_loop().create_future())
        self.sent.append(sent)
        if self.auto == "ack":
            sent.ack(41)
        elif self.auto == "fail":
            assert self.error is not None
            sent.fail(self.error)
        return sent.acked

    async def stop(self) -> None:
        self.stopped = True
