"""A seeded multi-company story for dashboard tests, and what its numbers must be.

``build_story(now)`` invents calls and bookings for four companies in four timezones
(Los Angeles, Berlin, Kathmandu at +05:45, UTC), spread over the last 35 days plus a few
placed on purpose: in the current hour, half an hour either side of a Los Angeles local
midnight, on a daylight-saving change day, and 500 days ago (past every retention).
``story.records()`` gives the webhook records in apply order; ``story.expected()`` the
bucket counters docs/analyst.md says they produce, computed here from the story itself (with
``zoneinfo``, not ``pipeline.dashboard.aggregates``), so a bug shared by the apply path and
reconcile still shows up.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine, insert

from pipeline.dashboard.aggregates import BucketSnapshot
from pipeline.dashboard.snapshots import company_key, encode
from pipeline.models import COUNTERS, branches, companies
from pipeline.records import WebhookRecord
from testbed.records import record

Key = tuple[int, str, datetime]  # (company, granularity, naive UTC start)


@dataclass(frozen=True)
class Tenant:
    company_id: int
    name: str
    timezone: str
    branch_id: int
    phone: str
    agent_id: str
    event_type_id: int


TENANTS = (
    Tenant(1, "Harbor Dental", "America/Los_Angeles", 11, "+14155550101", "agent_la", 9101),
    Tenant(2, "Spree Salon", "Europe/Berlin", 21, "+4930555001", "agent_ber", 9201),
    Tenant(3, "Thamel Clinic", "Asia/Kathmandu", 31, "+97715550031", "agent_ktm", 9301),
    Tenant(4, "Meridian Labs", "UTC", 41, "+442055500041", "agent_utc", 9401),
)
LA = TENANTS[0]


def seed_tenants(engine: Engine, tenants: tuple[Tenant, ...] = TENANTS) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(companies),
            [{"id": t.company_id, "name": t.name, "timezone": t.timezone} for t in tenants],
        )
        conn.execute(
            insert(branches),
            [
                {
                    "id": t.branch_id,
                    "company_id": t.company_id,
                    "name": f"{t.name} main",
                    "phone_number": t.phone,
                    "retell_agent_id": t.agent_id,
                    "calcom_event_type_id": t.event_type_id,
                }
                for t in tenants
            ],
        )


def ms(at: datetime) -> int:
    return int(at.replace(tzinfo=UTC).timestamp() * 1000)


def iso_z(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds") + "Z"


def local_midnight(at: datetime, timezone: str) -> datetime:
    """Naive UTC instant of the local midnight that starts ``at``'s local day (zoneinfo)."""
    zone = ZoneInfo(timezone)
    local = at.replace(tzinfo=UTC).astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    return midnight.astimezone(UTC).replace(tzinfo=None)


def last_dst_change_day(now: datetime, timezone: str) -> datetime | None:
    """Local midnight (naive UTC) of the latest local day, at least 2 days ago and within
    300 days, whose length is not 24 hours."""
    day = local_midnight(now - timedelta(days=2), timezone)
    for _ in range(300):
        following = local_midnight(day + timedelta(hours=36), timezone)
        if following - day != timedelta(hours=24):
            return day
        day = local_midnight(day - timedelta(hours=12), timezone)
    return None


