"""The bucket-snapshot wire format, and nothing else encodes or decodes it: what the apply
path and ``reconcile --fix`` publish, and what the dashboard table keeps (the highest
version per bucket wins).

Keyed by the company id as decimal bytes, so every snapshot of a company lands on one
partition, the partition of the table's changelog that the analyst API routes to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.counters import Counters

EXPIRE = "expire"


def company_key(company_id: int) -> bytes:
    return str(company_id).encode()


def table_key(key: BucketKey) -> str:
    """``"<company>|<granularity>|<bucket start ISO>"``: the dashboard table's key."""
    return f"{key.company_id}|{key.granularity}|{key.bucket_start.isoformat(timespec='seconds')}"


def parse_table_key(raw: str) -> BucketKey:
    company, granularity, start = raw.split("|", 2)
    return BucketKey(int(company), granularity, datetime.fromisoformat(start))


#: The snapshot message format. Version 1 added the ``format`` field; messages without it
#: (written before) have the same fields. A newer format is refused, never half-read.
FORMAT = 1


class SnapshotFormatError(ValueError):
    """A snapshot message this code cannot read (malformed, or a newer format)."""


def encode(snapshot: BucketSnapshot, *, force: bool = False) -> bytes:
    """``force`` (reconcile --fix after a database restore) replaces whatever is stored,
    even a higher version: the restored database is the truth from then on."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "force": force,
            "company_id": snapshot.key.company_id,
            "granularity": snapshot.key.granularity,
            "bucket_start": snapshot.key.bucket_start.isoformat(timespec="seconds"),
            "version": snapshot.version,
            "counters": snapshot.counters.to_json(),
        }
    )


def decode(raw: bytes | dict[str, Any]) -> tuple[BucketSnapshot, bool]:
    """The snapshot and its ``force`` flag; :class:`SnapshotFormatError` if unreadable."""
    try:
        data = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
        if int(data.get("format", 0)) > FORMAT:
            raise SnapshotFormatError(f"snapshot format {data['format']} is newer than {FORMAT}")
        key = BucketKey(
            int(data["company_id"]),
            str(data["granularity"]),
            datetime.fromisoformat(data["bucket_start"]),
        )
        snapshot = BucketSnapshot(key, Counters(data["counters"]), int(data["version"]))
    except SnapshotFormatError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SnapshotFormatError(f"malformed snapshot: {exc.__class__.__name__}") from exc
    return snapshot, bool(data.get("force"))


def table_value(snapshot: BucketSnapshot) -> dict[str, Any]:
    """What the table stores: JSON-safe counters and the version."""
    return {"v": snapshot.version, "c": snapshot.counters.to_json()}


def table_counters(value: dict[str, Any] | None) -> Counters:
    """The counters of a table value (zeros for a bucket the table does not hold)."""
    return Counters(value["c"] if value else None)


def newer(stored: dict[str, Any] | None, incoming: BucketSnapshot, force: bool = False) -> bool:
    """Keep the highest version: order and duplicates of snapshots do not matter."""
    return force or stored is None or int(stored.get("v", -1)) < incoming.version


def is_tombstone(snapshot: BucketSnapshot, force: bool) -> bool:
    """A forced version-0 snapshot: ``reconcile --fix`` saying MySQL has no row for this
    bucket, so the table must drop whatever it holds for it (a restored database, say).
    The apply path never sends version 0: its rows start at version 1."""
    return force and snapshot.version == 0


def expire_message(before: datetime) -> bytes:
    return orjson.dumps({EXPIRE: before.isoformat(timespec="seconds")})
