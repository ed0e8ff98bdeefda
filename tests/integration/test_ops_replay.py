"""``switchboard replay`` against the real broker and MariaDB (docs/runbook.md).

* replaying an applied stretch changes nothing: the checksum of every table (every column,
  ``updated_at`` and ``dashboard_buckets.version`` included) is identical;
* after calls and appointments are deleted, a dry run lists exactly the missing rows and
  writes nothing; the real replay restores them exactly (every column but the surrogate
  ``id`` and the restored row's own ``created_at``/``updated_at``, foreign keys compared
  by the natural keys they point to), and ``dashboard_buckets`` is untouched;
* the command line: time ranges, partitions, one-line argument errors.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from pipeline.cli import cli, register_commands
from pipeline.kafka_reader import Stretch
from pipeline.ops.arguments import format_ms
from pipeline.ops.replay import replay
from pipeline.ops.report import RunReport
from pipeline.records import WebhookRecord
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    apply_like_worker,
    call_id,
    call_start_ms,
    cli_env,
    fingerprint,
    latest_snapshots,
    natural_rows,
    produce_traffic,
    rows_of,
)
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

CALLS = 12
TOPICS = ("webhooks.retell", "webhooks.calcom")


async def _applied_traffic(settings: Settings, engine: Engine) -> dict[str, int]:
    seed_fixture_tenants(engine)
    produced = await produce_traffic(settings, CALLS)
    for provider in ("retell", "calcom"):
        first = await apply_like_worker(settings, engine, provider)
        assert first.read == len(produced[provider])
        assert first.counts["dead_lettered"] == 0 and first.counts["unroutable"] == 0, first
        assert first.counts["applied"] == first.read
    return {f"webhooks.{p}": len(c) for p, c in produced.items()}


def pacific(millis: int) -> str:
    """An ISO time with a -08:00 offset (the command must honour offsets)."""
    zone = timezone(timedelta(hours=-8))
    return datetime.fromtimestamp(millis / 1000, zone).isoformat(timespec="seconds")


def _buckets(engine: Engine) -> list[dict[str, object]]:
    return rows_of(
        engine, "SELECT * FROM dashboard_buckets ORDER BY company_id, granularity, bucket_start"
    )


async def test_replaying_an_applied_stretch_changes_nothing(
    stack_settings: Settings, engine: Engine
) -> None:
    produced = await _applied_traffic(stack_settings, engine)
    before = fingerprint(engine)
    buckets = _buckets(engine)
    assert sum(b["calls_total"] for b in buckets if b["granularity"] == "day") == CALLS
    await asyncio.sleep(0.05)  # a write now would show as a different updated_at

    for topic in TOPICS:
        report = await replay(stack_settings, topic, Stretch(from_offset=0))
        assert report.read == produced[topic]
        assert report.counts == Counter({"already_applied": produced[topic]}), report.counts
        assert report.totals_by_table() == {}, report.changes
        assert report.dead_letters_published == 0
        # The buckets of the replayed events are republished unchanged (a redelivered
        # batch heals a crash between commit and publish): the same versions as the rows.
        assert report.snapshots_published > 0

    assert fingerprint(engine) == before
    assert _buckets(engine) == buckets
    # (the breakdown groups' buckets are republished beside them; the company's compared)
    latest = {s.key: s for s in await latest_snapshots(stack_settings) if not s.key.grouped}
    assert sorted((k.company_id, k.granularity, k.bucket_start, s.version)
                  for k, s in latest.items()) == [
        (b["company_id"], b["granularity"], b["bucket_start"], b["version"]) for b in buckets
    ]  # fmt: skip


async def test_dry_run_lists_deleted_rows_and_replay_restores_them_exactly(
    stack_settings: Settings, engine: Engine
) -> None:
    await _applied_traffic(stack_settings, engine)
    original = natural_rows(engine)
    buckets = _buckets(engine)
    kept = fingerprint(engine)

    doomed_calls = [call_id(i) for i in (1, 2, 5)]
    # The bookings made by those calls reference them (appointments.call_id), plus a
    # booking whose call stays, a rescheduled one and a no-show one.
    doomed_appts = ["bk_ops_0001", "bk_ops_0002", "bk_ops_0005", "bk_ops_0006", "bk_ops_0007"]
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM appointments WHERE calcom_uid IN :uids").bindparams(
                uids=tuple(doomed_appts)
            )
        )
        conn.execute(
            text("DELETE FROM calls WHERE retell_call_id IN :ids").bindparams(
                ids=tuple(doomed_calls)
            )
        )
    damaged = fingerprint(engine)

    dry = {
        topic: await replay(stack_settings, topic, Stretch(from_offset=0), dry_run=True)
        for topic in TOPICS
    }
    assert fingerprint(engine) == damaged, "a dry run wrote something"
    retell, calcom = (dry[t].totals_by_table() for t in TOPICS)
    assert retell == {"calls": Counter(insert=len(doomed_calls))}, dry["webhooks.retell"].changes
    assert set(calcom) == {"appointments"}, dry["webhooks.calcom"].changes
    assert calcom["appointments"]["insert"] == len(doomed_appts)
    assert calcom["appointments"]["update"] == 0
    # In the dry run the deleted calls are still missing: only bk 6 and 7 find theirs.
    assert calcom["appointments"]["link"] == 2
    for report in dry.values():
        assert report.counts["applied"] == 0 and report.counts["already_applied"] == report.read
        assert "would write:" in report.change_lines()[0]

    real = {topic: await replay(stack_settings, topic, Stretch(from_offset=0)) for topic in TOPICS}
    assert real["webhooks.retell"].totals_by_table() == {"calls": Counter(insert=3)}
    restored = real["webhooks.calcom"].totals_by_table()["appointments"]
    assert (restored["insert"], restored["link"]) == (5, 5), restored
    # bk 2 was rescheduled: its reschedule (keyed by the new uid) may sit on another
    # partition, read in another batch, which then updates the row the first batch restored.
    assert restored["update"] <= 1, restored
    assert natural_rows(engine) == original
    assert _buckets(engine) == buckets, "a replay of applied events must not count again"
    now = fingerprint(engine)
    for table in ("companies", "branches", "customers", "webhook_events", "dashboard_buckets"):
        assert now[table] == kept[table], table


def test_cli_replay_time_range_partitions_and_dry_run(
    stack_settings: Settings, engine: Engine
) -> None:
    produced = asyncio.run(_applied_traffic(stack_settings, engine))
    register_commands()
    env = cli_env(stack_settings)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), prog_name="switchboard", env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a crash, not a reported failure: show its traceback
        return result.exit_code, result.stdout, result.stderr

    doomed = [call_id(i) for i in (8, 9, 10, 11)]
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM appointments WHERE retell_call_id IN :ids").bindparams(
                ids=tuple(doomed)
            )
        )
        conn.execute(
            text("DELETE FROM calls WHERE retell_call_id IN :ids").bindparams(ids=tuple(doomed))
        )
    damaged = fingerprint(engine)

    # From call 8 on: 4 calls, 4 records each.
    code, out, err = run(
        "replay", "--topic", "webhooks.retell", "--from-time", format_ms(call_start_ms(8)),
        "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "read 16, applied 0, already applied 16, unroutable 0, dead-lettered 0" in out
    assert re.search(r"calls\s+company 1\s+insert 4", out), out
    assert "[dry run: nothing written]" in out
    assert fingerprint(engine) == damaged

    # Calls 8 to 10 only (--to-time is inclusive), with an offset timezone.
    code, out, err = run(
        "replay", "--topic", "retell", "--from-time", format_ms(call_start_ms(8)),
        "--to-time", pacific(call_start_ms(10) + 6 * 60_000),  # call 11 starts 4 min later
    )  # fmt: skip
    assert code == 0, err
    assert "read 12, applied 0, already applied 12" in out
    assert re.search(r"calls\s+company 1\s+insert 3", out), out
    assert re.search(r"published: 0 dead letter\(s\), \d+ bucket snapshot\(s\)", out), out
    left = {r["retell_call_id"] for r in rows_of(engine, "SELECT retell_call_id FROM calls")}
    assert call_id(11) not in left and {call_id(8), call_id(9), call_id(10)} <= left

    # One partition, by offsets: exactly the records produced there.
    code, out, err = run(
        "replay", "--topic", "webhooks.calcom", "--partition", "1", "--from-offset", "0",
        "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    on_partition = rows_of(
        engine, "SELECT COUNT(*) AS n FROM webhook_events WHERE provider = 'calcom' "
        "AND kafka_partition = 1",
    )[0]["n"]  # fmt: skip
    assert f"read {on_partition}," in out
    assert produced["webhooks.calcom"] > on_partition > 0

    # An unknown topic and bad arguments: one line, non-zero.
    code, out, err = run("replay", "--topic", "webhooks.dlq", "--from-offset", "0")
    assert code == 2 and "Error: --topic must be" in err and "Traceback" not in err
    code, out, err = run(
        "replay", "--topic", "webhooks.retell", "--from-offset", "0", "--from-time", "2026-01-01"
    )
    assert code == 2
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [
        "Error: give exactly one of --from-offset and --from-time"
    ]


def test_replay_tells_the_stretch_size_rate_and_time_left(
    stack_settings: Settings, engine: Engine
) -> None:
    """The progress an operator sees during a long replay: the stretch's size is known
    before the first batch, and every line has the count, the total, the rate and the time
    left (a stand-in clock: 5 s per batch, so a line per batch)."""
    from pipeline.cli.replay import RunProgress

    total = asyncio.run(_applied_traffic(stack_settings, engine))["webhooks.retell"]
    now, lines, plans, seen = [0.0], [], [], []
    progress = RunProgress("replay", clock=lambda: now[0], echo=lines.append)

    def on_plan(size: int) -> None:
        plans.append(size)
        progress.plan(size)

    def on_progress(report: RunReport, last: WebhookRecord) -> None:
        seen.append(report.read)
        now[0] += 5.0
        progress(report, last)

    report = asyncio.run(
        replay(
            stack_settings,
            "webhooks.retell",
            Stretch(from_offset=0),
            batch_size=10,
            on_plan=on_plan,
            on_progress=on_progress,
        )
    )
    assert plans == [total] and report.read == total
    assert seen == sorted(seen) and seen[-1] == total and len(seen) >= total // 10
    assert len(lines) == len(seen)
    first = re.fullmatch(
        rf"replay: ([\d,]+)/{total} \(([\d.]+)%\), ([\d,]+)/s, about (\S+) left; at (\S+); read .*",
        lines[0],
    )
    assert first is not None, lines[0]
    assert int(first[1]) == seen[0] and int(first[3].replace(",", "")) == round(seen[0] / 5)
    assert lines[-1].startswith(f"replay: {total}/{total} (100.0%), ") and "left" not in lines[-1]
