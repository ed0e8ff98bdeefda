"""The pure half of reconcile (pipeline/dashboard/drift.py): scope and retention, the recount from
rows, the diff against stored copies, the fix plan, and how drift is shown."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pipeline.dashboard import drift
from pipeline.dashboard.aggregates import BucketKey, empty_counters
from pipeline.dashboard.drift import Scope
from pipeline.dashboard.reconcile import CompanyReport, Report, render
from pipeline.dashboard.snapshots import decode, encode, is_tombstone

NOW = datetime(2026, 11, 28, 16, 14, 4)
LA = "America/Los_Angeles"


def scope(
    start: datetime | None = None, end: datetime | None = None, grans=("hour", "day")
) -> Scope:
    return Scope(tuple(grans), start, end or NOW + timedelta(days=1), NOW)


def counters(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = empty_counters()
    out.update(values)
    return out


def call(**row: Any) -> dict[str, Any]:
    base = {
        "company_id": 1,
        "started_at": datetime(2026, 11, 27, 7, 30),
        "ended_at": datetime(2026, 11, 27, 7, 35),
        "last_event_at": datetime(2026, 11, 27, 7, 36),
        "direction": "inbound",
        "disconnection_reason": "user_hangup",
        "transfer_destination": None,
        "duration_ms": 300_000,
        "cost_cents": Decimal("12.3400"),
        "successful": True,
        "sentiment": "Positive",
        "ended_applied": 1,
        "analyzed_applied": 1,
    }
    base.update(row)
    return base


# --- scope ------------------------------------------------------------------------------


def test_scope_never_reaches_past_retention() -> None:
    s = scope(start=datetime(2020, 1, 1))
    assert s.lower("hour", "UTC") == NOW - timedelta(days=14)
    assert s.lower("day", "UTC") == NOW - timedelta(days=400)
    old_hour = BucketKey(1, "hour", datetime(2026, 11, 14, 16))  # 16:00 < 16:14:04 - 14 d
    kept_hour = BucketKey(1, "hour", datetime(2026, 11, 14, 17))
    assert not s.contains(old_hour, "UTC") and s.contains(kept_hour, "UTC")
    assert s.contains(BucketKey(1, "day", datetime(2026, 1, 1)), "UTC")
    assert not s.contains(BucketKey(1, "day", datetime(2025, 10, 1)), "UTC")


def test_a_range_selects_the_buckets_it_overlaps_in_local_days() -> None:
    # 2026-11-27T12:00Z is 04:00 in Los Angeles: that local day started at 08:00Z.
    s = scope(start=datetime(2026, 11, 27, 12), end=datetime(2026, 11, 28, 9), grans=("day",))
    assert s.lower("day", LA) == datetime(2026, 11, 27, 8)
    assert list(s.bucket_starts("day", LA)) == [
        datetime(2026, 11, 27, 8),
        datetime(2026, 11, 28, 8),
    ]
    assert not s.contains(BucketKey(1, "hour", datetime(2026, 11, 27, 12)), LA)  # not asked for


def test_bucket_starts_follow_daylight_saving_and_odd_offsets() -> None:
    s = Scope(("day",), datetime(2026, 10, 31, 12), datetime(2026, 11, 3), NOW)
    # 1 November 2026: Los Angeles falls back; that local day is 25 hours long.
    assert list(s.bucket_starts("day", LA)) == [
        datetime(2026, 10, 31, 7),
        datetime(2026, 11, 1, 7),
        datetime(2026, 11, 2, 8),
    ]
    kathmandu = list(s.bucket_starts("day", "Asia/Kathmandu"))  # +05:45
    assert kathmandu[0] == datetime(2026, 10, 30, 18, 15)  # 31 Oct 00:00 local
    hours = list(
        Scope(
            ("hour",), datetime(2026, 11, 28, 10, 30), datetime(2026, 11, 28, 13), NOW
        ).bucket_starts("hour", "UTC")
    )
    assert hours == [datetime(2026, 11, 28, h) for h in (10, 11, 12)]


def test_row_window_covers_the_longest_bucket() -> None:
    s = scope(start=datetime(2026, 11, 27, 12), end=datetime(2026, 11, 28), grans=("day",))
    lo, hi = s.row_window(LA)
    assert lo == datetime(2026, 11, 27, 8)
    assert hi == datetime(2026, 11, 29, 1)  # a bucket starting just before `end` runs 25 h


# --- recount -----------------------------------------------------------------------------


def test_recount_follows_the_counting_rules() -> None:
    rows = [
        call(),
        call(
            direction="outbound",
            started_at=None,
            duration_ms=0,
            ended_applied=1,
            disconnection_reason="dial_no_answer",
            sentiment="Unknown",
            successful=None,
        ),
        call(disconnection_reason="voicemail_reached", successful=0, sentiment="Negative"),
        call(transfer_destination="+14155559999", successful=1),  # MySQL's 1/0, not bools
        call(ended_applied=0, analyzed_applied=1, sentiment="Neutral"),  # analyzed only
        call(ended_applied=1, analyzed_applied=0),  # ended only
    ]
    appointments = [
        {
            "company_id": 1,
            "booked_at": datetime(2026, 11, 27, 9),
            "cancelled_at": None,
            "rescheduled_at": None,
            "no_show_at": datetime(2026, 11, 28, 1),
        },
        {
            "company_id": 1,
            "booked_at": None,
            "cancelled_at": datetime(2026, 11, 27, 9, 5),
            "rescheduled_at": datetime(2026, 11, 27, 9, 1),
            "no_show_at": None,
        },
    ]
    totals = drift.recount(rows, appointments, timezone="UTC")
    hour = totals[BucketKey(1, "hour", datetime(2026, 11, 27, 7))]
    assert hour["calls_total"] == 5
    assert (hour["calls_inbound"], hour["calls_outbound"]) == (4, 1)
    assert (hour["calls_connected"], hour["calls_not_connected"]) == (4, 1)
    assert hour["calls_voicemail"] == 1 and hour["calls_transferred"] == 1
    assert hour["duration_ms_total"] == 4 * 300_000
    assert hour["cost_cents_total"] == Decimal("61.7000")  # 5 × 12.34
    assert hour["calls_successful"] == 3  # True, 1 and the analyzed-only row; not 0 or None
    assert (hour["sentiment_positive"], hour["sentiment_neutral"], hour["sentiment_negative"]) == (
        2,
        1,
        1,
    )
    day = totals[BucketKey(1, "day", datetime(2026, 11, 27))]
    assert day["calls_total"] == 5 and day["appointments_booked"] == 1
    assert day["appointments_cancelled"] == day["appointments_rescheduled"] == 1
    assert totals[BucketKey(1, "day", datetime(2026, 11, 28))]["appointments_no_show"] == 1


def test_recount_puts_a_call_in_its_company_local_day() -> None:
    early = call(started_at=datetime(2026, 11, 27, 7, 30))
    late = call(started_at=datetime(2026, 11, 27, 8, 30))
    totals = drift.recount([early, late], [], timezone=LA)
    assert totals[BucketKey(1, "day", datetime(2026, 11, 26, 8))]["calls_total"] == 1
    assert totals[BucketKey(1, "day", datetime(2026, 11, 27, 8))]["calls_total"] == 1


def test_a_never_started_call_counts_at_its_end() -> None:
    row = call(started_at=None, ended_at=datetime(2026, 11, 27, 23, 59), duration_ms=None)
    totals = drift.recount([row], [], timezone="UTC")
    assert totals[BucketKey(1, "hour", datetime(2026, 11, 27, 23))]["calls_not_connected"] == 1


# --- diff and plan -----------------------------------------------------------------------


A = BucketKey(1, "hour", datetime(2026, 11, 28, 10))
B = BucketKey(1, "day", datetime(2026, 11, 28, 8))
C = BucketKey(1, "hour", datetime(2026, 11, 28, 11))


def test_diff_reports_each_wrong_counter_and_treats_missing_as_zero() -> None:
    expected = {
        A: counters(calls_total=3, cost_cents_total=Decimal("21.4")),
        B: counters(calls_total=1),
    }
    found = {
        A: counters(calls_total=4, cost_cents_total=Decimal("21.4000")),
        C: counters(calls_total=2),
    }
    drifts = drift.diff("mysql", expected, found)
    assert [(d.key, d.counter, d.expected, d.found) for d in drifts] == [
        (B, "calls_total", 1, 0),  # sorted by key: day < hour
        (A, "calls_total", 3, 4),
        (C, "calls_total", 0, 2),
    ]


def test_diff_is_empty_when_only_zero_rows_differ_in_presence() -> None:
    assert (
        drift.diff(
            "mysql", {A: counters(calls_total=1)}, {A: counters(calls_total=1), C: counters()}
        )
        == []
    )


def test_api_floats_compare_equal_to_decimal_columns() -> None:
    body = {
        "buckets": [
            {
                "start": "2026-11-28T10:00:00Z",
                "calls_total": 3,
                "cost_cents_total": 64.2375,
                "avg_duration_s": 12.5,
                "version": 7,
            },
        ]
    }
    found = drift.api_buckets(1, "hour", body)
    assert list(found) == [A]
    assert (
        drift.diff("api", {A: counters(calls_total=3, cost_cents_total=Decimal("64.2375"))}, found)
        == []
    )
    body["buckets"][0]["cost_cents_total"] = 0.1 + 0.2  # 0.30000000000000004
    assert drift.api_buckets(1, "hour", body)[A]["cost_cents_total"] == Decimal("0.3000")


def test_plan_fix_rewrites_wrong_rows_inserts_missing_and_zeroes_ghosts() -> None:
    expected = {A: counters(calls_total=3), B: counters(calls_total=1)}
    stored = {A: counters(calls_total=4), C: counters(calls_total=2), B: counters(calls_total=1)}
    stored[BucketKey(1, "hour", datetime(2026, 11, 28, 12))] = counters()  # zero and right
    plan = drift.plan_fix(expected, stored)
    assert set(plan) == {A, C}
    assert plan[A]["calls_total"] == 3
    assert drift.is_zero(plan[C])  # kept as a zero row: its version must keep growing
    assert drift.plan_fix(expected, {**expected}) == {}
    missing = drift.plan_fix(expected, {A: counters(calls_total=3)})
    assert set(missing) == {B} and missing[B]["calls_total"] == 1


def test_tombstones_are_forced_version_zero_snapshots() -> None:
    stone = drift.tombstone(A)
    assert stone.version == 0 and drift.is_zero(stone.counters)
    [(snapshot, force)] = decode(encode(stone, force=True))
    assert is_tombstone(snapshot, force)
    assert not is_tombstone(*decode(encode(stone))[0])  # unforced: just a stale snapshot


# --- presentation --------------------------------------------------------------------------


def test_drift_lines_group_counters_by_bucket_and_cap_the_list() -> None:
    drifts = drift.diff(
        "mysql", {A: counters(calls_total=3, sentiment_negative=1)}, {A: counters(calls_total=4)}
    )
    assert drift.drift_lines(drifts) == [
        "  mysql hour 2026-11-28T10:00:00Z  calls_total 3→4, sentiment_negative 1→0"
    ]
    many = [
        drift.Drift("api", BucketKey(1, "hour", datetime(2026, 1, 1, h)), "calls_total", 1, 0)
        for h in range(5)
    ]
    lines = drift.drift_lines(many, limit=3)
    assert len(lines) == 4 and lines[-1] == "  ... and 2 more drifting buckets"


def test_render_summarises_and_names_the_state_after_a_fix() -> None:
    s = scope()
    bad = CompanyReport(
        1, LA, buckets=12, mysql=drift.diff("mysql", {A: counters(calls_total=1)}, {}), api=[]
    )
    good = CompanyReport(2, "UTC", buckets=3, mysql=[], api=[])
    report = Report(s, [bad, good])
    lines = render(report)
    assert (
        "company 1 (America/Los_Angeles): 12 buckets with data, mysql 1 drifting, api 0 drifting  DRIFT"
        in lines
    )
    assert (
        lines[-1]
        == "total: 15 buckets with data; drifting buckets: dashboard_buckets 1, analyst API 0"
    )
    assert not report.ok
    bad.rewritten, bad.published, bad.tombstones = 1, 10, 700
    fixed = Report(
        s,
        [bad, good],
        fixed=True,
        after=[CompanyReport(1, LA, api=[]), CompanyReport(2, "UTC", api=[])],
        converged=True,
    )
    text = "\n".join(render(fixed))
    assert (
        "fixed: 1 dashboard_buckets rows rewritten (version + 1); published 10 forced snapshots and 700 tombstones"
        in text
    )
    assert text.endswith(
        "after the fix: no drift (MySQL and the analyst API agree with the recount)"
    )
    assert fixed.ok
    stuck = Report(s, [bad], fixed=True, after=[bad], converged=False)
    assert not stuck.ok and "still disagrees" in "\n".join(render(stuck))


@pytest.mark.parametrize("value", [None, 0, Decimal("0"), 0.0])
def test_zero_in_any_spelling_is_zero(value: Any) -> None:
    assert drift.normalize("cost_cents_total", value) == Decimal("0.0000")
    assert drift.is_zero({"calls_total": value or 0})
