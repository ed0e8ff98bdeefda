"""The analyst API's fallback read model: ``dashboard_buckets`` in MySQL.

When the worker's table cannot answer (it is recovering, the group is rebalancing, or the
worker that owns the company is gone), the same buckets are read from MySQL, which is the
reference the table copies (docs/analyst.md, "When the table cannot answer"). The rows are
returned in the table's own shape (``{"v": version, "c": counters}`` under the table key),
so the pure read functions of :mod:`tables.dashboard` serve both sources alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from pipeline.dashboard import buckets
from pipeline.dashboard.aggregates import BucketKey
from pipeline.dashboard.snapshots import table_key
from pipeline.models import COUNTERS, dashboard_buckets


def read_buckets(
    engine: Engine, keys: Iterable[BucketKey], dimension: str | None = None
) -> dict[str, dict[str, Any]]:
    """The stored rows of ``keys`` (one company per call), by table key; absent rows are
    absent. With ``dimension``, also every group of it for those buckets, under the
    entry keys the table uses (``{"g": {group: value}}``)."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    out = _company_rows(engine, wanted)
    if dimension:
        with engine.connect() as conn:
            rows = buckets.read_entries(conn, wanted[0].company_id, dimension, wanted)
        for snapshot in rows:
            entry = out.setdefault(table_key(snapshot.key), {"g": {}})
            entry["g"][snapshot.key.group] = {"v": snapshot.version, "c": snapshot.counters}
    return out


def _company_rows(engine: Engine, wanted: list[BucketKey]) -> dict[str, dict[str, Any]]:
    company = wanted[0].company_id
    per_granularity: dict[str, list[BucketKey]] = {}
    for key in wanted:
        per_granularity.setdefault(key.granularity, []).append(key)
    t = dashboard_buckets
    query = select(t).where(
        t.c.company_id == company,
        or_(
            *[
                and_(
                    t.c.granularity == granularity,
                    t.c.bucket_start.in_([k.bucket_start for k in group]),
                )
                for granularity, group in per_granularity.items()
            ]
        ),
    )
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(query).mappings():
            key = BucketKey(int(row["company_id"]), row["granularity"], row["bucket_start"])
            out[table_key(key)] = {
                "v": int(row["version"]),
                "c": {name: row[name] for name in COUNTERS},
            }
    return out
