"""An erased person's events lose their personal facts and keep what counts and routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pipeline.apply.items import Item
from pipeline.apply.privacy import _anonymous
from pipeline.providers.facts import BookingFacts, CallFacts
from pipeline.records import WebhookRecord

PERSON = "+14155550142"
BRANCH = "+14155550199"
LISTED = {("phone", PERSON), ("email", "dana@example.com")}


def _item(facts: CallFacts | BookingFacts) -> Item:
    record = WebhookRecord("t", 0, 0, b"k", b"{}", {}, 0)
    return Item(record, "retell", "e", "call_ended", "0" * 64, facts)


def _call(direction: str, **extra: object) -> CallFacts:
    ours, theirs = (PERSON, BRANCH) if direction == "inbound" else (BRANCH, PERSON)
    return CallFacts(
        call_id="call_1",
        event_type="call_ended",
        rank=7,
        milestones=(("retell", "call_ended:call_1"), ("retell", "call_analyzed:call_1")),
        direction=direction,
        from_number=ours,
        to_number=theirs,
        duration_ms=90_000,
        cost_cents=Decimal("21.4"),
        transcript="Agent: hello Dana",
        summary="Dana booked a cleaning",
        recording_url="https://recordings.example/1.wav",
        metadata={"company_id": "1", "branch_id": "11", "caller_name": "Dana"},
        sentiment="Positive",
        **extra,  # type: ignore[arg-type]
    )


def test_an_erased_callers_call_keeps_what_counts_and_routes() -> None:
    inbound = _anonymous(_item(_call("inbound")), LISTED).facts
    assert isinstance(inbound, CallFacts)
    assert inbound.from_number is None and inbound.to_number == BRANCH
    assert inbound.transcript is None and inbound.summary is None
    assert inbound.recording_url is None
    assert inbound.metadata == {"company_id": "1", "branch_id": "11"}
    assert (inbound.duration_ms, inbound.cost_cents, inbound.sentiment) == (
        90_000,
        Decimal("21.4"),
        "Positive",
    )
    assert inbound.business_number == BRANCH and inbound.metadata_branch_id == 11

    outbound = _anonymous(_item(_call("outbound")), LISTED).facts
    assert isinstance(outbound, CallFacts)
    assert outbound.to_number is None and outbound.from_number == BRANCH


def test_someone_else_is_left_alone() -> None:
    item = _item(_call("inbound"))
    assert _anonymous(item, {("phone", "+4930555000")}) is item


def test_an_erased_bookers_booking_has_no_attendee() -> None:
    booking = BookingFacts(
        trigger="BOOKING_CREATED",
        uid="bk_1",
        created_at=datetime(2026, 1, 5),
        event_type_id=901,
        title="Cleaning between Bayview and Dana Reyes",
        cancellation_reason=None,
        attendee_phone=None,
        attendee_email="dana@example.com",
        attendee_name="Dana Reyes",
    )
    facts = _anonymous(_item(booking), LISTED).facts
    assert isinstance(facts, BookingFacts)
    assert (facts.attendee_email, facts.attendee_name, facts.title) == (None, None, None)
    assert facts.event_type_id == 901 and facts.uid == "bk_1"
