"""Every ops command finishes over stretches with empty partitions (docs/runbook.md).

A group-less aiokafka consumer that is stopped while one of its assigned partitions has no
position never returns from ``stop()``: the fetcher waits for a committed offset that
nobody will answer once the consumer is closing. A replay whose *last* partition had
nothing to read did exactly that (every ``--from-time`` window of a few minutes has empty
ranges on most partitions). Here a six-partition topic holds records only in some
partitions, with empty ones before, between and after them, and the real commands run as
processes, as an operator runs them: replay (whole topic, chosen partitions, a time
window), its dry run, ``dlq list``/``redrive`` (the DLQ is mostly empty partitions too) and
``events show``. Each must exit with the right counts; a hang fails the test through the
subprocess timeout (a hang guard far above the few seconds each command takes, not a
performance threshold).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from sqlalchemy import Engine

from pipeline import topics
from pipeline.kafka_reader import Coordinates
from pipeline.ops.arguments import format_ms
from pipeline.providers import get
from pipeline.settings import Settings
from testbed.services import SWITCHBOARD, settings_env
from tests.integration.conftest import delete_topics
from tests.integration.ops_helpers import (
    booking_bodies,
    call_bodies,
    call_id,
    call_start_ms,
    headers_for,
    rows_of,
)
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

PARTITIONS = 6
CALLS = 6
# Retell records only in partitions 1 and 3 (0 empty before, 2 between, 4 and 5 after);
# Cal.com records only in partition 4 (0-3 before, 5 after).
CALL_PARTITIONS = (1, 3)
BOOKING_PARTITION = 4
HANG_GUARD_S = 240


@pytest.fixture
def wide_settings(db_settings: Settings) -> Iterator[Settings]:
    """A fresh database and this test's own six-partition topics."""
    suffix = uuid.uuid4().hex[:8]
    scoped = db_settings.with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
    )
    asyncio.run(topics.ensure_topics(scoped))
    try:
        yield scoped
    finally:
        asyncio.run(delete_topics(scoped))


