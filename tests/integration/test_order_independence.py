"""docs/architecture.md, invariant 3 on the real MariaDB: any order, any number of deliveries, any batching
of a call's and its bookings' events ends in the same rows and the same counters as
applying each event once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from pipeline.apply.applier import Applier
from pipeline.kafka_reader import Coordinates
from pipeline.records import WebhookRecord
from testbed.events import lifecycle
from testbed.records import record
from tests.support.state import clear_applied, db_state
from tests.support.tenants import seed_fixture_tenants

START_MS = 1_767_790_800_000  # 2026-01-07T13:00:00Z
EVENTS = lifecycle(START_MS)


@pytest.fixture(scope="module")
def tenant_engine() -> Iterator[Engine]:
    from pipeline import database
    from tests.integration.conftest import base_settings, create_test_database, drop_test_database

    scoped = create_test_database(base_settings())
    engine = database.create_db_engine(scoped, pool_size=2)
    seed_fixture_tenants(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_test_database(scoped)


class Log:
    """Stands in for the Kafka topic: records by coordinates, for un-parking."""

    def __init__(self) -> None:
        self.by_coordinates: dict[tuple[str, int, int], WebhookRecord] = {}

    def add(self, rec: WebhookRecord) -> WebhookRecord:
        self.by_coordinates[(rec.topic, rec.partition, rec.offset)] = rec
        return rec

    async def fetch(self, coords: list[Coordinates]) -> list[WebhookRecord]:
        return [self.by_coordinates[(c.topic, c.partition, c.offset)] for c in coords]


def run(engine: Engine, deliveries: list[int], batch_sizes: list[int]) -> dict:
    """Deliver events (indexes into EVENTS; repeats allowed) in ``batch_sizes`` batches."""
    clear_applied(engine)
    log = Log()
    received = {i: START_MS + 1000 * i for i in range(len(EVENTS))}
    records = []
    for offset, index in enumerate(deliveries):
        provider, body = EVENTS[index]
        records.append(
            log.add(record(provider, body, received_at_ms=received[index], offset=offset))
        )
    applier = Applier(engine, fetch=log.fetch)

    async def go() -> None:
        position, sizes = 0, iter(batch_sizes)
        while position < len(records):
            size = next(sizes, 1)
            await applier.apply(records[position : position + size])
            position += size

    asyncio.run(go())
    return db_state(engine)


@pytest.fixture(scope="module")
def reference(tenant_engine: Engine) -> dict:
    return run(tenant_engine, list(range(len(EVENTS))), [1] * len(EVENTS))


def test_reference_run_is_what_the_rulebook_says(reference: dict) -> None:
    calls = reference["calls"]
    assert calls["call_A"]["status"] == "ended" and calls["call_A"]["sentiment"] == "Positive"
    assert calls["call_B"]["status"] == "not_connected" and calls["call_B"]["started_at"] is None
    appts = reference["appointments"]
    assert appts["bk_1"]["status"] == "no_show" and appts["bk_1"]["call_id"] == "call_A"
    assert appts["bk_2"]["status"] == "rescheduled" and appts["bk_2"]["booked_at"] is not None
    assert (
        appts["bk_3"]["status"] == "cancelled" and appts["bk_3"]["rescheduled_from_uid"] == "bk_2"
    )
    assert len(reference["customers"]) == 1, "phone, email-only and call sightings are one person"
    assert all(e[3] == "applied" for e in reference["webhook_events"])
    totals = [
        sum(v[i] for k, v in reference["dashboard_buckets"].items() if k[1] == "day")
        for i in range(17)
    ]
    calls_total, booked, cancelled, rescheduled, no_show = (
        totals[0],
        totals[13],
        totals[14],
        totals[15],
        totals[16],
    )
    assert (calls_total, booked, cancelled, rescheduled, no_show) == (2, 2, 1, 1, 1)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_order_any_duplicates_any_batching(
    tenant_engine: Engine, reference: dict, data: st.DataObject
) -> None:
    copies = data.draw(st.lists(st.integers(1, 3), min_size=len(EVENTS), max_size=len(EVENTS)))
    deliveries = [i for i, n in enumerate(copies) for _ in range(n)]
    deliveries = data.draw(st.permutations(deliveries))
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=len(deliveries)))
    assert run(tenant_engine, list(deliveries), sizes) == reference


def test_no_show_before_its_booking_is_parked_then_applied(
    tenant_engine: Engine, reference: dict
) -> None:
    """The no-show update names only its booking; delivered first, in its own batch, it is
    parked as unroutable and applied when the booking arrives."""
    no_show_first = [8] + [i for i in range(len(EVENTS)) if i != 8]
    assert run(tenant_engine, no_show_first, [1] * len(EVENTS)) == reference


def test_everything_reversed_one_by_one(tenant_engine: Engine, reference: dict) -> None:
    backwards = list(reversed(range(len(EVENTS))))
    assert run(tenant_engine, backwards, [1] * len(EVENTS)) == reference
