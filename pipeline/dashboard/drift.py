"""The pure half of ``switchboard reconcile``: which buckets are in scope, what the rows say
they should hold, and where a stored copy (``dashboard_buckets`` or the Faust table behind
the analyst API) disagrees.

The recount is ``aggregates.call_counters``/``appointment_counters`` summed over rows: the
same functions whose differences the apply path adds, so a correct pipeline shows no drift
by construction and any drift is a real fault (a lost snapshot, a restored database, a
manual edit, a bug).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pipeline.dashboard import aggregates
from pipeline.dashboard.aggregates import (
    DAY,
    HOUR,
    RETENTION,
    BucketKey,
    BucketSnapshot,
    day_start,
    hour_start,
)
from pipeline.dashboard.counters import Counters
from pipeline.dashboard.counters import normalize as normalize  # re-exported for callers
from pipeline.models import COUNTERS

GRANULARITIES = (HOUR, DAY)
# A bucket starting before ``end`` can hold rows up to a (25-hour, DST) day later.
LONGEST_BUCKET = timedelta(hours=25)


def normalized(counters: Mapping[str, Any] | None) -> Counters:
    return Counters(counters)


def is_zero(counters: Mapping[str, Any]) -> bool:
    return Counters(counters).is_zero()


def next_bucket(granularity: str, start: datetime, timezone: str | None) -> datetime:
    if granularity == HOUR:
        return start + timedelta(hours=1)
    return day_start(start + timedelta(hours=36), timezone)  # next local midnight, DST-safe


def align(granularity: str, at: datetime, timezone: str | None) -> datetime:
    """The start of the bucket that contains ``at``."""
    return hour_start(at) if granularity == HOUR else day_start(at, timezone)


@dataclass(frozen=True, slots=True)
class Scope:
    """The buckets a run looks at: granularities, and starts in ``[lower, end)``.

    ``lower`` is the start of the bucket containing ``start`` (so a range selects every
    bucket it overlaps), never earlier than retention: a bucket older than docs/analyst.md's window
    (hour 14 d, day 400 d) has been pruned from MySQL and the table on purpose.
    """

    granularities: tuple[str, ...]
    start: datetime | None  # naive UTC; None: as far back as retention
    end: datetime  # naive UTC, exclusive bound on bucket starts
    now: datetime

    def lower(self, granularity: str, timezone: str | None) -> datetime:
        floor = self.now - RETENTION[granularity]
        if self.start is None:
            return floor
        return max(floor, align(granularity, self.start, timezone))

    def contains(self, key: BucketKey, timezone: str | None) -> bool:
        return (
            key.granularity in self.granularities
            and self.lower(key.granularity, timezone) <= key.bucket_start < self.end
        )

    def bucket_window(self, timezone: str | None) -> tuple[datetime, datetime]:
        """``[lo, hi)`` covering every in-scope bucket start, all granularities."""
        return min(self.lower(g, timezone) for g in self.granularities), self.end

    def row_window(self, timezone: str | None) -> tuple[datetime, datetime]:
        """Rows whose bucket time falls outside this window cannot touch an in-scope bucket."""
        lo, hi = self.bucket_window(timezone)
        return lo, hi + LONGEST_BUCKET

    def bucket_starts(self, granularity: str, timezone: str | None) -> Iterator[datetime]:
        """Every aligned bucket start of ``granularity`` in scope, oldest first."""
        lower = self.lower(granularity, timezone)
        at = align(granularity, lower, timezone)
        if at < lower:
            at = next_bucket(granularity, at, timezone)
        while at < self.end:
            yield at
            at = next_bucket(granularity, at, timezone)


def recount(
    call_rows: Iterable[Mapping[str, Any]],
    appointment_rows: Iterable[Mapping[str, Any]],
    *,
    timezone: str | None,
) -> dict[BucketKey, Counters]:
    """Bucket totals by docs/data-model.md's rules, from rows (streamed: one pass each).

    A call row carries ``ended_applied``/``analyzed_applied``: whether its ``call_ended`` /
    ``call_analyzed`` webhook_events row is ``applied``, and ``booked``: whether an
    appointment of its company with ``booked_at`` names it.
    """

    def parts() -> Iterator[aggregates.Contribution]:
        for row in call_rows:
            yield aggregates.call_counters(
                row,
                ended=bool(row.get("ended_applied")),
                analyzed=bool(row.get("analyzed_applied")),
                timezone=timezone,
                booked=bool(row.get("booked")),
            )
        for row in appointment_rows:
            yield aggregates.appointment_counters(row, timezone=timezone)

    return aggregates.sum_contributions(parts())


NO_GROUP = ""  # calls without a branch or agent; per agent, every booking


def in_scope(
    buckets: Mapping[BucketKey, Mapping[str, Any]], scope: Scope, timezone: str | None
) -> dict[BucketKey, Counters]:
    return {k: normalized(v) for k, v in buckets.items() if scope.contains(k, timezone)}


@dataclass(frozen=True, slots=True)
class Drift:
    """One counter of one bucket that a stored copy gets wrong."""

    source: str  # "mysql" (dashboard_buckets) | "api" (the Faust table)
    key: BucketKey
    counter: str
    expected: int | Decimal
    found: int | Decimal


def diff(
    source: str,
    expected: Mapping[BucketKey, Mapping[str, Any]],
    found: Mapping[BucketKey, Mapping[str, Any]],
) -> list[Drift]:
    """Every counter where ``found`` differs from ``expected``; a missing bucket is zeros."""
    out = []
    for key in sorted(set(expected) | set(found)):
        want, got = normalized(expected.get(key)), normalized(found.get(key))
        for name in COUNTERS:
            if want[name] != got[name]:
                out.append(Drift(source, key, name, want[name], got[name]))
    return out


def plan_fix(
    expected: Mapping[BucketKey, Mapping[str, Any]], stored: Mapping[BucketKey, Mapping[str, Any]]
) -> dict[BucketKey, Counters]:
    """The rows to rewrite and their true counters.

    A drifting row gets the recount; a missing row is inserted; a row the rows say should
    be empty is set to zeros, never deleted: its ``version`` must keep growing, because the
    table keeps the highest version it has seen and a re-inserted row would restart at 1.
    """
    wrong = {d.key for d in diff("mysql", expected, stored)}
    return {key: normalized(expected.get(key)) for key in sorted(wrong)}


def tombstone(key: BucketKey) -> BucketSnapshot:
    """What ``reconcile --fix`` publishes (forced) for a bucket MySQL has no row for: version
    0 and zeros, which the dashboard agent takes as "drop this bucket"."""
    return BucketSnapshot(key, normalized(None), 0)


def api_buckets(
    company_id: int,
    granularity: str,
    body: Mapping[str, Any],
    dimension: str = "",
    group: str = "",
) -> dict[BucketKey, Counters]:
    """Counters of an analyst API series answer (or of one of its groups), keyed like the
    rows (naive UTC starts)."""
    out = {}
    for bucket in body.get("buckets", []):
        start = datetime.fromisoformat(str(bucket["start"]).replace("Z", "+00:00"))
        if start.tzinfo is not None:
            start = start.astimezone(UTC).replace(tzinfo=None)
        out[BucketKey(company_id, granularity, start, dimension, group)] = Counters(bucket)
    return out


def non_zero_keys(*maps: Mapping[BucketKey, Mapping[str, Any]]) -> set[BucketKey]:
    return {k for m in maps for k, v in m.items() if not is_zero(v)}


# --- presentation -----------------------------------------------------------------------


def bucket_label(key: BucketKey) -> str:
    label = f"{key.granularity:4} {key.bucket_start.isoformat(timespec='seconds')}Z"
    return f"{label} {key.dimension} {key.group or '-'}" if key.grouped else label


def drift_lines(drifts: list[Drift], limit: int = 40) -> list[str]:
    """One line per (source, bucket): ``counter expected→found`` for each wrong counter."""
    grouped: dict[tuple[str, BucketKey], list[Drift]] = {}
    for d in drifts:
        grouped.setdefault((d.source, d.key), []).append(d)
    lines = []
    for (source, key), items in list(grouped.items())[:limit]:
        parts = ", ".join(f"{d.counter} {_fmt(d.expected)}→{_fmt(d.found)}" for d in items)
        lines.append(f"  {source:5} {bucket_label(key)}  {parts}")
    if len(grouped) > limit:
        lines.append(f"  ... and {len(grouped) - limit} more drifting buckets")
    return lines


def _fmt(value: int | Decimal) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def drifting_buckets(drifts: list[Drift]) -> int:
    return len({(d.source, d.key) for d in drifts})
