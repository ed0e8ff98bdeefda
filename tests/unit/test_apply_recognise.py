"""pipeline/apply/recognise.py: which records a replay may skip without parsing them.

A record is known only when the ``webhook_events`` row its headers name is ``applied`` with
this very body's hash (or, for a later snapshot of a latest-snapshot event, once the event
superseding it is applied) and every row it stands for exists; anything else goes the full
way, which is what restores lost rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.apply import recognise
from pipeline.apply.recognise import Candidate, Known
from pipeline.providers import calcom, retell
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord
from testbed.events import booking, call_events
from testbed.records import record

START_MS = 1_767_790_800_000
CALL = call_events("c1", start_ms=START_MS)  # started, 2 snapshots, ended, analyzed
# When the stored events were applied, as MySQL prints a DATETIME(3) (recognise.Known).
APPLIED_AT = "2026-01-07 14:00:00.000"
ROW = {"company_id": 1, "started_at": datetime(2026, 1, 7, 13), "created_at": APPLIED_AT}


def candidate(rec: WebhookRecord, position: int = 0) -> Candidate:
    found = recognise.candidates([rec], [sha256_hex(rec.value)])
    assert len(found) == 1
    return Candidate(position, rec, found[0].key, found[0].sha256)


def applied(rec: WebhookRecord, body: bytes | None = None) -> Known:
    return Known("applied", sha256_hex(body or rec.value), rec.headers["event_type"], APPLIED_AT)


def run(
    found: list[Candidate], known: dict[Any, Known], calls: dict[str, Any] | None = None
) -> recognise.Recognised:
    rows = recognise.known_rows(found, known)
    return recognise.recognise(found, known, rows, calls or {}, {}, {1: "UTC"})


def test_an_applied_record_with_its_row_is_known_and_republishes_its_buckets() -> None:
    ended = record("retell", CALL[3])
    c = candidate(ended)
    out = run([c], {c.key: applied(ended)}, {"c1": ROW})
    assert out.outcomes[0].status == "already_applied" and out.outcomes[0].company_id == 1
    assert {(k.granularity, k.bucket_start) for k in out.revisited} == {
        ("hour", datetime(2026, 1, 7, 13)),
        ("day", datetime(2026, 1, 7)),
    }


def test_a_missing_row_sends_the_record_the_full_way() -> None:
    ended = record("retell", CALL[3])
    c = candidate(ended)
    assert run([c], {c.key: applied(ended)}, {}).outcomes == {}


def test_a_row_made_again_after_the_event_was_applied_sends_it_the_full_way() -> None:
    """A replay restores a deleted call from its first events in one batch; its later events,
    in the next batch, find a row that does not have them yet: they go the full way too."""
    ended = record("retell", CALL[3])
    c = candidate(ended)
    remade = {**ROW, "created_at": "2026-01-08 09:00:00.000"}
    assert run([c], {c.key: applied(ended)}, {"c1": remade}).outcomes == {}
    unknown_time = {c.key: Known("applied", sha256_hex(ended.value), "call_ended")}
    assert run([c], unknown_time, {"c1": ROW}).outcomes == {}


def test_headers_are_never_trusted_only_the_hash_of_the_body() -> None:
    """A record that names the event of another body is not known, whatever it claims."""
    ended, analyzed = record("retell", CALL[3]), record("retell", CALL[4])
    lying = WebhookRecord(analyzed.topic, 0, 9, analyzed.key, analyzed.value, dict(ended.headers))
    c = candidate(lying)
    assert run([c], {c.key: applied(ended)}, {"c1": ROW}).outcomes == {}


def test_events_not_applied_go_the_full_way() -> None:
    ended = record("retell", CALL[3])
    c = candidate(ended)
    for status in ("unroutable", "dead_lettered"):
        known = {c.key: Known(status, sha256_hex(ended.value), "call_ended")}
        assert run([c], known, {"c1": ROW}).outcomes == {}


def test_a_later_snapshot_is_known_once_the_call_ended_event_is_applied() -> None:
    first, second = record("retell", CALL[1]), record("retell", CALL[2])
    c = candidate(second)
    snapshot = {c.key: applied(first)}  # only the first snapshot's hash is stored
    assert run([c], snapshot, {"c1": ROW}).outcomes == {}
    ended_key = retell.milestone_key("call_ended", "c1")
    with_end = {**snapshot, ended_key: Known("applied", "x", "call_ended")}
    assert run([c], with_end, {"c1": ROW}).outcomes[0].status == "already_applied"


def test_which_rows_an_applied_event_stands_for_is_read_from_its_id() -> None:
    assert retell.rows_of_applied("call_ended", "call_ended:c1") == ("c1",)
    assert retell.rows_of_applied("call_inbound", "c1") == ()  # no row to check
    assert retell.rows_of_applied("call_started", "c1") is None  # not its own id: parse
    assert calcom.rows_of_applied("BOOKING_CREATED", "BOOKING_CREATED:bk1") == ("bk1",)
    no_show = "BOOKING_NO_SHOW_UPDATED:bk1:2026-01-08T19:20:00.000Z"
    assert calcom.rows_of_applied("BOOKING_NO_SHOW_UPDATED", no_show) == ("bk1",)
    # A reschedule touches two bookings, a hashed id names none: only the body says.
    assert calcom.rows_of_applied("BOOKING_RESCHEDULED", "BOOKING_RESCHEDULED:bk2") is None
    assert calcom.rows_of_applied("BOOKING_PAID", sha256_hex(b"{}")) is None


def test_a_batch_mixes_known_and_unknown_records_by_position() -> None:
    ended = record("retell", CALL[3])
    created = record("calcom", booking("BOOKING_CREATED", "bk1", created_ms=START_MS))
    found = recognise.candidates([created, ended], [sha256_hex(r.value) for r in (created, ended)])
    known = {found[1].key: applied(ended)}
    out = run(found, known, {"c1": ROW})
    assert set(out.outcomes) == {1} and out.rest(2) == [0]


def test_a_reschedule_is_known_from_its_body_once_both_bookings_exist() -> None:
    """Its id names only the new booking; the applied body names the original too, and a
    missing original still sends the record the full way (which restores it)."""
    body = booking("BOOKING_RESCHEDULED", "bk2", created_ms=START_MS, rescheduleUid="bk1")
    moved = record("calcom", body)
    c = candidate(moved)
    known = {c.key: applied(moved)}
    rows = recognise.known_rows([c], known)
    assert rows == {0: ("appointments", ("bk2", "bk1"))}
    at = {"company_id": 1, "booked_at": datetime(2026, 1, 7, 13), "rescheduled_at": None}
    at |= {"cancelled_at": None, "no_show_at": None, "created_at": APPLIED_AT}
    both = recognise.recognise([c], known, rows, {}, {"bk1": at, "bk2": at}, {1: "UTC"})
    assert both.outcomes[0].status == "already_applied"
    only_new = recognise.recognise([c], known, rows, {}, {"bk2": at}, {1: "UTC"})
    assert only_new.outcomes == {}


def test_a_reschedule_with_another_body_is_not_read_at_all() -> None:
    body = booking("BOOKING_RESCHEDULED", "bk2", created_ms=START_MS, rescheduleUid="bk1")
    other = booking("BOOKING_RESCHEDULED", "bk2", created_ms=START_MS + 1, rescheduleUid="bk1")
    moved = record("calcom", body)
    c = candidate(moved)
    assert recognise.known_rows([c], {c.key: applied(moved, other)}) == {}


def test_spans_are_each_partitions_stretch_and_leave_sparse_ones_to_the_lookup() -> None:
    """The range read covers the offsets between a partition's first and last record; a
    partition whose records lie far apart (a redrive, a sample) would read every row
    between them, and is left to the lookup by event id."""
    bodies = list(CALL)
    dense = [record("retell", b, partition=3, offset=100 + i) for i, b in enumerate(bodies)]
    sparse = [
        record("retell", bodies[0], partition=4, offset=0),
        record("retell", bodies[1], partition=4, offset=recognise.SPARSE * 2),
    ]
    assert recognise.spans([*dense, *sparse]) == [
        recognise.Span("webhooks.retell", 3, 100, 100 + len(bodies) - 1)
    ]
    assert recognise.spans([]) == []
