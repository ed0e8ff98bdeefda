"""The dashboard table and the analyst read model over it.

The table maps ``"<company>|<granularity>|<bucket start>"`` to ``{"v": version, "c":
counters}`` and is fed only by the snapshot topic, which is keyed by company id: every
bucket of a company lives in one partition, so the worker that owns that partition can
answer any question about the company with key lookups (24 hour buckets, or 30 day
buckets), never a scan. The read functions here are pure: they take a ``lookup`` callable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import faust

from pipeline.dashboard.aggregates import (
    DAY,
    HOUR,
    BucketKey,
    day_start,
    derived,
    empty_counters,
    hour_start,
)
from pipeline.dashboard.snapshots import table_key
from pipeline.models import COUNTERS, DECIMAL_COUNTERS
from pipeline.settings import Settings

TABLE_NAME = "dashboard"
MAX_SERIES_BUCKETS = {HOUR: 24 * 14, DAY: 400}

Lookup = Callable[[str], dict[str, Any] | None]


class RawKeyTable(faust.Table):
    """A table whose ``str`` keys are serialized raw (UTF-8), in its store and changelog.

    faust.Table serializes every key type but ``bytes`` as JSON (``b'"2"'``), and
    ``table_route`` hashes the route key (the company id, ``"2"``) with the changelog's
    serializer; the snapshot topic that fills the table is keyed ``b"2"``. With JSON keys
    the two hash to different partitions, so the API would route a company to a worker
    that does not hold it (tests/unit/test_dashboard_routing.py).
    """

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is str else super()._serializer_from_type(typ)


def define_table(app: faust.App, settings: Settings) -> Any:
    table = RawKeyTable(
        app,
        name=TABLE_NAME,
        default=None,
        key_type=str,  # values stay JSON
        partitions=settings.topic_partitions,
        help="Dashboard buckets: latest snapshot (highest version) per company bucket.",
        beacon=app.tables.beacon,
    )
    return app.tables.add(table)


def _counters(value: dict[str, Any] | None) -> dict[str, Any]:
    counters: dict[str, Any] = empty_counters()
    if value:
        for name in COUNTERS:
            raw = value["c"].get(name, 0)
            counters[name] = Decimal(str(raw)) if name in DECIMAL_COUNTERS else int(raw)
    return counters


def _sum(values: list[dict[str, Any] | None]) -> dict[str, Any]:
    total = empty_counters()
    for value in values:
        for name, amount in _counters(value).items():
            total[name] += amount
    return total


def _render(counters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        n: float(v) if isinstance(v, Decimal) else v for n, v in counters.items()
    }
    out.update(derived(counters))
    return out


def summary(
    company_id: int, timezone: str | None, now: datetime, lookup: Lookup
) -> dict[str, Any] | None:
    """docs/analyst.md summary; None when the company has no bucket at all in the last 30 days."""
    hour = lookup(table_key(BucketKey(company_id, HOUR, hour_start(now))))
    day = day_start(now, timezone)
    days = []
    for _ in range(30):
        days.append(lookup(table_key(BucketKey(company_id, DAY, day))))
        # Noon of the previous local day is always inside it, whatever DST does.
        day = day_start(day - timedelta(hours=12), timezone)
    if hour is None and not any(days):
        return None
    return {
        "company_id": str(company_id),
        "as_of": now.isoformat(timespec="seconds") + "Z",
        "windows": {
            "last_hour": _render(_counters(hour)),
            "today": _render(_counters(days[0])),
            "last_7_days": _render(_sum(days[:7])),
            "last_30_days": _render(_sum(days)),
        },
    }


def bucket_starts(
    granularity: str, start: datetime, end: datetime, timezone: str | None
) -> list[datetime]:
    """Bucket starts covering ``[start, end)``, at most MAX_SERIES_BUCKETS."""
    out: list[datetime] = []
    if granularity == HOUR:
        at = hour_start(start)
        while at < end and len(out) < MAX_SERIES_BUCKETS[HOUR]:
            out.append(at)
            at += timedelta(hours=1)
        return out
    at = day_start(start, timezone)
    while at < end and len(out) < MAX_SERIES_BUCKETS[DAY]:
        out.append(at)
        at = day_start(at + timedelta(hours=36), timezone)  # next local midnight, DST-safe
    return out


def series(
    company_id: int, granularity: str, starts: list[datetime], lookup: Lookup
) -> list[dict[str, Any]]:
    buckets = []
    for start in starts:
        value = lookup(table_key(BucketKey(company_id, granularity, start)))
        entry: dict[str, Any] = {"start": start.isoformat(timespec="seconds") + "Z"}
        entry.update(_render(_counters(value)))
        entry["version"] = int(value["v"]) if value else 0
        buckets.append(entry)
    return buckets
