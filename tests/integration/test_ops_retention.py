"""``switchboard retention apply`` against the real broker and MariaDB (docs/runbook.md).

* topics holding raw bodies get ``SWITCHBOARD_TOPIC_RETENTION_DAYS`` at creation and from
  the command where they have no value of their own; an operator's value is kept (and
  said), until the operator names the topic with ``--release``;
* ``webhook_events`` rows older than ``SWITCHBOARD_EVENTS_RETENTION_DAYS`` go, in a dry
  run they are only counted; rows are never deleted while a topic may still hold records
  that would re-apply them (a longer operator retention moves the horizon, ``-1`` keeps
  every row).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from pipeline import topics
from pipeline.cli import cli, register_commands
from pipeline.models import webhook_events
from pipeline.settings import Settings
from tests.integration.ops_helpers import cli_env, rows_of

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
AGES_DAYS = (500, 440, 420, 10)


def _run(settings: Settings, *args: str) -> tuple[int, str, str]:
    register_commands()
    result = CliRunner().invoke(cli, list(args), prog_name="switchboard", env=cli_env(settings))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _apply(settings: Settings, *args: str) -> Any:
    code, out, err = _run(settings, "retention", "apply", *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


async def _admin_do(settings: Settings, work: Callable[[AIOKafkaAdminClient], Any]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return await work(admin)
    finally:
        await admin.close()


def _retention(settings: Settings, name: str) -> topics.ConfigValue:
    full = settings.topic(name)
    found = asyncio.run(_admin_do(settings, lambda a: topics.describe_configs(a, [full])))
    return found[full]["retention.ms"]


def _set(settings: Settings, name: str, value: str | None) -> None:
    full = settings.topic(name)
    asyncio.run(
        _admin_do(settings, lambda a: topics.alter_configs(a, {full: {"retention.ms": value}}))
    )
    _settle(settings, name, lambda c: (c.value == value) if value else not c.overridden)


def _settle(settings: Settings, name: str, done: Callable[[topics.ConfigValue], bool]) -> None:
    """Until the broker answers with the change (its metadata cache catches up a moment
    after the change is committed)."""
    deadline = time.monotonic() + 30
    while not done(_retention(settings, name)) and time.monotonic() < deadline:
        time.sleep(0.2)


def _rows(engine: Engine) -> list[int]:
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            insert(webhook_events),
            [
                {
                    "provider": "retell",
                    "event_id": f"call_ended:call_age_{days}",
                    "event_type": "call_ended",
                    "kafka_topic": "webhooks.retell",
                    "kafka_partition": 0,
                    "kafka_offset": days,
                    "payload_sha256": "0" * 64,
                    "status": "applied",
                    "created_at": now - timedelta(days=days),
                    "processed_at": now - timedelta(days=days),
                }
                for days in AGES_DAYS
            ],
        )
    return _left(engine)


def _left(engine: Engine) -> list[int]:
    found = rows_of(engine, "SELECT kafka_offset FROM webhook_events ORDER BY kafka_offset DESC")
    return [r["kafka_offset"] for r in found]


def _by_topic(report: Any) -> dict[str, tuple[str, int]]:
    return {t["topic"]: (t["action"], t["retention_ms"]) for t in report["topics"]}


def test_topic_retention_is_set_but_an_operator_value_is_kept(stack_settings: Settings) -> None:
    ours = str(stack_settings.topic_retention_days * DAY_MS)
    retell, calcom, dlq = (stack_settings.topic(t) for t in topics.RETAINED)
    # Created by switchboard: already switchboard's value; the snapshot topic is not ours.
    assert _retention(stack_settings, topics.RETELL).value == ours
    assert not _retention(stack_settings, topics.SNAPSHOTS).overridden
    first = _apply(stack_settings, "--dry-run")
    assert {a for a, _ in _by_topic(first).values()} == {"ok"}

    _set(stack_settings, topics.RETELL, str(5 * DAY_MS))  # an operator's choice
    _set(stack_settings, topics.CALCOM, None)  # no value of its own: the broker's default
    dry = _apply(stack_settings, "--dry-run")
    assert _by_topic(dry) == {
        retell: ("kept", 5 * DAY_MS),
        calcom: ("would set", int(ours)),
        dlq: ("ok", int(ours)),
    }
    assert not _retention(stack_settings, topics.CALCOM).overridden  # the dry run set nothing

    done = _apply(stack_settings)
    assert _by_topic(done)[calcom] == ("set", int(ours))
    _settle(stack_settings, topics.CALCOM, lambda c: c.value == ours)
    assert _retention(stack_settings, topics.CALCOM).value == ours
    assert _retention(stack_settings, topics.RETELL).value == str(5 * DAY_MS)
    code, out, _ = _run(stack_settings, "retention", "apply")
    assert "kept: an operator's value on the topic (--release TOPIC to replace it)" in out

    released = _apply(stack_settings, "--release", "webhooks.retell")
    assert _by_topic(released)[retell] == ("replaced", int(ours))
    _settle(stack_settings, topics.RETELL, lambda c: c.value == ours)
    assert _retention(stack_settings, topics.RETELL).value == ours
    code, _, err = _run(stack_settings, "retention", "apply", "--release", "webhooks.other")
    assert code == 2 and "not a topic with raw bodies" in err


def test_rows_go_only_when_no_record_can_bring_them_back(
    stack_settings: Settings, engine: Engine
) -> None:
    assert _rows(engine) == [500, 440, 420, 10]

    dry = _apply(stack_settings, "--dry-run")
    assert dry["rows_deleted"] == 2 and "SWITCHBOARD_EVENTS_RETENTION_DAYS" in dry["why"]
    assert _left(engine) == [500, 440, 420, 10]

    # An operator keeps the DLQ for 450 days: rows must outlive its records.
    _set(stack_settings, topics.DLQ, str(450 * DAY_MS))
    longer = _apply(stack_settings)
    assert longer["rows_deleted"] == 1 and "longest topic retention" in longer["why"]
    assert _left(engine) == [440, 420, 10]

    # Records kept forever: every row is kept.
    _set(stack_settings, topics.CALCOM, "-1")
    forever = _apply(stack_settings)
    assert forever["horizon"] is None and forever["rows_deleted"] == 0
    assert "keep records forever" in forever["why"]
    assert _left(engine) == [440, 420, 10]

    _set(stack_settings, topics.CALCOM, None)
    _set(stack_settings, topics.DLQ, None)
    code, out, err = _run(stack_settings, "retention", "apply")
    assert code == 0, err
    assert "webhook_events: deleted 1 row(s) processed before" in out
    assert _left(engine) == [420, 10]
