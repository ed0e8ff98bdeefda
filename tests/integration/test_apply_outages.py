"""Issue 12, defect 3, against the real MariaDB: when the database (not the record) fails,
the apply path waits and dead-letters nothing; a key conflict that never clears ends as one
``db_rejected`` dead letter instead of a stalled topic; consecutive records failing the same
unknown way trip the circuit breaker instead of draining into the dead-letter topic.

The failures are injected into the real connection (a ``before_cursor_execute`` hook raises
the driver error MySQL would have sent for writes) so that each errno can be tried in
seconds. The fault suite (tests/faults/) does the real thing on a private MariaDB: stopped,
read-only, grants revoked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pymysql
import pytest
from sqlalchemy import Engine, create_engine, event

from pipeline import database
from pipeline.apply.applier import Applier
from pipeline.records import WebhookRecord
from pipeline.retry import Breaker
from pipeline.settings import Settings
from tests.support.fixtures import retell_calls as calls
from tests.support.state import statuses

pytestmark = pytest.mark.usefixtures("fixture_tenants")


class Injector:
    """Makes matching statements fail as MySQL would, until cleared."""

    def __init__(self, engine: Engine) -> None:
        self.error: Exception | None = None
        self.match = ("INSERT", "UPDATE", "DELETE")
        self.hits = 0
        event.listen(engine, "before_cursor_execute", self._hook)

    def fail(self, error: Exception, *match: str) -> None:
        self.error, self.match = error, match or ("INSERT", "UPDATE", "DELETE")

    def clear(self) -> None:
        self.error = None

    def _hook(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.error is not None and statement.lstrip().upper().startswith(self.match):
            self.hits += 1
            raise self.error


class Retries:
    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def __call__(self, reason: str, delay: float) -> None:
        self.reasons[reason] += 1


async def apply_while_failing(
    applier: Applier,
    records: list[WebhookRecord],
    retries: Retries,
    reason: str,
    injector: Injector,
) -> Any:
    """Apply during the failure; clear it once the applier has waited on ``reason`` twice."""
    task = asyncio.create_task(applier.apply(records))
    for _ in range(400):
        if retries.reasons[reason] >= 2 or task.done():
            break
        await asyncio.sleep(0.05)
    injector.clear()
    return await asyncio.wait_for(task, 60)


OUTAGES = [
    (1290, "mysql_1290_read_only"),
    (1114, "mysql_1114_table_full"),
    (1021, "mysql_1021_disk_full"),
    (1142, "mysql_1142_table_access_denied"),
    (1203, "mysql_1203_max_user_connections"),
    (1317, "mysql_1317_query_interrupted"),
    (1969, "mysql_1969_statement_timeout"),
]


@pytest.mark.parametrize(("errno", "reason"), OUTAGES)
async def test_an_outage_dead_letters_nothing(engine: Engine, errno: int, reason: str) -> None:
    injector, retries = Injector(engine), Retries()
    injector.fail(pymysql.err.OperationalError(errno, "injected"))
    applier = Applier(engine, on_retry=retries)
    result = await apply_while_failing(applier, calls(20), retries, reason, injector)
    assert result.dead_letters == []
    assert result.counts() == Counter({"applied": 20})
    assert retries.reasons[reason] >= 2, retries.reasons
    assert statuses(engine) == Counter({"applied": 20})


async def test_an_exhausted_pool_waits(db_settings: Settings, engine: Engine) -> None:
    """The SQLAlchemy pool timeout is not a DBAPI error; it must wait all the same."""
    tight = create_engine(
        db_settings.database_url.reveal(), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    retries = Retries()
    applier = Applier(tight, on_retry=retries)
    held = tight.connect()  # an analyst request holding the only connection
    try:
        task = asyncio.create_task(applier.apply(calls(5)))
        for _ in range(400):
            if retries.reasons["pool_timeout"] >= 2 or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        held.close()
    result = await asyncio.wait_for(task, 60)
    tight.dispose()
    assert result.dead_letters == [] and result.counts() == Counter({"applied": 5})
    assert retries.reasons["pool_timeout"] >= 2


async def test_a_key_conflict_that_never_clears_ends_as_one_dead_letter(engine: Engine) -> None:
    """1062 on one record's insert, for good (a collation collision): bounded retries,
    then that record alone is dead-lettered ``db_rejected``; the rest apply."""
    retries = Retries()
    bad = calls(1, tag="bad")[0]
    good = calls(4, tag="ok")
    conflict = pymysql.err.IntegrityError(1062, "Duplicate entry")

    def hook(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        # The rows' values travel in the statement's text (pipeline.database.insert_many).
        if statement.lstrip().upper().startswith("INSERT INTO CALLS") and "call_bad0000" in (
            statement + str(parameters)
        ):
            raise conflict

    event.listen(engine, "before_cursor_execute", hook)
    applier = Applier(engine, on_retry=retries)
    result = await asyncio.wait_for(applier.apply([good[0], bad, *good[1:]]), 60)
    assert [(d.record.offset, d.reason) for d in result.dead_letters] == [
        (bad.offset, "db_rejected")
    ]
    assert "mysql_1062_duplicate_key" in result.dead_letters[0].detail
    assert result.counts() == Counter({"applied": 4, "dead_lettered": 1})
    assert statuses(engine) == Counter({"applied": 4, "dead_lettered": 1})
    # Counted by errno (issue 12, defect 7), and bounded: two re-reads for the batch, two
    # for the record alone, then it is the record's problem (not a wait for ever).
    assert retries.reasons["mysql_1062_duplicate_key"] == 4, retries.reasons


async def test_a_conflict_that_clears_is_applied(engine: Engine) -> None:
    """A concurrent writer won the race once: the retry re-reads and applies."""
    once = [pymysql.err.IntegrityError(1062, "Duplicate entry")]

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CALLS") and once:
            raise once.pop()

    event.listen(engine, "before_cursor_execute", hook)
    result = await asyncio.wait_for(Applier(engine).apply(calls(3)), 60)
    assert result.dead_letters == [] and result.counts() == Counter({"applied": 3})


async def test_consecutive_unknown_failures_trip_the_breaker(engine: Engine) -> None:
    """An errno nobody classified, on every write of calls: the stream pauses at the third
    record. The batch is retried whole once writes work again, so even the two records
    refused before the breaker opened (never published) are applied in the end."""
    injector, retries = Injector(engine), Retries()
    injector.fail(pymysql.err.ProgrammingError(1064, "injected"), "INSERT INTO CALLS")
    breaker = Breaker(lambda: database.answers(engine), trip_after=3, cooldown_s=3600)
    applier = Applier(engine, on_retry=retries, breaker=breaker)
    result = await apply_while_failing(applier, calls(12), retries, "mysql_1064", injector)
    assert retries.reasons["mysql_1064"] >= 2
    assert result.dead_letters == []
    assert result.counts() == Counter({"applied": 12})
    assert statuses(engine) == Counter({"applied": 12})
    assert not breaker.is_open


async def test_consecutive_bugs_trip_the_breaker_too(engine: Engine, monkeypatch: Any) -> None:
    """Our own code raising on every record (a bad deploy) pauses the stream as well, after
    ``trip_after - 1`` records were dead-lettered ``internal_error`` (redrivable)."""
    from pipeline.apply import batch

    broken = [True]
    real = batch.apply_items

    def apply(conn: Any, items: Any, now: Any, **kwargs: Any) -> Any:
        if broken[0]:
            raise ZeroDivisionError("bad deploy")
        return real(conn, items, now, **kwargs)

    monkeypatch.setattr(batch, "apply_items", apply)
    retries = Retries()
    breaker = Breaker(lambda: database.answers(engine), trip_after=3, cooldown_s=3600)
    applier = Applier(engine, on_retry=retries, breaker=breaker)
    task = asyncio.create_task(applier.apply(calls(8)))
    for _ in range(400):
        if retries.reasons["ZeroDivisionError"] >= 2:
            break
        await asyncio.sleep(0.05)
    broken[0] = False
    result = await asyncio.wait_for(task, 60)
    assert [d.reason for d in result.dead_letters] == ["internal_error"] * 2
    assert result.counts() == Counter({"applied": 6, "dead_lettered": 2})
