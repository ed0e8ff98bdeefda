"""Typed facts: what one webhook says about a call or a booking, whichever provider sent it.

Each provider module turns its payloads into these (``provider.facts``); the apply path
folds them into rows (:mod:`pipeline.apply.merge`) without knowing who sent them. The
readers here validate the shape the apply path relies on and raise
:class:`~pipeline.errors.SchemaViolation` (poison: dead-letter) when a field has the wrong
type, so a bad value never reaches SQL. Optional fields may be absent or null: providers
omit them freely (docs/providers.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from pipeline.errors import SchemaViolation

#: ``(provider, event_id)``: the dedup key of an event (docs/architecture.md).
EventKey = tuple[str, str]

# Rank of each call event: a later stage of a call outranks an earlier one. Used to merge
# fields order-independently (docs/data-model.md).
CALL_EVENT_RANK: Mapping[str, int] = {
    "call_inbound": 0,
    "call_started": 1,
    "transcript_updated": 2,
    "transfer_started": 3,
    "transfer_bridged": 4,
    "transfer_cancelled": 5,
    "transfer_ended": 6,
    "call_ended": 7,
    "call_analyzed": 8,
}
#: Where unknown future call events rank: just above call_started (they fill, never override).
UNKNOWN_CALL_EVENT_RANK = 1


@dataclass(frozen=True, slots=True)
class CallFacts:
    call_id: str
    event_type: str
    rank: int
    #: The keys of the call's ``call_ended`` and ``call_analyzed`` events: whether each is
    #: applied decides what the call row counts (docs/data-model.md, counters).
    milestones: tuple[EventKey, EventKey]
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
    transfer_destination: str | None = None
    recording_url: str | None = None
    cost_cents: Decimal | None = None
    transcript: str | None = None
    in_voicemail: bool | None = None
    successful: bool | None = None
    sentiment: str | None = None  # raw user_sentiment, e.g. "Positive" or "Unknown"
    summary: str | None = None
    metadata: dict[str, Any] | None = None
    #: Optional fields too long for their column: (field, "dropped" | "truncated").
    clipped: tuple[tuple[str, str], ...] = ()

    @property
    def business_number(self) -> str | None:
        """The branch's side of the call: the number called, or the number calling out."""
        return self.from_number if self.direction == "outbound" else self.to_number

    @property
    def customer_number(self) -> str | None:
        return self.to_number if self.direction == "outbound" else self.from_number

    @property
    def metadata_branch_id(self) -> int | None:
        return metadata_ids(self.metadata)[1]


@dataclass(frozen=True, slots=True)
class Mention:
    """An event that changes no row (a call's ``call_inbound``, chats) but is still
    attributed to a company and recorded: what it says about where it belongs."""

    business_number: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def metadata_branch_id(self) -> int | None:
        return metadata_ids(self.metadata)[1]


@dataclass(frozen=True, slots=True)
class BookingFacts:
    NO_SHOW: ClassVar[str] = "BOOKING_NO_SHOW_UPDATED"
    RESCHEDULED: ClassVar[str] = "BOOKING_RESCHEDULED"

    trigger: str
    uid: str
    created_at: datetime | None
    booking_id: int | None = None
    event_type_id: int | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    title: str | None = None
    reschedule_uid: str | None = None
    reschedule_starts_at: datetime | None = None
    reschedule_ends_at: datetime | None = None
    cancellation_reason: str | None = None
    attendee_phone: str | None = None
    attendee_email: str | None = None
    attendee_name: str | None = None
    retell_call_id: str | None = None
    metadata_branch_id: int | None = None
    no_show_marked: bool = False
    #: Optional fields too long for their column: (field, "dropped" | "truncated").
    clipped: tuple[tuple[str, str], ...] = ()


Facts = CallFacts | BookingFacts | Mention


# --- typed readers: absent/null → None, wrong type → SchemaViolation ------------------


def text(obj: Mapping[str, Any], key: str, limit: int | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SchemaViolation(f"{key} must be a string")
    if limit is not None and len(value) > limit:
        raise SchemaViolation(f"{key} is longer than {limit} characters")
    return value


Clipped = list[tuple[str, str]]


def fitted(
    obj: Mapping[str, Any], key: str, limit: int, clipped: Clipped, *, truncate: bool = False
) -> str | None:
    """An optional string for a column of ``limit`` characters. One that does not fit is
    not poison (docs/integrity.md): free text is truncated (``truncate``), anything whose
    cut would be wrong (an identifier, a number, a URL, an enum) is dropped; either way its
    name goes into ``clipped`` for the warning and the metric. A wrong type is still a
    schema violation."""
    value = text(obj, key)
    if value is None or len(value) <= limit:
        return value
    clipped.append((key, "truncated" if truncate else "dropped"))
    return value[:limit] if truncate else None


def integer(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaViolation(f"{key} must be a number")
    if isinstance(value, float) and not value.is_integer():
        raise SchemaViolation(f"{key} must be an integer")
    number = int(value)
    if not -(2**62) < number < 2**62:
        raise SchemaViolation(f"{key} is out of range")
    return number


def boolean(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise SchemaViolation(f"{key} must be a boolean")
    return value


def obj(obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaViolation(f"{key} must be an object")
    return value


def epoch_ms(obj: Mapping[str, Any], key: str) -> datetime | None:
    millis = integer(obj, key)
    if millis is None:
        return None
    if not 0 <= millis < 253_402_300_800_000:  # year 10000
        raise SchemaViolation(f"{key} is not a plausible epoch-milliseconds value")
    return from_millis(millis)


EPOCH = datetime(1970, 1, 1)


def from_millis(millis: int) -> datetime:
    """Epoch milliseconds → naive UTC, exactly (no float rounding)."""
    return EPOCH + timedelta(milliseconds=millis)


def to_ms_precision(at: datetime) -> datetime:
    """Truncate to the millisecond: MySQL stores DATETIME(3), so compare like with like."""
    return at.replace(microsecond=at.microsecond - at.microsecond % 1000)


def parse_iso(value: Any, key: str) -> datetime | None:
    """ISO-8601 (``Z`` or an offset) → naive UTC; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SchemaViolation(f"{key} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SchemaViolation(f"{key} is not ISO-8601") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_ms_precision(parsed.astimezone(UTC).replace(tzinfo=None))


def metadata_ids(metadata: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """``(company_id, branch_id)`` that our call_inbound answer wrote into the metadata."""
    if not metadata:
        return None, None
    return id_value(metadata.get("company_id")), id_value(metadata.get("branch_id"))


def id_value(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def clip(value: str | None, limit: int) -> str | None:
    """Free text is stored truncated rather than refused: a long title is not poison."""
    return value[:limit] if value else None
