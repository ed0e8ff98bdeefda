"""The apply transaction's writes: carry out the fold's :class:`~pipeline.apply.plan.Plan`
with a fixed number of statements per batch whatever its size, inside the caller's
transaction. Nothing here decides anything the plan does not say, except the links of
appointments to calls (one ``UPDATE ... JOIN`` whose row count is reported).

Inserts of rows the batch saw as missing are plain ``INSERT`` on purpose: if a concurrent
writer (a replay next to a worker) created the same row in between, MySQL answers
"duplicate key", the batch is retried (:func:`pipeline.retry.retry_conflicts`) and
re-reads the row, instead of two transactions both believing an event was new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Table,
    and_,
    bindparam,
    insert,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert

from pipeline.apply.plan import LinkChecks, Plan
from pipeline.apply.rows import CustomerRow, EventRow, values
from pipeline.dashboard import buckets
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.database import sql_datetime
from pipeline.errors import DatabaseUnavailable
from pipeline.models import (
    appointments,
    calls,
    customers,
    webhook_events,
)


@dataclass(frozen=True, slots=True)
class Written:
    snapshots: list[BucketSnapshot]
    links: int  # appointments linked to their calls


def write(conn: Connection, plan: Plan, now: datetime) -> Written:
    """Carry out ``plan``. Order matters for foreign keys: customers first (their new ids
    go into the rows that point to them), absorbed customers deleted last."""
    ids = insert_customers(conn, plan.new_customers, now)
    if plan.changed_customers:
        upsert_by_id(conn, customers, [_stamped(r, now) for r in plan.changed_customers])
    for table, writes in ((calls, plan.calls), (appointments, plan.appointments)):
        new = [_resolved(r, ids) for r in writes.new]
        changed = [_resolved(r, ids) for r in writes.changed]
        if new:
            conn.execute(insert(table), [_stamped(r, now, created=True) for r in new])
        if changed:
            upsert_by_id(conn, table, [_stamped(r, now) for r in changed])
    for old, handle in plan.merged_customers:
        target = ids.get(handle, handle)
        for table in (calls, appointments):
            conn.execute(
                table.update().where(table.c.customer_id == old.id).values(customer_id=target)
            )
        conn.execute(customers.delete().where(customers.c.id == old.id))
    write_events(conn, list(plan.events.values()))
    check_links(conn, plan.checks)
    links = link_appointments(conn, plan.links, now)
    snapshots = add_to_buckets(conn, plan.contribution, now) if plan.contribution else []
    snapshots += read_buckets(conn, plan.republish)
    return Written(snapshots, links)


def _resolved(row: Any, ids: dict[int, int]) -> Any:
    """``row`` with a new customer's handle replaced by its id."""
    if row.customer_id is not None and row.customer_id < 0:
        return replace(row, customer_id=ids[row.customer_id])
    return row


def _stamped(row: Any, now: datetime, *, created: bool = False) -> dict[str, Any]:
    out = values(row)
    if created:
        del out["id"]
        out["created_at"] = now
    out["updated_at"] = now
    return out


def insert_customers(
    conn: Connection, new: dict[int, CustomerRow], now: datetime
) -> dict[int, int]:
    """Insert the batch's new customers; return handle → id."""
    if not new:
        return {}
    rows = list(new.values())
    insert_rows(conn, customers, CUSTOMER_COLUMNS, [_new_customer(r, now) for r in rows])
    companies_ = sorted({r.company_id for r in rows})
    phones = sorted({r.phone for r in rows if r.phone})
    emails = sorted({r.email for r in rows if r.email and not r.phone})
    match: list[ColumnElement[bool]] = []
    if phones:
        match.append(customers.c.phone.in_(phones))
    if emails:
        match.append(and_(customers.c.phone.is_(None), customers.c.email.in_(emails)))
    query = (
        select(customers.c.id, customers.c.company_id, customers.c.phone, customers.c.email)
        .where(customers.c.company_id.in_(companies_), or_(*match))
        .order_by(customers.c.id.desc())
    )
    by_phone, by_email = {}, {}
    for row in conn.execute(query):
        if row.phone:
            by_phone[(row.company_id, row.phone)] = row.id
        elif row.email:
            by_email[(row.company_id, row.email)] = row.id
    return {
        handle: by_phone[(r.company_id, r.phone)] if r.phone else by_email[(r.company_id, r.email)]
        for handle, r in new.items()
    }


def write_events(conn: Connection, rows: list[EventRow]) -> None:
    new = [_new_event(r) for r in rows if r.id is None]
    changed = [values(r) for r in rows if r.id is not None]
    if new:
        insert_rows(conn, webhook_events, EVENT_COLUMNS, new)
    if changed:
        upsert_by_id(conn, webhook_events, changed)


