"""``switchboard events find`` and ``events list``: webhooks by what support is asked about.

Support starts from what a customer or a provider can quote, never from our derived event
ids: a Retell call id (Retell's dashboard), a Cal.com booking uid, the ``X-Correlation-ID``
the ingress answered, a caller's phone number, or a company and a time. Each lookup is an
index range, so it answers in milliseconds on a large ``webhook_events``:

* a call id or booking uid becomes the event ids it can have (docs/architecture.md,
  "event_id derivation": ``{event}:{call_id}`` for each call event, ``{trigger}:{uid}`` for
  each booking trigger, and a prefix range for the repeatable no-show updates), looked up
  on the unique ``(provider, event_id)`` key;
* a correlation id on its own index; a company on ``(company_id, created_at)``;
* a phone number through ``customers`` (its ``(company_id, phone)`` key, one range per
  company), then the customers' calls and appointments (both indexed by ``customer_id``),
  then their events as above.

``events list`` filters by status (``unroutable``: the events no branch could take),
reason, provider and time, on ``(status, created_at)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select

from pipeline.erasures import normalise_phone
from pipeline.models import appointments, calls, companies, customers, webhook_events
from pipeline.ops import BadArguments
from pipeline.providers.calcom import BOOKING_EVENTS, FLAT_EVENTS, NO_SHOW_EVENT
from pipeline.providers.retell import CALL_EVENTS

#: What ``events find`` and ``events list`` print of each row.
COLUMNS = (
    webhook_events.c.id,
    webhook_events.c.provider,
    webhook_events.c.event_type,
    webhook_events.c.event_id,
    webhook_events.c.status,
    webhook_events.c.error,
    webhook_events.c.company_id,
    webhook_events.c.correlation_id,
    webhook_events.c.kafka_topic,
    webhook_events.c.kafka_partition,
    webhook_events.c.kafka_offset,
    webhook_events.c.received_at,
    webhook_events.c.created_at,
)
STATUSES = ("applied", "unroutable", "dead_lettered")
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Find:
    """Exactly one of the subjects; ``since``/``until`` (naive UTC) narrow any of them."""

    call_id: str | None = None
    booking_uid: str | None = None
    correlation_id: str | None = None
    phone: str | None = None
    company_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200

    def check(self) -> None:
        given = [
            name
            for name, value in (
                ("--call-id", self.call_id),
                ("--booking-uid", self.booking_uid),
                ("--correlation-id", self.correlation_id),
                ("--phone", self.phone),
                ("--company", self.company_id),
            )
            if value not in (None, "")
        ]
        if len(given) != 1:
            raise BadArguments(
                "give exactly one of --call-id, --booking-uid, --correlation-id, --phone, "
                f"--company (got {', '.join(given) or 'none'})"
            )
        if self.phone is not None and normalise_phone(self.phone) is None:
            raise BadArguments(f"--phone: {self.phone!r} is not a phone number")


@dataclass(frozen=True, slots=True)
class Listing:
    status: str = "unroutable"
    reason: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 200

    def check(self) -> None:
        if self.status not in STATUSES:
            raise BadArguments(f"--status must be one of {', '.join(STATUSES)}")


@dataclass
class Found:
    rows: list[dict[str, Any]]
    total: int  # matching rows, of which at most ``limit`` (the newest) are in ``rows``
    subjects: dict[str, list[str]]  # call ids and booking uids the lookup went through


def call_event_ids(call_ids: Iterable[str]) -> list[tuple[str, str]]:
    """Every ``(provider, event_id)`` a Retell call can have (``call_inbound`` uses the
    bare call id)."""
    out = []
    for cid in call_ids:
        out += [("retell", f"{event}:{cid}") for event in sorted(CALL_EVENTS)]
        out.append(("retell", cid))
    return out


def booking_event_ids(uids: Iterable[str]) -> list[tuple[str, str]]:
    return [
        ("calcom", f"{trigger}:{uid}")
        for uid in uids
        for trigger in sorted(BOOKING_EVENTS | FLAT_EVENTS)
    ]


def _window(query: Select[Any], since: datetime | None, until: datetime | None) -> Select[Any]:
    if since is not None:
        query = query.where(webhook_events.c.created_at >= since)
    if until is not None:
        query = query.where(webhook_events.c.created_at <= until)
    return query


def _by_keys(
    conn: Connection,
    keys: Sequence[tuple[str, str]],
    uids: Sequence[str],
    since: datetime | None,
    until: datetime | None,
) -> list[dict[str, Any]]:
    """Rows of these exact ``(provider, event_id)`` keys, plus the no-show updates of
    these booking uids (a prefix range each: their ids carry a timestamp)."""
    rows: dict[int, dict[str, Any]] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        wanted = or_(
            *[
                and_(webhook_events.c.provider == p, webhook_events.c.event_id.in_(ids))
                for p, ids in _group(chunk).items()
            ]
        )
        for row in conn.execute(_window(select(*COLUMNS).where(wanted), since, until)).mappings():
            rows[row["id"]] = dict(row)
    for uid in uids:
        prefix = f"{NO_SHOW_EVENT}:{_escape_like(uid)}:%"
        query = select(*COLUMNS).where(
            webhook_events.c.provider == "calcom", webhook_events.c.event_id.like(prefix)
        )
        for row in conn.execute(_window(query, since, until)).mappings():
            rows[row["id"]] = dict(row)
    return sorted(rows.values(), key=lambda r: (r["created_at"], r["id"]))


def _group(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for provider, event_id in keys:
        grouped.setdefault(provider, []).append(event_id)
    return grouped


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _newest(conn: Connection, query: Select[Any], limit: int) -> Found:
    """The newest ``limit`` rows of ``query``, oldest first, and how many match."""
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    newest = query.order_by(webhook_events.c.created_at.desc(), webhook_events.c.id.desc())
    rows = [dict(r) for r in conn.execute(newest.limit(limit)).mappings()]
    return Found(rows=rows[::-1], total=int(total), subjects={})


def _customers_by_phone(conn: Connection, phone: str) -> list[int]:
    """Customer ids with this phone in any company: one range of ``(company_id, phone)``
    per company (a handful of companies, many customers)."""
    company_ids = list(conn.execute(select(companies.c.id)).scalars())
    found: list[int] = []
    for start in range(0, len(company_ids), CHUNK):
        chunk = company_ids[start : start + CHUNK]
        found += conn.execute(
            select(customers.c.id).where(
                customers.c.company_id.in_(chunk), customers.c.phone == phone
            )
        ).scalars()
    return found


def subjects_of_customers(conn: Connection, ids: Sequence[int]) -> tuple[list[str], list[str]]:
    """(Retell call ids, Cal.com booking uids) of these customers."""
    if not ids:
        return [], []
    call_ids = list(
        conn.execute(select(calls.c.retell_call_id).where(calls.c.customer_id.in_(ids))).scalars()
    )
    uids = list(
        conn.execute(
            select(appointments.c.calcom_uid).where(appointments.c.customer_id.in_(ids))
        ).scalars()
    )
    return sorted(call_ids), sorted(uids)


def find(conn: Connection, what: Find) -> Found:
    """The ``webhook_events`` rows ``what`` points at (see the module docstring)."""
    what.check()
    if what.correlation_id is not None:
        query = select(*COLUMNS).where(webhook_events.c.correlation_id == what.correlation_id)
        return _newest(conn, _window(query, what.since, what.until), what.limit)
    if what.company_id is not None:
        query = select(*COLUMNS).where(webhook_events.c.company_id == what.company_id)
        return _newest(conn, _window(query, what.since, what.until), what.limit)
    call_ids: list[str] = []
    uids: list[str] = []
    if what.call_id is not None:
        call_ids = [what.call_id.strip()]
    elif what.booking_uid is not None:
        uids = [what.booking_uid.strip()]
    else:
        assert what.phone is not None
        phone = normalise_phone(what.phone)
        assert phone is not None
        call_ids, uids = subjects_of_customers(conn, _customers_by_phone(conn, phone))
    keys = call_event_ids(call_ids) + booking_event_ids(uids)
    rows = _by_keys(conn, keys, uids, what.since, what.until)
    return Found(
        rows=rows[-what.limit :],
        total=len(rows),
        subjects={"call_ids": call_ids, "booking_uids": uids},
    )


def listing(conn: Connection, what: Listing) -> Found:
    """Rows of one status (``unroutable`` by default), newest ``limit``, oldest first."""
    what.check()
    query = select(*COLUMNS).where(webhook_events.c.status == what.status)
    if what.reason is not None:
        # unroutable rows hold the bare reason, dead-lettered ones "reason: detail"
        query = query.where(
            or_(
                webhook_events.c.error == what.reason,
                webhook_events.c.error.like(f"{_escape_like(what.reason)}: %"),
            )
        )
    if what.provider is not None:
        query = query.where(webhook_events.c.provider == what.provider)
    return _newest(conn, _window(query, what.since, what.until), what.limit)


def reasons(conn: Connection, status: str = "unroutable") -> dict[str, int]:
    """How many rows of ``status`` there are per ``error`` (the reason)."""
    query = (
        select(webhook_events.c.error, func.count())
        .where(webhook_events.c.status == status)
        .group_by(webhook_events.c.error)
    )
    return {str(reason): int(n) for reason, n in conn.execute(query)}


def naive_utc(millis: int | None) -> datetime | None:
    """Epoch milliseconds → the naive UTC datetime MySQL's DATETIME(3) columns hold."""
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).replace(tzinfo=None)
