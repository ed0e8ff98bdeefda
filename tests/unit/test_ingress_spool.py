"""The spool's promises (docs/ingress.md, "Spool"): what was appended survives a restart and a
torn last write, appends share fsyncs, the bound refuses only past it, a slot is one process's,
and an orphaned spool is forwarded by another process."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline.ingress.forwarder import Forwarder
from pipeline.ingress.spool import Spool, SpoolFile, SpoolFull, claim_slot, spool_path
from tests.unit.ingress_fakes import FakePublisher

HEADERS = [("provider", b"retell"), ("event_id", b"call_ended:c1"), ("bin", bytes(range(256)))]


def make(directory: Path, **limits: float) -> Spool:
    return Spool.claim(
        directory,
        max_bytes=int(limits.get("max_bytes", 1 << 30)),
        max_age_s=limits.get("max_age_s", 3600.0),
    )


async def test_records_survive_a_restart_byte_for_byte(tmp_path: Path) -> None:
    spool = make(tmp_path)
    await spool.start()
    await spool.append("t.webhooks.retell", b"c1", b'{"a":1}', HEADERS)
    await spool.append("t.webhooks.calcom", b"b1", b'{"b":2}', [])
    await spool.close()

    again = make(tmp_path)
    assert again.slot == 0  # the slot (and its file) comes back to the next process
    await again.start()
    try:
        assert again.count == 2 and again.bytes > 0 and again.oldest_age_s() >= 0
        first, second = await again.head(10)
        assert (first.topic, first.key, first.value, first.headers) == (
            "t.webhooks.retell", b"c1", b'{"a":1}', HEADERS,
        )  # fmt: skip
        assert second.seq > first.seq and second.value == b'{"b":2}'
        await again.delete([first])
        assert again.count == 1
        assert [r.seq for r in await again.head(10)] == [second.seq]
    finally:
        await again.close()


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    spool = make(tmp_path)
    await spool.start()
    try:
        await asyncio.gather(
            *(spool.append("t", f"k{i}".encode(), b"x" * 100, []) for i in range(300))
        )
        assert spool.appended == 300 and spool.count == 300
        assert spool.commits < 300 / 5, spool.commits  # group commit, not one fsync each
        assert [r.key for r in await spool.head(300)] == [f"k{i}".encode() for i in range(300)]
    finally:
        await spool.close()


async def test_the_byte_bound_refuses_only_past_it(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=1024 * 1024)
    await spool.start()
    try:
        body = b"x" * (300 * 1024)
        for _ in range(3):
            await spool.append("t", b"k", body, [])
        with pytest.raises(SpoolFull):
            await spool.append("t", b"k", body, [])
        await spool.append("t", b"k", b"small", [])  # room left for a small one
        await spool.delete(await spool.head(1))
        await spool.append("t", b"k", body, [])  # room again once forwarded
    finally:
        await spool.close()


async def test_the_age_bound_refuses_once_the_oldest_is_too_old(tmp_path: Path) -> None:
    spool = make(tmp_path, max_age_s=0.2)
    await spool.start()
    try:
        await spool.append("t", b"k", b"old", [])
        await asyncio.sleep(0.3)
        with pytest.raises(SpoolFull):
            await spool.append("t", b"k", b"new", [])
        await spool.delete(await spool.head(10))
        await spool.append("t", b"k", b"new", [])
    finally:
        await spool.close()


def _write(path: Path, batches: list[list[bytes]]) -> SpoolFile:
    spool = SpoolFile(path)
    for batch in batches:
        spool.insert_many([("t", b"k", v, b"[]", time.time(), len(v)) for v in batch])
    return spool  # left open: a close would checkpoint the WAL into the main file


def test_a_torn_last_write_loses_only_the_unfinished_commit(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    src = _write(live / "s.sqlite3", [[b"a1", b"a2"], [b"b" * 5000]])
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # what the disk holds at the moment of a kill -9
        shutil.copy(f"{live}/s.sqlite3{suffix}", f"{crashed}/s.sqlite3{suffix}")
    src.close()
    wal = crashed / "s.sqlite3-wal"
    os.truncate(wal, wal.stat().st_size - 700)  # the last commit's frames are torn

    reopened = SpoolFile(crashed / "s.sqlite3")
    try:
        assert [r.value for r in reopened.head(10)] == [b"a1", b"a2"]
        assert reopened.stats()[0] == 2
    finally:
        reopened.close()


def test_garbage_after_the_last_commit_is_ignored(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.sqlite3", [[b"a1"], [b"b1"]])
    with open(tmp_path / "s.sqlite3-wal", "ab") as wal:
        wal.write(os.urandom(3000))
    src.close()
    reopened = SpoolFile(tmp_path / "s.sqlite3")
    try:
        assert [r.value for r in reopened.head(10)] == [b"a1", b"b1"]
    finally:
        reopened.close()


def test_a_damaged_file_is_kept_aside_and_a_fresh_spool_starts(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    spool = SpoolFile(path)
    try:
        assert spool.stats() == (0, 0, None)
    finally:
        spool.close()
    kept = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert kept and (tmp_path / kept[0]).read_bytes().startswith(b"this is not")


def test_each_live_process_gets_its_own_slot(tmp_path: Path) -> None:
    first, second = claim_slot(tmp_path), claim_slot(tmp_path)
    assert (first.slot, second.slot) == (0, 1)
    first.release()  # the process of slot 0 died: its slot is free again
    third = claim_slot(tmp_path)
    assert third.slot == 0
    second.release()
    third.release()


async def test_a_record_forwarded_twice_is_sent_again_not_lost(tmp_path: Path) -> None:
    """An ack whose delete never happened (a crash in between) is forwarded again on the
    next start: at least once; the workers' (provider, event_id) dedup absorbs the copy."""
    spool = make(tmp_path)
    await spool.start()
    await spool.append("t", b"c1", b"body", HEADERS)
    kafka = FakePublisher()

    async def crash(records: object) -> None:
        raise RuntimeError("killed between the ack and the delete")

    spool.delete = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await Forwarder(spool, kafka).drain_once(spool)
    await spool.close()

    again = make(tmp_path)
    await again.start()
    try:
        sent, failed = await Forwarder(again, kafka).drain_once(again)
        assert (sent, failed, again.count) == (1, False, 0)
        assert [(r.key, r.header("event_id")) for r in kafka.records] == [
            (b"c1", b"call_ended:c1"), (b"c1", b"call_ended:c1"),
        ]  # fmt: skip
    finally:
        await again.close()