@dataclass
class Call:
    call_id: str
    tenant: Tenant
    direction: str
    customer: str
    start: datetime | None  # None: never connected
    end: datetime
    reason: str
    transfer_destination: str | None
    cost: Decimal
    ended: bool = True
    analyzed: bool = True
    sentiment: str = "Neutral"
    successful: bool | None = None

    @property
    def duration_ms(self) -> int:
        return ms(self.end) - ms(self.start) if self.start else 0

    @property
    def at(self) -> datetime:
        return self.start or self.end

    def _call(self) -> dict:
        business, customer = self.tenant.phone, self.customer
        from_n, to_n = (
            (business, customer) if self.direction == "outbound" else (customer, business)
        )
        call: dict = {
            "call_id": self.call_id,
            "agent_id": self.tenant.agent_id,
            "call_type": "phone_call",
            "call_status": "ended" if self.start else "not_connected",
            "direction": self.direction,
            "from_number": from_n,
            "to_number": to_n,
            "end_timestamp": ms(self.end),
            "duration_ms": self.duration_ms,
            "disconnection_reason": self.reason,
            "call_cost": {"combined_cost": float(self.cost)},
            "transcript": "Agent: Hello.\nUser: Hi.",
        }
        if self.start:
            call["start_timestamp"] = ms(self.start)
        if self.transfer_destination:
            call["transfer_destination"] = self.transfer_destination
        return call

    def bodies(self) -> list[tuple[bytes, datetime]]:
        out = []
        if self.start:
            started = {
                k: v
                for k, v in self._call().items()
                if k
                in (
                    "call_id",
                    "agent_id",
                    "call_type",
                    "direction",
                    "from_number",
                    "to_number",
                    "start_timestamp",
                )
            }
            started["call_status"] = "ongoing"
            out.append((orjson.dumps({"event": "call_started", "call": started}), self.start))
        if self.ended:
            out.append((orjson.dumps({"event": "call_ended", "call": self._call()}), self.end))
        if self.analyzed:
            call = self._call()
            call["call_analysis"] = {
                "call_summary": "A call.",
                "user_sentiment": self.sentiment,
                "in_voicemail": self.reason == "voicemail_reached",
            }
            if self.successful is not None:
                call["call_analysis"]["call_successful"] = self.successful
            out.append((orjson.dumps({"event": "call_analyzed", "call": call}), self.end))
        return out


@dataclass
class Booking:
    uid: str
    tenant: Tenant
    created: datetime
    cancelled: datetime | None = None
    rescheduled: tuple[str, datetime] | None = None  # (new uid, when)
    new_cancelled: datetime | None = None  # the rescheduled (new) booking cancelled later
    no_show: datetime | None = None
    email: str = "pat@example.com"
    call_id: str | None = None  # metadata.retell_call_id: the call the booking came from

    def _payload(self, uid: str) -> dict:
        return {
            "uid": uid,
            "bookingId": zlib.crc32(uid.encode()) % 10_000_000,
            "eventTypeId": self.tenant.event_type_id,
            "title": "Visit",
            "startTime": iso_z(self.created + timedelta(days=3)),
            "endTime": iso_z(self.created + timedelta(days=3, minutes=30)),
            "attendees": [{"name": "Pat Doe", "email": self.email, "timeZone": "UTC"}],
            "metadata": {"retell_call_id": self.call_id} if self.call_id else {},
        }

    def early_bodies(self) -> list[tuple[bytes, datetime]]:
        """Everything but no-show marks (those need the booking to exist: see docs)."""
        out = [(self._env("BOOKING_CREATED", self.created, self._payload(self.uid)), self.created)]
        if self.cancelled:
            payload = self._payload(self.uid) | {"status": "CANCELLED", "cancellationReason": "ill"}
            out.append((self._env("BOOKING_CANCELLED", self.cancelled, payload), self.cancelled))
        if self.rescheduled:
            new_uid, when = self.rescheduled
            payload = self._payload(new_uid) | {"rescheduleUid": self.uid}
            out.append((self._env("BOOKING_RESCHEDULED", when, payload), when))
            if self.new_cancelled:
                payload = self._payload(new_uid) | {"status": "CANCELLED"}
                out.append(
                    (
                        self._env("BOOKING_CANCELLED", self.new_cancelled, payload),
                        self.new_cancelled,
                    )
                )
        return out

    def late_bodies(self) -> list[tuple[bytes, datetime]]:
        if not self.no_show:
            return []
        payload = {
            "message": f"{self.email} marked as no-show",
            "attendees": [{"email": self.email, "noShow": True}],
            "bookingUid": self.uid,
        }
        return [(self._env("BOOKING_NO_SHOW_UPDATED", self.no_show, payload), self.no_show)]

    @staticmethod
    def _env(trigger: str, at: datetime, payload: dict) -> bytes:
        return orjson.dumps({"triggerEvent": trigger, "createdAt": iso_z(at), "payload": payload})


