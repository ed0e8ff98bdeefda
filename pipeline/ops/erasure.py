"""``switchboard customers erase``: remove a person's personal data, keep the numbers exact.

What goes, across every company (a person can be a customer of several):

* ``customers`` rows with that phone number or e-mail address: ``name``, ``phone`` and
  ``email`` become NULL. The row stays, anonymous, so the calls and appointments that
  point at it keep their links and nothing else has to change;
* their ``calls`` (and any call from or to that number): the person's side of the call
  (``from_number`` inbound, ``to_number`` outbound, or whichever equals the number),
  ``transcript``, ``summary``, ``recording_url`` and ``metadata`` (Retell's dynamic
  variables can carry names);
* their ``appointments`` (and those booked from their calls): ``title`` (Cal.com puts the
  attendee's name in it) and ``cancellation_reason`` (free text).

The person's other identifiers on those rows (the phone number of someone erased by e-mail,
and the other way round) go on the erasure list too, so their next call is covered.

What stays: everything the dashboard counts (direction, times, durations, costs, status,
disconnection reason, sentiment, success, transfer, links), so ``dashboard_buckets``, the
Faust tables and ``switchboard reconcile`` are unchanged. ``webhook_events`` holds no
personal data. The raw webhook bodies on Kafka cannot be edited (append-only); they
disappear with the topics' retention (``switchboard retention apply``), and until then the
erasure list (:mod:`pipeline.erasures`) keeps replays, redrives and late webhooks from
storing the person's data again.

Order of work, in one transaction: the erasure list entry is inserted first, then the rows
are read with locking reads. The apply path (:mod:`pipeline.apply.privacy`) reads the list
with a shared lock before it locks any row, so this insert waits for the batches that read the
list before it, and later batches wait for this commit and then see the entry: no batch
writes the person's data after the erasure, and the two never wait on each other in a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, null, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert

from pipeline import erasures as erasure_list
from pipeline.logs import mask_phone
from pipeline.models import appointments, calls, companies, customers, erasures
from pipeline.ops import BadArguments

CHUNK = 500
CALL_FIELDS = ("transcript", "summary", "recording_url", "metadata")
APPOINTMENT_FIELDS = ("title", "cancellation_reason")


@dataclass
class ErasureReport:
    kind: str
    shown: str  # the value, masked (a phone) or partly hidden (an e-mail)
    dry_run: bool = False
    newly_listed: bool = True
    customers: int = 0
    calls: int = 0
    appointments: int = 0
    companies: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        verb = "would erase" if self.dry_run else "erased"
        where = ", ".join(str(c) for c in self.companies) or "none"
        listed = (
            "would add it to the erasure list"
            if self.dry_run
            else (
                "added to the erasure list" if self.newly_listed else "already on the erasure list"
            )
        )
        return [
            f"{verb} {self.kind} {self.shown}: {self.customers} customer(s) "
            f"(companies: {where}), {self.calls} call(s), {self.appointments} appointment(s)",
            f"{listed}: replays, redrives and new webhooks about it store no personal data",
            "raw webhook bodies on Kafka are not edited; they expire with the topics' "
            "retention (switchboard retention apply)",
        ]


def shown(kind: str, value: str) -> str:
    if kind == erasure_list.PHONE:
        return mask_phone(value)
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def erase(engine: Engine, kind: str, raw: str, *, dry_run: bool = False) -> ErasureReport:
    """Erase one person (``kind`` phone or email); everything in one transaction, rolled
    back when ``dry_run``."""
    if kind not in erasure_list.KINDS:
        raise BadArguments(f"kind must be one of {', '.join(erasure_list.KINDS)}")
    value = erasure_list.normalise(kind, raw)
    key = erasure_list.digest(kind, raw)
    if value is None or key is None:
        what = "a phone number" if kind == erasure_list.PHONE else "an e-mail address"
        raise BadArguments(f"--{kind}: {raw!r} is not {what}")
    report = ErasureReport(kind=kind, shown=shown(kind, value), dry_run=dry_run)
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            report.newly_listed = _list(conn, kind, key, now)
            for other_kind, other_key in _also_known_as(conn, kind, value) - {(kind, key)}:
                _list(conn, other_kind, other_key, now)
            _erase_rows(conn, kind, value, now, report)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    return report


def _list(conn: Connection, kind: str, key: str, now: datetime) -> bool:
    """Insert (or touch) the list entry; True when it is new."""
    statement = mysql_insert(erasures).values(
        kind=kind, value_sha256=key, created_at=now, updated_at=now
    )
    result = conn.execute(statement.on_duplicate_key_update(updated_at=now))
    return bool(result.rowcount == 1)  # MySQL: 1 inserted, 2 updated


def _also_known_as(conn: Connection, kind: str, value: str) -> set[tuple[str, str]]:
    """The list keys of the other phone numbers and addresses the person's customer rows
    hold (erased by e-mail, their calls come from a phone number). Read before any row is
    locked, so that every list entry is written before the row locks (the apply path takes
    the list's lock first: the same order, no deadlock)."""
    column = customers.c.phone if kind == erasure_list.PHONE else customers.c.email
    company_ids = _ids(conn, select(companies.c.id))
    found: set[tuple[str, str]] = set()
    for start in range(0, len(company_ids), CHUNK):
        rows = conn.execute(
            select(customers.c.phone, customers.c.email).where(
                customers.c.company_id.in_(company_ids[start : start + CHUNK]), column == value
            )
        )
        for phone, email in rows:
            for other_kind, other in ((erasure_list.PHONE, phone), (erasure_list.EMAIL, email)):
                digest = erasure_list.digest(other_kind, other) if other else None
                if digest is not None:
                    found.add((other_kind, digest))
    return found


def _ids(conn: Connection, query: Any) -> list[int]:
    return [int(i) for i in conn.execute(query).scalars()]


def _erase_rows(
    conn: Connection, kind: str, value: str, now: datetime, report: ErasureReport
) -> None:
    company_ids = _ids(conn, select(companies.c.id))
    column = customers.c.phone if kind == erasure_list.PHONE else customers.c.email
    people: list[tuple[int, int]] = []
    for start in range(0, len(company_ids), CHUNK):
        chunk = company_ids[start : start + CHUNK]
        people += [
            (int(r.id), int(r.company_id))
            for r in conn.execute(
                select(customers.c.id, customers.c.company_id)
                .where(customers.c.company_id.in_(chunk), column == value)
                .with_for_update()
            )
        ]
    customer_ids = sorted({i for i, _ in people})
    call_ids = set(
        _ids(
            conn, select(calls.c.id).where(calls.c.customer_id.in_(customer_ids)).with_for_update()
        )
        if customer_ids
        else []
    )
    by_number: set[int] = set()
    if kind == erasure_list.PHONE:
        # Not indexed: a plain read (no locks on the whole table), then locks by id.
        by_number = set(
            _ids(
                conn,
                select(calls.c.id).where(
                    (calls.c.from_number == value) | (calls.c.to_number == value)
                ),
            )
        )
        call_ids |= by_number
    rows = []
    ordered = sorted(call_ids)
    for start in range(0, len(ordered), CHUNK):
        rows += list(
            conn.execute(
                select(
                    calls.c.id,
                    calls.c.company_id,
                    calls.c.customer_id,
                    calls.c.direction,
                    calls.c.from_number,
                    calls.c.to_number,
                )
                .where(calls.c.id.in_(ordered[start : start + CHUNK]))
                .with_for_update()
            )
        )
    appointment_ids: set[int] = set()
    if customer_ids:
        appointment_ids |= set(
            _ids(
                conn,
                select(appointments.c.id)
                .where(appointments.c.customer_id.in_(customer_ids))
                .with_for_update(),
            )
        )
    for start in range(0, len(ordered), CHUNK):
        appointment_ids |= set(
            _ids(
                conn,
                select(appointments.c.id)
                .where(appointments.c.call_id.in_(ordered[start : start + CHUNK]))
                .with_for_update(),
            )
        )

    if customer_ids:
        conn.execute(
            update(customers)
            .where(customers.c.id.in_(customer_ids))
            .values(name=None, phone=None, email=None, updated_at=now)
        )
    for row in rows:
        theirs = row.customer_id in customer_ids
        # null(): SQL NULL, also in the JSON column (None would store JSON ``null``)
        changes: dict[str, Any] = {name: null() for name in CALL_FIELDS}
        if row.from_number == value or (theirs and row.direction != "outbound"):
            changes["from_number"] = None
        if row.to_number == value or (theirs and row.direction == "outbound"):
            changes["to_number"] = None
        conn.execute(update(calls).where(calls.c.id == row.id).values(**changes, updated_at=now))
    if appointment_ids:
        conn.execute(
            update(appointments)
            .where(appointments.c.id.in_(sorted(appointment_ids)))
            .values(**{name: None for name in APPOINTMENT_FIELDS}, updated_at=now)
        )
    report.customers = len(customer_ids)
    report.calls = len(rows)
    report.appointments = len(appointment_ids)
    report.companies = sorted(
        {company for _, company in people} | {int(r.company_id) for r in rows}
    )
