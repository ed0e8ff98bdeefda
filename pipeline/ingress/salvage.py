"""Salvage a damaged spool file: read back every record SQLite can still read.

An ingress that finds its spool file damaged (not a torn last write, which SQLite repairs
by itself) moves it aside as ``ingress-<slot>.sqlite3.corrupt-<time>`` and starts an empty
spool (:class:`pipeline.ingress.spool.SpoolFile`). The records in it were acknowledged to
the providers (a 202), so they must reach Kafka: ``switchboard spool salvage FILE`` reads
them with this module and sends them, with their topic, key and headers, as the forwarder
would have. Records that were forwarded before the damage are sent again; the workers
deduplicate them like any provider retry.

How it reads: on a copy of the file and its WAL (the evidence is never written to), first
in ``seq`` order in pages of rows; when a page fails, row by row up to the highest
``seq`` any index or ``sqlite_sequence`` still knows, skipping (and counting) the rows
that cannot be read. A row whose headers do not decode is counted as unreadable too:
without its headers a worker could not deduplicate or attribute it.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import SwitchboardError
from pipeline.ingress.spool import SpooledRecord, _decode_headers

PAGE = 200
_COLUMNS = "seq, topic, key, value, headers, spooled_at, size"


@dataclass
class Salvage:
    path: str
    records: list[SpooledRecord] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)  # seq numbers that failed
    damaged: str | None = None  # the first error met, for the report

    def by_topic(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for record in self.records:
            found[record.topic] = found.get(record.topic, 0) + 1
        return found


def read(path: Path) -> Salvage:
    """Every readable record of the spool file at ``path`` (and its ``-wal``), in order."""
    if not path.is_file():
        raise SwitchboardError(f"{path}: no such spool file")
    report = Salvage(path=str(path))
    with _copy(path) as copy:
        try:
            db = sqlite3.connect(copy, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise SwitchboardError(f"{path}: SQLite cannot open it at all ({exc})") from exc
        try:
            last = _in_pages(db, report)
            if report.damaged is not None:
                _row_by_row(db, report, last)
        finally:
            db.close()
    if report.damaged is not None and not report.records and not report.unreadable:
        raise SwitchboardError(f"{path}: nothing readable ({report.damaged})")
    return report


@contextlib.contextmanager
def _copy(path: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="spool-salvage-") as directory:
        copy = Path(directory) / "spool.sqlite3"
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + "-wal")
        if wal.is_file():
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        yield copy


def _in_pages(db: sqlite3.Connection, report: Salvage) -> int:
    """Read in ``seq`` order until the end or the first failure; the last good ``seq``."""
    last = 0
    while True:
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, PAGE),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            report.damaged = f"{exc.__class__.__name__}: {exc}"
            return last
        if not rows:
            return last
        for row in rows:
            _take(report, row)
        last = int(rows[-1][0])


def _row_by_row(db: sqlite3.Connection, report: Salvage, last: int) -> None:
    high = _highest_seq(db)
    for seq in range(last + 1, high + 1):
        try:
            row = db.execute(f"SELECT {_COLUMNS} FROM records WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            report.unreadable.append(seq)
            continue
        if row is not None:
            _take(report, row)


def _highest_seq(db: sqlite3.Connection) -> int:
    """The highest ``seq`` the file still knows: the table's own maximum, else the
    AUTOINCREMENT counter, else 0."""
    for query in (
        "SELECT max(seq) FROM records",
        "SELECT seq FROM sqlite_sequence WHERE name = 'records'",
    ):
        try:
            row = db.execute(query).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and row[0] is not None:
            return int(row[0])
    return 0


def _take(report: Salvage, row: tuple[object, ...]) -> None:
    seq, topic, key, value, headers, spooled_at, size = row
    number = seq if isinstance(seq, int) else -1
    if not (
        isinstance(seq, int)
        and isinstance(topic, str)
        and isinstance(key, bytes)
        and isinstance(value, bytes)
        and isinstance(headers, bytes)
        and isinstance(spooled_at, int | float)
        and isinstance(size, int)
    ):
        report.unreadable.append(number)
        return
    try:
        decoded = _decode_headers(headers)
    except (ValueError, TypeError, AttributeError):
        report.unreadable.append(number)
        return
    report.records.append(SpooledRecord(seq, topic, key, value, decoded, float(spooled_at), size))
