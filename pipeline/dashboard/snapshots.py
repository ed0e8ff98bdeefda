"""The bucket-snapshot wire format: what the apply path publishes after each commit and the
dashboard table keeps (the highest version per bucket wins).

Keyed by the company id as decimal bytes, so every snapshot of a company lands on one
partition, the partition of the table's changelog that the analyst API routes to.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.models import COUNTERS, DECIMAL_COUNTERS

EXPIRE = "expire"


def company_key(company_id: int) -> bytes:
    return str(company_id).encode()


def table_key(key: BucketKey) -> str:
    """``"<company>|<granularity>|<bucket start ISO>"``: the dashboard table's key."""
    return f"{key.company_id}|{key.granularity}|{key.bucket_start.isoformat(timespec='seconds')}"


def parse_table_key(raw: str) -> BucketKey:
    company, granularity, start = raw.split("|", 2)
    return BucketKey(int(company), granularity, datetime.fromisoformat(start))


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def encode(snapshot: BucketSnapshot, *, force: bool = False) -> bytes:
    """``force`` (reconcile --fix after a database restore) replaces whatever is stored,
    even a higher version: the restored database is the truth from then on."""
    return orjson.dumps(
        {
            "force": force,
            "company_id": snapshot.key.company_id,
            "granularity": snapshot.key.granularity,
            "bucket_start": snapshot.key.bucket_start.isoformat(timespec="seconds"),
            "version": snapshot.version,
            "counters": {name: _plain(snapshot.counters.get(name, 0)) for name in COUNTERS},
        }
    )


def decode(raw: bytes | dict[str, Any]) -> tuple[BucketSnapshot, bool]:
    """The snapshot and its ``force`` flag."""
    data = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    counters = {
        name: Decimal(str(data["counters"].get(name, 0)))
        if name in DECIMAL_COUNTERS
        else int(data["counters"].get(name, 0))
        for name in COUNTERS
    }
    key = BucketKey(
        int(data["company_id"]), data["granularity"], datetime.fromisoformat(data["bucket_start"])
    )
    return BucketSnapshot(key, counters, int(data["version"])), bool(data.get("force"))


def table_value(snapshot: BucketSnapshot) -> dict[str, Any]:
    """What the table stores: JSON-safe counters and the version."""
    return {
        "v": snapshot.version,
        "c": {n: _plain(snapshot.counters.get(n, 0)) for n in COUNTERS},
    }


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
