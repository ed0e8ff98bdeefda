"""The locking re-read after a batch's inserts (``write.check_links``), against the real
MariaDB: a booking and the call it names, inserted at once by two transactions that each
found the other absent, are caught (``link_race``, the batch runs again); and the re-read
of a batch's new calls costs the same whatever their number.

It compared ``(retell_call_id, company_id)`` pairs with a row ``IN``. MariaDB's range
optimizer weighs such a list on both indexes the pair touches, and its time grew with the
square of the pairs: 2.7 ms of server time for 50, 28 ms for 200, 142 ms for 467 (a batch
of ``call_ended`` records, a backfill's whole stretch), even on an empty table. Now it
reads by call id alone, on that column's index, and matches the companies in Python.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Connection, Engine, event, insert

from pipeline.apply.plan import LinkChecks
from pipeline.apply.write import check_links
from pipeline.errors import DatabaseUnavailable
from pipeline.models import appointments, calls
from tests.support.tenants import BAYVIEW, OTHER

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixture_tenants")]

AT = datetime(2026, 11, 30, 9, 0)


def add_call(conn: Connection, call_id: str, company: int = BAYVIEW) -> None:
    conn.execute(insert(calls), {"retell_call_id": call_id, "company_id": company})


def add_booking(
    conn: Connection, uid: str, call_id: str, company: int = BAYVIEW, *, booked: bool = True
) -> None:
    row = {"calcom_uid": uid, "company_id": company, "retell_call_id": call_id}
    conn.execute(
        insert(appointments), {**row, "status": "accepted", "booked_at": AT if booked else None}
    )


def raced(engine: Engine, checks: LinkChecks, other: str, *, company: int = BAYVIEW) -> bool:
    """This batch inserted its half (the call, or a booking naming ``other``); another
    transaction inserted the other half and committed; does the re-read see it?"""
    with engine.connect() as mine:
        with mine.begin():
            if checks.new_calls:
                add_call(mine, other)
            else:
                add_booking(mine, "uid-mine", other)
            with engine.begin() as theirs:
                if checks.new_calls:
                    add_booking(theirs, "uid-theirs", other, company)
                else:
                    add_call(theirs, other, company)
            try:
                check_links(mine, checks)
            except DatabaseUnavailable as exc:
                assert exc.reason == "link_race" and exc.busy
                return True
            finally:
                mine.rollback()
    return False


def test_a_booking_committed_after_the_batch_found_its_call_new_is_a_race(
    engine: Engine,
) -> None:
    assert raced(engine, LinkChecks(new_calls=frozenset({("call_1", BAYVIEW)})), "call_1")


def test_a_booking_of_another_company_naming_the_call_is_no_race(engine: Engine) -> None:
    checks = LinkChecks(new_calls=frozenset({("call_1", BAYVIEW)}))
    assert not raced(engine, checks, "call_1", company=OTHER)


def test_a_call_committed_after_the_batch_found_it_absent_is_a_race(engine: Engine) -> None:
    assert raced(engine, LinkChecks(absent_calls=frozenset({"call_2"})), "call_2")


def test_a_booking_not_yet_booked_converts_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        add_booking(conn, "uid-pending", "call_3", booked=False)
    with engine.connect() as conn, conn.begin():
        check_links(conn, LinkChecks(new_calls=frozenset({("call_3", BAYVIEW)})))


def test_the_new_calls_are_read_again_by_call_id_on_its_index(engine: Engine) -> None:
    """Whatever the table holds, the re-read of 400 new calls names their ids in a one-column
    list and MariaDB reads that column's index (a row ``IN`` of 400 pairs took 100 ms and
    more of the optimizer's time, even on an empty table, and then scanned the table)."""
    with engine.begin() as conn:
        for n in range(40):  # a table MariaDB would rather scan than read by index
            add_booking(conn, f"uid-{n}", f"call_old_{n}", OTHER if n % 2 else BAYVIEW)
    new_calls = frozenset((f"call_new_{n}", BAYVIEW if n % 2 else OTHER) for n in range(400))
    statements: list[tuple[str, object]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as conn, conn.begin():
            check_links(conn, LinkChecks(new_calls=new_calls))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    ((statement, parameters),) = statements
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()  # type: ignore[arg-type]
    assert [(row.table, row.key) for row in plan] == [
        ("appointments", "ix_appointments_retell_call_id")
    ]
    assert ") IN ((" not in statement  # no row constructor
