"""The ingress's durable local spool: where a verified webhook waits when Kafka cannot take it.

A 2xx is a promise that the event is on Kafka *or* fsynced here on its way there
(docs/ingress.md, "Spool"). Cal.com never retries a non-2xx and Retell retries three times,
so refusing a signed webhook loses it; the spool turns a Kafka outage into a delay.

Why SQLite: it is in the standard library, its WAL mode appends, checksums every frame and
recovers a torn last write by itself (frames after the last valid commit are ignored), and
``synchronous=FULL`` fsyncs the WAL on every commit. A hand-written log would have to
re-invent all of that. One commit carries every append that arrived while the previous
commit was being fsynced (group commit), so the cost of an fsync is shared by many
requests.

One file set per ingress process: ``ingress-<slot>.sqlite3`` (plus its ``-wal``/``-shm``).
A process claims the lowest free slot by taking an exclusive ``flock`` on
``ingress-<slot>.lock``; the kernel drops the lock when the process dies, however it dies,
so a restarted process reclaims its slot (and whatever the dead one spooled), and a spool
whose process never comes back is found unlocked and adopted by a live one
(:mod:`pipeline.ingress.forwarder`).

All SQLite calls run on one thread owned by the spool; the event loop only waits on futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.errors import KafkaUnavailable

log = logging.getLogger(__name__)

MAX_SLOTS = 1024
HeaderList = list[tuple[str, bytes]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    size INTEGER NOT NULL
)
"""


class SpoolFull(KafkaUnavailable):
    """Kafka cannot take the record and the spool is past its size or age bound: 503."""


class SpoolUnavailable(KafkaUnavailable):
    """The spool's disk failed (full, read-only, I/O error): the record is not durable."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: HeaderList
    spooled_at: float  # time.time()
    size: int


def record_size(key: bytes, value: bytes, headers: HeaderList) -> int:
    """What a record costs against the byte bound (the row's payload, not SQLite's pages)."""
    return len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)


def _encode_headers(headers: HeaderList) -> bytes:
    # latin-1 maps every byte to one code point, so bytes survive the JSON round trip.
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _decode_headers(raw: bytes) -> HeaderList:
    return [(k, v.encode("latin-1")) for k, v in orjson.loads(raw)]


def spool_path(directory: Path, slot: int) -> Path:
    return directory / f"ingress-{slot}.sqlite3"


class SlotLock:
    """An exclusive ``flock`` on ``ingress-<slot>.lock``; released by ``release`` or death."""

    def __init__(self, directory: Path, slot: int, fd: int) -> None:
        self.directory = directory
        self.slot = slot
        self._fd: int | None = fd

    @classmethod
    def try_take(cls, directory: Path, slot: int) -> SlotLock | None:
        fd = os.open(directory / f"ingress-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(directory, slot, fd)

    @property
    def path(self) -> Path:
        return spool_path(self.directory, self.slot)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def claim_slot(directory: Path) -> SlotLock:
    """The lowest slot no live process holds (a restarted process gets its old one back)."""
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        lock = SlotLock.try_take(directory, slot)
        if lock is not None:
            return lock
    raise SpoolUnavailable(f"all {MAX_SLOTS} spool slots in {directory} are taken")


def orphan_slots(directory: Path, own: int) -> list[SlotLock]:
    """Locks on spool files whose process is gone (non-blocking; the caller releases them)."""
    found = []
    for path in sorted(directory.glob("ingress-*.sqlite3")):
        raw = path.name.removeprefix("ingress-").removesuffix(".sqlite3")
        if not raw.isdigit() or int(raw) == own:
            continue
        lock = SlotLock.try_take(directory, int(raw))
        if lock is not None:
            found.append(lock)
    return found


class SpoolFile:
    """The SQLite file of one slot. Synchronous: only ever called from the spool's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self._db = self._open(path)
        if created:
            _fsync_dir(path.parent)  # the new file's directory entry must survive a crash too

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            return self._connect(path)
        except sqlite3.DatabaseError as exc:
            # Not a torn write (SQLite recovers those): the file itself is damaged. Keep it
            # for a human (docs/runbook.md) and start an empty spool rather than refuse work.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("spool %s is damaged (%s); moved aside to %s", path, exc, aside.name)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            return self._connect(path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            db.execute("PRAGMA journal_size_limit=67108864")
            db.execute(_SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def insert_many(self, rows: list[tuple[str, bytes, bytes, bytes, float, int]]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (topic, key, value, headers, spooled_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def head(self, limit: int, after: int = 0) -> list[SpooledRecord]:
        rows = self._db.execute(
            "SELECT seq, topic, key, value, headers, spooled_at, size FROM records "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            SpooledRecord(seq, topic, key, value, _decode_headers(headers), at, size)
            for seq, topic, key, value, headers, at, size in rows
        ]

    def delete(self, seqs: list[int]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s in seqs])

    def stats(self) -> tuple[int, int, float | None]:
        """(records, bytes, spooled_at of the oldest)."""
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM records"
        ).fetchone()
        oldest = self._db.execute("SELECT spooled_at FROM records ORDER BY seq LIMIT 1").fetchone()
        return int(count), int(size), (None if oldest is None else float(oldest[0]))

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self):  # type: ignore[no-untyped-def]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")  # returns after the WAL is fsynced (synchronous=FULL)