async def test_a_failed_forward_keeps_the_records(tmp_path: Path) -> None:
    spool = make(tmp_path)
    await spool.start()
    try:
        await spool.append("t", b"c1", b"body", [])
        kafka = FakePublisher(mode="down")
        sent, failed = await Forwarder(spool, kafka).drain_once(spool)
        assert (sent, failed, spool.count) == (0, True, 1)
    finally:
        await spool.close()


async def test_the_forwarder_drains_in_order_and_adopts_orphans(tmp_path: Path) -> None:
    dead = make(tmp_path)  # slot 0: a process that will die with records spooled
    await dead.start()
    for i in range(5):
        await dead.append("t", b"orphan", f"o{i}".encode(), [])
    live = make(tmp_path)  # slot 1
    await live.start()
    await dead.close()  # its lock goes away as it would with the process
    kafka = FakePublisher()
    forwarder = Forwarder(live, kafka, adopt_interval_s=0.05)
    try:
        for i in range(5):
            await live.append("t", b"own", f"n{i}".encode(), [])
        await forwarder.start()
        for _ in range(500):
            if not live.count and forwarder.adopted:
                break
            await asyncio.sleep(0.02)
        by_key: dict[bytes, list[bytes]] = {}
        for r in kafka.records:
            by_key.setdefault(r.key, []).append(r.value)
        assert by_key == {
            b"own": [f"n{i}".encode() for i in range(5)],
            b"orphan": [f"o{i}".encode() for i in range(5)],
        }
        assert live.count == 0 and forwarder.adopted == 1
        assert not spool_path(tmp_path, 0).exists()  # the emptied orphan is gone
    finally:
        await forwarder.close()
        await live.close()


def test_sqlite_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path / "s.sqlite3")
    spool.close()
    db = sqlite3.connect(tmp_path / "s.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
