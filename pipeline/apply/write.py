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
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    bindparam,
    or_,
    select,
    text,
)

from pipeline.apply.plan import LinkChecks, Plan
from pipeline.apply.rows import CustomerRow, EventRow
from pipeline.apply.statements import insert_new, insert_rows, upsert_rows
from pipeline.dashboard import buckets
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
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
        upsert_rows(conn, plan.changed_customers, updated_at=now)
    for writes in (plan.calls, plan.appointments):
        new = [_resolved(r, ids) for r in writes.new]
        changed = [_resolved(r, ids) for r in writes.changed]
        if new:
            insert_new(conn, new, created_at=now, updated_at=now)
        if changed:
            upsert_rows(conn, changed, updated_at=now)
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


def insert_customers(
    conn: Connection, new: dict[int, CustomerRow], now: datetime
) -> dict[int, int]:
    """Insert the batch's new customers; return handle → id."""
    if not new:
        return {}
    rows = list(new.values())
    insert_new(conn, rows, created_at=now, updated_at=now)
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
    new = [r for r in rows if r.id is None]
    changed = [r for r in rows if r.id is not None]
    if new:
        get = attrgetter(*NEW_EVENT_FIELDS)
        created = [(*get(r), r.processed_at) for r in new]
        insert_rows(conn, webhook_events, (*NEW_EVENT_FIELDS, "created_at"), created)
    if changed:
        upsert_rows(conn, changed)


#: A new ``webhook_events`` row: every field but ``id``; its ``created_at`` is the time it
#: was processed.
NEW_EVENT_FIELDS = tuple(f.name for f in fields(EventRow) if f.name != "id")


def check_links(conn: Connection, checks: LinkChecks) -> None:
    """After this batch's inserts, re-read (locking, so an uncommitted insert is waited
    for) the other half of every call/booking pair the fold found missing. Two batches that
    each insert one half see each other here at least once (or deadlock, and one is rolled
    back); the one that sees the other is run again (``link_race``, retried like a
    deadlock), and then counts calls_booked from what is there.

    Both reads go by call id alone, on that column's index (``FORCE INDEX``: a locking
    read that scans the table waits for every row another batch holds). The bookings'
    companies are matched here, not in SQL: a row ``IN`` of (call id, company) pairs made
    MariaDB's range optimizer weigh both indexes for every pair, in time that grew with
    the square of the batch's new calls (142 ms of server time for 467, even on an empty
    table)."""
    found = False
    if checks.new_calls:
        query = (
            select(appointments.c.retell_call_id, appointments.c.company_id)
            .with_hint(appointments, "FORCE INDEX (ix_appointments_retell_call_id)")
            .where(
                appointments.c.retell_call_id.in_(sorted({ref for ref, _ in checks.new_calls})),
                appointments.c.booked_at.is_not(None),
            )
            .with_for_update(read=True)
        )
        # A booking of another company naming the call never converts it: not a race.
        found = any(tuple(row) in checks.new_calls for row in conn.execute(query))
    if not found and checks.absent_calls:
        query = (
            select(calls.c.id)
            .with_hint(calls, "FORCE INDEX (uq_calls_retell_call_id)")
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
