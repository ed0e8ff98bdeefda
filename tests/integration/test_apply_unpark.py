"""Issue 12, defect 4, against the real broker and MariaDB: a no-show update that arrived
before its booking is parked (``unroutable``/``unknown_booking``) and applied once the
booking exists, even when the worker dies, or Kafka fails, between the booking's commit
and the un-parking.

The un-parking used to be remembered only in memory (the uids "this batch created"): a
crash in between left the update unroutable for ever, since the redelivered booking is no
longer new. Now the committed state itself (a parked update whose booking row exists) is
what the applier looks for, right after the batch and on its first batch after a start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import Engine

from pipeline.apply.applier import Applier, parked_fetcher
from pipeline.kafka_reader import Coordinates, fetch
from pipeline.records import WebhookRecord
from pipeline.settings import Settings
from tests.integration.ops_helpers import produce, rows_of
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

UID = "r8YcW3nQe5TjB1uLx7DkPa"  # the fixtures' booking
NO_SHOW = fixture_bytes("calcom", "BOOKING_NO_SHOW_UPDATED.json")
BOOKING = fixture_bytes("calcom", "BOOKING_CREATED.json")


class Crash(BaseException):
    """The worker process dying right here (not an Exception: nothing may catch it)."""


async def _records(settings: Settings, coords: Sequence[Coordinates]) -> list[WebhookRecord]:
    return await fetch(settings, coords)


def _no_show_state(engine: Engine) -> tuple[str, object]:
    [event] = rows_of(
        engine,
        "SELECT status FROM webhook_events WHERE event_type = 'BOOKING_NO_SHOW_UPDATED'",
    )
    [booking] = rows_of(engine, "SELECT no_show_at FROM appointments WHERE calcom_uid = :u", u=UID)
    return event["status"], booking["no_show_at"]


async def _park_then_book(
    settings: Settings, engine: Engine, between: BaseException
) -> list[WebhookRecord]:
    """The no-show applied (parked), then its booking applied with ``between`` raised
    after the booking's commit, where the parked update is fetched back."""
    seed_fixture_tenants(engine)
    coords = await produce(settings, "calcom", [(NO_SHOW, 1), (BOOKING, 2)])
    no_show, booking = await _records(settings, coords)
    first = await Applier(engine, fetch=parked_fetcher(settings)).apply([no_show])
    assert first.counts()["unroutable"] == 1

    async def failing_fetch(coords: list[Coordinates]) -> list[WebhookRecord]:
        raise between

    try:
        await asyncio.wait_for(Applier(engine, fetch=failing_fetch).apply([booking]), 60)
    except Crash:
        pass
    status, no_show_at = _no_show_state(engine)
    assert status == "unroutable" and no_show_at is None  # the booking committed, alone
    return [no_show, booking]


async def test_a_crash_between_booking_and_unparking_heals_on_redelivery(
    stack_settings: Settings, engine: Engine
) -> None:
    no_show, booking = await _park_then_book(stack_settings, engine, Crash())
    # The worker restarts; Kafka redelivers the unacked booking batch.
    result = await asyncio.wait_for(
        Applier(engine, fetch=parked_fetcher(stack_settings), first_sweep_s=0).apply([booking]),
        60,
    )
    assert result.counts()["applied"] >= 1
    status, no_show_at = _no_show_state(engine)
    assert status == "applied" and no_show_at is not None


async def test_a_kafka_error_between_is_waited_out(
    stack_settings: Settings, engine: Engine
) -> None:
    """Kafka failing the fetch must neither lose the update nor crash the agent (Faust
    would ack the batch): the applier retries until the parked update is applied."""
    seed_fixture_tenants(engine)
    coords = await produce(stack_settings, "calcom", [(NO_SHOW, 1), (BOOKING, 2)])
    no_show, booking = await _records(stack_settings, coords)
    await Applier(engine, fetch=parked_fetcher(stack_settings)).apply([no_show])
    failures = [KafkaConnectionError("injected"), KafkaConnectionError("injected")]
    real = parked_fetcher(stack_settings)

    async def flaky(coords: list[Coordinates]) -> list[WebhookRecord]:
        if failures:
            raise failures.pop()
        return await real(coords)

    applier = Applier(engine, fetch=flaky, max_backoff_s=0.2)
    await asyncio.wait_for(applier.apply([booking]), 60)
    assert failures == []
    status, no_show_at = _no_show_state(engine)
    assert status == "applied" and no_show_at is not None


async def test_a_crash_after_the_ack_heals_at_the_next_start(
    stack_settings: Settings, engine: Engine
) -> None:
    """Worse: the booking batch was acked anyway (Faust acks what a crashed agent held).
    The next applier's first sweep (its first batch ``first_sweep_s`` after the
    start, 10 s in the worker; 0 here), about anything, finds the parked update."""
    await _park_then_book(stack_settings, engine, Crash())
    other = fixture_bytes("calcom", "BOOKING_REQUESTED.json")
    [coords] = await produce(stack_settings, "calcom", [(other, 3)])
    [record] = await _records(stack_settings, [coords])
    await asyncio.wait_for(
        Applier(engine, fetch=parked_fetcher(stack_settings), first_sweep_s=0).apply([record]),
        60,
    )
    status, no_show_at = _no_show_state(engine)
    assert status == "applied" and no_show_at is not None
