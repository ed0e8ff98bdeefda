"""Order-independent merges: fold one event's facts into the current row.

Rows are the typed rows of :mod:`pipeline.apply.rows`; a merge returns a new row. Each
merge is idempotent and, for the consistent data providers send (one progressively filled
call object; one booking per uid), commutative: applying a call's or a booking's events in
any order, any number of times, gives the same row (docs/data-model.md; proved by the
hypothesis tests). Pure functions, no I/O. A row that does not exist yet starts as
:func:`new_call` / :func:`new_appointment` / :func:`new_customer`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from pipeline.apply.rows import AppointmentRow, CallRow, CustomerRow
from pipeline.providers.facts import CALL_EVENT_RANK, BookingFacts, CallFacts

CALL_STATUS_RANK = {"registered": 0, "ongoing": 1, "not_connected": 2, "ended": 2, "error": 2}
APPOINTMENT_STATUS_RANK = {
    "pending": 0,
    "scheduled": 1,
    "completed": 2,
    "no_show": 3,
    "cancelled": 4,
    "rejected": 4,
    "rescheduled": 4,
}
BOOKING_STATUS_FOR = {
    "BOOKING_REQUESTED": "pending",
    "BOOKING_CREATED": "scheduled",
    "BOOKING_RESCHEDULED": "scheduled",
    "BOOKING_CANCELLED": "cancelled",
    "BOOKING_REJECTED": "rejected",
    "MEETING_ENDED": "completed",
}
#: The status of a booking first seen through an event that names none (BOOKING_PAID, an
#: un-marking no-show update): it exists, so it was at least requested.
FIRST_STATUS = "pending"

# Call columns filled from facts with the rank rule: a value from an event ranked at least
# as high as the row's last event replaces; a lower-ranked event only fills NULLs.
RANKED_CALL_FIELDS = (
    "agent_id",
    "call_type",
    "direction",
    "from_number",
    "to_number",
    "started_at",
    "ended_at",
    "duration_ms",
    "disconnection_reason",
    "transfer_destination",
    "recording_url",
    "cost_cents",
    "in_voicemail",
    "successful",
    "sentiment",
    "summary",
    "metadata",
)


def new_call(call_id: str, company_id: int, branch_id: int | None) -> CallRow:
    return CallRow(retell_call_id=call_id, company_id=company_id, branch_id=branch_id)


def new_appointment(uid: str, company_id: int, branch_id: int | None) -> AppointmentRow:
    """A booking row before any event: its status is decided by the first merge."""
    return AppointmentRow(calcom_uid=uid, company_id=company_id, branch_id=branch_id, status="")


def new_customer(company_id: int) -> CustomerRow:
    return CustomerRow(company_id=company_id)


def _max_status(current: str | None, new: str | None, ranks: dict[str, int]) -> str | None:
    """The more advanced status; ties broken by name so the merge stays commutative."""
    if new is None:
        return current
    if not current:
        return new
    return max((ranks.get(current, -1), current), (ranks.get(new, -1), new))[1]


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _longer(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max((len(a), a), (len(b), b))[1]


def merge_call(row: CallRow, facts: CallFacts, received_at: datetime) -> CallRow:
    """The call row after ``facts``."""
    current_rank = CALL_EVENT_RANK.get(row.last_event_type or "", -1)
    dominant = facts.rank >= current_rank
    changes: dict[str, Any] = {}
    for name in RANKED_CALL_FIELDS:
        value = getattr(facts, name)
        if value is not None and (dominant or getattr(row, name) is None):
            changes[name] = value
    changes["status"] = _max_status(row.status, facts.status, CALL_STATUS_RANK)
    changes["transcript"] = _longer(row.transcript, facts.transcript)
    if facts.rank > current_rank:
        changes["last_event_type"] = facts.event_type
        changes["last_event_at"] = received_at
    elif facts.rank == current_rank:
        changes["last_event_at"] = _max(row.last_event_at, received_at)
    return replace(row, **changes)


def merge_booking(row: AppointmentRow, facts: BookingFacts) -> AppointmentRow:
    """The appointment row of ``facts.uid`` after ``facts``."""
    changes: dict[str, Any] = {}
    _fill(row, changes, "calcom_booking_id", facts.booking_id)
    _fill(row, changes, "starts_at", facts.starts_at)
    _fill(row, changes, "ends_at", facts.ends_at)
    _fill(row, changes, "title", facts.title)
    _fill(row, changes, "retell_call_id", facts.retell_call_id)
    status = BOOKING_STATUS_FOR.get(facts.trigger)
    at = facts.created_at
    if facts.trigger == "BOOKING_CREATED":
        changes["booked_at"] = _min(row.booked_at, at)
    elif facts.trigger == "BOOKING_RESCHEDULED":
        _fill(row, changes, "rescheduled_from_uid", facts.reschedule_uid)
    elif facts.trigger == "BOOKING_CANCELLED":
        changes["cancelled_at"] = _min(row.cancelled_at, at)
        _fill(row, changes, "cancellation_reason", facts.cancellation_reason)
    elif facts.trigger == "BOOKING_REJECTED":
        _fill(row, changes, "cancellation_reason", facts.cancellation_reason)
    elif facts.trigger == "BOOKING_NO_SHOW_UPDATED" and facts.no_show_marked:
        status = "no_show"
        changes["no_show_at"] = _min(row.no_show_at, at)
    changes["status"] = _max_status(row.status, status, APPOINTMENT_STATUS_RANK) or FIRST_STATUS
    return replace(row, **changes)


def merge_rescheduled_original(row: AppointmentRow, facts: BookingFacts) -> AppointmentRow:
    """The *old* booking of a ``BOOKING_RESCHEDULED``: status ``rescheduled``."""
    changes: dict[str, Any] = {}
    _fill(row, changes, "starts_at", facts.reschedule_starts_at)
    _fill(row, changes, "ends_at", facts.reschedule_ends_at)
    changes["rescheduled_at"] = _min(row.rescheduled_at, facts.created_at)
    changes["status"] = _max_status(row.status, "rescheduled", APPOINTMENT_STATUS_RANK)
    return replace(row, **changes)


def merge_customer(
    row: CustomerRow,
    *,
    phone: str | None = None,
    email: str | None = None,
    name: str | None = None,
    seen_at: datetime | None = None,
) -> CustomerRow:
    changes: dict[str, Any] = {}
    _fill(row, changes, "phone", phone)
    _fill(row, changes, "email", email)
    _fill(row, changes, "name", name)
    changes["first_seen_at"] = _min(row.first_seen_at, seen_at)
    changes["last_seen_at"] = _max(row.last_seen_at, seen_at)
    return replace(row, **changes)


def _fill(row: object, changes: dict[str, Any], column: str, value: Any) -> None:
    if value is not None and getattr(row, column) is None:
        changes[column] = value
