"""Helpers for the ops integration tests: realistic traffic on the test's own topics, a
stand-in for the worker, and fingerprints of every table.

The worker stand-in reads a whole topic and hands each batch to the
:class:`~pipeline.apply.applier.Applier`, then publishes dead letters and snapshots with the
worker's headers: what the Faust agents do, without Faust (the worker has its own tests).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine, text

from pipeline import topics
from pipeline.apply.applier import Applier
from pipeline.apply.loop import apply_all, records
from pipeline.dashboard import snapshots
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.kafka_reader import Coordinates, Stretch
from pipeline.ops.arguments import format_ms
from pipeline.ops.outputs import Outputs
from pipeline.ops.report import RunReport
from pipeline.ops.stretch import read_stretch
from pipeline.providers import get
from pipeline.records import encode_headers
from pipeline.settings import Settings
from tests.support.fixtures import fixture_bytes

TABLES = (
    "companies",
    "branches",
    "customers",
    "calls",
    "appointments",
    "webhook_events",
    "dashboard_buckets",
)
HOUR_MS = 3_600_000
# Two days ago, on the hour. Record timestamps are the receive times, and the broker's
# retention (7 days) deletes segments whose records look older than that right away: a
# fixed date in the past makes records vanish in the middle of a test.
BASE_MS = (int(time.time() * 1000) // HOUR_MS - 48) * HOUR_MS
TRANSCRIPT = "Agent: Good morning, Bayview Dental.\nUser: my number is +14155550142. " * 20


def _fixture(provider: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(fixture_bytes(provider, name))
    return data


def phone(i: int) -> str:
    return f"+1415555{1000 + i:04d}"


def call_id(i: int) -> str:
    return f"call_ops_{i:04d}"


def call_bodies(i: int, start_ms: int) -> list[bytes]:
    """call_started, transcript_updated, call_ended, call_analyzed of call ``i``."""
    out = []
    end_ms = start_ms + 90_000 + i * 1_000
    for name in ("call_started", "transcript_updated", "call_ended", "call_analyzed"):
        body = _fixture("retell", f"{name}.json")
        call = body["call"]
        call["call_id"] = call_id(i)
        call["from_number"] = phone(i)
        if "start_timestamp" in call:
            call["start_timestamp"] = start_ms
        if "end_timestamp" in call:
            call["end_timestamp"] = end_ms
        if "duration_ms" in call:
            call["duration_ms"] = end_ms - start_ms
        if "call_cost" in call:
            call["call_cost"]["combined_cost"] = 10 + i * 0.5
        if "transcript" in call:
            call["transcript"] = TRANSCRIPT
        if "call_analysis" in call:
            call["call_analysis"]["user_sentiment"] = ("Positive", "Neutral", "Negative")[i % 3]
            call["call_analysis"]["call_successful"] = i % 2 == 0
        out.append(orjson.dumps(body))
    return out


def booking_bodies(i: int, created_ms: int) -> list[bytes]:
    """BOOKING_CREATED of booking ``i`` (made by call ``i``), then by ``i % 4``: nothing,
    a cancellation, a reschedule (new uid), a no-show mark."""
    uid = f"bk_ops_{i:04d}"
    created = _fixture("calcom", "BOOKING_CREATED.json")
    created["createdAt"] = format_ms(created_ms)
    payload = created["payload"]
    payload.update(uid=uid, bookingId=50_000 + i)
    payload["metadata"] = {"retell_call_id": call_id(i)}
    payload["responses"]["attendeePhoneNumber"]["value"] = phone(i)
    bodies = [orjson.dumps(created)]
    later = format_ms(created_ms + HOUR_MS)
    if i % 4 == 1:
        cancelled = _fixture("calcom", "BOOKING_CANCELLED.json")
        cancelled["createdAt"] = later
        cancelled["payload"].update(uid=uid, bookingId=50_000 + i)
        bodies.append(orjson.dumps(cancelled))
    elif i % 4 == 2:
        moved = _fixture("calcom", "BOOKING_RESCHEDULED.json")
        moved["createdAt"] = later
        moved["payload"].update(uid=f"{uid}_r", bookingId=60_000 + i, rescheduleUid=uid)
        bodies.append(orjson.dumps(moved))
    elif i % 4 == 3:
        no_show = _fixture("calcom", "BOOKING_NO_SHOW_UPDATED.json")
        no_show["createdAt"] = later
        no_show["payload"].update(bookingUid=uid, bookingId=50_000 + i)
        bodies.append(orjson.dumps(no_show))
    # One patient per booking: the fixtures' shared attendee email would make every
    # booking's customer the same person (email is the customer fallback key).
    return [
        b.replace(b"marisol.vance@example.net", f"patient{i:04d}@example.com".encode())
        for b in bodies
    ]


def headers_for(provider: str, body: bytes, received_at_ms: int) -> list[tuple[str, bytes]]:
    """The headers the ingress writes (docs/architecture.md)."""
    envelope = get(provider).parse(body)
    return encode_headers(
        provider, envelope.event_id, envelope.event_type, str(uuid.uuid4()), received_at_ms
    )


async def produce(
    settings: Settings, provider: str, bodies: list[tuple[bytes, int]]
) -> list[Coordinates]:
    """Write ``(body, received_at_ms)`` pairs to the provider's topic as the ingress would
    (key, headers; the record timestamp is the receive time). Returns their coordinates."""
    topic = settings.topic(f"webhooks.{provider}")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    coords = []
    try:
        for body, received_at_ms in bodies:
            envelope = get(provider).parse(body)
            meta = await producer.send_and_wait(
                topic,
                key=envelope.key.encode(),
                value=body,
                headers=headers_for(provider, body, received_at_ms),
                timestamp_ms=received_at_ms,
            )
            coords.append(Coordinates(topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return coords


async def produce_raw(
    settings: Settings, provider: str, key: bytes, body: bytes, headers: list[tuple[str, bytes]]
) -> Coordinates:
    """One record with exactly these key/headers (for poison that no parser accepts)."""
    topic = settings.topic(f"webhooks.{provider}")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, key=key, value=body, headers=headers)
    finally:
        await producer.stop()
    return Coordinates(topic, meta.partition, meta.offset)


async def apply_like_worker(settings: Settings, engine: Engine, provider: str) -> RunReport:
    """Everything on the provider's topic through the Applier, outputs published."""
    report = RunReport()
    applier = Applier(engine)
    topic = settings.topic(f"webhooks.{provider}")
    async with Outputs(settings) as outputs:
        batches = read_stretch(settings, topic, Stretch(from_offset=0))
        async for done in apply_all(batches, applier, outputs, records):
            report.add(len(done.batch), done.result, done.published)
    return report


