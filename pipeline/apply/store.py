"""Set-based reads and writes of the apply transaction: a fixed number of statements per
batch, whatever its size. Every function takes the connection first and runs inside the
caller's transaction.

Inserts of rows the batch saw as missing are plain ``INSERT`` on purpose: if a concurrent
writer (a replay next to a worker) created the same row in between, MySQL answers
"duplicate key", the batch is retried as transient and re-reads the row, instead of two
transactions both believing an event was new.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.models import (
    COUNTERS,
    appointments,
    calls,
    companies,
    customers,
    dashboard_buckets,
    webhook_events,
)

Row = dict[str, Any]
Changes = dict[str, dict[int | None, Counter[str]]]
TABLES: dict[str, Table] = {"calls": calls, "appointments": appointments}


def _note(changes: Changes, table: str, company_id: int | None, kind: str, n: int = 1) -> None:
    changes.setdefault(table, {}).setdefault(company_id, Counter())[kind] += n


def lock_events(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Row]:
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
        )
        .where(webhook_events.c.provider.in_(providers), webhook_events.c.event_id.in_(ids))
        .with_for_update()
    )
    found = {
        (r.provider, r.event_id): {"id": r.id, "status": r.status} for r in conn.execute(query)
    }
    return {k: v for k, v in found.items() if k in keys}


def _lock_by(conn: Connection, table: Table, column: str, values: Iterable[str]) -> dict[str, Row]:
    values = sorted(set(values))
    if not values:
        return {}
    query = select(table).where(table.c[column].in_(values)).with_for_update()
    return {row[column]: dict(row) for row in conn.execute(query).mappings()}


def lock_calls(conn: Connection, call_ids: Iterable[str]) -> dict[str, Row]:
    return _lock_by(conn, calls, "retell_call_id", call_ids)


def lock_appointments(conn: Connection, uids: Iterable[str]) -> dict[str, Row]:
    return _lock_by(conn, appointments, "calcom_uid", uids)


def company_timezones(conn: Connection, company_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(company_ids))
    if not ids:
        return {}
    query = select(companies.c.id, companies.c.timezone).where(companies.c.id.in_(ids))
    return {r.id: r.timezone for r in conn.execute(query)}


class CustomerBook:
    """The customers one batch touches: found by phone, then email; created when missing."""

    def __init__(
        self, conn: Connection, keys: list[tuple[int, str | None, str | None]], now: datetime
    ) -> None:
        self.conn = conn
        self.now = now
        self.before: dict[int, Row] = {}
        self.rows: dict[int, Row] = {}  # handle → row; existing rows use their id as handle
        self._next_new = -1
        self.absorbed: dict[int, int] = {}  # handle → the handle that absorbed it
        self.by_phone: dict[tuple[int, str], int] = {}
        self.by_email: dict[tuple[int, str], list[int]] = {}
        companies_ = sorted({c for c, _, _ in keys})
        phones = sorted({p for _, p, _ in keys if p})
        emails = sorted({e for _, _, e in keys if e})
        if not companies_:
            return
        # One lookup per index, (company_id, phone) and (company_id, email): an OR of the two
        # would let MySQL scan every customer of the company.
        found: dict[int, Row] = {}
        for column, values in (("phone", phones), ("email", emails)):
            if not values:
                continue
            query = (
                select(customers)
                .where(customers.c.company_id.in_(companies_), customers.c[column].in_(values))
                .order_by(customers.c.id)
                .with_for_update()
            )
            for row in conn.execute(query).mappings():
                found[row["id"]] = dict(row)
        for customer_id in sorted(found):
            self.before[customer_id] = dict(found[customer_id])
            self._index(customer_id, dict(found[customer_id]))

    def _index(self, handle: int, row: Row) -> None:
        self.rows[handle] = row
        if row.get("phone"):
            self.by_phone[(row["company_id"], row["phone"])] = handle
        if row.get("email"):
            handles = self.by_email.setdefault((row["company_id"], row["email"]), [])
            if handle not in handles:
                handles.append(handle)

    def _find(self, company_id: int, phone: str | None, email: str | None) -> int | None:
        if phone and (company_id, phone) in self.by_phone:
            return self.by_phone[(company_id, phone)]
        if email:
            # Several customers may share an email (a family): choose by the rows' content,
            # never by which was loaded or created first, so a replay picks the same one.
            candidates = sorted(
                self.by_email.get((company_id, email), []),
                key=lambda h: (
                    self.rows[h].get("phone") is not None,
                    self.rows[h].get("phone") or "",
                ),
            )
            for handle in candidates:
                if not phone or self.rows[handle].get("phone") is None:
                    return handle
        return None

    def upsert(
        self,
        company_id: int,
        *,
        phone: str | None,
        email: str | None,
        name: str | None,
        seen_at: datetime | None,
        merge: Callable[..., Row],
    ) -> int:
        """Fold one sighting in; returns a handle (an id, or negative for a new row).

        A sighting with both phone and email also absorbs email-only customers of that
        email (a booking seen before we knew the phone), so the customers end up the same
        whatever order the events came in.
        """
        handle = self._find(company_id, phone, email)
        current = self.rows.get(handle) if handle is not None else None
        merged = merge(
            current, company_id=company_id, phone=phone, email=email, name=name, seen_at=seen_at
        )
        if handle is None:
            handle = self._next_new
            self._next_new -= 1
        if phone and email:
            for other in list(self.by_email.get((company_id, email), [])):
                row = self.rows[other]
                if other == handle or row.get("phone") is not None:
                    continue
                for seen in (row.get("first_seen_at"), row.get("last_seen_at")):
                    merged = merge(
                        merged,
                        company_id=company_id,
                        phone=None,
                        email=None,
                        name=row.get("name"),
                        seen_at=seen,
                    )
                self.by_email[(company_id, email)].remove(other)
                del self.rows[other]
                self.absorbed[other] = handle
        self._index(handle, merged)
        return handle

    def flush(self, changes: Changes) -> None:
        """Write new and changed customers; afterwards ``id_of`` resolves every handle."""
        self.ids: dict[int, int] = {h: h for h in self.rows if h > 0}
        new = [(h, r) for h, r in self.rows.items() if h < 0]
        changed = [r for h, r in self.rows.items() if h > 0 and r != self.before.get(h)]
        if new:
            values = [
                {
                    "company_id": r["company_id"],
                    "phone": r.get("phone"),
                    "email": r.get("email"),
                    "name": r.get("name"),
                    "first_seen_at": r.get("first_seen_at"),
                    "last_seen_at": r.get("last_seen_at"),
                    "created_at": self.now,
                    "updated_at": self.now,
                }
                for _, r in new
            ]
            self.conn.execute(insert(customers), values)
            for _, r in new:
                _note(changes, "customers", r["company_id"], "insert")
            self._resolve_new(new)
        if changed:
            for r in changed:
                r["updated_at"] = self.now
                _note(changes, "customers", r["company_id"], "update")
            upsert_by_id(self.conn, customers, changed)

    def _resolve_new(self, new: list[tuple[int, Row]]) -> None:
        companies_ = sorted({r["company_id"] for _, r in new})
        phones = sorted({r["phone"] for _, r in new if r.get("phone")})
        emails = sorted({r["email"] for _, r in new if r.get("email") and not r.get("phone")})
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
        for row in self.conn.execute(query):
            if row.phone:
                by_phone[(row.company_id, row.phone)] = row.id
            elif row.email:
                by_email[(row.company_id, row.email)] = row.id
        for handle, r in new:
            if r.get("phone"):
                self.ids[handle] = by_phone[(r["company_id"], r["phone"])]
            else:
                self.ids[handle] = by_email[(r["company_id"], r["email"])]

    def id_of(self, handle: int | None) -> int | None:
        if handle is None:
            return None
        while handle in self.absorbed:
            handle = self.absorbed[handle]
        return self.ids[handle]

    def canonical(self, customer_id: int | None) -> int | None:
        """The id a stored ``customer_id`` should now be (absorbed customers move)."""
        if customer_id is None or customer_id not in self.absorbed:
            return customer_id
        return self.id_of(customer_id)

    def finish(self, changes: Changes) -> None:
        """After the calls and appointments are written: re-point rows of absorbed
        customers that the batch did not touch, then delete the absorbed rows."""
        for old in sorted(h for h in self.absorbed if h > 0):
            target = self.id_of(old)
            for table in (calls, appointments):
                self.conn.execute(
                    table.update().where(table.c.customer_id == old).values(customer_id=target)
                )
            self.conn.execute(customers.delete().where(customers.c.id == old))
            _note(changes, "customers", self.before[old]["company_id"], "merge")


def write_rows(
    conn: Connection,
    name: str,
    before: Mapping[str, Row],
    after: Mapping[str, Row],
    key: str,
    now: datetime,
    changes: Changes,
) -> None:
    """Insert rows that were missing; update rows whose merged value differs."""
    table = TABLES[name]
    columns = [c.name for c in table.columns if c.name != "id"]
    new, changed = [], []
    for k, row in after.items():
        if k not in before:
            values = {c: row.get(c) for c in columns}
            values["created_at"] = values["updated_at"] = now
            new.append(values)
            _note(changes, name, row.get("company_id"), "insert")
        elif row != before[k]:
            values = {c: row.get(c) for c in columns}
            values["updated_at"] = now
            values["id"] = row["id"]
            changed.append(values)
            _note(changes, name, row.get("company_id"), "update")
    if new:
        conn.execute(insert(table), new)
    if changed:
        upsert_by_id(conn, table, changed)


def write_events(
    conn: Connection,
    existing: Mapping[tuple[str, str], Row],
    pending: Mapping[tuple[str, str], Row],
    changes: Changes,
) -> None:
    new = [dict(r, created_at=r["processed_at"]) for k, r in pending.items() if k not in existing]
    changed = [dict(r, id=existing[k]["id"]) for k, r in pending.items() if k in existing]
    for r in new:
        _note(changes, "webhook_events", r["company_id"], "insert")
    for r in changed:
        _note(changes, "webhook_events", r["company_id"], "update")
    if new:
        conn.execute(insert(webhook_events), new)
    if changed:
        upsert_by_id(conn, webhook_events, changed)


def upsert_by_id(conn: Connection, table: Table, rows: list[Row]) -> None:
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


def link_appointments(
    conn: Connection, call_refs: Iterable[str], now: datetime, changes: Changes
) -> None:
    """Link bookings to the calls that made them, within one company, whichever came first."""
    refs = sorted(set(call_refs))
    if not refs:
        return
    linked = conn.execute(LINK, {"now": now, "refs": refs}).rowcount
    if linked:
        _note(changes, "appointments", None, "link", linked)


def add_to_buckets(
    conn: Connection, contribution: Contribution, now: datetime, changes: Changes
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
        _note(changes, "dashboard_buckets", key.company_id, "upsert")
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
            out.append(BucketSnapshot(key, {n: row[n] for n in COUNTERS}, row["version"]))
    return out


def parked_coordinates(conn: Connection, uids: Iterable[str]) -> list[tuple[str, int, int]]:
    """Kafka coordinates of events parked as ``unknown_booking`` for these bookings.

    A no-show update names only its booking; when it arrives before the booking it waits
    here, and is applied as soon as a batch creates that booking. The event id starts
    with ``BOOKING_NO_SHOW_UPDATED:<uid>:``, so each lookup is an index range scan.
    """
    uids = sorted(set(uids))
    if not uids:
        return []
    prefixes = [
        webhook_events.c.event_id.like(f"BOOKING_NO_SHOW_UPDATED:{_escape_like(uid)}:%")
        for uid in uids
    ]
    query = select(
        webhook_events.c.kafka_topic,
        webhook_events.c.kafka_partition,
        webhook_events.c.kafka_offset,
    ).where(
        webhook_events.c.provider == "calcom",
        webhook_events.c.status == "unroutable",
        webhook_events.c.error == "unknown_booking",
        or_(*prefixes),
    )
    return [(r.kafka_topic, r.kafka_partition, r.kafka_offset) for r in conn.execute(query)]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
