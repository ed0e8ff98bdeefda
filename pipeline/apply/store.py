"""The apply transaction's reads and writes: thin, set-based, a fixed number of statements
per batch whatever its size. Every function takes the connection first and runs inside the
caller's transaction. What to write is decided by the fold (:mod:`pipeline.apply.fold`);
this module only reads what the fold needs and carries out its :class:`Plan`.

Reads lock (``SELECT ... FOR UPDATE``) every row the batch can change. Inserts of rows the
batch saw as missing are plain ``INSERT`` on purpose: if a concurrent writer (a replay next
to a worker) created the same row in between, MySQL answers "duplicate key", the batch is
retried as transient and re-reads the row, instead of two transactions both believing an
event was new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert

from pipeline.apply.customers import Sighting
from pipeline.apply.fold import Loaded, Wants
from pipeline.apply.plan import Plan
from pipeline.apply.rows import (
    AppointmentRow,
    CallRow,
    CustomerRow,
    EventRow,
    StoredEvent,
    from_db,
    values,
)
from pipeline.apply.tenancy import Branch, Directory
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.dashboard.counters import Counters
from pipeline.models import (
    COUNTERS,
    appointments,
    branches,
    calls,
    companies,
    customers,
    dashboard_buckets,
    webhook_events,
)
from pipeline.providers import calcom
from pipeline.providers.facts import EventKey

# --- load ---------------------------------------------------------------------------------


def load(conn: Connection, wants: Wants) -> Loaded:
    """Lock the events, calls and appointments the batch names; read its branches."""
    return Loaded(
        events=lock_events(conn, wants.events),
        calls=_lock_by(conn, CallRow, "retell_call_id", wants.call_ids),
        appointments=_lock_by(conn, AppointmentRow, "calcom_uid", wants.uids),
        directory=load_directory(
            conn,
            phones=wants.phones,
            agent_ids=wants.agent_ids,
            event_type_ids=wants.event_type_ids,
            branch_ids=wants.branch_ids,
        ),
    )


def load_people(
    conn: Connection, loaded: Loaded, companies_: Iterable[int], seen: Sequence[Sighting]
) -> None:
    """The time zones of the companies the batch counts for, and its customers, locked."""
    loaded.timezones = company_timezones(conn, companies_)
    loaded.customers = lock_customers(conn, seen)


def lock_events(conn: Connection, keys: Iterable[EventKey]) -> dict[EventKey, StoredEvent]:
    keys = set(keys)
    if not keys:
        return {}
    providers = sorted({p for p, _ in keys})
    ids = sorted({e for _, e in keys})
    query = (
        select(
            webhook_events.c.id,
            webhook_events.c.provider,
            webhook_events.c.event_id,
            webhook_events.c.status,
            webhook_events.c.payload_sha256,
        )
        .where(webhook_events.c.provider.in_(providers), webhook_events.c.event_id.in_(ids))
        .with_for_update()
    )
    found = {
        (r.provider, r.event_id): StoredEvent(r.id, r.status, r.payload_sha256)
        for r in conn.execute(query)
    }
    return {k: v for k, v in found.items() if k in keys}


def _lock_by(conn: Connection, kind: Any, column: str, keys: Iterable[str]) -> dict[str, Any]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    table = calls if kind is CallRow else appointments
    query = select(table).where(table.c[column].in_(wanted)).with_for_update()
    return {row[column]: from_db(kind, row) for row in conn.execute(query).mappings()}


def company_timezones(conn: Connection, company_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(company_ids))
    if not ids:
        return {}
    query = select(companies.c.id, companies.c.timezone).where(companies.c.id.in_(ids))
    return {r.id: r.timezone for r in conn.execute(query)}


def lock_customers(conn: Connection, seen: Sequence[Sighting]) -> list[CustomerRow]:
    """The stored customers the sightings can match, by (company, phone) and (company, email).

    One lookup per index: an OR of the two would let MySQL scan every customer of the
    company.
    """
    companies_ = sorted({s.company_id for s in seen})
    found: dict[int, CustomerRow] = {}
    for column, wanted in (
        ("phone", sorted({s.phone for s in seen if s.phone})),
        ("email", sorted({s.email for s in seen if s.email})),
    ):
        if not companies_ or not wanted:
            continue
        query = (
            select(customers)
            .where(customers.c.company_id.in_(companies_), customers.c[column].in_(wanted))
            .order_by(customers.c.id)
            .with_for_update()
        )
        for row in conn.execute(query).mappings():
            found[row["id"]] = from_db(CustomerRow, row)
    return [found[i] for i in sorted(found)]


def load_directory(
    conn: Connection,
    *,
    phones: Iterable[str] = (),
    agent_ids: Iterable[str] = (),
    event_type_ids: Iterable[int] = (),
    branch_ids: Iterable[int] = (),
) -> Directory:
    """One query for every branch the batch might be attributed to."""
    clauses = []
    if wanted_phones := sorted(set(phones)):
        clauses.append(branches.c.phone_number.in_(wanted_phones))
    if wanted_agents := sorted(set(agent_ids)):
        clauses.append(branches.c.retell_agent_id.in_(wanted_agents))
    if wanted_types := sorted(set(event_type_ids)):
        clauses.append(branches.c.calcom_event_type_id.in_(wanted_types))
    if wanted_ids := sorted(set(branch_ids)):
        clauses.append(branches.c.id.in_(wanted_ids))
    directory = Directory()
    if not clauses:
        return directory
    query = (
        select(
            branches.c.id,
            branches.c.company_id,
            branches.c.phone_number,
            branches.c.retell_agent_id,
            branches.c.calcom_event_type_id,
            (branches.c.is_active & companies.c.is_active).label("active"),
        )
        .join(companies, companies.c.id == branches.c.company_id)
        .where(or_(*clauses))
    )
    for row in conn.execute(query):
        directory.add(
            Branch(
                id=row.id,
                company_id=row.company_id,
                phone_number=row.phone_number,
                retell_agent_id=row.retell_agent_id,
                calcom_event_type_id=row.calcom_event_type_id,
                active=bool(row.active),
            )
        )
    return directory


# --- write --------------------------------------------------------------------------------


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
    conn.execute(insert(customers), [_stamped(r, now, created=True) for r in new.values()])
    rows = list(new.values())
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
    new = [values(r) for r in rows if r.id is None]
    changed = [values(r) for r in rows if r.id is not None]
    for r in new:
        del r["id"]
        r["created_at"] = r["processed_at"]
    if new:
        conn.execute(insert(webhook_events), new)
    if changed:
        upsert_by_id(conn, webhook_events, changed)


def upsert_by_id(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rewrite rows the transaction holds locked, in one multi-row statement.

    ``INSERT ... ON DUPLICATE KEY UPDATE`` on the primary key is MySQL's batched UPDATE:
    pymysql sends all rows in one statement, where ``executemany(UPDATE)`` would send one
    statement per row. Every row carries its ``id`` and full column set.
    """
    columns = [c for c in rows[0] if c not in ("id", "created_at")]
    statement = mysql_insert(table)
    statement = statement.on_duplicate_key_update({c: statement.inserted[c] for c in columns})
    conn.execute(statement, rows)


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
    """Add counter deltas (fixed key order: no deadlocks between batches), bump versions,
    and read back the absolute rows for the snapshot topic."""
    keys = sorted(contribution)
    rows = []
    for key in keys:
        deltas = contribution[key]
        row: dict[str, Any] = {name: deltas.get(name, 0) for name in COUNTERS}
        row.update(
            company_id=key.company_id,
            granularity=key.granularity,
            bucket_start=key.bucket_start,
            version=1,
            updated_at=now,
        )
        rows.append(row)
    statement = mysql_insert(dashboard_buckets)
    statement = statement.on_duplicate_key_update(
        {
            **{name: dashboard_buckets.c[name] + statement.inserted[name] for name in COUNTERS},
            # A literal, not a bound parameter: pymysql's executemany rewrites the statement
            # into one multi-row INSERT only when the ON DUPLICATE KEY tail has no params.
            "version": literal_column("version + 1"),
            "updated_at": statement.inserted.updated_at,
        }
    )
    conn.execute(statement, rows)
    return read_buckets(conn, keys)


