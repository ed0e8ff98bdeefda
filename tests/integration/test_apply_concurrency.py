"""Issue 12, defect 7, against the real MariaDB: the worker's two agents (Retell and
Cal.com) apply batches of the same company at the same time. Their transactions used to
take row locks in opposite orders (a call batch: calls, then the appointments it links; a
booking batch: appointments, then the calls it links) and to race on inserting the same
customer, so the worker logged deadlocks (1213) and duplicate keys (1062) under ordinary
load. Now every apply transaction first locks the companies it can touch, in id order,
so a call batch and a booking batch of one company take turns and never deadlock; two
call batches take those locks shared and run side by side (docs/integrity.md says why
they cannot deadlock either).

Evidence by counting: each retry is reported under its MySQL errno
(``mysql_1213_deadlock``, ``mysql_1062_duplicate_key``); with the lock order there are
none, and every event is applied exactly once.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pipeline import database
from pipeline.apply import load
from pipeline.apply.applier import Applier
from pipeline.apply.fold import Wants
from pipeline.records import WebhookRecord
from pipeline.settings import Settings
from testbed.events import booking, call_events
from testbed.records import record
from tests.integration.ops_helpers import rows_of
from tests.support.tenants import FIXTURE_NUMBER, seed_fixture_tenants

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("RACE_ROUNDS", "20"))
PER_BATCH = int(os.environ.get("RACE_PER_BATCH", "10"))
T0 = 1_767_790_800_000
PHONE = frozenset({FIXTURE_NUMBER})  # the branch the calls are made to
TYPES = frozenset({901})  # its Cal.com event type


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    eng = database.create_db_engine(db_settings, pool_size=4)
    seed_fixture_tenants(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _batches() -> tuple[list[list[WebhookRecord]], list[list[WebhookRecord]]]:
    """Round r, as the demo's traffic has it: a batch of calls (new ones, and the analysis
    of the previous round's, whose rows exist), and a batch of the bookings the previous
    round's calls made (linked to those calls; the same callers as customers, first seen
    by e-mail only and then with their phone, which absorbs the e-mail-only customer)."""
    retell: list[list[WebhookRecord]] = []
    calcom: list[list[WebhookRecord]] = []
    for r in range(ROUNDS + 1):
        calls, books = [], []
        for i in range(PER_BATCH):
            n = r * PER_BATCH + i
            if r < ROUNDS:
                events = call_events(_call(n), start_ms=T0 + n * 1000, from_number=_caller(n))
                calls += [record("retell", events[0]), record("retell", events[3])]
            if r > 0:
                m = n - PER_BATCH
                old = call_events(_call(m), start_ms=T0 + m * 1000, from_number=_caller(m))
                calls.append(record("retell", old[4]))
                books += [
                    record("calcom", _booking(m, f"uidEarly{m:04d}", phone=None)),
                    record("calcom", _booking(m, f"uidRace{m:04d}", phone=_caller(m))),
                ]
        retell.append(calls)
        calcom.append(books)
    return retell, calcom


def _call(n: int) -> str:
    return f"call_race_{n:04d}"


def _caller(n: int) -> str:
    return f"+1415555{n:04d}"


def _booking(n: int, uid: str, *, phone: str | None) -> bytes:
    return booking(
        "BOOKING_CREATED",
        uid,
        created_ms=T0 + n * 1000,
        phone=phone,
        email=f"p{n}@example.com",
        call_id=_call(n),
    )


async def test_two_agents_of_one_company_never_deadlock(engine: Engine) -> None:
    retries: Counter[str] = Counter()

    def on_retry(reason: str, delay: float) -> None:
        retries[reason] += 1

    retell, calcom = _batches()

    async def agent(batches: list[list[WebhookRecord]]) -> Counter[str]:
        applier = Applier(engine, on_retry=on_retry, max_backoff_s=0.5)
        seen: Counter[str] = Counter()
        for batch in batches:
            seen.update((await applier.apply(batch)).counts())
        return seen

    a, b = await asyncio.wait_for(asyncio.gather(agent(retell), agent(calcom)), 300)
    assert a + b == Counter({"applied": ROUNDS * PER_BATCH * 5})
    assert retries == Counter(), retries
    [linked] = rows_of(engine, "SELECT COUNT(*) AS n FROM appointments WHERE call_id IS NOT NULL")
    assert linked["n"] == 2 * ROUNDS * PER_BATCH
    [people] = rows_of(engine, "SELECT COUNT(*) AS n FROM customers")
    assert people["n"] == ROUNDS * PER_BATCH


def test_call_batches_of_one_company_do_not_take_turns(engine: Engine) -> None:
    """A batch that names no booking takes its companies' locks shared: a second call
    batch of the same company goes ahead at once (it waited for the first one's whole
    transaction, so two workers applied new calls no faster than one); a booking batch
    still waits for it."""
    with engine.connect() as first, first.begin():
        load.load(first, Wants(call_ids=frozenset({"call_first"}), phones=PHONE))
        with engine.connect() as second, second.begin():
            second.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            load.load(second, Wants(call_ids=frozenset({"call_2nd"}), phones=PHONE))  # no wait
        with engine.connect() as bookings, bookings.begin():
            bookings.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            with pytest.raises(OperationalError) as waited:
                load.load(bookings, Wants(uids=frozenset({"uidWaits"}), event_type_ids=TYPES))
            assert str(waited.value.orig).startswith("(1205,")  # lock wait timeout


async def test_two_call_agents_of_one_company_apply_side_by_side_exactly_once(
    engine: Engine,
) -> None:
    """Two call agents (two workers' partitions) apply calls of one company at once, their
    callers shared (a caller new to both inserts one customer: a duplicate key, retried):
    no deadlock, every event once, one customer per caller, every call counted once."""
    retries: Counter[str] = Counter()

    def on_retry(reason: str, delay: float) -> None:
        retries[reason] += 1

    def batches(parity: int) -> list[list[WebhookRecord]]:
        out = []
        for r in range(ROUNDS):
            batch = []
            for i in range(PER_BATCH):
                n = 2 * (r * PER_BATCH + i) + parity
                events = call_events(_call(n), start_ms=T0 + n * 1000, from_number=_caller(n % 7))
                batch += [record("retell", e) for e in (events[0], events[3], events[4])]
            out.append(batch)
        return out

    async def agent(parity: int) -> Counter[str]:
        applier = Applier(engine, on_retry=on_retry, max_backoff_s=0.5)
        seen: Counter[str] = Counter()
        for batch in batches(parity):
            seen.update((await applier.apply(batch)).counts())
        return seen

    a, b = await asyncio.wait_for(asyncio.gather(agent(0), agent(1)), 300)
    calls = 2 * ROUNDS * PER_BATCH
    assert a + b == Counter({"applied": 3 * calls})
    assert retries["mysql_1213_deadlock"] == 0, retries
    assert set(retries) <= {"mysql_1062_duplicate_key"}, retries
    [people] = rows_of(engine, "SELECT COUNT(*) AS n FROM customers")
    assert people["n"] == 7
    [counted] = rows_of(
        engine, "SELECT SUM(calls_total) AS n FROM dashboard_buckets WHERE granularity = 'day'"
    )
    assert counted["n"] == calls
