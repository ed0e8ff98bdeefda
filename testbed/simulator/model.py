"""The simulator's ground truth: tenants, calls, bookings, and the steps that deliver them.

A generated scenario is a *story* (who called whom, when, what was said, what was booked)
plus the webhook bodies that tell that story and the order they are delivered in. The
expected-state oracle reads the story, never the bodies' parsed effects, and never the
worker's code: it is an independent second implementation of docs/data-model.md.

All times are integer epoch milliseconds (UTC); ISO strings are made at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from pipeline.tenants import Branch as Branch  # re-exported: tests build tenants from it
from pipeline.tenants import Company as Company

# ---- the story ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "agent" | "user"
    content: str


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One Retell webhook about a call, as the provider would send it at ``at_ms``."""

    key: str  # the step key that delivers it
    event: str  # call_inbound, call_started, transcript_updated, ..., call_analyzed
    at_ms: int
    turns: int = 0  # transcript_updated: how many turns this snapshot carries


@dataclass(slots=True)
class SimCall:
    call_id: str
    company_id: int | None  # None: a number no routable branch has (→ unroutable)
    branch_id: int | None
    timezone: str
    agent_id: str
    direction: str  # inbound | outbound
    from_number: str
    to_number: str
    customer_name: str
    dial_ms: int  # when the phone started ringing
    start_ms: int | None  # None: never connected (no call_started)
    end_ms: int
    disconnection_reason: str
    final_status: str  # ended | not_connected
    cost: Decimal | None  # combined_cost in cents; None: call_cost omitted
    transfer_destination: str | None = None
    in_voicemail: bool | None = None
    successful: bool | None = None
    sentiment: str | None = None  # Positive/Neutral/Negative/Unknown; None: omitted
    summary: str | None = None
    storage: str = "everything"  # data_storage_setting: decides transcript/recording
    turns: tuple[Turn, ...] = ()
    tool_calls: tuple[tuple[int, str, str, str], ...] = ()  # (after turn n, name, args, result)
    omit: tuple[str, ...] = ()  # optional fields this call's bodies leave out
    events: list[CallEvent] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return self.start_ms is not None

    @property
    def duration_ms(self) -> int | None:
        return None if self.start_ms is None else self.end_ms - self.start_ms

    @property
    def customer_phone(self) -> str:
        return self.to_number if self.direction == "outbound" else self.from_number

    @property
    def routable(self) -> bool:
        return self.company_id is not None

    @property
    def keeps_transcript(self) -> bool:
        return self.storage != "basic_attributes_only"


@dataclass(frozen=True, slots=True)
class BookingEvent:
    key: str
    trigger: str  # BOOKING_CREATED, ..., BOOKING_NO_SHOW_UPDATED, MEETING_ENDED
    at_ms: int  # the webhook's createdAt (MEETING_*: when the cron sent it)
    no_show: bool | None = None  # BOOKING_NO_SHOW_UPDATED: the attendee's noShow flag


@dataclass(slots=True)
class SimBooking:
    uid: str
    booking_id: int
    company_id: int
    branch_id: int
    event_type_id: int
    timezone: str
    start_ms: int
    end_ms: int
    title: str
    service: str
    organizer_name: str
    attendee_name: str
    attendee_email: str
    attendee_phone: str | None  # responses.attendeePhoneNumber.value; None: field absent
    retell_call_id: str | None = None  # metadata.retell_call_id: booked during that call
    rescheduled_from: str | None = None  # uid of the booking this one replaced
    requires_confirmation: bool = False
    events: list[BookingEvent] = field(default_factory=list)


# ---- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One webhook body and how it must be delivered and answered.

    ``metadata_from`` names a call whose ``call_inbound`` answer is copied into this body's
    ``call.metadata`` at send time, as Retell does; ``depends_on`` is a step that must have
    been accepted before this one is sent (a no-show is marked after the booking exists).
    """

    key: str
    provider: str  # retell | calcom
    event_type: str
    event_id: (
        str | None
    )  # the dedup id (docs/architecture.md); None for bodies that must be refused
    body: bytes
    expect_status: int  # 200 call_inbound, 202 accepted, 400 malformed, 401 bad signature
    signing: str = "valid"  # valid | wrong_secret | stale | missing | garbled
    bad: str | None = None  # why the body is bad traffic (None: good traffic)
    metadata_from: str | None = None
    depends_on: str | None = None
    unroutable: bool = False  # accepted, but the worker must record it as unroutable
    routing: tuple[int, int] | None = None  # call_inbound: the (company, branch) to answer


@dataclass(frozen=True, slots=True)
class Delivery:
    step: str
    attempt: int  # 0: first delivery; 1..3: the provider delivering the same body again
    slot: float  # pacing position in requests (a burst shares one slot)


@dataclass(slots=True)
class Scenario:
    seed: int
    run_tag: str
    anchor_ms: int
    companies: tuple[Company, ...]
    calls: list[SimCall]
    bookings: list[SimBooking]
    steps: dict[str, Step]
    deliveries: list[Delivery]
    # Steps never delivered, as an outage upstream would lose them (``drop_share``); the
    # providers' REST APIs still know what they were about (docs/backfill.md).
    dropped: frozenset[str] = frozenset()

    def canonical_bytes(self) -> bytes:
        """Every body and the delivery order, for byte-for-byte determinism checks."""
        return orjson.dumps(
            {
                "steps": [
                    [
                        s.key,
                        s.provider,
                        s.event_type,
                        s.event_id,
                        s.body.decode("utf-8", "replace"),
                        s.expect_status,
                        s.signing,
                        s.bad,
                        s.metadata_from,
                        s.depends_on,
                    ]
                    for s in self.steps.values()
                ],
                "deliveries": [[d.step, d.attempt, d.slot] for d in self.deliveries],
            }
            | ({"dropped": sorted(self.dropped)} if self.dropped else {})
        )


# ---- time helpers ------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = 60_000
HOUR = 60 * MINUTE


def utc(ms: int) -> datetime:
    """Epoch ms → aware UTC datetime, exactly (no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)


def iso_ms(ms: int) -> str:
    """``2026-01-05T17:02:11.482Z``: Cal.com's createdAt shape, and the expected file's."""
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_dt(at: datetime) -> str:
    """A datetime (naive = UTC) in the expected file's ISO shape."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def transcript_text(turns: tuple[Turn, ...] | list[Turn]) -> str:
    """Retell's plain ``transcript``: ``Agent: ...`` / ``User: ...`` lines."""
    return "\n".join(f"{t.role.capitalize()}: {t.content}" for t in turns)
