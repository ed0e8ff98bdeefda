"""The three message formats each have one owner that writes and reads them, with a version:
the webhook record (pipeline/records.py), the dead letter (pipeline/apply/deadletters.py),
the bucket snapshot (pipeline/dashboard/snapshots.py); and counters convert in one place
(pipeline/dashboard/counters.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import orjson
import pytest

from pipeline.apply import deadletters
from pipeline.apply.items import decode
from pipeline.apply.results import DeadLetter
from pipeline.dashboard import snapshots
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.counters import Counters
from pipeline.records import WebhookRecord, decode_headers, encode_headers, from_message
from testbed.records import record
from tests.support.fixtures import fixture_bytes

KEY = BucketKey(7, "hour", datetime(2026, 1, 7, 13))


def test_a_snapshot_round_trips_exactly_and_says_its_format() -> None:
    snap = BucketSnapshot(KEY, Counters({"calls_total": 3, "cost_cents_total": "13.37"}), 4)
    raw = snapshots.encode(snap, force=True)
    assert orjson.loads(raw)["format"] == snapshots.COMPANY_FORMAT
    [(back, force)] = snapshots.decode(raw)
    assert (back, force) == (snap, True)
    assert back.counters["cost_cents_total"] == Decimal("13.3700")
    # A breakdown group's snapshot is format 2: a reader of format 1 refuses it rather
    # than taking a branch's counters for the company's.
    group = BucketSnapshot(KEY.in_group("branch", 12), snap.counters, 4)
    raw = snapshots.encode(group)
    assert orjson.loads(raw)["format"] == snapshots.GROUP_FORMAT == 2
    assert snapshots.decode(raw) == [(group, False)]


def test_a_batch_publishes_one_bundle_per_company_that_decodes_to_every_bucket() -> None:
    other = BucketKey(8, "day", datetime(2026, 1, 7))
    batch = [
        BucketSnapshot(KEY, Counters({"calls_total": 3}), 4),
        BucketSnapshot(other, Counters({"calls_total": 1}), 1),
        BucketSnapshot(KEY.in_group("agent", "agent_a"), Counters({"calls_total": 2}), 2),
    ]
    published = list(snapshots.bundles(batch))
    assert [(key, count) for key, _, count in published] == [(b"7", 2), (b"8", 1)]
    assert orjson.loads(published[0][1])["format"] == snapshots.BUNDLE_FORMAT
    decoded = [pair for _, value, _ in published for pair in snapshots.decode(value)]
    assert decoded == [(batch[0], False), (batch[2], False), (batch[1], False)]
    # A company with more buckets than a bundle holds gets more bundles, none lost.
    many = [
        BucketSnapshot(
            BucketKey(7, "hour", datetime(2026, 1, 1, h % 24) + timedelta(days=h // 24)),
            Counters(),
            1,
        )
        for h in range(snapshots.BUNDLE_MAX + 3)
    ]
    sizes = [count for _, _, count in snapshots.bundles(many)]
    assert sizes == [snapshots.BUNDLE_MAX, 3]
    again = [s for _, value, _ in snapshots.bundles(many) for s, _ in snapshots.decode(value)]
    assert again == many
    with pytest.raises(snapshots.SnapshotFormatError):
        snapshots.decode(b'{"format": 3, "company_id": 7, "buckets": [{"granularity": "hour"}]}')


def test_a_snapshot_without_a_format_is_version_one_and_a_newer_one_is_refused() -> None:
    old = orjson.loads(snapshots.encode(BucketSnapshot(KEY, Counters(), 1)))
    del old["format"]
    assert snapshots.decode(old)[0][0].key == KEY
    with pytest.raises(snapshots.SnapshotFormatError):
        snapshots.decode({**old, "format": snapshots.FORMAT + 1})
    with pytest.raises(snapshots.SnapshotFormatError):
        snapshots.decode(b'{"company_id": "x"}')


def test_counters_compare_equal_whatever_their_source() -> None:
    from_mysql = Counters({"calls_total": 2, "cost_cents_total": Decimal("1.5000")})
    from_json = Counters({"calls_total": "2", "cost_cents_total": "1.5"})
    from_api = Counters({"calls_total": 2.0, "cost_cents_total": 1.5})
    assert from_mysql == from_json == from_api
    assert (from_mysql + from_json)["cost_cents_total"] == Decimal("3.0000")
    assert from_api.rendered()["cost_cents_total"] == 1.5
    assert Counters().is_zero() and not from_api.is_zero()


def test_a_webhook_record_is_read_the_same_from_aiokafka_and_faust() -> None:
    headers = encode_headers("retell", "call_ended:c1", "call_ended", "cid", 1_767_792_000_000)
    common = dict(topic="webhooks.retell", partition=3, offset=9, key=b"c1", value=b"{}")
    aiokafka = from_message(SimpleNamespace(**common, headers=headers, timestamp=1_767_792_000_500))
    faust = from_message(SimpleNamespace(**common, headers=headers, timestamp=1_767_792_000.5))
    assert aiokafka.headers == faust.headers == decode_headers(headers)
    assert faust.timestamp_ms == aiokafka.timestamp_ms == 1_767_792_000_500
    assert aiokafka.format == 1


def test_a_record_of_a_newer_format_is_dead_lettered_not_misread() -> None:
    good = record("retell", fixture_bytes("retell", "call_ended.json"))
    newer = WebhookRecord(good.topic, 0, 1, good.key, good.value, {**good.headers, "format": "2"})
    assert decode(good).poison is None
    poison = decode(newer).poison
    assert poison is not None and poison.reason == "unknown_format"


def test_a_dead_letter_round_trips_to_its_source_record() -> None:
    source = record("calcom", fixture_bytes("calcom", "BOOKING_CREATED.json"), offset=42)
    key, value, headers = deadletters.encode(DeadLetter(source, "db_rejected", "E", "d"))
    on_dlq = WebhookRecord("webhooks.dlq", 0, 5, key, value, decode_headers(headers))
    info = deadletters.parse_dlq_headers(on_dlq.headers)
    rebuilt = deadletters.source_record(on_dlq, info)
    assert rebuilt is not None
    assert (rebuilt.topic, rebuilt.offset, rebuilt.key, rebuilt.value) == (
        source.topic,
        42,
        source.key,
        source.value,
    )
    newer = deadletters.parse_dlq_headers(
        {**on_dlq.headers, "dlq_format": str(deadletters.FORMAT + 1)}
    )
    assert deadletters.source_record(on_dlq, newer) is None