def read_buckets(conn: Connection, keys: list[BucketKey]) -> list[BucketSnapshot]:
    if not keys:
        return []
    wanted = set(keys)
    query = select(dashboard_buckets).where(
        dashboard_buckets.c.company_id.in_(sorted({k.company_id for k in keys})),
        dashboard_buckets.c.granularity.in_(sorted({k.granularity for k in keys})),
        dashboard_buckets.c.bucket_start.in_(sorted({k.bucket_start for k in keys})),
    )
    out = []
    for row in conn.execute(query).mappings():
        key = BucketKey(row["company_id"], row["granularity"], row["bucket_start"])
        if key in wanted:
            out.append(BucketSnapshot(key, Counters(row), row["version"]))
    return out


def parked_coordinates(conn: Connection, uids: Iterable[str]) -> list[tuple[str, int, int]]:
    """Kafka coordinates of events parked as ``unknown_booking`` for these bookings.

    A no-show update names only its booking; when it arrives before the booking it waits
    here, and is applied as soon as a batch creates that booking. Its event id starts with
    the booking's uid (:func:`pipeline.providers.calcom.no_show_prefix`), so each lookup is
    an index range scan.
    """
    wanted = sorted(set(uids))
    if not wanted:
        return []
    prefixes = [
        webhook_events.c.event_id.like(_escape_like(calcom.no_show_prefix(uid)) + "%")
        for uid in wanted
    ]
    query = select(
        webhook_events.c.kafka_topic,
        webhook_events.c.kafka_partition,
        webhook_events.c.kafka_offset,
    ).where(
        webhook_events.c.provider == calcom.NAME,
        webhook_events.c.status == "unroutable",
        webhook_events.c.error == "unknown_booking",
        or_(*prefixes),
    )
    return [(r.kafka_topic, r.kafka_partition, r.kafka_offset) for r in conn.execute(query)]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
