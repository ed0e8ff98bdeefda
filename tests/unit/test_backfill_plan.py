"""The backfill's decisions, without I/O: what to offer given what MySQL holds, how the
apply path's verdict becomes writes and reports, the watermark and the periodic window."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from pipeline.backfill import plan as planning
from pipeline.backfill.ledger import Ledger, Row
from pipeline.backfill.periodic import Schedule, window
from pipeline.backfill.report import BackfillReport
from pipeline.backfill.run import Judgement, _choose
from pipeline.backfill.watermark import advanced

T0 = 1_790_000_000_000
UNTIL = datetime(2026, 9, 30)


def call(call_id: str) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "call_status": "ended",
        "end_timestamp": T0,
        "call_analysis": {"call_successful": True},
    }


def reader(ledger: Ledger):
    async def read(provider: str, subjects: set[str], ids: set[str]) -> Ledger:
        assert provider == ledger.provider
        return ledger

    return read


class Fetcher:
    def __init__(self, found: dict[str, dict[str, Any]]) -> None:
        self.found = found
        self.asked: list[str] = []

    async def __call__(self, key: str) -> dict[str, Any] | None:
        self.asked.append(key)
        return self.found.get(key)


@pytest.mark.parametrize(
    ("status", "row", "reason"),
    [
        ("applied", True, None),
        ("applied", False, "row_missing"),
        (None, True, "missing"),
        (None, False, "missing"),
        ("dead_lettered", False, "dead_lettered"),
        ("unroutable", False, "unroutable"),
    ],
)
def test_judge(status: str | None, row: bool, reason: str | None) -> None:
    assert planning.judge(status, row) == reason


async def test_retell_offers_what_is_missing_and_fetches_transcripts_only_when_needed() -> None:
    ledger = Ledger("retell")
    ledger.events = {
        "call_ended:A": ("applied", None),
        "call_analyzed:A": ("applied", None),
        "call_ended:B": ("applied", None),
        "call_ended:D": ("applied", None),
        "call_analyzed:D": ("applied", None),
        "call_ended:E": ("dead_lettered", "schema_violation"),
    }
    ledger.rows = {"A": Row("ended"), "B": Row("ended"), "E": Row("ongoing")}
    listed = [call(c) for c in "ABCDE"]
    full = {c: {**call(c), "transcript": f"Agent: {c}"} for c in "ABCD"}
    fetch = Fetcher(full)
    plan = await planning.plan_retell(listed, reader(ledger), fetch)
    offered = {(c.event.event_id, c.reason) for c in plan.candidates}
    assert offered == {
        ("call_analyzed:B", "missing"),
        ("call_ended:C", "missing"),
        ("call_analyzed:C", "missing"),
        ("call_ended:D", "row_missing"),
        ("call_analyzed:D", "row_missing"),
        ("call_ended:E", "dead_lettered"),
        ("call_analyzed:E", "missing"),
    }
    assert (plan.listed, plan.owed, plan.present) == (5, 10, 3)
    assert sorted(fetch.asked) == ["C", "D", "E"]  # not B: its row holds the final transcript
    assert plan.notes == ["call E: get-call found nothing; using the listed call"]
    by_id = {c.event.event_id: c.event.payload for c in plan.candidates}
    assert by_id["call_ended:C"]["call"]["transcript"] == "Agent: C"
    assert "transcript" not in by_id["call_analyzed:B"]["call"]


def booking(uid: str, status: str = "accepted", **extra: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "id": 1,
        "status": status,
        "createdAt": "2026-09-20T10:00:00.000Z",
        "updatedAt": "2026-09-20T11:00:00.000Z",
        "start": "2026-09-21T10:00:00.000Z",
        "end": "2026-09-21T10:30:00.000Z",
        "eventType": {"id": 901, "slug": "x"},
        "attendees": [{"email": "a@example.com", "absent": extra.pop("absent", False)}],
        **extra,
    }


async def test_no_show_marks_are_judged_by_their_row() -> None:
    ledger = Ledger("calcom")
    for uid in "PQRS":
        ledger.events[f"BOOKING_CREATED:{uid}"] = ("applied", None)
        ledger.events[f"MEETING_ENDED:{uid}"] = ("applied", None)
    ledger.rows = {"P": Row("no_show", datetime(2026, 9, 21, 10, 20)), "Q": Row("scheduled"),
                   "S": Row("scheduled")}  # fmt: skip
    ledger.events["BOOKING_CREATED:R"] = ("applied", None)
    ledger.no_shows["Q"].append(("unroutable", "unknown_booking"))
    ledger.no_shows["R"].append(("applied", None))
    listed = [booking(u, absent=True) for u in "PQRS"]
    plan = await planning.plan_calcom(listed, reader(ledger), Fetcher({}), UNTIL)
    no_shows = [c for c in plan.candidates if c.event.event_type == "BOOKING_NO_SHOW_UPDATED"]
    assert [c.event.subject for c in no_shows] == ["S"]  # P has it, Q is parked, R lost its row
    assert plan.pending == 1
    assert any(
        "booking R: its no-show mark was applied but the row is gone" in n for n in plan.notes
    )
    assert no_shows[0].event.event_id == "BOOKING_NO_SHOW_UPDATED:S:2026-09-21T10:00:00.000Z"


async def test_a_known_request_dates_the_creation_at_the_confirmation() -> None:
    ledger = Ledger("calcom")
    ledger.events["BOOKING_REQUESTED:K"] = ("applied", None)
    ledger.rows = {"K": Row("pending")}
    plan = await planning.plan_calcom(
        [booking("K"), booking("U")], reader(ledger), Fetcher({}), datetime(2026, 9, 21)
    )
    created = {
        c.event.subject: c.event.at
        for c in plan.candidates
        if c.event.event_type == "BOOKING_CREATED"
    }
    assert created == {"K": datetime(2026, 9, 20, 11), "U": datetime(2026, 9, 20, 10)}


async def test_reschedule_chains_are_completed_and_judged_together() -> None:
    a = booking("A", "cancelled", rescheduledToUid="B")
    b = booking("B", "cancelled", rescheduledFromUid="A", rescheduledToUid="C")
    c = booking("C", rescheduledFromUid="B")
    fetch = Fetcher({"A": a, "C": c})
    plan = await planning.plan_calcom([b], reader(Ledger("calcom")), fetch, datetime(2026, 9, 21))
    assert sorted(fetch.asked) == ["A", "C"]
    kinds = sorted((x.event.subject, x.event.event_type) for x in plan.candidates)
    assert kinds == [
        ("A", "BOOKING_CREATED"),
        ("B", "BOOKING_RESCHEDULED"),
        ("C", "BOOKING_RESCHEDULED"),
    ]
    assert {x.event.story for x in plan.candidates} == {"A"}
    rescheduled = next(x.event.payload for x in plan.candidates if x.event.subject == "C")
    assert rescheduled["payload"]["rescheduleUid"] == "B"
    assert rescheduled["payload"]["rescheduleStartTime"] == b["start"]


def test_the_newest_copy_of_a_booking_wins() -> None:
    old = booking("X", updatedAt="2026-09-20T11:00:00.000Z")
    new = booking("X", "cancelled", updatedAt="2026-09-20T12:00:00.000Z")
    assert planning.newest([new, old])["X"]["status"] == "cancelled"
    assert planning.newest([old, new])["X"]["status"] == "cancelled"


async def test_the_verdict_decides_what_is_written_and_what_is_reported() -> None:
    ledger = Ledger("retell")
    ledger.events = {"call_ended:U": ("unroutable", "no_branch_for_number")}
    plan = await planning.plan_retell([call(c) for c in "NUXZ"], reader(ledger), Fetcher({}))
    verdict = Judgement(
        outcomes={
            "call_ended:N": ("applied", None),
            "call_analyzed:N": ("applied", None),
            "call_ended:U": ("unroutable", "no_branch_for_number"),
            "call_analyzed:U": ("unroutable", "no_branch_for_number"),
            "call_ended:X": ("unroutable", "branch_inactive"),
            "call_analyzed:X": ("unroutable", "branch_inactive"),
            "call_ended:Z": ("dead_lettered", "schema_violation"),
            "call_analyzed:Z": ("already_applied", None),
        }
    )
    report = BackfillReport("retell", datetime(2026, 1, 1), datetime(2026, 1, 2))
    chosen = _choose(report, plan.candidates, verdict)
    assert sorted(c.event.event_id for c in chosen) == [
        "call_analyzed:N",
        "call_analyzed:Z",
        "call_ended:N",
    ]
    assert report.written == {"call_ended": 1, "call_analyzed": 2}
    assert report.still_unroutable == 1  # delivered before, unroutable before and now
    assert sorted(report.unattributable) == [
        ("call_analyzed:U", "no_branch_for_number"),
        ("call_analyzed:X", "branch_inactive"),
        ("call_ended:X", "branch_inactive"),
    ]
    assert report.refused == [("call_ended:Z", "dead_lettered: schema_violation")]
    assert any("unattributable 3" in line for line in report.lines())


def test_the_watermark_moves_forward_over_contiguous_windows_only() -> None:
    mark = datetime(2026, 1, 1, 12)
    assert advanced(None, datetime(2026, 1, 1), mark) == mark
    assert advanced(
        mark, mark - timedelta(minutes=30), mark + timedelta(hours=1)
    ) == mark + timedelta(hours=1)
    assert advanced(mark, mark - timedelta(days=2), mark - timedelta(days=1)) == mark  # never back
    assert advanced(mark, mark + timedelta(minutes=1), mark + timedelta(hours=1)) == mark  # a gap


def test_the_periodic_window_reaches_back_by_the_margin_and_leaves_the_newest_alone() -> None:
    now = datetime(2026, 1, 1, 12)
    schedule = Schedule(
        every=timedelta(minutes=10), margin=timedelta(minutes=30), settle=timedelta(minutes=2)
    )
    assert window(schedule, now - timedelta(minutes=10), now) == (
        now - timedelta(minutes=40),
        now - timedelta(minutes=2),
    )
    assert window(schedule, None, now) == (now - timedelta(hours=24), now - timedelta(minutes=2))
    asked = Schedule(every=timedelta(minutes=10), first_since=datetime(2025, 12, 1))
    assert window(asked, None, now, first=True)[0] == datetime(2025, 12, 1)
    assert window(asked, now - timedelta(minutes=5), now, first=True)[0] == datetime(2025, 12, 1)
    assert window(asked, now - timedelta(minutes=5), now)[0] == now - timedelta(minutes=35)
