"""The rows the apply path reads, decides and writes, typed: one frozen dataclass per table.

The load phase turns database rows into these; the fold (:mod:`pipeline.apply.fold`)
decides new versions of them with :func:`dataclasses.replace`, never touching a database;
the write phase turns them back into column values. Each class's fields are the table's
columns minus ``created_at``/``updated_at``, which only the writer sets
(``tests/unit/test_apply_rows.py`` keeps the two in step with :mod:`pipeline.models`).

A ``customer_id`` below zero names a customer the batch creates: the writer inserts the
customer and puts its real id in place before writing the rows that point to it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Column, Table

from pipeline.models import appointments, calls, customers, webhook_events

APPLIED, UNROUTABLE, DEAD_LETTERED = "applied", "unroutable", "dead_lettered"
ALREADY_APPLIED = "already_applied"


@dataclass(frozen=True, slots=True)
class CallRow:
    retell_call_id: str
    company_id: int
    branch_id: int | None = None
    id: int | None = None
    customer_id: int | None = None
    agent_id: str | None = None
    call_type: str | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    status: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    disconnection_reason: str | None = None
    in_voicemail: bool | None = None
    successful: bool | None = None
    sentiment: str | None = None
    summary: str | None = None
    transcript: str | None = None
    recording_url: str | None = None
    transfer_destination: str | None = None
    cost_cents: Decimal | None = None
    metadata: dict[str, Any] | None = None
    last_event_type: str | None = None
    last_event_at: datetime | None = None

    @property
    def key(self) -> str:
        return self.retell_call_id


@dataclass(frozen=True, slots=True)
class AppointmentRow:
    calcom_uid: str
    company_id: int
    status: str
    branch_id: int | None = None
    id: int | None = None
    calcom_booking_id: int | None = None
    customer_id: int | None = None
    call_id: int | None = None  # linked by the writer (write.link_appointments)
    retell_call_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    title: str | None = None
    rescheduled_from_uid: str | None = None
    cancellation_reason: str | None = None
    booked_at: datetime | None = None
    cancelled_at: datetime | None = None
    rescheduled_at: datetime | None = None
    no_show_at: datetime | None = None

    @property
    def key(self) -> str:
        return self.calcom_uid


@dataclass(frozen=True, slots=True)
class CustomerRow:
    company_id: int
    id: int | None = None
    phone: str | None = None
    email: str | None = None
    name: str | None = None
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    """A ``webhook_events`` row as the fold decides it (``id`` comes from the stored row)."""

    provider: str
    event_id: str
    event_type: str
    correlation_id: str | None
    company_id: int | None
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    payload_sha256: str
    status: str
    error: str | None
    received_at: datetime | None
    processed_at: datetime
    id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """What the load phase needs of an existing ``webhook_events`` row."""

    id: int
    status: str
    payload_sha256: str | None = None


R = TypeVar("R", CallRow, AppointmentRow, CustomerRow, EventRow)

#: The table each row type is written to.
TABLES: dict[type[Any], Table] = {
    CallRow: calls,
    AppointmentRow: appointments,
    CustomerRow: customers,
    EventRow: webhook_events,
}


def columns_of(kind: type[R]) -> list[Column[Any]]:
    """The columns of ``kind``'s table in the order of its fields: a row selected with them
    is ``kind(*row)``, with no mapping built per row (the load phase reads hundreds)."""
    table = TABLES[kind]
    return [table.c[name] for name in _NAMES[kind]]


def values(row: CallRow | AppointmentRow | CustomerRow | EventRow) -> dict[str, Any]:
    """Column → value of ``row``, for an INSERT or a multi-row upsert."""
    return {name: getattr(row, name) for name in _NAMES[type(row)]}


_NAMES: dict[type[Any], tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(kind)) for kind in TABLES
}
