"""From a parsed webhook to typed facts: what one event says about a call or a booking.

Pure functions. They validate the shape the apply path relies on and raise
:class:`SchemaViolation` (poison: dead-letter) when a field has the wrong type, so a bad
value never reaches SQL. Optional fields may be absent or null: providers omit them
freely (docs/providers.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from pipeline.errors import SchemaViolation
from pipeline.providers import retell

# Rank of each Retell event: a later stage of a call outranks an earlier one. Used to
# merge fields order-independently (docs/data-model.md).
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
CHAT_EVENTS = frozenset({"chat_started", "chat_ended", "chat_analyzed", "chat_inbound"})
SENTIMENTS = {"Positive": "positive", "Neutral": "neutral", "Negative": "negative"}


@dataclass(frozen=True, slots=True)
class CallFacts:
    #: The events whose application the dashboard counts (docs/data-model.md, counters).
    MILESTONES: ClassVar[tuple[str, str]] = ("call_ended", "call_analyzed")

    call_id: str
    event_type: str
    rank: int
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


def milestone_key(event_type: str, call_id: str) -> tuple[str, str]:
    """The ``webhook_events`` key of a call's ``call_ended``/``call_analyzed``: whether it
    is applied decides what the call row counts."""
    return retell.NAME, retell.subject_event_id(event_type, call_id)


@dataclass(frozen=True, slots=True)
class Mention:
    """A Retell event that changes no row (``call_inbound``, chats) but is still attributed
    to a company and recorded: what it says about where it belongs."""

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


# --- typed getters: absent/null → None, wrong type → SchemaViolation ------------------


def _str(obj: Mapping[str, Any], key: str, limit: int | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SchemaViolation(f"{key} must be a string")
    if limit is not None and len(value) > limit:
        raise SchemaViolation(f"{key} is longer than {limit} characters")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int | None:
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


def _bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise SchemaViolation(f"{key} must be a boolean")
    return value


def _obj(obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaViolation(f"{key} must be an object")
    return value


def _ms(obj: Mapping[str, Any], key: str) -> datetime | None:
    millis = _int(obj, key)
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


def _cents(obj: Mapping[str, Any] | None) -> Decimal | None:
    if obj is None:
        return None
    value = obj.get("combined_cost")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaViolation("call_cost.combined_cost must be a number")
    try:
        cents = Decimal(str(value)).quantize(Decimal("0.0001"))
    except InvalidOperation as exc:
        raise SchemaViolation("call_cost.combined_cost is not a finite number") from exc
    if not Decimal(0) <= cents < Decimal(10) ** 10:
        raise SchemaViolation("call_cost.combined_cost is out of range")
    return cents


def _transcript(call: Mapping[str, Any]) -> str | None:
    text = _str(call, "transcript")
    if text is not None:
        return text
    turns = call.get("transcript_with_tool_calls") or call.get("transcript_object")
    if not isinstance(turns, list):
        return None
    lines = []
    for turn in turns:
        if isinstance(turn, dict) and turn.get("role") in ("agent", "user"):
            content = turn.get("content")
            if isinstance(content, str):
                lines.append(f"{turn['role'].capitalize()}: {content}")
    return "\n".join(lines) or None


def call_facts(event_type: str, payload: Mapping[str, Any]) -> CallFacts | None:
    """Facts of a Retell call event; None for events that change no call row."""
    if event_type in CHAT_EVENTS or "chat" in payload or event_type == "call_inbound":
        return None
    call = _obj(payload, "call")
    if call is None:
        raise SchemaViolation("call must be an object")
    call_id = _str(call, "call_id", 128)
    if not call_id:
        raise SchemaViolation("call.call_id is required")
    analysis = _obj(call, "call_analysis") or {}
    metadata = _obj(call, "metadata")
    disconnection = _str(call, "disconnection_reason", 64)
    in_voicemail = _bool(analysis, "in_voicemail")
    return CallFacts(
        call_id=call_id,
        event_type=event_type,
        # Unknown future events rank just above call_started: they fill, never override.
        rank=CALL_EVENT_RANK.get(event_type, 1),
        agent_id=_str(call, "agent_id", 128),
        call_type=_str(call, "call_type", 32),
        direction=_str(call, "direction", 16),
        from_number=_str(call, "from_number", 32),
        to_number=_str(call, "to_number", 32),
        status=_str(call, "call_status", 32),
        started_at=_ms(call, "start_timestamp"),
        ended_at=_ms(call, "end_timestamp"),
        duration_ms=_int(call, "duration_ms"),
        disconnection_reason=disconnection,
        transfer_destination=_str(call, "transfer_destination", 255),
        recording_url=_str(call, "recording_url", 2048),
        cost_cents=_cents(_obj(call, "call_cost")),
        transcript=_transcript(call),
        in_voicemail=in_voicemail,
        successful=_bool(analysis, "call_successful"),
        sentiment=_str(analysis, "user_sentiment", 16),
        summary=_str(analysis, "call_summary"),
        metadata=metadata,
    )


def retell_mention(payload: Mapping[str, Any]) -> Mention:
    """Where a Retell event that is not about a call row belongs: the number and agent of a
    ``call_inbound``/``chat_inbound``, the agent and metadata of a chat."""
    inbound = payload.get("call_inbound") or payload.get("chat_inbound")
    if isinstance(inbound, dict):
        number, agent = inbound.get("to_number"), inbound.get("agent_id")
        return Mention(
            business_number=number if isinstance(number, str) else None,
            agent_id=agent if isinstance(agent, str) else None,
        )
    chat = payload.get("chat")
    if isinstance(chat, dict):
        agent, metadata = chat.get("agent_id"), chat.get("metadata")
        return Mention(
            agent_id=agent if isinstance(agent, str) else None,
            metadata=metadata if isinstance(metadata, dict) else None,
        )
    return Mention()


def metadata_ids(metadata: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    """``(company_id, branch_id)`` that our call_inbound answer wrote into the metadata."""
    if not metadata:
        return None, None
    return _id(metadata.get("company_id")), _id(metadata.get("branch_id"))


def _id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def booking_facts(event_type: str, payload: Mapping[str, Any]) -> BookingFacts:
    """Facts of a Cal.com webhook (enveloped or flat ``MEETING_*``)."""
    body = _obj(payload, "payload")
    flat = body is None
    if flat:
        body = dict(payload)
    assert body is not None
    created_at = None if flat else parse_iso(payload.get("createdAt"), "createdAt")
    if event_type == "BOOKING_NO_SHOW_UPDATED":
        uid = _str(body, "bookingUid", 128)
        attendees = body.get("attendees") or []
        if not isinstance(attendees, list):
            raise SchemaViolation("attendees must be a list")
        marked = any(isinstance(a, dict) and a.get("noShow") is True for a in attendees)
        if not uid:
            raise SchemaViolation("payload.bookingUid is required")
        return BookingFacts(
            trigger=event_type,
            uid=uid,
            created_at=created_at,
            booking_id=_int(body, "bookingId"),
            no_show_marked=marked,
        )
    uid = _str(body, "uid", 128)
    if not uid:
        raise SchemaViolation("payload.uid is required")
    attendee = _first_attendee(body)
    responses = _obj(body, "responses") or {}
    phone_answer = responses.get("attendeePhoneNumber")
    phone = None
    if isinstance(phone_answer, dict) and isinstance(phone_answer.get("value"), str):
        phone = phone_answer["value"] or None
    if phone is None and attendee is not None:
        phone = _str(attendee, "phoneNumber", 32)
    metadata = _obj(body, "metadata") or {}
    call_ref = metadata.get("retell_call_id")
    reason = _str(body, "cancellationReason") or _str(body, "rejectionReason")
    return BookingFacts(
        trigger=event_type,
        uid=uid,
        created_at=created_at,
        booking_id=_int(body, "bookingId") if not flat else _int(body, "id"),
        event_type_id=_int(body, "eventTypeId"),
        starts_at=parse_iso(body.get("startTime"), "startTime"),
        ends_at=parse_iso(body.get("endTime"), "endTime"),
        title=_clip(_str(body, "title"), 512),
        reschedule_uid=_str(body, "rescheduleUid", 128),
        reschedule_starts_at=parse_iso(body.get("rescheduleStartTime"), "rescheduleStartTime"),
        reschedule_ends_at=parse_iso(body.get("rescheduleEndTime"), "rescheduleEndTime"),
        cancellation_reason=reason,
        attendee_phone=phone if phone is None or len(phone) <= 32 else None,
        attendee_email=_str(attendee, "email", 320) if attendee else None,
        attendee_name=_clip(_str(attendee, "name"), 255) if attendee else None,
        retell_call_id=call_ref if isinstance(call_ref, str) and len(call_ref) <= 128 else None,
        metadata_branch_id=_id(metadata.get("branch_id")),
    )


def _clip(value: str | None, limit: int) -> str | None:
    """Free text is stored truncated rather than refused: a long title is not poison."""
    return value[:limit] if value else None


def _first_attendee(body: Mapping[str, Any]) -> dict[str, Any] | None:
    attendees = body.get("attendees")
    if attendees is None:
        return None
    if not isinstance(attendees, list):
        raise SchemaViolation("attendees must be a list")
    first = attendees[0] if attendees else None
    if first is not None and not isinstance(first, dict):
        raise SchemaViolation("attendees[0] must be an object")
    return first