async def read_all(settings: Settings, name: str) -> list[Any]:
    """Every record of a topic of this test (WebhookRecords)."""
    out: list[Any] = []
    topic = settings.topic(name)
    async for batch in read_stretch(settings, topic, Stretch(from_offset=0)):
        out += batch
    return out


async def latest_snapshots(settings: Settings) -> list[BucketSnapshot]:
    """The snapshot with the highest version of every bucket on the snapshot topic (what
    the dashboard table keeps), checking each is keyed by its company."""
    best: dict[BucketKey, BucketSnapshot] = {}
    for record in await read_all(settings, topics.SNAPSHOTS):
        for snapshot, _ in snapshots.decode(record.value):
            assert record.key == snapshots.company_key(snapshot.key.company_id)
            if snapshot.key not in best or best[snapshot.key].version < snapshot.version:
                best[snapshot.key] = snapshot
    return list(best.values())


def fingerprint(engine: Engine) -> dict[str, tuple[int, int]]:
    """``CHECKSUM TABLE`` and row count of every table: covers every column, ``updated_at``
    and ``dashboard_buckets.version`` included, so a replay that writes anything shows."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            checksum = conn.execute(text(f"CHECKSUM TABLE `{table}`")).one()[1]
            count = conn.execute(text(f"SELECT COUNT(*) FROM `{table}`")).scalar_one()
            out[table] = (checksum, count)
    return out


def natural_rows(engine: Engine) -> dict[str, dict[str, dict[str, Any]]]:
    """calls by retell_call_id and appointments by calcom_uid, every column but the
    surrogate ``id`` and the ``created_at``/``updated_at`` of the row itself; foreign keys
    as the natural keys they point to (a restored call gets a new id)."""
    with engine.connect() as conn:
        customer = {
            r.id: (r.company_id, r.phone, r.email)
            for r in conn.execute(text("SELECT id, company_id, phone, email FROM customers"))
        }
        call_rows = [dict(r) for r in conn.execute(text("SELECT * FROM calls")).mappings()]
        call_ref = {r["id"]: r["retell_call_id"] for r in call_rows}
        appt_rows = [dict(r) for r in conn.execute(text("SELECT * FROM appointments")).mappings()]
    skip = {"id", "created_at", "updated_at"}

    def natural(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k not in skip}
        out["customer_id"] = customer.get(row["customer_id"])
        if "call_id" in row:
            out["call_id"] = call_ref.get(row["call_id"]) if row["call_id"] else None
        return out

    return {
        "calls": {r["retell_call_id"]: natural(r) for r in call_rows},
        "appointments": {r["calcom_uid"]: natural(r) for r in appt_rows},
    }


def call_start_ms(i: int) -> int:
    return BASE_MS + i * 600_000


async def produce_traffic(settings: Settings, calls: int) -> dict[str, list[Coordinates]]:
    """``calls`` calls (4 events each) and their bookings (1 or 2 events each)."""
    retell, calcom = [], []
    for i in range(calls):
        start = call_start_ms(i)
        started, transcript, ended, analyzed = call_bodies(i, start)
        end = start + 90_000 + i * 1_000
        retell += [
            (started, start),
            (transcript, start + 30_000),
            (ended, end + 1_000),
            (analyzed, end + 30_000),
        ]
        for n, body in enumerate(booking_bodies(i, start + 300_000)):
            calcom.append((body, start + 300_000 + n * HOUR_MS))
    return {
        "retell": await produce(settings, "retell", retell),
        "calcom": await produce(settings, "calcom", calcom),
    }


def rows_of(engine: Engine, query: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(query), params).mappings()]


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that points ``switchboard`` at this test's database and topics."""
    return {
        "SWITCHBOARD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SWITCHBOARD_DATABASE_URL": settings.database_url.reveal(),
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
    }
