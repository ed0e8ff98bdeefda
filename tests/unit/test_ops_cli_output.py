"""Progress lines (count, total, rate, time left) and the lookups' argument rules."""

from __future__ import annotations

from datetime import datetime

import pytest

from pipeline.cli.output import Progress, duration
from pipeline.erasures import normalise_phone
from pipeline.ops import BadArguments
from pipeline.ops.events import Find, Listing, booking_event_ids, call_event_ids
from pipeline.ops.unroutable import Preview


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_total_rate_and_time_left_at_most_every_two_seconds() -> None:
    clock, printed = Clock(), []
    progress = Progress("replay", clock=clock, echo=printed.append)
    progress.plan(10_000)
    clock.now += 1.0
    progress.update(500, "at t/0@499")
    assert printed == []  # not yet two seconds
    clock.now += 1.5
    progress.update(2_500, "at t/1@12")
    assert printed == ["replay: 2,500/10,000 (25.0%), 1,000/s, about 8s left; at t/1@12"]
    clock.now += 0.5
    progress.update(3_000)
    assert len(printed) == 1


def test_progress_without_a_total_and_durations() -> None:
    clock = Clock()
    progress = Progress("redrive", clock=clock, echo=lambda line: None)
    clock.now += 4
    assert progress.line(100) == "redrive: 100, 25/s"
    progress.plan(0)
    assert progress.line(0) == "redrive: 0, 0/s"
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7500)] == [
        "0s", "59s", "1m01s", "59m59s", "2h05m",
    ]  # fmt: skip


def test_phone_numbers_are_normalised_for_lookups() -> None:
    assert normalise_phone("+1 (415) 555-0142") == "+14155550142"
    assert normalise_phone("0049 30 555000") == "+4930555000"
    assert normalise_phone(" 4155550142 ") == "4155550142"
    assert normalise_phone("call me") is None
    assert normalise_phone("+1+2") is None


def test_find_takes_exactly_one_subject() -> None:
    Find(call_id="call_1").check()
    Find(company_id=7, since=datetime(2026, 1, 1)).check()
    with pytest.raises(BadArguments, match="exactly one of .* \\(got none\\)"):
        Find().check()
    with pytest.raises(BadArguments, match="got --call-id, --company"):
        Find(call_id="c", company_id=1).check()
    with pytest.raises(BadArguments, match="not a phone number"):
        Find(phone="nobody").check()
    with pytest.raises(BadArguments, match="--status"):
        Listing(status="lost").check()


def test_subjects_become_the_event_ids_they_can_have() -> None:
    ids = dict.fromkeys(e for _, e in call_event_ids(["call_9"]))
    assert {"call_started:call_9", "call_ended:call_9", "call_analyzed:call_9", "call_9"} <= set(
        ids
    )
    assert all(p == "retell" for p, _ in call_event_ids(["c"]))
    booking = {e for _, e in booking_event_ids(["bk_1"])}
    assert {"BOOKING_CREATED:bk_1", "BOOKING_RESCHEDULED:bk_1", "MEETING_ENDED:bk_1"} <= booking


def test_import_hint_lines() -> None:
    assert Preview(unroutable=0).lines() == []
    lines = Preview(unroutable=12, checked=12, applicable=9, still=2, gone=1).lines()
    assert lines[0] == (
        "12 unroutable event(s) on record; checked: 9 now have a home, 2 still have none, "
        "1 no longer on Kafka."
    )
    assert "switchboard events reapply --dry-run" in lines[1]
    partial = Preview(unroutable=9000, checked=5000, applicable=0, still=5000).lines()
    assert partial == [
        "9000 unroutable event(s) on record; of the 5000 oldest checked: 0 now have a home, "
        "5000 still have none."
    ]
    failed = Preview(unroutable=3, failed="Kafka unreachable at x:1").lines()
    assert "could not check" in failed[0] and "events reapply --dry-run" in failed[1]
