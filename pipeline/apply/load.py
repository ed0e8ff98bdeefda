"""The apply transaction's reads: everything the fold (:mod:`pipeline.apply.fold`) needs,
locked, in a fixed number of statements per batch whatever its size. Every function takes
the connection first and runs inside the caller's transaction.

Reads lock (``SELECT ... FOR UPDATE``) every row the batch can change, so two batches
that touch the same call, booking or customer run one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, or_, select, union

from pipeline.apply.customers import Sighting
from pipeline.apply.fold import Loaded, Wants, milestones
from pipeline.apply.rows import AppointmentRow, CallRow, CustomerRow, StoredEvent, columns_of
from pipeline.apply.tenancy import Branch, Directory
from pipeline.models import appointments, branches, calls, companies, customers, webhook_events
from pipeline.providers import calcom
from pipeline.providers.facts import EventKey


def load(conn: Connection, wants: Wants) -> Loaded:
    """Lock the companies the batch can touch, then the events, calls and appointments it
    names; read its branches.

    The company locks come first, in id order (docs/integrity.md, "Lock order"): two
    transactions of one company (the worker's Retell and Cal.com agents, a replay next
    to a worker) take turns from their first lock, instead of each holding rows the other
    needs next (a call batch holds calls and links appointments; a booking batch holds
    appointments and links calls; absorbing a customer moves calls) and deadlocking, or
    both inserting the same new customer.
    """
    directory = load_directory(
        conn,
        phones=wants.phones,
        agent_ids=wants.agent_ids,
        event_type_ids=wants.event_type_ids,
        branch_ids=wants.branch_ids,
    )
    candidates = {b.company_id for b in directory.by_id.values()}
    lock_companies(
        conn,
        candidates | stored_companies(conn, wants.call_ids, wants.uids),
        shared=not wants.uids,
    )
    return Loaded(
        events=lock_events(conn, wants.events),
        calls=_lock_by(conn, CallRow, "retell_call_id", wants.call_ids),
        appointments=_lock_by(conn, AppointmentRow, "calcom_uid", wants.uids),
        directory=directory,
    )


def stored_companies(conn: Connection, call_ids: Iterable[str], uids: Iterable[str]) -> set[int]:
    """The companies of the stored calls and appointments a batch names (a plain read:
    what they belong to never changes once stored)."""
    parts = []
    if wanted_calls := sorted(set(call_ids)):
        parts.append(select(calls.c.company_id).where(calls.c.retell_call_id.in_(wanted_calls)))
    if wanted_uids := sorted(set(uids)):
        parts.append(
            select(appointments.c.company_id).where(appointments.c.calcom_uid.in_(wanted_uids))
        )
    if not parts:
        return set()
    query = parts[0] if len(parts) == 1 else union(*parts)
    return {int(c) for c in conn.execute(query).scalars()}


def lock_companies(conn: Connection, company_ids: Iterable[int], *, shared: bool = False) -> None:
    """A locking read of the companies' rows, in id order: the first locks of every apply
    transaction, so its later row locks cannot form a cycle with another apply
    transaction of the same company.

    ``shared``: a batch that names no booking (calls, chats, ``call_inbound``) takes them
    shared, so such batches of the same companies (two workers' Retell agents, a replay)
    run side by side; a batch with bookings takes them exclusive and still takes turns
    with all of them. Two call batches cannot form a cycle without the turns: their
    calls, events and the bookings naming those calls are their own (the topic is keyed
    by call id), and what they share they lock in one order (customers in the order of
    their (company, phone) index, then buckets by key); two inserts of one new customer
    end in a duplicate key, retried. Only a booking moves rows of another kind (it links
    calls, absorbs a customer and moves its calls), which is what the exclusive lock
    keeps apart (docs/integrity.md, "Lock order")."""
    ids = sorted(set(company_ids))
    if ids:
        conn.execute(
            select(companies.c.id)
            .where(companies.c.id.in_(ids))
            .order_by(companies.c.id)
            .with_for_update(read=shared)
        ).all()


def load_links(conn: Connection, loaded: Loaded, wants: Wants) -> None:
    """What calls_booked needs, read after the batch's calls are locked (a batch changing
    one of these calls holds its lock, so what is read here is what it committed): the
    calls the batch's stored bookings name (locked too), their call_ended/call_analyzed
    events, and every booking naming any of the batch's calls (docs/data-model.md,
    "Booking conversion")."""
    named = {a.retell_call_id for a in loaded.appointments.values() if a.retell_call_id}
    more = named - set(loaded.calls)
    if more:
        loaded.calls.update(_lock_by(conn, CallRow, "retell_call_id", more))
    refs = sorted(set(loaded.calls) | wants.call_ids)  # a call the batch creates too
    if not refs:
        return
    wanted = {m for ref in refs for m in milestones(ref)} - wants.events
    if wanted:
        loaded.events.update(read_events(conn, wanted))
    query = select(
        appointments.c.calcom_uid, appointments.c.company_id, appointments.c.retell_call_id
    ).where(appointments.c.retell_call_id.in_(refs), appointments.c.booked_at.is_not(None))
    for row in conn.execute(query):
        loaded.bookings.setdefault(row.retell_call_id, {})[row.calcom_uid] = int(row.company_id)


def load_people(
    conn: Connection, loaded: Loaded, companies_: Iterable[int], seen: Sequence[Sighting]
) -> None:
    """The time zones of the companies the batch counts for, and its customers, locked."""
    loaded.timezones = company_timezones(conn, companies_)
    loaded.customers = lock_customers(conn, seen)


def lock_events(conn: Connection, keys: Iterable[EventKey]) -> dict[EventKey, StoredEvent]:
    return read_events(conn, keys, lock=True)


def read_events(
    conn: Connection, keys: Iterable[EventKey], *, lock: bool = False
) -> dict[EventKey, StoredEvent]:
    keys = set(keys)
    if not keys:
        return {}
    providers = sorted({p for p, _ in keys})
    ids = sorted({e for _, e in keys})
    query = select(
        webhook_events.c.id,
        webhook_events.c.provider,
        webhook_events.c.event_id,
        webhook_events.c.status,
        webhook_events.c.payload_sha256,
    ).where(webhook_events.c.provider.in_(providers), webhook_events.c.event_id.in_(ids))
    if lock:
        query = query.with_for_update()
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
    query = select(*columns_of(kind)).where(table.c[column].in_(wanted)).with_for_update()
    rows = [kind(*row) for row in conn.execute(query)]
    return {getattr(row, column): row for row in rows}


def company_timezones(conn: Connection, company_ids: Iterable[int]) -> dict[int, str]:
    ids = sorted(set(company_ids))
    if not ids:
        return {}
    query = select(companies.c.id, companies.c.timezone).where(companies.c.id.in_(ids))
    return {r.id: r.timezone for r in conn.execute(query)}


def lock_customers(conn: Connection, seen: Sequence[Sighting]) -> list[CustomerRow]:
    """The stored customers the sightings can match, by (company, phone) and (company, email).

    One lookup per index, and that index forced: an OR of the two would let MySQL scan
    every customer of the company, and on a small table MariaDB chose to walk the primary
    key for the ``ORDER BY``, locking its way through every customer, so a batch waited
    for every customer another batch held.
    """
    companies_ = sorted({s.company_id for s in seen})
    found: dict[int, CustomerRow] = {}
    for column, index, wanted in (
        ("phone", "uq_customers_company_id_phone", sorted({s.phone for s in seen if s.phone})),
        ("email", "ix_customers_company_id_email", sorted({s.email for s in seen if s.email})),
    ):
        if not companies_ or not wanted:
            continue
        query = (
            select(*columns_of(CustomerRow))
            .with_hint(customers, f"FORCE INDEX ({index})")
            .where(customers.c.company_id.in_(companies_), customers.c[column].in_(wanted))
            .order_by(customers.c.id)
            .with_for_update()
        )
        for values in conn.execute(query):
            row = CustomerRow(*values)
            assert row.id is not None
            found[row.id] = row
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


def due_parked_coordinates(conn: Connection, chunk: int = 1000) -> list[tuple[str, int, int]]:
    """Kafka coordinates of parked no-show updates whose booking exists by now.

    The booking's commit is what makes an update due, so this finds every update a crash
    or a Kafka failure kept from being un-parked right after that commit (docs/integrity.md):
    the state is durable, the un-parking is a retry over it. Parked updates are few (an
    update before its booking is rare); they are read in chunks by id.
    """
    prefix = f"{calcom.NO_SHOW_EVENT}:"
    due: list[tuple[str, int, int]] = []
    after = 0
    while True:
        parked = conn.execute(
            select(
                webhook_events.c.id,
                webhook_events.c.event_id,
                webhook_events.c.kafka_topic,
                webhook_events.c.kafka_partition,
                webhook_events.c.kafka_offset,
            )
            .where(
                webhook_events.c.provider == calcom.NAME,
                webhook_events.c.status == "unroutable",
                webhook_events.c.error == "unknown_booking",
                webhook_events.c.id > after,
            )
            .order_by(webhook_events.c.id)
            .limit(chunk)
        ).all()
        if not parked:
            return due
        after = parked[-1].id
        by_uid: dict[str, list[tuple[str, int, int]]] = {}
        for row in parked:
            if row.event_id.startswith(prefix):
                uid = row.event_id[len(prefix) :].split(":", 1)[0]
                coords = (row.kafka_topic, row.kafka_partition, row.kafka_offset)
                by_uid.setdefault(uid, []).append(coords)
        if by_uid:
            booked = conn.execute(
                select(appointments.c.calcom_uid).where(
                    appointments.c.calcom_uid.in_(sorted(by_uid))
                )
            ).scalars()
            for uid in booked:
                due += by_uid.get(uid, [])


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
