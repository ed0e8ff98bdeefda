"""``switchboard spool salvage`` on a really damaged spool file, into the real broker: every
row SQLite can still read reaches its topic with its key and headers, the rows of the
damaged page are counted by sequence number, and the file itself is never written to."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from click.testing import CliRunner

from pipeline import topics
from pipeline.cli import cli, register_commands
from pipeline.ingress.spool import SpoolFile, record_size
from pipeline.settings import Settings
from tests.integration.ops_helpers import cli_env

pytestmark = pytest.mark.integration

ROWS = 300
PAGE_SIZE = 4096  # SQLite's default


def _run(settings: Settings, *args: str) -> tuple[int, str, str]:
    register_commands()
    result = CliRunner().invoke(cli, list(args), prog_name="switchboard", env=cli_env(settings))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _spool(path: Path, settings: Settings) -> dict[int, tuple[str, bytes, bytes, Any]]:
    """A spool file of ROWS records (about a kilobyte each: several pages of rows)."""
    spooled = SpoolFile(path)
    rows, expected = [], {}
    for n in range(1, ROWS + 1):
        topic = settings.topic(topics.RETELL if n % 3 else topics.CALCOM)
        key, value = f"call_{n}".encode(), orjson.dumps({"n": n, "pad": "x" * 900})
        headers = [("event_id", f"call_ended:call_{n}".encode()), ("provider", b"\xffraw")]
        rows.append((topic, key, value, orjson.dumps([[k, v.decode("latin-1")] for k, v in headers]), 0.0, record_size(key, value, headers)))  # fmt: skip
        expected[n] = (topic, key, value, headers)
    spooled.insert_many(rows)
    spooled.close()  # the last connection checkpoints the WAL into the file
    return expected


def _damage_a_middle_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE_SIZE
    assert pages > 50, pages
    middle = pages // 2
    data[middle * PAGE_SIZE : (middle + 1) * PAGE_SIZE] = b"\xff" * PAGE_SIZE
    path.write_bytes(bytes(data))


async def _read_back(settings: Settings, want: int) -> list[tuple[str, bytes, bytes, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        names = [settings.topic(t) for t in (topics.RETELL, topics.CALCOM)]
        tps = [
            TopicPartition(name, p)
            for name in names
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [
                TopicPartition(name, p)
                for name in names
                for p in sorted(consumer.partitions_for_topic(name) or ())
            ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[tuple[str, bytes, bytes, Any]] = []
        idle = 0
        while len(found) < want and idle < 20:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                found += [(r.topic, r.key, r.value, list(r.headers)) for r in records]
        return found
    finally:
        await consumer.stop()


def test_a_damaged_spool_file_is_salvaged_into_kafka(
    stack_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "ingress-0.sqlite3.corrupt-1764400000"
    expected = _spool(path, stack_settings)
    _damage_a_middle_page(path)
    evidence = hashlib.sha256(path.read_bytes()).hexdigest()

    code, out, err = _run(stack_settings, "spool", "salvage", str(path), "--dry-run", "--json")
    assert code == 0, err
    dry = orjson.loads(out)
    assert dry["damaged"] and dry["sent"] == 0 and dry["dry_run"]
    lost = dry["unreadable"]
    assert 1 <= len(lost) <= 20, lost  # the rows of one page
    assert dry["readable"] + len(lost) == ROWS
    assert sum(dry["by_topic"].values()) == dry["readable"]
    assert set(lost) <= set(expected)

    code, out, err = _run(stack_settings, "spool", "salvage", str(path))
    assert code == 0, err
    assert f"{ROWS - len(lost)} record(s) readable" in out
    assert f"unreadable: {len(lost)} row(s) (seq {lost[0]}" in out
    assert f"sent {ROWS - len(lost)} record(s)" in out
    sent = asyncio.run(_read_back(stack_settings, ROWS - len(lost)))
    assert sorted(sent) == sorted(v for n, v in expected.items() if n not in lost)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == evidence, "the evidence is kept"


def test_an_intact_file_salvages_whole_and_a_missing_one_is_one_line(
    stack_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "ingress-3.sqlite3"
    _spool(path, stack_settings)
    code, out, err = _run(stack_settings, "spool", "salvage", str(path), "--dry-run", "--json")
    assert code == 0, err
    whole = orjson.loads(out)
    assert (whole["readable"], whole["unreadable"], whole["damaged"]) == (ROWS, [], None)

    code, out, err = _run(stack_settings, "spool", "salvage", str(tmp_path / "nope"))
    assert code == 1 and out == "" and err.strip().endswith("no such spool file")
