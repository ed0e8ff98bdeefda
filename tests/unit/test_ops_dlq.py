"""Dead letters without Kafka: their headers, reading them back, picking the latest dead
letter per event, filters, rebuilding the source record for a redrive; run totals; the
subjects ``events show`` looks up."""

from __future__ import annotations

from collections import Counter

from pipeline.apply.deadletters import dlq_headers, parse_dlq_headers
from pipeline.apply.results import BatchResult, DeadLetter, Outcome
from pipeline.ops.dlq import DeadLetterEntry, DlqFilter, latest_per_event
from pipeline.ops.lineage import subjects
from pipeline.ops.report import RunReport
from pipeline.records import WebhookRecord, decode_headers

SOURCE_HEADERS = {
    "provider": "retell",
    "event_id": "call_ended:c1",
    "event_type": "call_ended",
    "correlation_id": "cid-1",
    "received_at": "1767792000000",
}


def _source(**headers: str) -> WebhookRecord:
    return WebhookRecord(
        topic="t1.webhooks.retell",
        partition=4,
        offset=1042,
        key=b"c1",
        value=b'{"event":"call_ended"}',
        headers={**SOURCE_HEADERS, **headers},
        timestamp_ms=1_767_792_000_000,
    )


def _letter_record(
    letter: DeadLetter, *, partition: int, offset: int, now_ms: int
) -> WebhookRecord:
    """What a consumer of webhooks.dlq reads back for ``letter``."""
    return WebhookRecord(
        topic="t1.webhooks.dlq",
        partition=partition,
        offset=offset,
        key=letter.record.key,
        value=letter.record.value,
        headers=decode_headers(dlq_headers(letter, now_ms=now_ms)),
        timestamp_ms=now_ms,
    )


def _entry(record: WebhookRecord) -> DeadLetterEntry:
    return DeadLetterEntry(record, parse_dlq_headers(record.headers))


def test_dlq_headers_keep_the_source_headers_and_say_where_and_why() -> None:
    letter = DeadLetter(_source(), "schema_violation", "SchemaViolation", "x" * 600)
    headers = dlq_headers(letter, now_ms=1_800_000_000_000)
    assert all(isinstance(v, bytes) for _, v in headers)
    as_dict = dict(decode_headers(headers))
    assert as_dict == {
        **SOURCE_HEADERS,
        "source_topic": "t1.webhooks.retell",
        "source_partition": "4",
        "source_offset": "1042",
        "error_class": "SchemaViolation",
        "reason": "schema_violation",
        "detail": "x" * 500,
        "dead_lettered_at": "1800000000000",
    }
    parsed = parse_dlq_headers(as_dict)
    assert parsed.has_source and (parsed.source_partition, parsed.source_offset) == (4, 1042)
    assert parsed.previous_reason is None and parsed.dead_lettered_at_ms == 1_800_000_000_000


def test_a_redriven_record_that_fails_again_keeps_its_first_reason() -> None:
    first = _entry(
        _letter_record(
            DeadLetter(_source(), "internal_error", "InternalError", "bug"),
            partition=2, offset=7, now_ms=1,
        )
    )  # fmt: skip
    rebuilt = first.source_record()
    assert rebuilt is not None
    # The redrive applies the record at its source coordinates with its original headers.
    assert (rebuilt.topic, rebuilt.partition, rebuilt.offset) == ("t1.webhooks.retell", 4, 1042)
    assert (rebuilt.key, rebuilt.value) == (b"c1", b'{"event":"call_ended"}')
    assert rebuilt.provider == "retell" and rebuilt.correlation_id == "cid-1"
    assert rebuilt.received_at == _source().received_at
    again = dict(
        decode_headers(dlq_headers(DeadLetter(rebuilt, "schema_violation", "SchemaViolation", "d")))
    )
    assert (again["reason"], again["previous_reason"]) == ("schema_violation", "internal_error")
    assert (again["source_partition"], again["source_offset"]) == ("4", "1042")
    assert again["event_id"] == "call_ended:c1"


def test_a_record_without_source_headers_cannot_be_redriven() -> None:
    stray = _entry(_source())  # a record that is no dead letter of ours
    assert stray.source_record() is None and stray.source == "-"
    assert parse_dlq_headers({"source_partition": "x", "source_offset": "-3"}).source_offset == -3
    assert parse_dlq_headers({"source_partition": "x"}).source_partition is None


