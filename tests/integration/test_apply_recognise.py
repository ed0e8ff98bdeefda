"""The apply engine recognises records it applied before without parsing them, on the real
MariaDB (pipeline/apply/recognise.py): a second pass over an applied batch parses nothing,
changes nothing and republishes the buckets; after a row is deleted, exactly the records of
that row go the full way and restore it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from pipeline import database
from pipeline.apply import batch, lookup, recognise
from pipeline.apply.batch import apply_batch
from pipeline.apply.published import PublishedBuckets
from pipeline.dashboard import buckets
from pipeline.dashboard.aggregates import BucketSnapshot
from pipeline.models import dashboard_buckets, dashboard_group_buckets
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord
from testbed.events import lifecycle
from testbed.records import record
from tests.integration.ops_helpers import fingerprint, natural_rows
from tests.support.dashboard_story import build_story, seed_tenants
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

START_MS = 1_767_790_800_000
RECORDS = [
    record(p, body, received_at_ms=START_MS + 1000 * i, offset=i)
    for i, (p, body) in enumerate(lifecycle(START_MS))
]


@pytest.fixture
def applied(engine: Engine) -> Iterator[Engine]:
    seed_fixture_tenants(engine)
    first = apply_batch(engine, RECORDS)
    assert first.counts()["applied"] == len(RECORDS) - first.counts()["already_applied"]
    yield engine


def read_buckets_of(engine: Engine) -> list[BucketSnapshot]:
    """Every stored bucket, company and breakdown groups."""
    with engine.connect() as conn:
        rows = [
            *conn.execute(select(dashboard_buckets)).mappings(),
            *conn.execute(select(dashboard_group_buckets)).mappings(),
        ]
        return buckets.read(conn, [buckets.key_of(r) for r in rows])


def counting_decode(monkeypatch: Any) -> list[WebhookRecord]:
    parsed: list[WebhookRecord] = []
    real = batch.decode

    def decode(record: WebhookRecord, digest: str | None = None) -> Any:
        parsed.append(record)
        return real(record, digest)

    monkeypatch.setattr(batch, "decode", decode)
    return parsed


def test_an_applied_batch_again_parses_nothing_and_changes_nothing(
    applied: Engine, monkeypatch: Any
) -> None:
    before = fingerprint(applied)
    parsed = counting_decode(monkeypatch)
    again = apply_batch(applied, RECORDS)
    # The reschedule too (two bookings, its id names one): its applied body names the other.
    assert parsed == []
    assert again.counts() == Counter(already_applied=len(RECORDS))
    assert again.changes == {}
    assert again.snapshots, "the buckets of the applied events are republished unchanged"
    # ... the breakdown groups' too (branch and agent), exactly those the rows count in.
    stored = {s.key for s in read_buckets_of(applied)}
    assert {s.key for s in again.snapshots} == stored
    assert any(k.dimension == "branch" and k.group for k in stored)
    assert fingerprint(applied) == before


def test_a_deleted_row_is_restored_by_the_records_that_made_it(
    applied: Engine, monkeypatch: Any
) -> None:
    rows = natural_rows(applied)
    with applied.begin() as conn:
        conn.execute(text("DELETE FROM appointments WHERE retell_call_id = 'call_A'"))
        conn.execute(text("DELETE FROM calls WHERE retell_call_id = 'call_A'"))
    parsed = counting_decode(monkeypatch)
    again = apply_batch(applied, RECORDS)
    keys = {r.key for r in parsed}
    assert b"call_A" in keys and b"call_B" not in keys, "only the deleted rows' records"
    assert again.counts() == Counter(already_applied=len(RECORDS))
    assert natural_rows(applied) == rows


def test_a_deleted_original_booking_is_restored_by_its_reschedule(
    applied: Engine, monkeypatch: Any
) -> None:
    """Only the body of a reschedule names the booking it moved: when that row is gone, the
    reschedule goes the full way with the records of that booking, and the row is back."""
    rows = natural_rows(applied)
    with applied.begin() as conn:
        conn.execute(text("DELETE FROM appointments WHERE calcom_uid = 'bk_2'"))
    parsed = counting_decode(monkeypatch)
    again = apply_batch(applied, RECORDS)
    assert "BOOKING_RESCHEDULED" in {r.headers["event_type"] for r in parsed}
    assert again.counts() == Counter(already_applied=len(RECORDS))
    assert natural_rows(applied) == rows


def test_a_replay_republishes_each_bucket_once_until_a_rebalance(applied: Engine) -> None:
    """With the consumer's memory of what it published (pipeline/apply/published.py), a
    second pass republishes nothing it published in the first; after a rebalance, all of it
    again, and a bucket changed behind its back (a worker that died between its commit and
    its publish) is republished with the stored value."""
    published = PublishedBuckets()
    stored = {s.key for s in read_buckets_of(applied)}
    first = apply_batch(applied, RECORDS, published=published)
    assert {s.key for s in first.snapshots} == stored
    published.remember((s.key for s in first.snapshots), published.epoch)

    again = apply_batch(applied, RECORDS, published=published)
    assert again.counts() == Counter(already_applied=len(RECORDS))
    assert again.snapshots == []

    # Another worker committed a change to a bucket and died before publishing it.
    changed = sorted(stored)[0]
    table = buckets.table_of(changed)
    with applied.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.company_id == changed.company_id)
            .where(table.c.bucket_start == changed.bucket_start)
            .values(calls_total=table.c.calls_total + 7, version=table.c.version + 1)
        )
    published.forget()  # the rebalance that hands its partitions over
    healed = apply_batch(applied, RECORDS, published=published)
    assert {s.key for s in healed.snapshots} == stored
    assert {s.key: s for s in healed.snapshots}[changed] == {
        s.key: s for s in read_buckets_of(applied)
    }[changed]


def test_snapshots_read_before_a_rebalance_are_not_remembered(applied: Engine) -> None:
    """A batch that started before a rebalance may have read a bucket before a dead worker's
    commit: what it published does not count as published for the records that come next."""
    published = PublishedBuckets()
    epoch = published.epoch
    first = apply_batch(applied, RECORDS, published=published)
    published.forget()
    published.remember((s.key for s in first.snapshots), epoch)
    assert len(published) == 0
    assert apply_batch(applied, RECORDS, published=published).snapshots


def test_the_recognisers_reads_are_the_same_whether_json_or_row_by_row(
    applied: Engine, caplog: Any
) -> None:
    """The reads come as one document (JSON for the rows' bucket columns, separated text for
    the events); a document cut short (MariaDB caps aggregates at group_concat_max_len)
    falls back to reading the rows one by one: same answer."""
    found = recognise.candidates(RECORDS, [sha256_hex(r.value) for r in RECORDS])
    keys = recognise.lookup_keys(found)
    call_ids, uids = {"call_A", "call_B"}, {"bk_1", "bk_2"}
    with applied.connect() as conn:
        events = lookup.known_events(conn, keys)
        places = lookup.bucket_columns(conn, call_ids, uids)
        assert len(events) == len(keys) and len(places[0]) == 2 and len(places[1]) == 2
        assert isinstance(places[0]["call_A"]["started_at"], datetime)
        conn.exec_driver_sql("SET SESSION group_concat_max_len = 64")
        assert lookup.known_events(conn, keys) == events
        assert lookup.bucket_columns(conn, call_ids, uids) == places
    assert "cut short" in caplog.text and "did not split into its" in caplog.text


def test_the_events_of_the_batchs_stretch_are_read_as_one_range_with_the_same_answer(
    applied: Engine,
) -> None:
    """The rows of the records' own stretch come from one range read of where their
    records sat in Kafka; keys whose rows sit elsewhere (the milestones of a call, the
    first body of a snapshot event, a stretch that covers half the batch) are looked up by
    event id. Whatever the spans, the answer is the lookup by event id's."""
    found = recognise.candidates(RECORDS, [sha256_hex(r.value) for r in RECORDS])
    keys = recognise.lookup_keys(found)
    half = RECORDS[: len(RECORDS) // 2]
    with applied.connect() as conn:
        by_id = lookup.known_events(conn, keys)
        assert by_id  # the lifecycle was applied
        for spans in (recognise.spans(RECORDS), recognise.spans(half), []):
            assert lookup.known_events(conn, keys, spans) == by_id
        elsewhere = [recognise.Span("webhooks.retell", 7, 10_000, 10_100)]
        assert lookup.known_events(conn, keys, elsewhere) == by_id


def test_the_stretch_is_read_by_the_kafka_position_index(applied: Engine) -> None:
    spans = recognise.spans(RECORDS)
    where = lookup.SPANS_WHERE + " OR ".join([lookup.SPAN] * len(spans)) + ")"
    statement = f"EXPLAIN SELECT {', '.join(lookup.EVENT_COLUMNS)} {where}"
    params = ("retell", *[value for span in spans for value in span])
    with applied.connect() as conn:
        plan = conn.exec_driver_sql(statement, params).all()
    index = "ix_webhook_events_kafka_topic_kafka_partition_kafka_offset"
    assert [(row.key, row.type) for row in plan] == [(index, "range")]


def test_a_value_holding_a_separator_is_read_row_by_row(applied: Engine, caplog: Any) -> None:
    """The text of the events read splits on ASCII's unit and record separators; an event
    type holding one does not split into the rows MySQL counted, and is read again row by
    row, whole."""
    odd = f"odd{database.FIELD}type{database.ROW}x"
    with applied.begin() as conn:
        conn.execute(
            text("UPDATE webhook_events SET event_type = :odd WHERE event_id = :event_id"),
            {"odd": odd, "event_id": "call_started:call_A"},
        )
        rows = database.text_rows(
            conn, lookup.EVENT_COLUMNS, lookup.EVENTS_WHERE, ("retell", ("call_started:call_A",))
        )
    assert [row[2] for row in rows] == [odd]
    assert "did not split into its" in caplog.text


@pytest.mark.parametrize(
    ("columns", "tail", "table", "key"),
    [
        (lookup.CALL_COLUMNS, lookup.CALLS_WHERE, "c", "uq_calls_retell_call_id"),
        (lookup.APPOINTMENT_COLUMNS, lookup.APPOINTMENTS_WHERE, "a", "uq_appointments_calcom_uid"),
    ],
    ids=["calls", "appointments"],
)
def test_the_bucket_columns_are_read_by_their_unique_key_whatever_the_table_holds(
    applied: Engine, columns: str, tail: str, table: str, key: str
) -> None:
    """The read of the rows' bucket columns starts from the rows' unique key, then joins
    their companies. Left to itself MariaDB starts from the few companies and walks each
    company's calls (every row it has), so the read grew with the table."""
    with applied.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN SELECT {columns} {tail}", (("x", "y"),)).all()
    assert (plan[0].table, plan[0].key) == (table, key)
    assert [row.table for row in plan] == [table, "co"]


def test_the_applied_events_are_read_by_their_unique_key_alone(applied: Engine) -> None:
    """Only the unique key is weighed: for hundreds of ids MariaDB built the list of ranges
    of every index on provider or status, a sixth of the read's server time."""
    statement = f"EXPLAIN SELECT {', '.join(lookup.EVENT_COLUMNS)} {lookup.EVENTS_WHERE}"
    with applied.connect() as conn:
        plan = conn.exec_driver_sql(statement, ("retell", ("x", "y"))).all()
    assert [(row.possible_keys, row.key) for row in plan] == [
        ("uq_webhook_events_provider_event_id", "uq_webhook_events_provider_event_id")
    ]


@pytest.mark.parametrize(
    ("seed", "size", "recognised"), [(5, 12, True), (8, 7, True), (5, 12, False)]
)
def test_a_redelivered_batch_republishes_every_bucket_it_changed(
    engine: Engine, monkeypatch: Any, seed: int, size: int, recognised: bool
) -> None:
    """A batch committed whose snapshots never reached the topic (its worker, or its apply
    process, died in between) is delivered again: the redelivery is all already applied and
    must still republish every bucket the first delivery changed, including those its
    events moved a counter out of or into that their rows no longer name (a booking's
    link adds calls_booked to its call's buckets). Whether the redelivery is recognised or
    goes the full way (as when its rows were lost)."""
    if not recognised:
        monkeypatch.setattr(batch, "_recognise", lambda *_: recognise.Recognised())
    seed_tenants(engine)
    story = build_story(datetime(2026, 11, 20, 12), seed=seed, calls_per_company=10)
    missed: dict[int, set[Any]] = {}
    for number, records in enumerate(story.batches(size=size)):
        first = apply_batch(engine, records)
        again = apply_batch(engine, records)
        assert {o.status for o in again.outcomes} <= {"already_applied", "dead_lettered"}
        republished = {s.key: s for s in again.snapshots}
        if gone := {s.key for s in first.snapshots} - republished.keys():
            missed[number] = gone
        # Unchanged since: the same absolute counters at the same version.
        assert all(republished[s.key] == s for s in first.snapshots if s.key in republished)
    assert missed == {}
