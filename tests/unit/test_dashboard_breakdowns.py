"""Breakdown groups are counted by the same functions as the company: every call and
booking adds to its company's bucket and to its branch's and agent's, the groups add up to
the company, and the snapshot format and table entries carry them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pipeline.dashboard import aggregates, snapshots
from pipeline.dashboard.aggregates import AGENT, BRANCH, BucketKey, BucketSnapshot
from tables import dashboard

T0 = datetime(2026, 11, 28, 15, 30)

calls = st.fixed_dictionaries(
    {
        "company_id": st.just(1),
        "branch_id": st.sampled_from([None, 11, 12]),
        "agent_id": st.sampled_from([None, "agent_a", "agent_b"]),
        "direction": st.sampled_from(["inbound", "outbound"]),
        "started_at": st.sampled_from([None, T0]),
        "ended_at": st.just(T0),
        "duration_ms": st.integers(0, 10**6),
        "cost_cents": st.decimals(0, 1000, places=4),
        "sentiment": st.sampled_from(["Positive", "Unknown", None]),
        "successful": st.booleans(),
    }
)


@given(st.lists(calls, max_size=8), st.lists(st.sampled_from([None, 11, 12]), max_size=5))
def test_groups_add_up_to_the_company(rows: list[dict], booking_branches: list) -> None:
    parts = [
        aggregates.call_counters(r, ended=True, analyzed=True, timezone="Asia/Kathmandu")
        for r in rows
    ]
    parts += [
        aggregates.appointment_counters(
            {"company_id": 1, "branch_id": b, "booked_at": T0}, timezone="Asia/Kathmandu"
        )
        for b in booking_branches
    ]
    totals = aggregates.sum_contributions(parts)
    for key, company in totals.items():
        if key.grouped:
            continue
        for dimension in (BRANCH, AGENT):
            groups = [
                v
                for k, v in totals.items()
                if k.dimension == dimension and k.as_tuple() == key.as_tuple()
            ]
            for name, value in company.items():
                assert sum(g[name] for g in groups) == value, (dimension, name)


def test_a_call_counts_for_its_branch_and_agent_and_a_booking_for_its_branch() -> None:
    row = {"company_id": 1, "branch_id": 12, "agent_id": "agent_b", "ended_at": T0}
    keys = set(aggregates.call_counters(row, ended=True, analyzed=False, timezone="UTC"))
    hour = BucketKey(1, "hour", datetime(2026, 11, 28, 15))
    assert {hour, hour.in_group(BRANCH, 12), hour.in_group(AGENT, "agent_b")} <= keys
    booking = {"company_id": 1, "branch_id": 12, "booked_at": T0}
    keys = set(aggregates.appointment_counters(booking, timezone="UTC"))
    assert hour.in_group(AGENT, "") in keys and hour.in_group(BRANCH, "12") in keys


def test_group_snapshots_round_trip_and_fill_one_entry_per_dimension() -> None:
    hour = BucketKey(1, "hour", datetime(2026, 11, 28, 15))
    counters = dict(aggregates.empty_counters(), calls_total=3, cost_cents_total=Decimal("1.5"))
    snap = BucketSnapshot(hour.in_group(BRANCH, 12), counters, 4)
    [(decoded, force)] = snapshots.decode(snapshots.encode(snap))
    assert decoded.key == snap.key and decoded.version == 4 and not force
    assert snapshots.table_key(snap.key) == snapshots.entry_key(hour, BRANCH)
    entry = snapshots.keep_group(None, snap, False)
    assert entry is not None
    older = BucketSnapshot(snap.key, dict(counters, calls_total=1), 3)
    assert snapshots.keep_group(entry, older, False) is None  # highest version wins
    other = BucketSnapshot(hour.in_group(BRANCH, ""), dict(counters, calls_total=1), 1)
    entry = snapshots.keep_group(entry, other, False)
    assert entry is not None and set(entry["g"]) == {"12", ""}
    table = {snapshots.entry_key(hour, BRANCH): entry}
    groups = dashboard.group_lookups(table.get, [hour], BRANCH)
    series = dashboard.series(1, "hour", [hour.bucket_start], groups["12"], versions=False)
    assert series[0]["calls_total"] == 3
    dropped = snapshots.keep_group(entry, BucketSnapshot(snap.key, counters, 0), True)
    assert dropped is not None and set(dropped["g"]) == {""}
    assert snapshots.parse_table_key(snapshots.entry_key(hour, AGENT)).dimension == AGENT
