"""Order-independent merges: fold one event's facts into the current row.

Rows are plain dicts of column → value. Each merge is idempotent and, for the consistent
data providers send (one progressively filled call object; one booking per uid),
commutative: applying a call's or a booking's events in any order, any number of times,
gives the same row (docs/data-model.md; proved by the hypothesis tests). Pure functions,
no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.apply.facts import CALL_EVENT_RANK, BookingFacts, CallFacts

Row = dict[str, Any]

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


def _max_status(current: str | None, new: str | None, ranks: dict[str, int]) -> str | None:
    """The more advanced status; ties broken by name so the merge stays commutative."""
    if new is None:
        return current
    if current is None:
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


def merge_call(row: Row | None, facts: CallFacts, received_at: datetime) -> Row:
    """The call row after ``facts``; ``row`` is None when the call has no row yet."""
    merged: Row = dict(row) if row else {"retell_call_id": facts.call_id}
    current_rank = CALL_EVENT_RANK.get(merged.get("last_event_type") or "", -1)
    dominant = facts.rank >= current_rank
    for name in RANKED_CALL_FIELDS:
        value = getattr(facts, name)
        if value is None:
            continue
        if dominant or merged.get(name) is None:
            merged[name] = value
    merged["status"] = _max_status(merged.get("status"), facts.status, CALL_STATUS_RANK)
    merged["transcript"] = _longer(merged.get("transcript"), facts.transcript)
    if facts.rank > current_rank:
        merged["last_event_type"] = facts.event_type
        merged["last_event_at"] = received_at
    elif facts.rank == current_rank:
        merged["last_event_at"] = _max(merged.get("last_event_at"), received_at)
    return merged


def merge_booking(row: Row | None, facts: BookingFacts) -> Row:
    """The appointment row of ``facts.uid`` after ``facts``."""
    merged: Row = dict(row) if row else {"calcom_uid": facts.uid, "status": None}
    _fill(merged, "calcom_booking_id", facts.booking_id)
    _fill(merged, "starts_at", facts.starts_at)
    _fill(merged, "ends_at", facts.ends_at)
    _fill(merged, "title", facts.title)
    _fill(merged, "retell_call_id", facts.retell_call_id)
    status = BOOKING_STATUS_FOR.get(facts.trigger)
    at = facts.created_at
    if facts.trigger == "BOOKING_CREATED":
        merged["booked_at"] = _min(merged.get("booked_at"), at)
    elif facts.trigger == "BOOKING_RESCHEDULED":
        _fill(merged, "rescheduled_from_uid", facts.reschedule_uid)
    elif facts.trigger == "BOOKING_CANCELLED":
        merged["cancelled_at"] = _min(merged.get("cancelled_at"), at)
        _fill(merged, "cancellation_reason", facts.cancellation_reason)
    elif facts.trigger == "BOOKING_REJECTED":
        _fill(merged, "cancellation_reason", facts.cancellation_reason)
    elif facts.trigger == "BOOKING_NO_SHOW_UPDATED" and facts.no_show_marked:
        status = "no_show"
        merged["no_show_at"] = _min(merged.get("no_show_at"), at)
    merged["status"] = _max_status(merged.get("status"), status, APPOINTMENT_STATUS_RANK)
    if merged["status"] is None:
        # A booking first seen through an event that names no status (BOOKING_PAID, an
        # un-marking no-show update): it exists, so it was at least requested.
        merged["status"] = "pending"
    return merged


def merge_rescheduled_original(row: Row | None, facts: BookingFacts) -> Row:
    """The *old* booking of a ``BOOKING_RESCHEDULED``: status ``rescheduled``."""
    assert facts.reschedule_uid is not None
    merged: Row = dict(row) if row else {"calcom_uid": facts.reschedule_uid, "status": None}
    _fill(merged, "starts_at", facts.reschedule_starts_at)
    _fill(merged, "ends_at", facts.reschedule_ends_at)
    merged["rescheduled_at"] = _min(merged.get("rescheduled_at"), facts.created_at)
    merged["status"] = _max_status(merged.get("status"), "rescheduled", APPOINTMENT_STATUS_RANK)
    return merged


def merge_customer(
    row: Row | None,
    *,
    company_id: int,
    phone: str | None,
    email: str | None,
    name: str | None,
    seen_at: datetime | None,
) -> Row:
    merged: Row = dict(row) if row else {"company_id": company_id}
    _fill(merged, "phone", phone)
    _fill(merged, "email", email)
    _fill(merged, "name", name)
    merged["first_seen_at"] = _min(merged.get("first_seen_at"), seen_at)
    merged["last_seen_at"] = _max(merged.get("last_seen_at"), seen_at)
    return merged


def _fill(row: Row, column: str, value: Any) -> None:
    if value is not None and row.get(column) is None:
        row[column] = value
