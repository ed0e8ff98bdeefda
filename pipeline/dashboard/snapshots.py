"""The bucket-snapshot wire format, and nothing else encodes or decodes it: what the apply
path and ``reconcile --fix`` publish, and what the dashboard table keeps (the highest
version per bucket wins).

Keyed by the company id as decimal bytes, so every snapshot of a company lands on one
partition, the partition of the table's changelog that the analyst API routes to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.counters import Counters

EXPIRE = "expire"
RESET = "reset"  # reconcile --fix: forget every group of a breakdown entry


def company_key(company_id: int) -> bytes:
    return str(company_id).encode()


def table_key(key: BucketKey) -> str:
    """``"<company>|<granularity>|<bucket start ISO>"``: the dashboard table's key of a
    company bucket. A breakdown group lives in the entry of its dimension,
    ``"...|<dimension>"`` (:func:`entry_key`), which maps every group to its value: one
    lookup finds all branches (or agents) of a bucket."""
    base = f"{key.company_id}|{key.granularity}|{key.bucket_start.isoformat(timespec='seconds')}"
    return f"{base}|{key.dimension}" if key.grouped else base


def entry_key(key: BucketKey, dimension: str) -> str:
    """The table key holding every ``dimension`` group of the company bucket ``key``."""
    return table_key(BucketKey(key.company_id, key.granularity, key.bucket_start, dimension))


def parse_table_key(raw: str) -> BucketKey:
    """A table key back to its bucket (for an entry key: the dimension, no group)."""
    company, granularity, start, *rest = raw.split("|", 3)
    dimension = rest[0] if rest else ""
    return BucketKey(int(company), granularity, datetime.fromisoformat(start), dimension)


#: The snapshot message format. Version 1 added the ``format`` field; messages without it
#: (written before) have the same fields. Version 2 adds breakdown groups (``dimension``,
#: ``group``) and entry resets; company snapshots are still written as version 1, so a
#: worker that knows only version 1 refuses the group messages instead of taking a
#: branch's counters for the company's. Version 3 is the bundle: every bucket one apply
#: batch touched in one company, in one message (:func:`bundles`). A newer format is
#: refused, never half-read.
FORMAT = 3
COMPANY_FORMAT = 1
GROUP_FORMAT = 2
BUNDLE_FORMAT = 3
#: Buckets per bundle at most: a batch of 500 records touches a few hundred, and a bundle
#: of this many stays far below Kafka's 1 MB message limit (about 400 bytes each).
BUNDLE_MAX = 500


class SnapshotFormatError(ValueError):
    """A snapshot message this code cannot read (malformed, or a newer format)."""


def encode(snapshot: BucketSnapshot, *, force: bool = False) -> bytes:
    """One bucket in one message (``reconcile --fix``). ``force`` (after a database
    restore) replaces whatever is stored, even a higher version: the restored database is
    the truth from then on."""
    return orjson.dumps(
        {
            "format": GROUP_FORMAT if snapshot.key.grouped else COMPANY_FORMAT,
            "force": force,
            "company_id": snapshot.key.company_id,
            **_bucket(snapshot),
        }
    )


def bundles(batch: Iterable[BucketSnapshot]) -> Iterator[tuple[bytes, bytes, int]]:
    """The apply path's snapshots of one batch as ``(key, value, buckets)`` messages: one
    bundle per company (two past :data:`BUNDLE_MAX` buckets), keyed like a snapshot. A
    message per company instead of per bucket: a batch of the traffic simulator's mix
    touches about 185 buckets of at most its 20 companies."""
    by_company: dict[int, list[BucketSnapshot]] = {}
    for snapshot in batch:
        by_company.setdefault(snapshot.key.company_id, []).append(snapshot)
    for company_id, buckets in by_company.items():
        for start in range(0, len(buckets), BUNDLE_MAX):
            chunk = buckets[start : start + BUNDLE_MAX]
            value = {
                "format": BUNDLE_FORMAT,
                "company_id": company_id,
                "buckets": [_bucket(s) for s in chunk],
            }
            yield company_key(company_id), orjson.dumps(value), len(chunk)


def _bucket(snapshot: BucketSnapshot) -> dict[str, Any]:
    fields = {
        "granularity": snapshot.key.granularity,
        "bucket_start": snapshot.key.bucket_start.isoformat(timespec="seconds"),
        "version": snapshot.version,
        "counters": snapshot.counters.to_json(),
    }
    if snapshot.key.grouped:
        fields |= {"dimension": snapshot.key.dimension, "group": snapshot.key.group}
    return fields


def decode(raw: bytes | dict[str, Any]) -> list[tuple[BucketSnapshot, bool]]:
    """Every snapshot a message carries (one, or a bundle's), each with its ``force``
    flag; :class:`SnapshotFormatError` if unreadable."""
    try:
        data = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
        version = int(data.get("format", 0))
        if version > FORMAT:
            raise SnapshotFormatError(f"snapshot format {version} is newer than {FORMAT}")
        if version == BUNDLE_FORMAT:
            company_id = int(data["company_id"])
            return [(_snapshot(company_id, bucket), False) for bucket in data["buckets"]]
        return [(_snapshot(int(data["company_id"]), data), bool(data.get("force")))]
    except SnapshotFormatError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SnapshotFormatError(f"malformed snapshot: {exc.__class__.__name__}") from exc


def _snapshot(company_id: int, data: dict[str, Any]) -> BucketSnapshot:
    key = BucketKey(
        company_id,
        str(data["granularity"]),
        datetime.fromisoformat(data["bucket_start"]),
        str(data.get("dimension") or ""),
        str(data.get("group") or ""),
    )
    return BucketSnapshot(key, Counters(data["counters"]), int(data["version"]))


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


def keep_group(
    entry: dict[str, Any] | None, snapshot: BucketSnapshot, force: bool
) -> dict[str, Any] | None:
    """The new value of a breakdown entry after ``snapshot`` of one of its groups (None:
    unchanged). Per group, the highest version wins, a forced snapshot replaces and a
    forced tombstone drops the group, as for company buckets."""
    groups = dict((entry or {}).get("g", {}))
    group = snapshot.key.group
    if is_tombstone(snapshot, force):
        if group not in groups:
            return None
        del groups[group]
    elif newer(groups.get(group), snapshot, force):
        groups[group] = table_value(snapshot)
    else:
        return None
    return {"g": groups}


def reset_message(key: BucketKey, dimension: str) -> bytes:
    """Forced: drop the whole ``dimension`` entry of the company bucket ``key`` (the groups
    MySQL still has are re-published right after, on the same partition, so in order)."""
    return orjson.dumps(
        {
            "format": GROUP_FORMAT,
            RESET: True,
            "company_id": key.company_id,
            "granularity": key.granularity,
            "bucket_start": key.bucket_start.isoformat(timespec="seconds"),
            "dimension": dimension,
        }
    )


def reset_key(data: dict[str, Any]) -> str:
    key = BucketKey(
        int(data["company_id"]), data["granularity"], datetime.fromisoformat(data["bucket_start"])
    )
    return entry_key(key, str(data["dimension"]))