@dataclass
class Story:
    now: datetime
    calls: list[Call] = field(default_factory=list)
    bookings: list[Booking] = field(default_factory=list)
    seed: int = 7

    def batches(self, size: int = 40) -> list[list[WebhookRecord]]:
        """Calls and booking events shuffled together, then the no-show marks."""
        rng = random.Random(self.seed)
        offsets = itertools.count(1)
        first: list[WebhookRecord] = []
        for call in self.calls:
            for body, at in call.bodies():
                first.append(story_record("retell", body, at, next(offsets)))
        for booking in self.bookings:
            for body, at in booking.early_bodies():
                first.append(story_record("calcom", body, at, next(offsets)))
        rng.shuffle(first)
        late = [
            story_record("calcom", body, at, next(offsets))
            for booking in self.bookings
            for body, at in booking.late_bodies()
        ]
        # The no-show marks go in a final batch of their own, once every booking exists.
        cut = [first[i : i + size] for i in range(0, len(first), size)]
        return [*cut, late] if late else cut

    def expected(self) -> dict[Key, dict[str, int | Decimal]]:
        """docs/analyst.md counters per (company, granularity, bucket start), from the story."""
        out: dict[Key, dict[str, int | Decimal]] = defaultdict(
            lambda: {n: (Decimal(0) if n == "cost_cents_total" else 0) for n in COUNTERS}
        )

        def add(tenant: Tenant, at: datetime, deltas: dict[str, int | Decimal]) -> None:
            hour = at.replace(minute=0, second=0, microsecond=0)
            for key in (
                (tenant.company_id, "hour", hour),
                (tenant.company_id, "day", local_midnight(at, tenant.timezone)),
            ):
                for name, value in deltas.items():
                    out[key][name] += value

        named = {b.call_id for b in self.bookings if b.call_id}
        for c in self.calls:
            if deltas := _call_deltas(c, booked=c.call_id in named):
                add(c.tenant, c.at, deltas)
        for b in self.bookings:
            add(
                b.tenant,
                b.created,
                {"appointments_booked": 1, "appointments_without_call": int(not b.call_id)},
            )
            if b.cancelled:
                add(b.tenant, b.cancelled, {"appointments_cancelled": 1})
            if b.rescheduled:
                add(b.tenant, b.rescheduled[1], {"appointments_rescheduled": 1})
            if b.new_cancelled:
                add(b.tenant, b.new_cancelled, {"appointments_cancelled": 1})
            if b.no_show:
                add(b.tenant, b.no_show, {"appointments_no_show": 1})
        return dict(out)

    def expected_summary(self, company_id: int, as_of: datetime) -> dict[str, dict]:
        """The four windows of the summary at ``as_of`` (naive UTC), from ``expected()``."""
        tenant = next(t for t in TENANTS if t.company_id == company_id)
        expected = self.expected()
        zero = {n: (Decimal(0) if n == "cost_cents_total" else 0) for n in COUNTERS}
        hour = expected.get((company_id, "hour", as_of.replace(minute=0, second=0, microsecond=0)))
        days = []
        day = local_midnight(as_of, tenant.timezone)
        for _ in range(30):
            days.append(expected.get((company_id, "day", day), zero))
            day = local_midnight(day - timedelta(hours=12), tenant.timezone)

        def total(parts: list[dict]) -> dict:
            return {n: sum((p[n] for p in parts), zero[n]) for n in COUNTERS}

        return {
            "last_hour": hour or zero,
            "today": days[0],
            "last_7_days": total(days[:7]),
            "last_30_days": total(days),
        }


def story_record(provider: str, body: bytes, at: datetime, offset: int) -> WebhookRecord:
    return record(provider, body, received_at_ms=ms(at) + 1500, offset=offset)


REASONS = ("user_hangup", "agent_hangup", "voicemail_reached", "call_transfer", "dial_no_answer")
SENTIMENTS = ("Positive", "Neutral", "Negative", "Unknown")


