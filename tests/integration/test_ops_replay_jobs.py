"""``switchboard replay --jobs N`` against the real broker and MariaDB (pipeline/ops/jobs.py):
processes over shares of the partitions restore lost rows exactly as one process does,
count every record once, report one progress and one plan, change nothing on a second
run, and fail as a single-job run fails."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from pipeline.cli import cli, register_commands
from pipeline.kafka_reader import Stretch
from pipeline.ops.jobs import replay_jobs
from pipeline.settings import Settings
from tests.integration.conftest import TEST_PARTITIONS
from tests.integration.ops_helpers import call_id, cli_env, fingerprint, natural_rows, rows_of
from tests.integration.test_ops_replay import TOPICS, _applied_traffic, _buckets

pytestmark = pytest.mark.integration


def test_jobs_restore_lost_rows_exactly_and_count_each_record_once(
    stack_settings: Settings, engine: Engine
) -> None:
    produced = asyncio.run(_applied_traffic(stack_settings, engine))
    original, buckets = natural_rows(engine), _buckets(engine)
    doomed = tuple(call_id(i) for i in (1, 2, 5))
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM appointments WHERE retell_call_id IN :ids").bindparams(ids=doomed)
        )
        conn.execute(text("DELETE FROM calls WHERE retell_call_id IN :ids").bindparams(ids=doomed))

    for topic in TOPICS:
        plans: list[int] = []
        seen: list[tuple[int, int]] = []
        report = replay_jobs(
            stack_settings,
            topic,
            Stretch(from_offset=0),
            jobs=2,
            batch_size=5,
            on_plan=plans.append,
            on_progress=lambda r, last, seen=seen: seen.append((r.read, last.partition)),
        )
        assert report.read == produced[topic]
        assert report.counts == Counter({"already_applied": produced[topic]}), report.counts
        # One plan, the whole stretch's; one running total, from both processes' batches.
        assert plans == [produced[topic]]
        reads = [read for read, _ in seen]
        assert reads == sorted(reads) and reads[-1] == produced[topic]
        on = rows_of(
            engine,
            "SELECT DISTINCT kafka_partition AS p FROM webhook_events WHERE kafka_topic = :t",
            t=stack_settings.topic(topic),
        )
        assert {partition for _, partition in seen} == {row["p"] for row in on}

    assert natural_rows(engine) == original
    assert _buckets(engine) == buckets, "a replay of applied events must not count again"

    # Again, in as many processes as partitions and in one: nothing changes, same totals.
    before = fingerprint(engine)
    time.sleep(0.05)  # a write now would show as a different updated_at
    for jobs in (TEST_PARTITIONS, 1):
        report = replay_jobs(stack_settings, "webhooks.retell", Stretch(from_offset=0), jobs=jobs)
        assert report.counts == Counter({"already_applied": produced["webhooks.retell"]})
        assert report.totals_by_table() == {}
    assert fingerprint(engine) == before


def test_a_failing_job_fails_the_run_as_one_job_would(stack_settings: Settings) -> None:
    """MySQL away: each process fails to start; the run ends with the same one line and
    exit code as a single-job run, and no process is left behind."""
    register_commands()
    env = cli_env(stack_settings)
    env["SWITCHBOARD_DATABASE_URL"] = "mysql+pymysql://switchboard:switchboard@127.0.0.1:1/x"
    outputs = []
    for jobs in ("1", "2"):
        result = CliRunner().invoke(
            cli,
            ["replay", "--topic", "webhooks.retell", "--from-offset", "0", "--jobs", jobs],
            prog_name="switchboard",
            env=env,
        )
        assert result.exception is None or isinstance(result.exception, SystemExit)
        outputs.append((result.exit_code, result.stderr.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1], outputs
    assert outputs[0][0] == 1 and outputs[0][1].startswith("switchboard: ")
