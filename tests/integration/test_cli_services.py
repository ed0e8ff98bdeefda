"""``switchboard migrate`` and ``switchboard topics`` as an operator runs them: the real
console script, in a subprocess, against the real MariaDB and Kafka, isolated by a database
of the test's own and a unique topic prefix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from pipeline import database, topics
from pipeline.settings import Settings
from tests.integration.conftest import base_settings, delete_topics

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).with_name("switchboard")
PARTITIONS = 3  # light on the shared broker; the default (12) is a unit-tested setting


def cli_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWITCHBOARD_", "RETELL_", "CALCOM_"))
    }
    env["SWITCHBOARD_KAFKA_BOOTSTRAP"] = base_settings().kafka_bootstrap
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def parse_topics(stdout: str) -> dict[str, tuple[str, int]]:
    """``name action partitions=N [(detail)]`` lines -> {name: (action, N)}."""
    found = {}
    for line in stdout.splitlines():
        name, action, partitions, *_ = line.split()
        assert partitions.startswith("partitions="), line
        found[name] = (action, int(partitions.removeprefix("partitions=")))
    return found


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique topic prefix; every topic under it is deleted afterwards."""
    value = f"t{uuid.uuid4().hex[:8]}."
    try:
        yield value
    finally:
        asyncio.run(delete_topics(base_settings().with_(topic_prefix=value)))


async def partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
    finally:
        await admin.close()


# ------------------------------------------------------------------ topics


def test_topics_is_idempotent(prefix: str) -> None:
    env = cli_env(SWITCHBOARD_TOPIC_PREFIX=prefix, SWITCHBOARD_TOPIC_PARTITIONS=str(PARTITIONS))
    expected = {prefix + name for name in topics.ALL_TOPICS}

    first = run(["topics"], env)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert parse_topics(first.stdout) == {name: ("created", PARTITIONS) for name in expected}

    second = run(["topics", "--json"], env)
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    reported = json.loads(second.stdout)
    assert reported["ok"] and len(reported["topics"]) == len(expected)
    assert {t["name"]: (t["action"], t["partitions"]) for t in reported["topics"]} == {
        name: ("ok", PARTITIONS) for name in expected
    }

    counts = asyncio.run(partition_counts(base_settings(), sorted(expected)))
    assert counts == {name: PARTITIONS for name in expected}


def test_topics_reports_a_partition_mismatch(prefix: str) -> None:
    settings = base_settings()
    odd = prefix + topics.DLQ

    async def create_odd() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(odd, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create_odd())
    env = cli_env(SWITCHBOARD_TOPIC_PREFIX=prefix, SWITCHBOARD_TOPIC_PARTITIONS=str(PARTITIONS))
    result = run(["topics"], env)

    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    reports = parse_topics(result.stdout)
    assert reports[odd] == ("mismatch", 2)
    assert {n: r for n, r in reports.items() if n != odd} == {
        prefix + name: ("created", PARTITIONS) for name in topics.ALL_TOPICS if name != topics.DLQ
    }
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("switchboard: ")
    # Reported, never "fixed": repartitioning a keyed topic would break per-key order.
    assert asyncio.run(partition_counts(settings, [odd])) == {odd: 2}

    again = run(["topics"], env)  # still a mismatch on the next run; the others are now ok
    assert again.returncode != 0
    assert parse_topics(again.stdout)[odd] == ("mismatch", 2)
    assert sum(action == "ok" for action, _ in parse_topics(again.stdout).values()) == 3


def test_topics_fails_loudly_when_the_broker_refuses_to_create(prefix: str) -> None:
    """aiokafka hands back per-topic creation errors instead of raising them; a replication
    factor beyond the cluster once printed "created partitions=0" and exited 0."""
    env = cli_env(
        SWITCHBOARD_TOPIC_PREFIX=prefix,
        SWITCHBOARD_TOPIC_PARTITIONS=str(PARTITIONS),
        SWITCHBOARD_TOPIC_REPLICATION="10",  # more brokers than any test cluster has
    )
    result = run(["topics"], env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("switchboard: could not create topics: ")
    assert "InvalidReplicationFactorError" in line
    for name in topics.ALL_TOPICS:
        assert prefix + name in line
    assert result.stdout == ""


# ------------------------------------------------------------------ migrate


def test_migrate_twice_from_empty(db_settings: Settings) -> None:
    database.downgrade(db_settings, "base")
    engine = database.create_db_engine(db_settings, pool_size=1)
    head = ScriptDirectory.from_config(database.alembic_config(db_settings)).get_current_head()
    env = cli_env(SWITCHBOARD_DATABASE_URL=db_settings.database_url.reveal())

    def state() -> tuple[str | None, list[str]]:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            return revision, sorted(inspect(conn).get_table_names())

    try:
        assert state() == (None, ["alembic_version"])
        first = run(["migrate"], env)
        assert first.returncode == 0, first.stderr
        migrated = state()
        assert migrated[0] == head
        assert "webhook_events" in migrated[1]
        assert first.stdout.strip() == f"database migrated to head (revision {head}, was None)"

        second = run(["migrate", "--json"], env)
        assert second.returncode == 0, second.stderr
        assert "Traceback" not in second.stderr
        assert json.loads(second.stdout) == {"target": "head", "before": head, "after": head}
        assert state() == migrated
    finally:
        engine.dispose()
