"""The expected-state oracle on a hand-made story, against counters computed by hand.

Company 1 is in UTC; company 2 is in Asia/Tokyo (UTC+9), so 2026-03-10T15:00Z is local
midnight there and its day buckets start at 15:00Z the day before.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pipeline.models import COUNTERS
from testbed.simulator import expected
from testbed.simulator.model import (
    BookingEvent,
    Branch,
    CallEvent,
    Company,
    SimBooking,
    SimCall,
    Turn,
    transcript_text,
)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


COMPANIES = (
    Company(
        "Alpha",
        "UTC",
        branches=(Branch("Alpha HQ", "+14155550001", "agent_a", 101, id=11, company_id=1),),
        id=1,
    ),
    Company(
        "Tokyo Co",
        "Asia/Tokyo",
        branches=(Branch("Ginza", "+81312345678", "agent_t", 201, id=21, company_id=2),),
        id=2,
    ),
)
TURNS = (
    Turn("agent", "Hello, Alpha HQ."),
    Turn("user", "Hi, I need a cleaning."),
    Turn("agent", "Booked, bye."),
)


def call(call_id: str, company: int | None, branch: int | None, tz: str, **kw) -> SimCall:
    base = dict(
        call_id=call_id,
        company_id=company,
        branch_id=branch,
        timezone=tz,
        agent_id="agent_x",
        direction="inbound",
        from_number="+15550000001",
        to_number="+14155550001",
        customer_name="Dana Reyes",
        dial_ms=0,
        start_ms=None,
        end_ms=0,
        disconnection_reason="user_hangup",
        final_status="ended",
        cost=Decimal("0"),
        in_voicemail=False,
        successful=False,
        sentiment="Unknown",
    )
    base.update(kw)
    return SimCall(**base)


def events(call_id: str, *names: str, at: int) -> list[CallEvent]:
    return [
        CallEvent(f"retell:{n}:{call_id}", n, at + i, turns=2 if n == "transcript_updated" else 0)
        for i, n in enumerate(names)
    ]


C1 = call(
    "call_c1",
    1,
    11,
    "UTC",
    start_ms=ms("2026-03-10T09:15:00Z"),
    end_ms=ms("2026-03-10T09:17:00Z"),
    cost=Decimal("12.3456"),
    sentiment="Positive",
    successful=True,
    turns=TURNS,
)
C1.events = events(
    "call_c1",
    "call_inbound",
    "call_started",
    "transcript_updated",
    "call_ended",
    "call_analyzed",
    at=ms("2026-03-10T09:15:00Z"),
)
C2 = call(
    "call_c2",
    2,
    21,
    "Asia/Tokyo",
    direction="outbound",
    from_number="+81312345678",
    to_number="+81399990000",
    end_ms=ms("2026-03-10T14:59:50Z"),
    disconnection_reason="dial_no_answer",
    final_status="not_connected",
)
C2.events = events("call_c2", "call_ended", "call_analyzed", at=ms("2026-03-10T14:59:51Z"))
C3 = call(
    "call_c3",
    2,
    21,
    "Asia/Tokyo",
    to_number="+81312345678",
    start_ms=ms("2026-03-10T15:00:10Z"),
    end_ms=ms("2026-03-10T15:03:10Z"),
    disconnection_reason="call_transfer",
    transfer_destination="+81300000000",
    cost=Decimal("20.5"),
    sentiment="Negative",
    successful=True,
)
C3.events = events(
    "call_c3",
    "call_inbound",
    "call_started",
    "transfer_started",
    "transfer_bridged",
    "call_ended",
    "call_analyzed",
    at=ms("2026-03-10T15:00:10Z"),
)
C4 = call(
    "call_c4",
    None,
    None,
    "UTC",
    to_number="+19999999999",
    start_ms=ms("2026-03-10T08:00:00Z"),
    end_ms=ms("2026-03-10T08:01:00Z"),
)
C4.events = events(
    "call_c4", "call_inbound", "call_started", "call_ended", at=ms("2026-03-10T08:00:00Z")
)
C5 = call(
    "call_c5", 1, 11, "UTC", start_ms=ms("2026-03-10T08:30:00Z"), end_ms=ms("2026-03-10T08:31:00Z")
)
C5.events = events("call_c5", "call_inbound", "call_started", at=ms("2026-03-10T08:30:00Z"))


def booking(uid: str, company: int, branch: int, tz: str, **kw) -> SimBooking:
    base = dict(
        uid=uid,
        booking_id=1,
        company_id=company,
        branch_id=branch,
        event_type_id=101,
        timezone=tz,
        start_ms=ms("2026-03-20T10:00:00Z"),
        end_ms=ms("2026-03-20T10:30:00Z"),
        title="Cleaning",
        service="Cleaning",
        organizer_name="x",
        attendee_name="Dana Reyes",
        attendee_email="dana@example.com",
        attendee_phone="+15550000001",
    )
    base.update(kw)
    return SimBooking(**base)


def bev(uid: str, trigger: str, iso: str, no_show: bool | None = None) -> BookingEvent:
    suffix = f":{ms(iso)}" if trigger == "BOOKING_NO_SHOW_UPDATED" else ""
    return BookingEvent(f"calcom:{trigger}:{uid}{suffix}", trigger, ms(iso), no_show)


B1 = booking("b1", 2, 21, "Asia/Tokyo", retell_call_id="call_c3")
B1.events = [
    bev("b1", "BOOKING_CREATED", "2026-03-10T14:30:00Z"),
    bev("b1", "BOOKING_NO_SHOW_UPDATED", "2026-03-10T15:10:00Z", True),
    bev("b1", "BOOKING_NO_SHOW_UPDATED", "2026-03-10T15:20:00Z", False),
    bev("b1", "BOOKING_NO_SHOW_UPDATED", "2026-03-10T15:30:00Z", True),
]
B2 = booking("b2", 1, 11, "UTC")
B2.events = [bev("b2", "BOOKING_CREATED", "2026-03-10T10:00:00Z")]
B3 = booking("b3", 1, 11, "UTC", rescheduled_from="b2", start_ms=ms("2026-03-22T10:00:00Z"))
B3.events = [
    bev("b3", "BOOKING_RESCHEDULED", "2026-03-10T11:00:00Z"),
    bev("b3", "BOOKING_CANCELLED", "2026-03-10T12:00:00Z"),
]
B4 = booking("b4", 1, 11, "UTC")
B4.events = [
    bev("b4", "BOOKING_CREATED", "2026-03-10T12:30:00Z"),
    bev("b4", "BOOKING_NO_SHOW_UPDATED", "2026-03-10T13:00:00Z", True),
]
B5 = booking("b5", 1, 11, "UTC", retell_call_id="call_c4")
B5.events = [bev("b5", "BOOKING_REQUESTED", "2026-03-10T09:40:00Z")]

CALLS = [C1, C2, C3, C4, C5]
BOOKINGS = [B1, B2, B3, B4, B5]
NOT_ACCEPTED = {"retell:call_ended:call_c3", "calcom:BOOKING_CREATED:b4"}
ACCEPTED = {e.key for c in CALLS for e in c.events} | {e.key for b in BOOKINGS for e in b.events}
ACCEPTED -= NOT_ACCEPTED


def counters(**values) -> dict:
    out = {name: 0 for name in COUNTERS}
    out["cost_cents_total"] = Decimal(0)
    out.update(values)
    return out


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_counters_match_the_hand_computed_buckets() -> None:
    result = expected.compute(COMPANIES, CALLS, BOOKINGS, ACCEPTED)
    c1 = dict(
        calls_total=1,
        calls_inbound=1,
        calls_connected=1,
        calls_inbound_connected=1,  # no booking names it: calls_booked stays 0
        calls_successful=1,
        duration_ms_total=120_000,
        cost_cents_total=Decimal("12.3456"),
        sentiment_positive=1,
    )
    c2 = dict(calls_total=1, calls_outbound=1, calls_not_connected=1)
    c3 = dict(calls_successful=1, sentiment_negative=1)  # its call_ended was never accepted
    want = {
        (1, "hour", at("2026-03-10 09:00")): counters(**c1),
        # b2 names no call; b1 names call_c3, whose call_ended was never accepted.
        (1, "hour", at("2026-03-10 10:00")): counters(
            appointments_booked=1, appointments_without_call=1
        ),
        (1, "hour", at("2026-03-10 11:00")): counters(appointments_rescheduled=1),
        (1, "hour", at("2026-03-10 12:00")): counters(appointments_cancelled=1),
        (1, "day", at("2026-03-10 00:00")): counters(
            **c1,
            appointments_booked=1,
            appointments_without_call=1,
            appointments_rescheduled=1,
            appointments_cancelled=1,
        ),
        (2, "hour", at("2026-03-10 14:00")): counters(**c2, appointments_booked=1),
        (2, "hour", at("2026-03-10 15:00")): counters(**c3, appointments_no_show=1),
        # Tokyo's 2026-03-10 starts at 2026-03-09T15:00Z; its 03-11 at 2026-03-10T15:00Z.
        (2, "day", at("2026-03-09 15:00")): counters(**c2, appointments_booked=1),
        (2, "day", at("2026-03-10 15:00")): counters(**c3, appointments_no_show=1),
    }
    assert result.buckets == want


def test_rows_follow_the_rulebook() -> None:
    result = expected.compute(COMPANIES, CALLS, BOOKINGS, ACCEPTED)
    assert result.calls["call_c1"] == {
        "company_id": 1,
        "branch_id": 11,
        "status": "ended",
        "direction": "inbound",
        "started_at": "2026-03-10T09:15:00.000Z",
        "ended_at": "2026-03-10T09:17:00.000Z",
        "duration_ms": 120_000,
        "disconnection_reason": "user_hangup",
        "in_voicemail": False,
        "successful": True,
        "sentiment": "Positive",
        "cost_cents": "12.3456",
        "transfer_destination": None,
        "customer_phone": "+15550000001",
        "transcript_chars": len(transcript_text(TURNS)),
    }
    c2 = result.calls["call_c2"]
    assert (c2["status"], c2["started_at"], c2["duration_ms"], c2["customer_phone"]) == (
        "not_connected",
        None,
        None,
        "+81399990000",
    )
    c3 = result.calls["call_c3"]  # call_analyzed carries the end data even without call_ended
    assert (c3["status"], c3["transfer_destination"], c3["cost_cents"], c3["sentiment"]) == (
        "ended",
        "+81300000000",
        "20.5000",
        "Negative",
    )
    c5 = result.calls["call_c5"]
    assert (c5["status"], c5["ended_at"], c5["transcript_chars"]) == ("ongoing", None, None)
    assert "call_c4" not in result.calls  # unroutable: no row

    b1 = result.appointments["b1"]
    assert (b1["status"], b1["no_show_at"], b1["booked_at"], b1["call"]) == (
        "no_show",
        "2026-03-10T15:10:00.000Z",
        "2026-03-10T14:30:00.000Z",
        "call_c3",
    )
    b2 = result.appointments["b2"]
    assert (b2["status"], b2["rescheduled_at"], b2["booked_at"]) == (
        "rescheduled",
        "2026-03-10T11:00:00.000Z",
        "2026-03-10T10:00:00.000Z",
    )
    b3 = result.appointments["b3"]
    assert (
        b3["status"],
        b3["rescheduled_from_uid"],
        b3["cancelled_at"],
        b3["booked_at"],
        b3["starts_at"],
    ) == ("cancelled", "b2", "2026-03-10T12:00:00.000Z", None, "2026-03-22T10:00:00.000Z")
    assert "b4" not in result.appointments
    b5 = result.appointments["b5"]
    assert (b5["status"], b5["retell_call_id"], b5["call"]) == ("pending", "call_c4", None)


def test_event_statuses() -> None:
    result = expected.compute(COMPANIES, CALLS, BOOKINGS, ACCEPTED)
    events = result.events
    assert events[("retell", "call_c1")] == "applied"  # call_inbound's id is the call id
    assert events[("retell", "transcript_updated:call_c1")] == "applied"
    assert ("retell", "call_ended:call_c3") not in events
    assert {k: v for k, v in events.items() if "call_c4" in k[1]} == {
        ("retell", "call_c4"): "unroutable",
        ("retell", "call_started:call_c4"): "unroutable",
        ("retell", "call_ended:call_c4"): "unroutable",
    }
    assert events[("retell", "call_c5")] == "applied"
    assert events[("calcom", "BOOKING_NO_SHOW_UPDATED:b4:2026-03-10T13:00:00.000Z")] == "unroutable"
    assert events[("calcom", "BOOKING_NO_SHOW_UPDATED:b1:2026-03-10T15:20:00.000Z")] == "applied"
    assert events[("calcom", "BOOKING_RESCHEDULED:b3")] == "applied"


def test_only_accepted_steps_count() -> None:
    nothing = expected.compute(COMPANIES, CALLS, BOOKINGS, set())
    assert (nothing.calls, nothing.appointments, nothing.events, nothing.buckets) == (
        {},
        {},
        {},
        {},
    )
    only_c1_ended = expected.compute(COMPANIES, CALLS, BOOKINGS, {"retell:call_ended:call_c1"})
    assert only_c1_ended.calls["call_c1"]["sentiment"] is None
    assert only_c1_ended.buckets[(1, "hour", at("2026-03-10 09:00"))]["calls_successful"] == 0


def test_document_adds_the_baseline_and_writes_strings_for_cents() -> None:
    result = expected.compute(COMPANIES, CALLS, BOOKINGS, ACCEPTED)
    hour9 = (1, "hour", at("2026-03-10 09:00"))
    older = (1, "hour", at("2026-03-10 07:00"))
    baseline = {
        hour9: counters(calls_total=5, cost_cents_total=Decimal("1.0001")),
        older: counters(calls_total=2),
    }
    doc = expected.document(
        result,
        run={"seed": 1},
        windows=expected.windows_for(result.buckets),
        baseline=baseline,
        id_prefixes={"calls": "call_"},
    )
    rows = {(b["company_id"], b["granularity"], b["bucket_start"]): b for b in doc["buckets"]}
    assert rows[(1, "hour", "2026-03-10T09:00:00.000Z")]["calls_total"] == 6
    assert rows[(1, "hour", "2026-03-10T09:00:00.000Z")]["cost_cents_total"] == "13.3457"
    assert rows[(1, "hour", "2026-03-10T07:00:00.000Z")]["calls_total"] == 2
    assert doc["bucket_windows"]["2"]["day"][0] < "2026-03-09T15:00:00.000Z"
    assert {(u["provider"], u["event_id"]) for u in doc["unroutable"]} == {
        ("retell", "call_c4"),
        ("retell", "call_started:call_c4"),
        ("retell", "call_ended:call_c4"),
        ("calcom", "BOOKING_NO_SHOW_UPDATED:b4:2026-03-10T13:00:00.000Z"),
    }


def test_day_start_across_local_midnight_and_dst() -> None:
    assert expected.day_start(ms("2026-03-10T14:59:59Z"), "Asia/Tokyo") == at("2026-03-09 15:00")
    assert expected.day_start(ms("2026-03-10T15:00:00Z"), "Asia/Tokyo") == at("2026-03-10 15:00")
    # Los Angeles switches to PDT on 2026-03-08: that local day is 23 hours long.
    assert expected.day_start(ms("2026-03-08T12:00:00Z"), "America/Los_Angeles") == at(
        "2026-03-08 08:00"
    )
    assert expected.day_start(ms("2026-03-09T12:00:00Z"), "America/Los_Angeles") == at(
        "2026-03-09 07:00"
    )
    assert expected.day_start(ms("2026-03-10T05:00:00Z"), "Asia/Kolkata") == at("2026-03-09 18:30")
