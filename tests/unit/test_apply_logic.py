"""Unit tests of the pure parts of the apply path: facts, merges, counters, attribution."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.apply.merge import merge_booking, merge_call, new_appointment, new_call
from pipeline.apply.tenancy import (
    Attribution,
    Branch,
    Directory,
    Unroutable,
    attribute_booking,
    attribute_retell,
)
from pipeline.dashboard import aggregates
from pipeline.errors import SchemaViolation
from pipeline.providers.calcom import booking_facts
from pipeline.providers.facts import parse_iso
from pipeline.providers.retell import call_facts
from testbed.events import booking, call_events, no_show

T0 = datetime(2026, 1, 7, 13, 0)


def facts_of(body: bytes):
    payload = orjson.loads(body)
    return call_facts(payload["event"], payload)


def test_call_facts_read_the_call_object() -> None:
    ended = facts_of(call_events("c1", start_ms=1_767_790_800_000)[3])
    assert ended.event_type == "call_ended"
    assert ended.cost_cents == Decimal("13.3700")
    assert ended.started_at == datetime(2026, 1, 7, 13, 0)
    assert ended.business_number == "+14155550199" and ended.customer_number == "+14155550142"


@pytest.mark.parametrize(
    "call",
    [
        {"call_id": 5},
        {"call_id": "c", "start_timestamp": "soon"},
        {"call_id": "c", "duration_ms": 1.5},
        {"call_id": "c", "call_cost": {"combined_cost": "12"}},
        {"call_id": "c", "call_analysis": {"call_successful": "yes"}},
        {"call_id": "c" * 200},  # the call's id: without it nothing can be applied
        {"call_id": "c", "agent_id": 7},
    ],
)
def test_schema_violations_are_poison(call: dict) -> None:
    with pytest.raises(SchemaViolation):
        call_facts("call_ended", {"event": "call_ended", "call": call})


def test_overlong_optional_fields_are_dropped_not_poison() -> None:
    """Issue 12, defect 5: an agent id too long for its column is dropped and named."""
    facts = call_facts(
        "call_ended", {"event": "call_ended", "call": {"call_id": "c", "agent_id": "a" * 200}}
    )
    assert facts is not None and facts.agent_id is None
    assert facts.clipped == (("agent_id", "dropped"),)


def test_outbound_calls_belong_to_the_calling_branch() -> None:
    facts = call_facts(
        "call_started",
        {
            "call": {
                "call_id": "c",
                "direction": "outbound",
                "from_number": "+1000",
                "to_number": "+2000",
            }
        },
    )
    assert facts.business_number == "+1000" and facts.customer_number == "+2000"


def test_status_only_moves_forward_and_analysis_fills_whatever_came_first() -> None:
    bodies = call_events("c1", start_ms=1_767_790_800_000)
    started, ended, analyzed = facts_of(bodies[0]), facts_of(bodies[3]), facts_of(bodies[4])
    blank = new_call("c1", 1, None)
    a = merge_call(merge_call(merge_call(blank, analyzed, T0), ended, T0), started, T0)
    b = merge_call(merge_call(merge_call(blank, started, T0), ended, T0), analyzed, T0)
    assert a == b
    assert (
        a.status == "ended" and a.sentiment == "Positive" and a.last_event_type == "call_analyzed"
    )


def test_longest_transcript_wins() -> None:
    bodies = call_events("c1", start_ms=1_767_790_800_000)
    short, longer, final = facts_of(bodies[1]), facts_of(bodies[2]), facts_of(bodies[3])
    blank = new_call("c1", 1, None)
    row = merge_call(merge_call(merge_call(blank, final, T0), longer, T0), short, T0)
    assert row.transcript == final.transcript
    assert merge_call(merge_call(blank, longer, T0), short, T0).transcript == longer.transcript


def booking_of(body: bytes):
    payload = orjson.loads(body)
    return booking_facts(payload["triggerEvent"], payload)


def test_booking_lifecycle_in_any_order() -> None:
    created = booking_of(booking("BOOKING_CREATED", "b1", created_ms=1_767_790_800_000))
    cancelled = booking_of(
        booking("BOOKING_CANCELLED", "b1", created_ms=1_767_790_900_000, cancellationReason="ill")
    )
    blank = new_appointment("b1", 1, None)
    one = merge_booking(merge_booking(blank, created), cancelled)
    two = merge_booking(merge_booking(blank, cancelled), created)
    assert one == two and one.status == "cancelled" and one.cancellation_reason == "ill"


def test_no_show_keeps_the_earliest_mark_and_unmarking_changes_nothing() -> None:
    early = booking_of(no_show("b1", created_ms=1_767_790_800_000))
    late = booking_of(no_show("b1", created_ms=1_767_877_200_000))
    unmark = booking_of(no_show("b1", created_ms=1_767_900_000_000, marked=False))
    blank = new_appointment("b1", 1, None)
    row = merge_booking(merge_booking(merge_booking(blank, late), unmark), early)
    assert row.status == "no_show" and row.no_show_at == early.created_at


def test_day_buckets_are_local_midnights_in_utc() -> None:
    # 07:30Z and 08:30Z on Jan 7 are Jan 6 and Jan 7 in Los Angeles (UTC-8).
    assert aggregates.day_start(datetime(2026, 1, 7, 7, 30), "America/Los_Angeles") == datetime(
        2026, 1, 6, 8
    )
    assert aggregates.day_start(datetime(2026, 1, 7, 8, 30), "America/Los_Angeles") == datetime(
        2026, 1, 7, 8
    )
    assert aggregates.day_start(datetime(2026, 7, 7, 8, 30), "America/Los_Angeles") == datetime(
        2026, 7, 7, 7
    )
    assert aggregates.day_start(datetime(2026, 1, 7, 23, 30), "Asia/Tokyo") == datetime(
        2026, 1, 7, 15
    )
    assert aggregates.day_start(datetime(2026, 1, 7, 23, 30), "Not/AZone") == datetime(2026, 1, 7)


def test_call_counters_follow_spec_rules() -> None:
    row = {
        "company_id": 1,
        "direction": "inbound",
        "started_at": T0,
        "duration_ms": 1000,
        "cost_cents": Decimal("1.5"),
        "disconnection_reason": "voicemail_reached",
        "successful": True,
        "sentiment": "Unknown",
    }
    counted = aggregates.call_counters(row, ended=True, analyzed=True, timezone="UTC")
    hour = counted[aggregates.BucketKey(1, "hour", T0)]
    assert hour == {
        "calls_total": 1,
        "calls_inbound": 1,
        "calls_connected": 1,
        "calls_inbound_connected": 1,  # no booking names it: no calls_booked
        "calls_voicemail": 1,
        "duration_ms_total": 1000,
        "cost_cents_total": Decimal("1.5"),
        "calls_successful": 1,
    }
    assert aggregates.call_counters(row, ended=False, analyzed=False, timezone="UTC") == {}


@given(
    st.lists(
        st.sampled_from(["booked_at", "cancelled_at", "rescheduled_at", "no_show_at"]), unique=True
    )
)
def test_difference_of_counters_adds_back_up(marks: list[str]) -> None:
    before = {"company_id": 1}
    after = dict(before, **{m: T0 for m in marks})
    delta = aggregates.difference(
        aggregates.appointment_counters(after, timezone="UTC"),
        aggregates.appointment_counters(before, timezone="UTC"),
    )
    total = aggregates.sum_contributions([delta])
    company = [v for key, bucket in total.items() if not key.grouped for v in bucket.values()]
    # hour + day per mark; a booking that names no call also counts appointments_without_call
    assert sum(company) == 2 * len(marks) + 2 * ("booked_at" in marks)
    for dimension in aggregates.DIMENSIONS:  # each breakdown adds up to the company
        grouped = [v for k, b in total.items() if k.dimension == dimension for v in b.values()]
        assert sum(grouped) == sum(company)


def directory(*branches: Branch) -> Directory:
    d = Directory()
    for b in branches:
        d.add(b)
    return d


def test_attribution_never_guesses() -> None:
    active = Branch(1, 10, "+1000", "agent_a", 901, True)
    inactive = Branch(2, 20, "+2000", "agent_b", 902, False)
    d = directory(active, inactive)
    assert attribute_retell("+1000", None, None, d) == Attribution(10, 1)
    assert attribute_retell("+2000", None, None, d) == Unroutable("branch_inactive")
    assert attribute_retell("+9999", "agent_a", None, d) == Attribution(10, 1)
    assert attribute_retell("+9999", None, None, d) == Unroutable("no_branch_for_number")
    # metadata must name a branch of the company it claims
    assert attribute_retell(None, None, {"company_id": "20", "branch_id": "1"}, d) == Unroutable(
        "no_business_number"
    )
    assert attribute_retell(None, None, {"company_id": "10", "branch_id": "1"}, d) == Attribution(
        10, 1
    )


def test_ambiguous_agent_ids_do_not_attribute() -> None:
    d = directory(
        Branch(1, 10, "+1000", "shared", None, True), Branch(2, 20, "+2000", "shared", None, True)
    )
    assert isinstance(attribute_retell("+9999", "shared", None, d), Unroutable)


def test_booking_attribution_and_parking() -> None:
    d = directory(Branch(1, 10, "+1000", None, 901, True))
    created = booking_of(booking("BOOKING_CREATED", "b1", created_ms=1_767_790_800_000))
    marked = booking_of(no_show("b1", created_ms=1_767_790_800_000))
    assert attribute_booking(created, d, None) == Attribution(10, 1)
    assert attribute_booking(marked, d, None) == Unroutable("unknown_booking")
    assert attribute_booking(marked, d, Attribution(10, 1)) == Attribution(10, 1)


def test_iso_times_are_utc_milliseconds() -> None:
    assert parse_iso("2026-01-09T17:00:00+01:00", "t") == datetime(2026, 1, 9, 16)
    assert parse_iso("2026-01-09T17:00:00.123456Z", "t") == datetime(2026, 1, 9, 17, 0, 0, 123000)
    with pytest.raises(SchemaViolation):
        parse_iso("tomorrow", "t")
