"""The two bucket tables as one: ``dashboard_buckets`` (a company's counters) and
``dashboard_group_buckets`` (the same per branch and per agent), read and written by
:class:`BucketKey`, so the apply transaction, ``reconcile`` and the analyst API's MySQL
fallback treat a breakdown group exactly like the company total: same statement shapes,
same transaction, same versions, same snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, literal_column, select, tuple_
from sqlalchemy.dialects.mysql import insert as mysql_insert

from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.dashboard.counters import Counters, Number
from pipeline.models import COUNTERS, dashboard_buckets, dashboard_group_buckets


def table_of(key: BucketKey) -> Table:
    return dashboard_group_buckets if key.grouped else dashboard_buckets


def _identity(key: BucketKey) -> dict[str, Any]:
    row: dict[str, Any] = {
        "company_id": key.company_id,
        "granularity": key.granularity,
        "bucket_start": key.bucket_start,
    }
    if key.grouped:
        row.update(dimension=key.dimension, group_key=key.group)
    return row


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
    batches lock in the same order and cannot deadlock), bump versions, read back the rows."""
    for part in _split(contribution):
        if not part:
            continue
        table = table_of(part[0])
        rows = [
            {
                **{name: contribution[key].get(name, 0) for name in COUNTERS},
                **_identity(key),
                "version": 1,
                "updated_at": now,
            }
            for key in part
        ]
        statement = mysql_insert(table)
        statement = statement.on_duplicate_key_update(
            {
                **{name: table.c[name] + statement.inserted[name] for name in COUNTERS},
                # A literal, not a bound parameter: pymysql's executemany rewrites the
                # statement into one multi-row INSERT only when the tail has no params.
                "version": literal_column("version + 1"),
                "updated_at": statement.inserted.updated_at,
            }
        )
        conn.execute(statement, rows)
    return read(conn, contribution)


def overwrite(
    conn: Connection, plan: Mapping[BucketKey, Mapping[str, Number]], now: datetime
) -> None:
    """Absolute values (``reconcile --fix``): insert missing rows at version 1, overwrite
    others with version + 1."""
    for part in _split(plan):
        if not part:
            continue
        table = table_of(part[0])
        rows = [
            {
                **{name: plan[key][name] for name in COUNTERS},
                **_identity(key),
                "version": 1,
                "updated_at": now,
            }
            for key in part
        ]
        statement = mysql_insert(table)
        statement = statement.on_duplicate_key_update(
            {
                **{name: statement.inserted[name] for name in COUNTERS},
                "version": literal_column("version + 1"),
                "updated_at": statement.inserted.updated_at,
            }
        )
        conn.execute(statement, rows)


def read(conn: Connection, keys: Iterable[BucketKey]) -> list[BucketSnapshot]:
    """The stored rows of ``keys`` as snapshots (absent rows are absent), read by exact
    key (a row-constructor ``IN``), never the cross product of their parts."""
    out = []
    wanted: list[tuple[Any, ...]]
    for part in _split(set(keys)):
        if not part:
            continue
        table = table_of(part[0])
        if part[0].grouped:
            columns = tuple_(
                table.c.company_id,
                table.c.dimension,
                table.c.group_key,
                table.c.granularity,
                table.c.bucket_start,
            )
            wanted = [
                (k.company_id, k.dimension, k.group, k.granularity, k.bucket_start) for k in part
            ]
        else:
            columns = tuple_(table.c.company_id, table.c.granularity, table.c.bucket_start)
            wanted = [k.as_tuple() for k in part]
        query = select(table).where(columns.in_(wanted))
        for row in conn.execute(query).mappings():
            out.append(BucketSnapshot(key_of(row), Counters.of_row(row), int(row["version"])))
    return out


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
