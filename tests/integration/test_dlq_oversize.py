"""Issue 12, defect 1 (second way): a dead letter larger than the worker's producer limit.

The ingress accepts bodies up to 1 MiB; Faust's producer refuses records over 1,000,000
bytes, and the worker retried that dead letter for ever, stalling its topic. A body too
large to travel inline is dead-lettered as a *reference* to its source coordinates
(topic/partition/offset, event id, SHA-256 and size of the body); ``dlq show`` and
``dlq redrive`` follow the reference back to the source record. Real broker, real MariaDB.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from pipeline.apply import deadletters
from pipeline.cli import cli, register_commands
from pipeline.ops.dlq import list_dead_letters, redrive, resolve_source, show_dead_letters
from pipeline.providers.base import sha256_hex
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    apply_like_worker,
    call_start_ms,
    cli_env,
    produce,
    produce_traffic,
    read_all,
)
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

# What Faust's producer accepts by default (producer_max_request_size), the worker's limit.
FAUST_LIMIT = 1_000_000


def _huge_poison() -> bytes:
    body: dict[str, Any] = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(call_id="call_huge_0001", start_timestamp="not-a-timestamp")
    body["call"]["transcript"] = "Agent: hello. " * 74_000  # ~1,036,000 bytes
    return orjson.dumps(body)


HUGE = _huge_poison()


def _size(record: Any) -> int:
    headers = sum(len(k) + len(v) for k, v in record.headers.items())
    return len(record.key or b"") + len(record.value) + headers


async def test_an_oversize_dead_letter_is_a_reference_that_dlq_follows(
    stack_settings: Settings, engine: Engine
) -> None:
    assert FAUST_LIMIT < len(HUGE) <= stack_settings.max_body_bytes
    seed_fixture_tenants(engine)
    await produce_traffic(stack_settings, 2)
    [source] = await produce(stack_settings, "retell", [(HUGE, call_start_ms(5))])
    first = await apply_like_worker(stack_settings, engine, "retell")
    assert first.reasons[("dead_lettered", "schema_violation")] == 1
    assert first.dead_letters_published == 1

    [letter] = await read_all(stack_settings, "webhooks.dlq")
    assert _size(letter) < FAUST_LIMIT, "the dead letter must fit the worker's producer"
    info = deadletters.parse_dlq_headers(letter.headers)
    assert info.body_reference and info.readable
    assert (info.body_sha256, info.body_bytes) == (sha256_hex(HUGE), len(HUGE))
    assert (info.source_topic, info.source_partition, info.source_offset) == (
        source.topic,
        source.partition,
        source.offset,
    )
    assert letter.headers["event_id"] == "call_ended:call_huge_0001"

    [item] = await list_dead_letters(stack_settings, engine=engine)
    assert item.status == "dead_lettered"
    (shown,) = await show_dead_letters(stack_settings, letter.partition, letter.offset)
    rebuilt = await resolve_source(stack_settings, shown)
    assert rebuilt is not None and rebuilt.value == HUGE
    assert (rebuilt.topic, rebuilt.partition, rebuilt.offset) == (
        source.topic,
        source.partition,
        source.offset,
    )

    again = await redrive(stack_settings, engine=engine)
    assert again.read == 1 and again.counts == Counter(dead_lettered=1)
    letters = await read_all(stack_settings, "webhooks.dlq")
    assert len(letters) == 2 and all(_size(r) < FAUST_LIMIT for r in letters)
    second = deadletters.parse_dlq_headers(letters[1].headers)
    assert second.body_reference and second.previous_reason == "schema_violation"
    assert second.source_offset == source.offset  # still the original coordinates

    register_commands()
    out = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["dlq", "show", f"{letter.partition}:{letter.offset}"],
        env=cli_env(stack_settings),
    )
    assert out.exit_code == 0, out.output
    assert f"body ({len(HUGE)} bytes" in out.output
    assert "from its source record" in out.output


def test_every_dead_letter_fits_the_producer_limit() -> None:
    """The encoder alone: inline up to the limit, a reference beyond."""
    from pipeline.apply.results import DeadLetter
    from testbed.records import record

    small = record("retell", fixture_bytes("retell", "call_ended.json"))
    key, value, headers = deadletters.encode(DeadLetter(small, "schema_violation", "X", "d"))
    assert value == small.value
    big = record("retell", HUGE)
    key, value, headers = deadletters.encode(DeadLetter(big, "schema_violation", "X", "d"))
    assert value == b"" and dict(headers)["dlq_body"] == b"reference"
    assert len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers) < FAUST_LIMIT
