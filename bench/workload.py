"""The synthetic workload every benchmark uses: tenants, calls and bookings, seeded.

A few companies with a few branches each (their own number, agent and Cal.com event type,
in different time zones); calls spread over a time span ending a few minutes ago, each
``call_started`` (connected calls only), ``call_ended``, ``call_analyzed``; about a third
of the connected calls book an appointment (``BOOKING_CREATED``), and some of those are
cancelled later. Repeat customers come from a per-company pool, so customer upserts hit
existing rows as they do in production.

Bodies come from ``testbed/events.py``, the same consistent bodies the tests use; a
benchmark whose events were all unroutable or poison would measure nothing, so
:func:`seed_tenants` puts the matching companies and branches in the database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from random import Random

from sqlalchemy import Engine, insert

from pipeline.models import branches, companies
from pipeline.records import WebhookRecord
from testbed.events import booking, call_events
from testbed.records import record

TIMEZONES = ("America/Los_Angeles", "America/New_York", "Europe/Berlin", "Australia/Sydney")
SENTIMENTS = ("Positive", "Positive", "Neutral", "Negative", "Unknown")
CUSTOMERS_PER_COMPANY = 400
MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class BenchBranch:
    id: int
    company_id: int
    phone: str
    agent_id: str
    event_type_id: int


@dataclass(frozen=True, slots=True)
class BenchCompany:
    id: int
    timezone: str
    branches: tuple[BenchBranch, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """One webhook delivery: when it happened, which provider, the raw body."""

    at_ms: int
    provider: str
    body: bytes


def tenants(count: int, branches_per_company: int = 3) -> tuple[BenchCompany, ...]:
    out = []
    for c in range(1, count + 1):
        out.append(
            BenchCompany(
                id=c,
                timezone=TIMEZONES[(c - 1) % len(TIMEZONES)],
                branches=tuple(
                    BenchBranch(
                        id=c * 100 + b,
                        company_id=c,
                        phone=f"+1415{c:03d}{b:04d}",
                        agent_id=f"agent_bench_{c}_{b}",
                        event_type_id=50_000 + c * 100 + b,
                    )
                    for b in range(1, branches_per_company + 1)
                ),
            )
        )
    return tuple(out)


def seed_tenants(engine: Engine, items: Sequence[BenchCompany]) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(companies),
            [{"id": c.id, "name": f"Bench Co {c.id}", "timezone": c.timezone} for c in items],
        )
        conn.execute(
            insert(branches),
            [
                {
                    "id": b.id,
                    "company_id": b.company_id,
                    "name": f"Bench Branch {b.id}",
                    "phone_number": b.phone,
                    "retell_agent_id": b.agent_id,
                    "calcom_event_type_id": b.event_type_id,
                }
                for c in items
                for b in c.branches
            ],
        )


def events(
    items: Sequence[BenchCompany],
    calls: int,
    *,
    end_ms: int,
    span_ms: int,
    seed: int = 7,
    with_started: bool = True,
) -> list[Event]:
    """The deliveries of ``calls`` calls (and their bookings), in event-time order.

    Every event happens at least five minutes before ``end_ms``, so no bucket lies in the
    future of whoever reads the dashboard afterwards.
    """
    rng = Random(seed)
    out: list[Event] = []
    latest = end_ms - 5 * MINUTE_MS - 2 * 3_600_000  # a cancellation is up to 2 h later
    for n in range(calls):
        company = items[rng.randrange(len(items))]
        branch = company.branches[rng.randrange(len(company.branches))]
        start = latest - int(rng.random() * span_ms)
        customer = f"+1628{company.id:03d}{rng.randrange(CUSTOMERS_PER_COMPANY):04d}"
        connected = rng.random() < 0.85
        call_id = f"call_bench_{seed}_{n:07d}"
        bodies = call_events(
            call_id,
            start_ms=start,
            to_number=branch.phone,
            from_number=customer,
            connected=connected,
            sentiment=SENTIMENTS[rng.randrange(len(SENTIMENTS))],
        )
        out.extend(_call_deliveries(bodies, start, connected, with_started))
        if connected and rng.random() < 0.35:
            uid = f"bk_bench_{seed}_{n:07d}"
            created = start + 30_000
            out.append(
                Event(
                    created,
                    "calcom",
                    booking(
                        "BOOKING_CREATED",
                        uid,
                        created_ms=created,
                        event_type_id=branch.event_type_id,
                        phone=customer,
                        email=f"customer{customer[-7:]}@example.com",
                        call_id=call_id,
                    ),
                )
            )
            if rng.random() < 0.15:
                cancelled = created + rng.randrange(10, 120) * MINUTE_MS
                out.append(
                    Event(
                        cancelled,
                        "calcom",
                        booking(
                            "BOOKING_CANCELLED",
                            uid,
                            created_ms=cancelled,
                            event_type_id=branch.event_type_id,
                            phone=customer,
                            email=f"customer{customer[-7:]}@example.com",
                            cancellationReason="Schedule conflict",
                        ),
                    )
                )
    out.sort(key=lambda e: e.at_ms)
    return out


def _call_deliveries(
    bodies: list[bytes], start: int, connected: bool, with_started: bool
) -> Iterator[Event]:
    """call_events() gives started, two transcript snapshots, ended, analyzed (connected)
    or ended, analyzed; the benchmarks skip the transcript snapshots."""
    if connected:
        started, _t1, _t2, ended, analyzed = bodies
        if with_started:
            yield Event(start, "retell", started)
    else:
        ended, analyzed = bodies
    yield Event(start + 95_000, "retell", ended)
    yield Event(start + 100_000, "retell", analyzed)


def records(deliveries: Sequence[Event]) -> list[WebhookRecord]:
    """The Kafka records the ingress would have written for ``deliveries``."""
    return [
        record(e.provider, e.body, received_at_ms=e.at_ms, partition=0, offset=i)
        for i, e in enumerate(deliveries)
    ]
