"""Issue 13, defect 8: ``dlq list`` (and ``redrive``, which lists first) must not hold the
whole DLQ topic in memory. An event redriven many times has many dead letters, each with
the whole body (up to 1 MiB); only the newest of each event is kept while reading."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.apply.deadletters import dlq_headers
from pipeline.apply.results import DeadLetter
from pipeline.ops import dlq
from pipeline.records import WebhookRecord, decode_headers
from pipeline.settings import Settings

BODY = 100_000
BATCHES, PER_BATCH = 20, 20  # 400 dead letters of one event: 40 MB of bodies


def _letter(n: int) -> WebhookRecord:
    source = WebhookRecord(
        topic="t1.webhooks.retell",
        partition=0,
        offset=1,
        key=b"c1",
        value=b"x" * BODY,
        headers={"provider": "retell", "event_id": "call_ended:c1", "event_type": "call_ended"},
        timestamp_ms=1_767_792_000_000,
    )
    letter = DeadLetter(source, "schema_violation", "SchemaViolation", "bad")
    return WebhookRecord(
        topic="t1.webhooks.dlq",
        partition=0,
        offset=n,
        key=b"c1",
        value=b"x" * BODY,  # a fresh copy per record, as the consumer gives
        headers=decode_headers(dlq_headers(letter, now_ms=1_800_000_000_000 + n)),
        timestamp_ms=1_800_000_000_000 + n,
    )


async def _stretch(*_: Any, **__: Any) -> AsyncIterator[list[WebhookRecord]]:
    for b in range(BATCHES):
        yield [_letter(b * PER_BATCH + i) for i in range(PER_BATCH)]


def test_listing_keeps_one_dead_letter_per_event_while_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dlq, "read_stretch", _stretch)
    monkeypatch.setattr(dlq.database, "check_database", lambda engine: None)
    monkeypatch.setattr(dlq, "event_statuses", lambda engine, keys: {})
    tracemalloc.start()
    try:
        listed = asyncio.run(dlq.list_dead_letters(Settings(), engine=object()))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(item.entry.offset, item.copies) for item in listed] == [
        (BATCHES * PER_BATCH - 1, BATCHES * PER_BATCH)
    ]
    assert peak < 3 * PER_BATCH * BODY, f"peak {peak / 1e6:.1f} MB while reading"