def remove_spool_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_Row = tuple[str, bytes, bytes, bytes, float, int]


class Spool:
    """The async face of one slot's spool: bounded, group-committed appends; ordered reads."""

    def __init__(self, lock: SlotLock, *, max_bytes: int, max_age_s: float) -> None:
        self.lock = lock
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{lock.slot}")
        self._file: SpoolFile | None = None
        self._pending: list[tuple[_Row, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._nonempty = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.count = 0
        self.bytes = 0
        self._oldest: float | None = None
        self.commits = 0  # fsynced transactions of appends (tests compare it with appends)
        self.appended = 0

    @classmethod
    def claim(cls, directory: Path, *, max_bytes: int, max_age_s: float) -> Spool:
        return cls(claim_slot(directory), max_bytes=max_bytes, max_age_s=max_age_s)

    @property
    def slot(self) -> int:
        return self.lock.slot

    @property
    def depth(self) -> int:
        """Records spooled or being spooled: nonzero means new records queue behind them."""
        return self.count + len(self._pending)

    def oldest_age_s(self) -> float:
        return 0.0 if self._oldest is None else max(0.0, time.time() - self._oldest)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._file = await loop.run_in_executor(self._thread, SpoolFile, self.lock.path)
        self.count, self.bytes, self._oldest = await self._run(self._file.stats)
        if self.count:
            self._nonempty.set()
            log.warning(
                "spool slot %d holds %d records from before this start; forwarding them",
                self.slot, self.count,
            )  # fmt: skip
        self._committer = asyncio.create_task(self._commit_loop(), name=f"spool-{self.slot}")

    async def close(self, *, keep_lock: bool = False) -> None:
        """Commit what is pending, then close the file and (unless told not to) the slot."""
        if self._committer is not None:
            while self._pending:
                self._wake.set()
                await asyncio.sleep(0.01)
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        if self._file is not None:
            await self._run(self._file.close)
            self._file = None
        self._thread.shutdown(wait=True)
        if not keep_lock:
            self.lock.release()

    def refusal(self, size: int) -> str | None:
        """Why a record of ``size`` bytes may not be spooled now, or None."""
        if self.bytes + self._pending_bytes + size > self.max_bytes:
            return (
                f"the spool holds {self.bytes + self._pending_bytes} bytes (limit {self.max_bytes})"
            )
        if self._oldest is not None and time.time() - self._oldest > self.max_age_s:
            return f"the oldest spooled record is older than {self.max_age_s:g}s"
        return None

    async def append(self, topic: str, key: bytes, value: bytes, headers: HeaderList) -> None:
        """Return once the record is fsynced; raise SpoolFull past the bound."""
        size = record_size(key, value, headers)
        reason = self.refusal(size)
        if reason is not None:
            raise SpoolFull(f"Kafka is unavailable and {reason}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        row: _Row = (topic, key, value, _encode_headers(headers), time.time(), size)
        self._pending.append((row, future))
        self._pending_bytes += size
        self._wake.set()
        await future

    async def head(self, limit: int, after: int = 0) -> list[SpooledRecord]:
        assert self._file is not None
        records: list[SpooledRecord] = await self._run(self._file.head, limit, after)
        return records

    async def delete(self, records: list[SpooledRecord]) -> None:
        """Forget records Kafka acknowledged."""
        if not records:
            return
        assert self._file is not None
        await self._run(self._file.delete, [r.seq for r in records])
        self.count -= len(records)
        self.bytes -= sum(r.size for r in records)
        if self.count <= 0:
            self.count, self.bytes, self._oldest = 0, 0, None
            if not self._pending:
                self._nonempty.clear()
        else:
            self._oldest = (await self._run(self._file.stats))[2]

    async def wait_nonempty(self) -> None:
        await self._nonempty.wait()

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _commit_loop(self) -> None:
        """Group commit: everything that queued during one fsync goes into the next one."""
        assert self._file is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            batch, self._pending = self._pending, []
            size = sum(row[5] for row, _ in batch)
            self._pending_bytes -= size
            try:
                await self._run(self._file.insert_many, [row for row, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
                log.error("spool write failed: %s", exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(SpoolUnavailable(f"spool write failed: {exc}"))
                continue
            if self.count == 0:
                self._oldest = batch[0][0][4]
            self.count += len(batch)
            self.bytes += size
            self.commits += 1
            self.appended += len(batch)
            self._nonempty.set()
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
