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
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import faust

from pipeline import topics
from pipeline.dashboard.aggregates import (
    DAY,
    HOUR,
    BucketKey,
    day_start,
    derived,
    hour_start,
)
from pipeline.dashboard.counters import Counters
from pipeline.dashboard.snapshots import entry_key, table_counters, table_key
from pipeline.models import COUNTERS
from pipeline.settings import Settings

TABLE_NAME = topics.TABLES[0]  # its changelog is created by `switchboard topics`
MAX_SERIES_BUCKETS = {HOUR: 24 * 14, DAY: 400}

Lookup = Callable[[str], dict[str, Any] | None]


class RawKeyTable(faust.Table[str, Any]):
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


def _counters(value: dict[str, Any] | None) -> Counters:
    return table_counters(value)


def _sum(values: list[dict[str, Any] | None]) -> Counters:
    total = Counters.zero()
    for value in values:
        total += table_counters(value)
    return total


def _render(counters: Counters) -> dict[str, Any]:
    out: dict[str, Any] = dict(counters.rendered())
    out.update(derived(counters))
    return out


def summary_keys(company_id: int, timezone: str | None, now: datetime) -> list[BucketKey]:
    """The buckets a summary reads: the current hour, then today and the 29 days before it."""
    keys = [BucketKey(company_id, HOUR, hour_start(now))]
    day = day_start(now, timezone)
    for _ in range(30):
        keys.append(BucketKey(company_id, DAY, day))
        # Noon of the previous local day is always inside it, whatever DST does.
        day = day_start(day - timedelta(hours=12), timezone)
    return keys


def summary(
    company_id: int, timezone: str | None, now: datetime, lookup: Lookup, *, always: bool = False
) -> dict[str, Any] | None:
    """docs/analyst.md summary; None when the company has no bucket at all in the last 30
    days (unless ``always``: then windows of zeros)."""
    keys = summary_keys(company_id, timezone, now)
    hour = lookup(table_key(keys[0]))
    days = [lookup(table_key(key)) for key in keys[1:]]
    if hour is None and not any(days) and not always:
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
    company_id: int,
    granularity: str,
    starts: list[datetime],
    lookup: Lookup,
    *,
    versions: bool = True,
) -> list[dict[str, Any]]:
    """One entry per bucket start; ``versions=False`` for breakdown groups (no row version)."""
    buckets = []
    for start in starts:
        value = lookup(table_key(BucketKey(company_id, granularity, start)))
        entry: dict[str, Any] = {"start": start.isoformat(timespec="seconds") + "Z"}
        entry.update(_render(_counters(value)))
        if versions:
            entry["version"] = int(value["v"]) if value else 0
        buckets.append(entry)
    return buckets


def group_lookups(lookup: Lookup, keys: list[BucketKey], dimension: str) -> dict[str, Lookup]:
    """Per group of ``dimension``, a lookup of its buckets by the company's table keys:
    the same pure read functions then serve a branch or an agent like the company."""
    per_group: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry = lookup(entry_key(key, dimension))
        for group, value in (entry or {}).get("g", {}).items():
            per_group.setdefault(group, {})[table_key(key)] = value
    return {group: values.get for group, values in per_group.items()}


def stored(counters: dict[BucketKey, dict[str, Any]]) -> Lookup:
    """A lookup over counters computed elsewhere (a breakdown group's recount): the same
    pure read functions then serve them."""
    values = {table_key(k): {"v": 0, "c": c} for k, c in counters.items()}
    return values.get


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


CSV_DERIVED = ("avg_duration_s", "booking_conversion")


def local_label(start_z: str, granularity: str, timezone: str | None) -> str:
    """A bucket's start in the company's local time: the date of a day bucket
    (``2026-11-27``), the local hour with its offset for an hour bucket."""
    at = datetime.fromisoformat(start_z.replace("Z", "+00:00")).astimezone(_zone(timezone))
    if granularity == DAY:
        return at.date().isoformat()
    return at.isoformat(timespec="minutes")


def series_csv(body: dict[str, Any], timezone: str | None) -> bytes:
    """A series answer as CSV: a header row, then one row per bucket (with ``group_by``: one
    row per bucket and group, the groups adding up to the company). Numbers as numbers."""
    import csv
    import io

    granularity = body["granularity"]
    grouped = "groups" in body
    names = [*COUNTERS, *CSV_DERIVED]
    header = ["bucket_start_utc", "local_date" if granularity == DAY else "local_start"]
    if grouped:
        header += [body["group_by"] + "_id", body["group_by"] + "_name"]
    header += names
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    parts = (
        [(g["id"], g["name"], g["buckets"]) for g in body["groups"]]
        if grouped
        else [(None, None, body["buckets"])]
    )
    for index in range(len(body["buckets"])):
        for group_id, group_name, buckets in parts:
            bucket = buckets[index]
            row: list[Any] = [bucket["start"], local_label(bucket["start"], granularity, timezone)]
            if grouped:
                row += [group_id, group_name]
            row += ["" if bucket.get(n) is None else bucket[n] for n in names]
            writer.writerow(row)
    return out.getvalue().encode()