async def _produce_at(
    settings: Settings, provider: str, records: list[tuple[bytes, int, int]]
) -> list[Coordinates]:
    """``(body, received_at_ms, partition)`` written as the ingress would, but to the
    partition given, so that the test decides which partitions stay empty."""
    topic = settings.topic(f"webhooks.{provider}")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    coords = []
    try:
        for body, received_at_ms, partition in records:
            meta = await producer.send_and_wait(
                topic,
                key=get(provider).parse(body).key.encode(),
                value=body,
                headers=headers_for(provider, body, received_at_ms),
                partition=partition,
                timestamp_ms=received_at_ms,
            )
            coords.append(Coordinates(topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return coords


def _poison_call_id(dlq_partition: int) -> str:
    """A call id whose dead letter (keyed by the call id) lands on ``dlq_partition``."""
    for n in range(10_000):
        candidate = f"call_poison_{n:04d}"
        if (murmur2(candidate.encode()) & 0x7FFFFFFF) % PARTITIONS == dlq_partition:
            return candidate
    raise AssertionError("no key found")  # pragma: no cover


def _poison(call: str, received_ms: int) -> bytes:
    body = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(call_id=call, start_timestamp="not-a-timestamp")
    return orjson.dumps(body)


async def _traffic(settings: Settings) -> dict[str, list[Coordinates]]:
    retell, calcom = [], []
    for i in range(CALLS):
        start = call_start_ms(i)
        times = (start, start + 30_000, start + 91_000 + i * 1_000, start + 120_000 + i * 1_000)
        for body, at in zip(call_bodies(i, start), times, strict=True):
            retell.append((body, at, CALL_PARTITIONS[i % 2]))
        for n, body in enumerate(booking_bodies(i, start + 300_000)):
            calcom.append((body, start + 300_000 + n * 3_600_000, BOOKING_PARTITION))
    return {
        "retell": await _produce_at(settings, "retell", retell),
        "calcom": await _produce_at(settings, "calcom", calcom),
    }


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWITCHBOARD, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def _summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """``read N, applied A, already applied B, unroutable U, dead-lettered D`` → numbers."""
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("read "))
    pairs = re.findall(r"([a-z][a-z -]*?) (\d+)", line.split(" (")[0])
    return {name.strip(): int(n) for name, n in pairs}


def test_replay_and_dry_run_finish_over_empty_partitions(
    wide_settings: Settings, engine: Engine
) -> None:
    seed_fixture_tenants(engine)
    produced = asyncio.run(_traffic(wide_settings))
    calls_total = len(produced["retell"])
    bookings_total = len(produced["calcom"])
    assert {c.partition for c in produced["retell"]} == set(CALL_PARTITIONS)

    dry = _summary(_run(wide_settings, "replay", "--topic", "webhooks.retell", "--from-offset", "0", "--dry-run"))  # fmt: skip
    assert dry == {"read": calls_total, "applied": calls_total, "already applied": 0,
                   "unroutable": 0, "dead-lettered": 0}  # fmt: skip
    assert rows_of(engine, "SELECT id FROM calls") == []  # the dry run wrote nothing

    first = _summary(_run(wide_settings, "replay", "--topic", "webhooks.retell", "--from-offset", "0"))  # fmt: skip
    assert first["read"] == calls_total and first["applied"] == calls_total
    booked = _summary(_run(wide_settings, "replay", "--topic", "calcom", "--from-offset", "0"))
    assert booked["read"] == bookings_total and booked["applied"] == bookings_total

    # A non-empty partition, then an empty one last (the reported hang) ...
    tail = _summary(_run(wide_settings, "replay", "--topic", "retell", "--partition", "3", "--partition", "5", "--from-offset", "0"))  # fmt: skip
    assert tail["read"] == calls_total // 2 and tail["already applied"] == calls_total // 2
    # ... empty ones first and between ...
    head = _summary(_run(wide_settings, "replay", "--topic", "retell", "--partition", "0", "--partition", "1", "--partition", "2", "--from-offset", "0"))  # fmt: skip
    assert head["read"] == calls_total // 2 and head["already applied"] == calls_total // 2
    # ... only empty partitions ...
    none = _summary(_run(wide_settings, "replay", "--topic", "retell", "--partition", "4", "--partition", "5", "--from-offset", "0"))  # fmt: skip
    assert none["read"] == 0
    # ... and a time window: partition 3 has records, none of them in the window.
    window = _summary(
        _run(
            wide_settings, "replay", "--topic", "retell",
            "--from-time", format_ms(call_start_ms(2)),
            "--to-time", format_ms(call_start_ms(3) - 1),
            "--dry-run",
        )
    )  # fmt: skip
    assert window["read"] == 4 and window["already applied"] == 4
    calcom_window = _summary(
        _run(
            wide_settings, "replay", "--topic", "calcom",
            "--from-time", format_ms(call_start_ms(CALLS - 1)),
        )
    )  # fmt: skip
    assert calcom_window["read"] >= 1 and calcom_window["applied"] == 0

    assert len(rows_of(engine, "SELECT id FROM calls")) == CALLS


def test_dlq_and_events_show_finish_over_empty_partitions(
    wide_settings: Settings, engine: Engine
) -> None:
    seed_fixture_tenants(engine)
    asyncio.run(_traffic(wide_settings))
    # Two poison events, in retell partitions 1 and 3, whose dead letters land on DLQ
    # partitions 2 and 4: DLQ partitions 0-1 empty before, 3 between, 5 after.
    poison = [(_poison_call_id(p), p) for p in (2, 4)]
    received = call_start_ms(CALLS)
    asyncio.run(
        _produce_at(
            wide_settings,
            "retell",
            [(_poison(c, received), received, CALL_PARTITIONS[n]) for n, (c, _) in enumerate(poison)],
        )
    )  # fmt: skip
    first = _summary(_run(wide_settings, "replay", "--topic", "retell", "--from-offset", "0"))
    assert first["dead-lettered"] == 2 and first["applied"] == CALLS * 4

    listed = _run(wide_settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    positions = sorted(line.split()[0] for line in listed.stdout.splitlines()[1:-1])
    assert [p.split(":")[0] for p in positions] == ["2", "4"], listed.stdout

    dry = _summary(_run(wide_settings, "dlq", "redrive", "--dry-run"))
    assert dry["read"] == 2 and dry["dead-lettered"] == 2
    again = _summary(_run(wide_settings, "dlq", "redrive"))
    assert again["read"] == 2 and again["dead-lettered"] == 2
    shown = _run(wide_settings, "dlq", "show", positions[0])
    assert shown.returncode == 0 and "schema_violation" in shown.stdout, shown.stderr
    # A bare offset (what SPEC's `dlq show OFFSET` names) finds the dead letters at that
    # offset on every partition: 2 and 4 here, none on partition 0.
    bare = _run(wide_settings, "dlq", "show", "0")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("offset 0 is on 2 partitions: 2:0, 4:0\n"), bare.stdout
    assert [
        line.split()[2] for line in bare.stdout.splitlines() if line.startswith("dead letter ")
    ] == ["2:0", "4:0"]
    as_json = json.loads(_run(wide_settings, "dlq", "show", "0", "--json").stdout)
    assert [letter["position"] for letter in as_json] == ["2:0", "4:0"]
    missing = _run(wide_settings, "dlq", "show", "7")
    assert (
        missing.returncode == 1 and "no dead letter at offset 7 of any partition" in missing.stderr
    )

    for i in (0, 1):  # one call per non-empty partition
        found = _run(wide_settings, "events", "show", "retell", f"call_ended:{call_id(i)}")
        assert found.returncode == 0, found.stderr
        assert "SHA-256 matches" in found.stdout