def build_story(now: datetime, *, seed: int = 7, calls_per_company: int = 24) -> Story:
    rng = random.Random(seed)
    story = Story(now=now, seed=seed)
    ids = itertools.count(1)
    current_hour = now.replace(minute=0, second=0, microsecond=0)

    def add_call(tenant: Tenant, at: datetime, **overrides: object) -> Call:
        n = next(ids)
        connected = overrides.pop("connected", rng.random() > 0.2)
        reason = overrides.pop("reason", rng.choice(REASONS[:4]) if connected else "dial_no_answer")
        duration = timedelta(seconds=rng.randint(20, 600))
        call = Call(
            call_id=f"call_story_{seed}_{n:04d}",
            tenant=tenant,
            direction=str(
                overrides.pop("direction", rng.choice(("inbound", "inbound", "outbound")))
            ),
            customer=f"+1415555{n:04d}",
            start=at if connected else None,
            end=at + duration if connected else at,
            reason=str(reason),
            transfer_destination="+14155559999" if connected and rng.random() < 0.15 else None,
            cost=Decimal(rng.randint(0, 5000)) / 100 + Decimal(rng.choice((0, 25))) / 10000,
            ended=bool(overrides.pop("ended", rng.random() > 0.05)),
            analyzed=bool(overrides.pop("analyzed", rng.random() > 0.15)),
            sentiment=rng.choice(SENTIMENTS),
            successful=rng.choice((True, False, None)),
        )
        assert not overrides, overrides
        story.calls.append(call)
        return call

    for tenant in TENANTS:
        for _ in range(calls_per_company):
            add_call(tenant, now - timedelta(minutes=rng.randint(60, 35 * 24 * 60)))
        # The current UTC hour (last_hour), whatever minute the test runs at.
        span = max(int((now - current_hour).total_seconds()), 1)
        for _ in range(2):
            add_call(tenant, current_hour + timedelta(seconds=rng.randrange(span)), connected=True)
        # Past every retention: MySQL keeps it until the prune, reconcile ignores it.
        add_call(tenant, now - timedelta(days=500), connected=True, ended=True)
        # Bookings 0 and 2 come from the same connected inbound call (it converts once),
        # booking 4 from another; the others name no call.
        sources = [
            c
            for c in story.calls
            if c.tenant is tenant and c.start and c.direction == "inbound" and c.ended
        ]
        for n in range(8):
            created = now - timedelta(minutes=rng.randint(30, 28 * 24 * 60))
            booking = Booking(f"bk_{seed}_{tenant.company_id}_{n}", tenant, created)
            if n in (0, 2, 4) and len(sources) >= 2:
                booking.call_id = sources[n // 4].call_id
            later = created + timedelta(minutes=rng.randint(5, 600))
            later = min(later, now)
            kind = n % 4
            if kind == 1:
                booking.cancelled = later
            elif kind == 2:
                booking.rescheduled = (f"bk_{seed}_{tenant.company_id}_{n}_r", later)
                if n == 6:
                    booking.new_cancelled = min(later + timedelta(minutes=30), now)
            elif kind == 3:
                booking.no_show = later
            story.bookings.append(booking)
    # Half an hour either side of a Los Angeles local midnight (07:30Z and 08:30Z in winter):
    # the same UTC date, two local days.
    midnight = local_midnight(now - timedelta(days=3), LA.timezone)
    add_call(LA, midnight - timedelta(minutes=30), connected=True, ended=True)
    add_call(LA, midnight + timedelta(minutes=30), connected=True, ended=True)
    # 00:30 and 23:30 local on a daylight-saving change day: one 23- or 25-hour bucket.
    change = last_dst_change_day(now, LA.timezone)
    if change is not None:
        add_call(LA, change + timedelta(minutes=30), connected=True, ended=True)
        following = local_midnight(change + timedelta(hours=36), LA.timezone)
        add_call(LA, following - timedelta(minutes=30), connected=True, ended=True)
    return story


async def publish_snapshots(
    bootstrap: str, topic: str, snapshots: list[BucketSnapshot], *, force: bool = False
) -> None:
    """What a worker does after its commit: each touched bucket, keyed by company id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for snapshot in snapshots:
            await producer.send(
                topic, key=company_key(snapshot.key.company_id), value=encode(snapshot, force=force)
            )
        await producer.flush()
    finally:
        await producer.stop()


def _call_deltas(c: Call, *, booked: bool) -> dict[str, int | Decimal]:
    """What one story call adds to its buckets: the docs/analyst.md rules, written again
    independently of the apply path's (``booked``: a booking names the call)."""
    deltas: dict[str, int | Decimal] = {}
    if c.ended:
        deltas.update(
            {
                "calls_total": 1,
                f"calls_{c.direction}": 1,
                "calls_connected" if c.start else "calls_not_connected": 1,
                "duration_ms_total": c.duration_ms,
                "cost_cents_total": c.cost,
            }
        )
        if c.start and c.direction == "inbound":
            deltas["calls_inbound_connected"] = 1
            deltas["calls_booked"] = int(booked)
        if c.reason == "voicemail_reached":
            deltas["calls_voicemail"] = 1
        if c.reason == "call_transfer" or c.transfer_destination:
            deltas["calls_transferred"] = 1
    if c.analyzed:
        if c.successful is True:
            deltas["calls_successful"] = 1
        if c.sentiment in ("Positive", "Neutral", "Negative"):
            deltas[f"sentiment_{c.sentiment.lower()}"] = 1
    return deltas
