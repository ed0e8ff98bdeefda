"""The two bucket tables as one: ``dashboard_buckets`` (a company's counters) and
``dashboard_group_buckets`` (the same per branch and per agent), read and written by
:class:`BucketKey`, so the apply transaction, ``reconcile`` and the analyst API's MySQL
fallback treat a breakdown group exactly like the company total: same statement shapes,
same transaction, same versions, same snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, select

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.dashboard.counters import Counters, Number
from pipeline.database import insert_many, sql_datetime, text_rows
from pipeline.models import (
    COUNTERS,
    DECIMAL_COUNTERS,
    dashboard_buckets,
    dashboard_group_buckets,
)


def table_of(key: BucketKey) -> Table:
    return table_of_kind(key.grouped)


def table_of_kind(grouped: bool) -> Table:
    return dashboard_group_buckets if grouped else dashboard_buckets


def key_of(row: Any) -> BucketKey:
    return BucketKey(
        int(row["company_id"]),
        row["granularity"],
        row["bucket_start"],
        row.get("dimension") or "",
        row.get("group_key") or "",
    )


def _split(keys: Iterable[BucketKey]) -> tuple[list[BucketKey], list[BucketKey]]:
    ordered = sorted(keys)
    return [k for k in ordered if not k.grouped], [k for k in ordered if k.grouped]


def add(conn: Connection, contribution: Contribution, now: datetime) -> list[BucketSnapshot]:
    """Add counter deltas (company rows first, then groups, each in key order: concurrent
    batches lock in the same order and cannot deadlock), bump versions, read back the rows.

    One statement per table, of plain tuples (:func:`pipeline.database.insert_many`): building,
    caching and binding a SQLAlchemy statement for a few hundred rows of 25 values cost more
    than the statement itself (the first apply's profile: 16% of the engine's time here)."""
    _upsert(conn, contribution, now, additive=True)
    return read(conn, contribution)


def overwrite(
    conn: Connection, plan: Mapping[BucketKey, Mapping[str, Number]], now: datetime
) -> None:
    """Absolute values (``reconcile --fix``): insert missing rows at version 1, overwrite
    others with version + 1."""
    _upsert(conn, plan, now, additive=False)


def _upsert(
    conn: Connection,
    values: Mapping[BucketKey, Mapping[str, Number]],
    now: datetime,
    *,
    additive: bool,
) -> None:
    """Write ``values`` per bucket, in key order: added to the stored counters (deltas) or
    in their place (absolute values); a new row starts at version 1, a stored one gets
    version + 1. A counter absent from a bucket's values is 0."""
    stamp = sql_datetime(now)
    for part in _split(values):
        if not part:
            continue
        rows = []
        for key in part:
            counters = values[key]
            rows.append((*_identity_values(key), *[counters.get(n, 0) for n in COUNTERS], 1, stamp))
        grouped = part[0].grouped
        columns = _upsert_columns(grouped)
        insert_many(conn, table_of_kind(grouped).name, columns, rows, _upsert_updates(additive))


def _identity_values(key: BucketKey) -> tuple[Any, ...]:
    """The key's primary-key columns (:func:`_identity_columns`) for many-row statements:
    ``bucket_start`` already as text (:func:`~pipeline.database.sql_datetime`, the same
    bytes on the wire)."""
    start = sql_datetime(key.bucket_start)
    if key.grouped:
        return (key.company_id, key.dimension, key.group, key.granularity, start)
    return (key.company_id, key.granularity, start)


def _identity_columns(grouped: bool) -> tuple[str, ...]:
    if grouped:
        return ("company_id", "dimension", "group_key", "granularity", "bucket_start")
    return ("company_id", "granularity", "bucket_start")


def _upsert_columns(grouped: bool) -> tuple[str, ...]:
    return (*_identity_columns(grouped), *COUNTERS, "version", "updated_at")


@lru_cache(maxsize=2)
def _upsert_updates(additive: bool = True) -> tuple[str, ...]:
    """``ON DUPLICATE KEY UPDATE c = c + VALUES(c), ..., version = version + 1`` for a
    bucket table (``c = VALUES(c)`` when not ``additive``): a new row starts at version 1
    with the values, an existing one adds them (or takes them). One multi-row INSERT per
    batch (:func:`pipeline.database.insert_many`)."""
    new = "{name} + VALUES({name})" if additive else "VALUES({name})"
    counters = [f"{name} = " + new.format(name=name) for name in COUNTERS]
    return (*counters, "version = version + 1", "updated_at = VALUES(updated_at)")


def read(conn: Connection, keys: Iterable[BucketKey]) -> list[BucketSnapshot]:
    """The stored rows of ``keys`` as snapshots (absent rows are absent), read by exact
    key (a row-constructor ``IN``), never the cross product of their parts. This runs for
    every batch, on hundreds of keys of 20-odd columns: the rows come as one text
    (:func:`pipeline.database.text_rows`) that is split and converted here, where pymysql
    would decode every column in Python."""
    out = []
    for part in _split(set(keys)):
        if not part:
            continue
        grouped = part[0].grouped
        identity = _identity_columns(grouped)
        wanted = [value for key in part for value in _identity_values(key)]
        row_marks = "(" + ", ".join(["%s"] * len(identity)) + ")"
        tail = (
            f"FROM {table_of_kind(grouped).name}"
            f" WHERE ({', '.join(identity)}) IN ({', '.join([row_marks] * len(part))})"
        )
        columns = (*identity, *COUNTERS, "version")
        width = len(identity)
        for row in text_rows(conn, columns, tail, tuple(wanted)):
            key = _key(row[:width], grouped)
            counters = Counters.of_values(
                [kind(v) for kind, v in zip(_KINDS, row[width:-1], strict=True)]
            )
            out.append(BucketSnapshot(key, counters, int(row[-1])))
    return out


#: Each counter's type, for its text (a fallback read of ``text_rows`` gives them typed).
_KINDS = tuple(Decimal if name in DECIMAL_COUNTERS else int for name in COUNTERS)


def _key(identity: Sequence[Any], grouped: bool) -> BucketKey:
    if grouped:
        company_id, dimension, group, granularity, bucket_start = identity
    else:
        company_id, granularity, bucket_start = identity
        dimension = group = ""
    if not isinstance(bucket_start, datetime):
        bucket_start = datetime.fromisoformat(bucket_start)
    return BucketKey(int(company_id), granularity, bucket_start, dimension, group)


def read_entries(
    conn: Connection, company_id: int, dimension: str, keys: Iterable[BucketKey]
) -> list[BucketSnapshot]:
    """Every group of ``dimension`` stored for the company buckets ``keys``."""
    starts = {(k.granularity, k.bucket_start) for k in keys}
    if not starts:
        return []
    t = dashboard_group_buckets
    query = select(t).where(
        t.c.company_id == company_id,
        t.c.dimension == dimension,
        t.c.granularity.in_(sorted({g for g, _ in starts})),
        t.c.bucket_start.in_(sorted({s for _, s in starts})),
    )
    out = []
    for row in conn.execute(query).mappings():
        key = key_of(row)
        if (key.granularity, key.bucket_start) in starts:
            out.append(BucketSnapshot(key, Counters(row), int(row["version"])))
    return out