def test_latest_dead_letter_per_event_wins_and_copies_are_counted() -> None:
    def entry(event_id: str, partition: int, offset: int, at: int, reason: str) -> DeadLetterEntry:
        source = _source(event_id=event_id)
        return _entry(
            _letter_record(
                DeadLetter(source, reason, "E", ""), partition=partition, offset=offset, now_ms=at
            )
        )

    a1 = entry("call_ended:a", 0, 5, 100, "internal_error")
    a2 = entry("call_ended:a", 1, 2, 200, "schema_violation")  # later, other partition
    b1 = entry("call_ended:b", 0, 6, 150, "schema_violation")
    chosen = latest_per_event([a2, b1, a1])
    assert [(e.position, n) for e, n in chosen] == [("0:6", 1), ("1:2", 2)]
    # Filters look at the latest dead letter only: a's latest reason is schema_violation.
    assert [e.event_id for e, _ in chosen if DlqFilter(reason="internal_error").matches(e)] == []
    assert DlqFilter(reason="schema_violation", provider="retell").matches(a2)
    assert not DlqFilter(provider="calcom").matches(a2)
    assert DlqFilter(since_ms=200).matches(a2) and not DlqFilter(since_ms=201).matches(a2)
    assert DlqFilter(event_type="call_ended", event_id="call_ended:b").matches(b1)
    assert not DlqFilter(event_id="call_ended:b").matches(a2)


def _outcome(status: str, reason: str | None = None) -> Outcome:
    return Outcome("retell", "e", "call_ended", status, 1, reason, "t/0@1", None)


def test_run_report_counts_and_changes() -> None:
    report = RunReport(dry_run=True)
    first = BatchResult(
        outcomes=[_outcome("applied"), _outcome("already_applied")],
        changes={"calls": {1: Counter(insert=1)}, "webhook_events": {1: Counter(insert=1)}},
    )
    second = BatchResult(
        outcomes=[
            _outcome("dead_lettered", "schema_violation"),
            _outcome("unroutable", "no_branch"),
        ],
        changes={"calls": {1: Counter(update=2), 2: Counter(insert=1)}},
    )
    report.add(2, first)
    report.add(2, second)
    assert report.summary() == (
        "read 4, applied 1, already applied 1, unroutable 1, dead-lettered 1"
    )
    assert report.reason_lines() == [
        "  dead-lettered: schema_violation × 1",
        "  unroutable: no_branch × 1",
    ]
    assert report.change_lines() == [
        "would write:",
        "  calls              company 1        insert 1, update 2",
        "  calls              company 2        insert 1",
        "  webhook_events     company 1        insert 1",
        "  (an upper bound over 2 rolled-back batches: a row that several batches write is"
        " counted in each; a --batch-size above the stretch's size makes it exact)",
    ]
    assert report.totals_by_table() == {
        "calls": Counter(insert=2, update=2),
        "webhook_events": Counter(insert=1),
    }
    report.add(0, BatchResult(outcomes=[_outcome("applied")]))  # an un-parked event
    assert report.summary().endswith("(includes 1 un-parked)")
    assert RunReport().change_lines() == ["wrote: nothing"]
    assert RunReport(dry_run=True).change_lines() == ["would write: nothing (no row would change)"]


def test_subjects_from_the_body_else_from_the_event_id() -> None:
    call = b'{"event":"call_ended","call":{"call_id":"c9"}}'
    assert subjects("retell", "call_ended:c9", call) == (["c9"], [])
    inbound = b'{"event":"call_inbound","call_inbound":{"call_id":"c7","to_number":"+1"}}'
    assert subjects("retell", "c7", inbound) == (["c7"], [])
    moved = b'{"triggerEvent":"BOOKING_RESCHEDULED","payload":{"uid":"new","rescheduleUid":"old"}}'
    assert subjects("calcom", "BOOKING_RESCHEDULED:new", moved) == ([], ["new", "old"])
    no_show = b'{"triggerEvent":"BOOKING_NO_SHOW_UPDATED","payload":{"bookingUid":"u1"}}'
    assert subjects("calcom", "x", no_show) == ([], ["u1"])
    flat = b'{"triggerEvent":"MEETING_ENDED","uid":"u2"}'
    assert subjects("calcom", "MEETING_ENDED:u2", flat) == ([], ["u2"])
    # Body gone (retention) or not JSON: the event id names the subject.
    assert subjects("retell", "call_analyzed:c3", None) == (["c3"], [])
    assert subjects("calcom", "BOOKING_NO_SHOW_UPDATED:u4:2026-01-08T19:20:00.000Z", b"{") == (
        [],
        ["u4"],
    )
    assert subjects("retell", "a" * 64, None) == ([], [])  # a SHA-256 id names nothing
