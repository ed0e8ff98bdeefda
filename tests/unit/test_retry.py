"""Database failures are classified by cause, and the apply path's retry policy follows:
wait out the database (never dead-letter), bound key conflicts, and trip a circuit breaker
when consecutive records fail the same way (issue 12, defect 3)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pymysql
import pytest
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.database import DbFailure, Kind, classify, is_transient, unavailable
from pipeline.errors import DatabaseUnavailable
from pipeline.retry import Backoff, Breaker, retry_conflicts, until_available


def mysql_error(errno: int, cls: type = OperationalError, message: str = "x") -> Exception:
    """What SQLAlchemy raises when pymysql reports ``errno``."""
    driver = {
        OperationalError: pymysql.err.OperationalError,
        IntegrityError: pymysql.err.IntegrityError,
        ProgrammingError: pymysql.err.ProgrammingError,
    }[cls]
    return cls("INSERT INTO t VALUES (%s)", {"secret": "+14155550142"}, driver(errno, message))


# The outages the review listed, and the old allowlist's own entries: all wait.
WAITS = [
    (1290, "read_only"),
    (1836, "read_only_mode"),
    (1792, "read_only_transaction"),
    (1114, "table_full"),
    (1021, "disk_full"),
    (1142, "table_access_denied"),
    (1143, "column_access_denied"),
    (1044, "database_access_denied"),
    (1045, "access_denied"),
    (1203, "max_user_connections"),
    (1226, "user_resource_exceeded"),
    (1040, "too_many_connections"),
    (1317, "query_interrupted"),
    (3024, "statement_timeout"),
    (1969, "statement_timeout"),
    (2003, "connection_refused"),
    (2006, "server_gone"),
    (2013, "connection_lost"),
    (1927, "connection_killed"),
    (1053, "server_shutdown"),
    (1146, "no_such_table"),
]


@pytest.mark.parametrize(("errno", "name"), WAITS)
def test_outages_wait_and_are_named_by_errno(errno: int, name: str) -> None:
    failure = classify(mysql_error(errno))
    assert failure == DbFailure(Kind.UNAVAILABLE, f"mysql_{errno}_{name}", errno)
    assert failure.waits
    assert is_transient(mysql_error(errno))


@pytest.mark.parametrize(("errno", "name"), [(1213, "deadlock"), (1205, "lock_wait_timeout")])
def test_our_own_collisions_are_busy(errno: int, name: str) -> None:
    failure = classify(mysql_error(errno))
    assert failure.kind is Kind.BUSY and failure.reason == f"mysql_{errno}_{name}"
    error = unavailable(mysql_error(errno))
    assert error is not None and error.busy and error.reason == f"mysql_{errno}_{name}"


def test_pool_timeout_and_lost_connections_wait() -> None:
    assert classify(PoolTimeout("QueuePool limit reached")).reason == "pool_timeout"
    assert classify(DisconnectionError()).reason == "connection_lost"
    assert classify(ConnectionResetError()).waits
    # pymysql's "(0, '')" when the socket closed under a query: no errno at all.
    assert classify(OperationalError("SELECT 1", {}, pymysql.err.OperationalError())).waits
    invalidated = OperationalError("SELECT 1", {}, Exception(), connection_invalidated=True)
    assert classify(invalidated).waits


def test_a_duplicate_key_is_a_conflict_not_a_wait() -> None:
    failure = classify(mysql_error(1062, IntegrityError))
    assert failure == DbFailure(Kind.CONFLICT, "mysql_1062_duplicate_key", 1062)
    assert not failure.waits and not is_transient(mysql_error(1062, IntegrityError))
    assert unavailable(mysql_error(1062, IntegrityError)) is None


@pytest.mark.parametrize("errno", [1406, 1264, 1366, 1048, 1690, 4025])
def test_values_that_do_not_fit_are_the_records_problem(errno: int) -> None:
    failure = classify(mysql_error(errno, IntegrityError))
    assert failure.kind is Kind.RECORD and not failure.waits


def test_unknown_errors_are_neither_waited_nor_trusted() -> None:
    assert classify(mysql_error(1064, ProgrammingError)) == DbFailure(
        Kind.UNKNOWN, "mysql_1064", 1064
    )
    assert classify(KeyError("x")) == DbFailure(Kind.UNKNOWN, "KeyError")


def test_database_unavailable_keeps_its_reason() -> None:
    exc = DatabaseUnavailable("parked lookup", reason="mysql_1290_read_only")
    assert classify(exc) == DbFailure(Kind.UNAVAILABLE, "mysql_1290_read_only")
    assert DatabaseUnavailable("legacy").reason == "database_unavailable"


def test_reasons_never_carry_row_data() -> None:
    exc = mysql_error(1062, IntegrityError, "Duplicate entry '+14155550142' for key 'uq'")
    error = unavailable(mysql_error(1290, message="--read-only '+14155550142'"))
    assert error is not None
    for text in (classify(exc).reason, error.reason, str(error)):
        assert "4155550142" not in text


# ---- retry_conflicts ----------------------------------------------------------------------


def flaky(*failures: Exception, result: Any = "ok") -> Any:
    calls: list[int] = []

    def work() -> Any:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result

    work.calls = calls  # type: ignore[attr-defined]
    return work


def test_a_conflict_that_clears_is_retried() -> None:
    work = flaky(mysql_error(1062, IntegrityError))
    retried: list[str] = []
    assert (
        retry_conflicts(work, sleep=lambda s: None, on_retry=lambda r, d: retried.append(r)) == "ok"
    )
    assert len(work.calls) == 2 and retried == ["mysql_1062_duplicate_key"]


def test_a_conflict_that_stays_is_raised_after_the_bound() -> None:
    work = flaky(*[mysql_error(1062, IntegrityError)] * 10)
    with pytest.raises(IntegrityError):
        retry_conflicts(work, attempts=3, sleep=lambda s: None)
    assert len(work.calls) == 3


def test_other_failures_are_not_retried_as_conflicts() -> None:
    work = flaky(mysql_error(1406, IntegrityError))
    with pytest.raises(IntegrityError):
        retry_conflicts(work, sleep=lambda s: None)
    assert len(work.calls) == 1


# ---- until_available ------------------------------------------------------------------------


async def test_until_available_waits_by_reason_and_returns() -> None:
    work = flaky(
        DatabaseUnavailable("x", reason="mysql_1290_read_only"),
        DatabaseUnavailable("x", reason="mysql_1213_deadlock", busy=True),
    )
    retries: list[tuple[str, float]] = []
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    got = await until_available(
        functools.partial(asyncio.to_thread, work),
        on_retry=lambda r, d: retries.append((r, d)),
        backoff=Backoff(rng=lambda: 1.0),
        sleep=sleep,
    )
    assert got == "ok"
    assert [r for r, _ in retries] == ["mysql_1290_read_only", "mysql_1213_deadlock"]
    assert slept == [0.2, 0.4]


async def test_until_available_lets_other_errors_through() -> None:
    with pytest.raises(KeyError):
        await until_available(functools.partial(asyncio.to_thread, flaky(KeyError("bug"))))


def test_backoff_grows_to_its_ceiling_and_busy_stays_short() -> None:
    backoff = Backoff(first_s=1, max_s=8, busy_max_s=2, rng=lambda: 1.0)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.next(busy=True) == 2
    backoff.reset()
    assert backoff.next() == 1
    jittered = Backoff(first_s=1, rng=lambda: 0.0)
    assert jittered.next() == 0.5


# ---- Breaker ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


BAD = DbFailure(Kind.UNKNOWN, "mysql_1064", 1064)


def test_breaker_lets_isolated_failures_through() -> None:
    breaker = Breaker(probe=lambda: True, trip_after=3, clock=Clock())
    for _ in range(5):
        breaker.check(BAD)
        breaker.check(BAD)
        breaker.succeeded()  # a good record in between: not systematic
    assert not breaker.is_open


def test_breaker_pauses_consecutive_failures_until_the_database_answers() -> None:
    clock, answers = Clock(), [False]
    breaker = Breaker(probe=lambda: answers[0], trip_after=3, cooldown_s=30, clock=clock)
    breaker.check(BAD)
    breaker.check(BAD)
    with pytest.raises(DatabaseUnavailable) as held:
        breaker.check(BAD)
    assert held.value.reason == "mysql_1064" and breaker.is_open
    clock.now = 10
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD)  # still cooling down
    clock.now = 40
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD)  # cooled down, but the database does not answer
    answers[0] = True
    breaker.check(BAD)  # it answers, and the record still fails: that record is bad
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD)  # ... and the next one waits a doubled cool-down
    clock.now = 40 + 59
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD)
    clock.now = 40 + 61
    breaker.check(BAD)


def test_breaker_closes_on_success_and_counts_each_reason_apart() -> None:
    clock = Clock()
    breaker = Breaker(probe=lambda: True, trip_after=2, clock=clock)
    breaker.check(BAD)
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD)
    breaker.succeeded()
    assert not breaker.is_open
    other = DbFailure(Kind.UNKNOWN, "ZeroDivisionError")
    breaker.check(BAD)
    breaker.check(other)  # a different reason starts a new streak
    with pytest.raises(DatabaseUnavailable):
        breaker.check(other)


def test_breaker_trusts_mysql_about_record_data() -> None:
    """Three deliveries of one over-long event are the record's problem, not an outage."""
    breaker = Breaker(probe=lambda: True, trip_after=2, clock=Clock())
    for failure in [DbFailure(Kind.RECORD, "mysql_1406_data_too_long", 1406)] * 3 + [
        DbFailure(Kind.CONFLICT, "mysql_1062_duplicate_key", 1062)
    ] * 3:
        breaker.check(failure)
    assert not breaker.is_open


def test_breaker_counts_a_record_once() -> None:
    breaker = Breaker(probe=lambda: True, trip_after=2, clock=Clock())
    for _ in range(3):
        breaker.check(BAD, ("t", 0, 1))  # the same record, failing on every path it takes
    assert not breaker.is_open
    with pytest.raises(DatabaseUnavailable):
        breaker.check(BAD, ("t", 0, 2))


def test_breaker_is_safe_across_threads() -> None:
    breaker = Breaker(probe=lambda: True, trip_after=1000, clock=Clock())

    async def hammer() -> None:
        await asyncio.gather(*(asyncio.to_thread(breaker.check, BAD) for _ in range(200)))

    asyncio.run(hammer())
    assert breaker._streak == 200
