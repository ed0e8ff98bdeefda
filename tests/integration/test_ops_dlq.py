"""``switchboard dlq`` against the real broker and MariaDB (docs/runbook.md).

* a schema-violating event: dead-lettered with its reason and source coordinates, listed,
  shown; a redrive dead-letters it again with ``previous_reason``; the provider's fixed
  retry (same event id) applies it, and then redrive skips it and changes nothing;
* an event dead-lettered as ``internal_error`` (a bug, simulated by making the apply path
  raise for it once): a dry-run redrive lists what it would write and writes nothing, the
  redrive applies it exactly once at its source coordinates and publishes its buckets; a
  second redrive and a replay change nothing;
* the command line: the table, filters, ``show`` hiding secrets and masking phones.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

import pipeline.apply.applier
from pipeline.cli import cli, register_commands
from pipeline.kafka_reader import Coordinates, Stretch
from pipeline.ops.arguments import format_ms
from pipeline.ops.dlq import list_dead_letters, redrive, show_dead_letters
from pipeline.ops.replay import replay
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    TRANSCRIPT,
    apply_like_worker,
    call_id,
    call_start_ms,
    cli_env,
    fingerprint,
    headers_for,
    latest_snapshots,
    produce,
    produce_raw,
    produce_traffic,
    read_all,
    rows_of,
)
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

POISON_CALL = "call_poison_0001"
CALLER = "+14155550142"


def _call_ended(start: Any) -> bytes:
    body = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(call_id=POISON_CALL, start_timestamp=start, transcript=TRANSCRIPT)
    body["call"]["from_number"] = CALLER
    return orjson.dumps(body)


POISON = _call_ended("not-a-timestamp")
FIXED = _call_ended(1_767_792_000_123)
RECEIVED = call_start_ms(20)


def _event_row(engine: Engine, event_id: str) -> dict[str, Any] | None:
    found = rows_of(engine, "SELECT * FROM webhook_events WHERE event_id = :e", e=event_id)
    return found[0] if found else None


async def test_poison_is_listed_redriven_again_and_resolved_by_the_fixed_retry(
    stack_settings: Settings, engine: Engine
) -> None:
    seed_fixture_tenants(engine)
    await produce_traffic(stack_settings, 3)
    [source] = await produce(stack_settings, "retell", [(POISON, RECEIVED)])
    first = await apply_like_worker(stack_settings, engine, "retell")
    assert first.reasons == Counter({("dead_lettered", "schema_violation"): 1})
    assert first.dead_letters_published == 1

    [item] = await list_dead_letters(stack_settings, engine=engine)
    entry = item.entry
    assert (entry.provider, entry.event_id) == ("retell", f"call_ended:{POISON_CALL}")
    assert entry.info.reason == "schema_violation" and "start_timestamp" in entry.info.detail
    assert entry.info.error_class == "SchemaViolation"
    assert entry.source == f"{source.topic}/{source.partition}@{source.offset}"
    assert item.status == "dead_lettered" and item.copies == 1
    (shown,) = await show_dead_letters(stack_settings, entry.partition, entry.offset)
    assert shown.record.value == POISON and shown.record.key == POISON_CALL.encode()

    before = fingerprint(engine)
    again = await redrive(stack_settings, engine=engine)
    assert again.read == 1 and again.counts == Counter(dead_lettered=1)
    assert again.dead_letters_published == 1 and again.snapshots_published == 0
    assert fingerprint(engine) == before  # still dead_lettered, nothing written
    [item] = await list_dead_letters(stack_settings, engine=engine)
    assert item.copies == 2
    assert (item.entry.info.reason, item.entry.info.previous_reason) == (
        "schema_violation",
        "schema_violation",
    )
    assert item.entry.source == entry.source  # still the original coordinates
    row = _event_row(engine, f"call_ended:{POISON_CALL}")
    assert row is not None and row["status"] == "dead_lettered"
    assert (row["kafka_partition"], row["kafka_offset"]) == (source.partition, source.offset)

    # The provider retries with a fixed body: same event id, applied once.
    [fixed] = await produce(stack_settings, "retell", [(FIXED, RECEIVED + 60_000)])
    applied = await replay(
        stack_settings,
        "webhooks.retell",
        Stretch(from_offset=fixed.offset, to_offset=fixed.offset),
        partitions=[fixed.partition],
    )
    assert applied.counts == Counter(applied=1)
    row = _event_row(engine, f"call_ended:{POISON_CALL}")
    assert row is not None and row["status"] == "applied"
    assert await list_dead_letters(stack_settings, pending_only=True, engine=engine) == []
    [item] = await list_dead_letters(stack_settings, engine=engine)
    assert item.status == "applied"

    resolved = fingerprint(engine)
    skipped = await redrive(stack_settings, engine=engine)
    assert skipped.read == 0 and skipped.skipped == Counter({"event already applied": 1})
    assert fingerprint(engine) == resolved
    assert len(await read_all(stack_settings, "webhooks.dlq")) == 2


async def test_internal_error_is_redriven_and_applied_exactly_once(
    stack_settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 6
    seed_fixture_tenants(engine)
    produced = await produce_traffic(stack_settings, calls)
    target = f"call_ended:{call_id(3)}"
    source = produced["retell"][3 * 4 + 2]  # call 3's third event is its call_ended
    real_apply = pipeline.apply.applier.apply_batch

    def buggy(engine: Engine, records: Any, **kwargs: Any) -> Any:
        if any(r.headers.get("event_id") == target for r in records):
            raise RuntimeError("a bug in the apply path")
        return real_apply(engine, records, **kwargs)

    monkeypatch.setattr(pipeline.apply.applier, "apply_batch", buggy)
    first = await apply_like_worker(stack_settings, engine, "retell")
    monkeypatch.undo()
    await apply_like_worker(stack_settings, engine, "calcom")
    assert first.reasons == Counter({("dead_lettered", "internal_error"): 1})
    assert first.counts["applied"] == first.read - 1
    assert _event_row(engine, target) is None  # the failed transaction wrote nothing
    assert _day_totals(engine)["calls_total"] == calls - 1

    [item] = await list_dead_letters(stack_settings, engine=engine)
    assert item.entry.info.reason == "internal_error" and item.status is None
    assert item.entry.source == f"{source.topic}/{source.partition}@{source.offset}"

    before = fingerprint(engine)
    dry = await redrive(stack_settings, dry_run=True, engine=engine)
    assert dry.counts == Counter(applied=1)
    assert dry.totals_by_table() == {
        "webhook_events": Counter(insert=1),
        "calls": Counter(update=1),
        "dashboard_buckets": Counter(upsert=2),  # the call's hour and day buckets
        "dashboard_group_buckets": Counter(upsert=4),  # the same per branch and per agent
    }
    assert fingerprint(engine) == before
    assert len(await read_all(stack_settings, "webhooks.dlq")) == 1

    done = await redrive(stack_settings, engine=engine)
    # the hour and day buckets of the company, its branch and its agent
    assert done.counts == Counter(applied=1) and done.snapshots_published == 6
    row = _event_row(engine, target)
    assert row is not None and row["status"] == "applied"
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        source.topic,
        source.partition,
        source.offset,
    )
    totals = _day_totals(engine)
    assert totals["calls_total"] == calls and totals["calls_connected"] == calls
    assert (
        totals["sentiment_positive"] + totals["sentiment_neutral"] + totals["sentiment_negative"]
        == calls
    )
    assert totals["duration_ms_total"] == sum(90_000 + i * 1_000 for i in range(calls))
    latest = await latest_snapshots(stack_settings)
    company_days = [s for s in latest if s.key.granularity == "day" and not s.key.grouped]
    assert sum(s.counters["calls_total"] for s in company_days) == calls

    settled = fingerprint(engine)
    twice = await redrive(stack_settings, engine=engine)
    assert twice.read == 0 and twice.skipped == Counter({"event already applied": 1})
    replayed = await replay(stack_settings, "webhooks.retell", Stretch(from_offset=0))
    assert replayed.counts == Counter(already_applied=len(produced["retell"]))
    assert fingerprint(engine) == settled


def _day_totals(engine: Engine) -> Counter[str]:
    totals: Counter[str] = Counter()
    for row in rows_of(engine, "SELECT * FROM dashboard_buckets WHERE granularity = 'day'"):
        totals.update(
            {k: int(v) for k, v in row.items() if k.startswith(("calls_", "sentiment_", "dur"))}
        )
    return totals


def test_cli_list_show_redrive(stack_settings: Settings, engine: Engine) -> None:
    seed_fixture_tenants(engine)
    # A signature header must never be shown, even if something put one on Kafka.
    headers = headers_for("retell", POISON, RECEIVED) + [
        ("x-retell-signature", b"v=1767792000000,d=deadbeefcafe")
    ]
    source: Coordinates = asyncio.run(
        produce_raw(stack_settings, "retell", POISON_CALL.encode(), POISON, headers)
    )
    asyncio.run(apply_like_worker(stack_settings, engine, "retell"))
    register_commands()
    runner = CliRunner()
    env = cli_env(stack_settings)

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), prog_name="switchboard", env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a crash, not a reported failure: show its traceback
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("dlq", "list")
    assert code == 0, err
    header, line, count = out.splitlines()
    assert header.split() == [
        "OFFSET", "DEAD_LETTERED_AT", "PROVIDER", "EVENT_TYPE", "EVENT_ID", "REASON",
        "PREVIOUS_REASON", "SOURCE", "STATUS", "COPIES",
    ]  # fmt: skip
    position = line.split()[0]
    assert line.split()[2:] == [
        "retell", "call_ended", f"call_ended:{POISON_CALL}", "schema_violation", "-",
        f"{source.topic}/{source.partition}@{source.offset}", "dead_lettered", "1",
    ]  # fmt: skip
    assert count == "1 event(s)"
    assert CALLER not in out and "Bayview" not in out  # never the body

    for args in (["--reason", "internal_error"], ["--provider", "calcom"],
                 ["--since", format_ms(int(time.time() * 1000) + 86_400_000)]):  # fmt: skip
        code, out, err = run("dlq", "list", *args)
        assert (code, out.strip()) == (0, "no dead letters match"), (args, err)
    code, out, err = run("dlq", "list", "--event-type", "call_ended", "--pending")
    assert code == 0 and "1 event(s)" in out
    code, out, err = run("dlq", "list", "--since", "2020-01-01", "--provider", "retell")
    assert code == 0 and "1 event(s)" in out
    code, out, err = run("dlq", "list", "--since", "last tuesday")
    assert code == 2 and "Error: --since: 'last tuesday' is not an ISO-8601 time" in err

    code, out, err = run("dlq", "show", position)
    assert code == 0, err
    assert f'"call_id": "{POISON_CALL}"' in out and '"start_timestamp": "not-a-timestamp"' in out
    assert CALLER not in out and "+1415*****42" in out
    assert "deadbeef" not in out and "x-retell-signature  *** (hidden)" in out
    assert "more characters)" in out and len(out) < len(POISON) + 2_000  # transcript cut
    code, out, err = run("dlq", "show", position, "--unmasked")
    assert code == 0 and CALLER in out and "deadbeef" not in out
    # The bare offset (SPEC's `dlq show OFFSET`) finds it on whichever partition it is.
    assert run("dlq", "show", position.split(":")[1]) == run("dlq", "show", position)

    code, out, err = run("dlq", "show", f"{position.split(':')[0]}:999")
    assert code == 1 and out == "" and err.strip().count("\n") == 0
    assert err.startswith("switchboard: no dead letter at")
    code, out, err = run("dlq", "show", "x:1")
    assert code == 2 and "Error: 'x:1' is not PARTITION:OFFSET" in err

    code, out, err = run("dlq", "redrive", "--dry-run")
    assert code == 0, err
    assert "redriving 1 dead letter(s) [dry run]" in out and "dead-lettered 1" in out
    assert len(asyncio.run(read_all(stack_settings, "webhooks.dlq"))) == 1
    code, out, err = run("dlq", "redrive", "--event-id", f"call_ended:{POISON_CALL}")
    assert code == 0, err
    assert "published: 1 dead letter(s)" in out
    code, out, err = run("dlq", "list")
    assert "schema_violation  schema_violation" in out and out.splitlines()[1].endswith("2")