#: The columns of a new row, in the order of the tuples :func:`insert_rows` gets: the row
#: type's fields but ``id`` (MySQL numbers it), then the times (formatted for MySQL here,
#: :func:`pipeline.database.sql_datetime`), ``created_at`` last.
_TIMES = ("id", "received_at", "processed_at", "first_seen_at", "last_seen_at")
_EVENT_FIELDS = tuple(f.name for f in fields(EventRow) if f.name not in _TIMES)
_event = attrgetter(*_EVENT_FIELDS)
EVENT_COLUMNS = (*_EVENT_FIELDS, "received_at", "processed_at", "created_at")
_CUSTOMER_FIELDS = tuple(f.name for f in fields(CustomerRow) if f.name not in _TIMES)
_customer = attrgetter(*_CUSTOMER_FIELDS)
CUSTOMER_COLUMNS = (
    *_CUSTOMER_FIELDS,
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
)


def _new_event(row: EventRow) -> tuple[Any, ...]:
    processed_at = _batch_time(row.processed_at)
    return (*_event(row), sql_datetime(row.received_at), processed_at, processed_at)


def _new_customer(row: CustomerRow, now: datetime) -> tuple[Any, ...]:
    seen = (sql_datetime(row.first_seen_at), sql_datetime(row.last_seen_at))
    return (*_customer(row), *seen, _batch_time(now), _batch_time(now))


@lru_cache(maxsize=4)
def _batch_time(at: datetime) -> str | datetime | None:
    """The batch's ``now``, formatted once for all its rows."""
    return sql_datetime(at)


def insert_rows(
    conn: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """A plain multi-row INSERT of ``rows`` (tuples in the order of ``columns``), as one
    constant statement: pymysql's ``executemany`` sends all rows in one INSERT, and no
    SQLAlchemy statement is compiled, cached and bound per batch (the first apply's profile
    spent more there, and on escaping dicts, than MySQL took). Only for columns whose values
    the driver takes as they are: no JSON, nothing SQLAlchemy would convert."""
    conn.exec_driver_sql(_insert_sql(table.name, columns), rows)


@lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"


def upsert_by_id(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rewrite rows the transaction holds locked, in one multi-row statement.

    ``INSERT ... ON DUPLICATE KEY UPDATE`` on the primary key is MySQL's batched UPDATE:
    pymysql sends all rows in one statement, where ``executemany(UPDATE)`` would send one
    statement per row. Every row carries its ``id`` and full column set.
    """
    columns = tuple(c for c in rows[0] if c not in ("id", "created_at"))
    conn.execute(_upsert_statement(table, columns), rows)


@lru_cache(maxsize=16)
def _upsert_statement(table: Table, columns: tuple[str, ...]) -> Executable:
    """One statement object per table and column set, built once: SQLAlchemy memoizes a
    statement's cache key on the object, and building ``inserted`` aliases the table."""
    statement = mysql_insert(table)
    return statement.on_duplicate_key_update({c: statement.inserted[c] for c in columns})


def check_links(conn: Connection, checks: LinkChecks) -> None:
    """After this batch's inserts, re-read (locking, so an uncommitted insert is waited
    for) the other half of every call/booking pair the fold found missing. Two batches that
    each insert one half see each other here at least once (or deadlock, and one is rolled
    back); the one that sees the other is run again (``link_race``, retried like a
    deadlock), and then counts calls_booked from what is there."""
    found = False
    if checks.new_calls:
        # A booking of another company naming the call never converts it: not a race.
        pair = tuple_(appointments.c.retell_call_id, appointments.c.company_id)
        query = (
            select(appointments.c.id)
            .where(pair.in_(sorted(checks.new_calls)), appointments.c.booked_at.is_not(None))
            .with_for_update(read=True)
        )
        found = conn.execute(query).first() is not None
    if not found and checks.absent_calls:
        query = (
            select(calls.c.id)
            .where(calls.c.retell_call_id.in_(sorted(checks.absent_calls)))
            .with_for_update(read=True)
        )
        found = conn.execute(query).first() is not None
    if found:
        raise DatabaseUnavailable(
            "a booking and the call it names were applied at the same time; run again",
            reason="link_race",
            busy=True,
        )


LINK = text(
    "UPDATE appointments a JOIN calls c"
    " ON c.retell_call_id = a.retell_call_id AND c.company_id = a.company_id"
    " SET a.call_id = c.id, a.updated_at = :now"
    " WHERE a.call_id IS NULL AND a.retell_call_id IN :refs"
).bindparams(bindparam("refs", expanding=True))


def link_appointments(conn: Connection, call_refs: Sequence[str], now: datetime) -> int:
    """Link bookings to the calls that made them, within one company, whichever came first."""
    if not call_refs:
        return 0
    return int(conn.execute(LINK, {"now": now, "refs": list(call_refs)}).rowcount)


def add_to_buckets(
    conn: Connection, contribution: Contribution, now: datetime
) -> list[BucketSnapshot]:
    """Add counter deltas to the company's and the breakdown groups' buckets, bump versions,
    and read back the absolute rows for the snapshot topic (pipeline.dashboard.buckets)."""
    return buckets.add(conn, contribution, now)


def read_buckets(conn: Connection, keys: list[BucketKey]) -> list[BucketSnapshot]:
    return buckets.read(conn, keys)
