"""The dashboard counters of docs/analyst.md as a function of rows.

``call_counters`` and ``appointment_counters`` say what one call or one appointment row
contributes to which buckets. The apply path adds, for each event new to
``webhook_events``, the difference the event made (after − before), and ``reconcile``
sums the same functions over all rows, so the live counters and the recount agree by
construction. Pure functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.dashboard.counters import Counters, Number

HOUR = "hour"
DAY = "day"
RETENTION = {HOUR: timedelta(days=14), DAY: timedelta(days=400)}

Deltas = dict[str, Number]


BRANCH, AGENT = "branch", "agent"
DIMENSIONS = (BRANCH, AGENT)


@dataclass(frozen=True, slots=True, order=True)
class BucketKey:
    """A company's bucket (``dimension`` empty), or one group of a breakdown of it: the
    same counters per branch (``group`` the branch id) or per Retell agent (the agent id).
    The group ``""`` holds what has no branch or agent, so groups add up to the company."""

    company_id: int
    granularity: str
    bucket_start: datetime  # naive UTC
    dimension: str = ""
    group: str = ""

    def as_tuple(self) -> tuple[int, str, datetime]:
        return (self.company_id, self.granularity, self.bucket_start)

    @property
    def grouped(self) -> bool:
        return bool(self.dimension)

    def in_group(self, dimension: str, group: object) -> BucketKey:
        label = "" if group is None else str(group)
        return BucketKey(self.company_id, self.granularity, self.bucket_start, dimension, label)


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    """A bucket's absolute counters at ``version``: what the snapshot topic carries."""

    key: BucketKey
    counters: Counters
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.counters, Counters):  # a plain mapping of counter values
            object.__setattr__(self, "counters", Counters(self.counters))


@lru_cache(maxsize=1024)
def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def hour_start(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def day_start(at: datetime, timezone: str | None) -> datetime:
    """The UTC instant (naive) of the company's local midnight on the local day of ``at``."""
    zone = _zone(timezone)
    local = at.replace(tzinfo=UTC).astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    return midnight.astimezone(UTC).replace(tzinfo=None)


def bucket_keys(company_id: int, at: datetime, timezone: str | None) -> tuple[BucketKey, BucketKey]:
    # Cached by the minute: every UTC offset is whole minutes, so the minute of ``at`` lies
    # in the same hour and the same local day; a call's events all count at one time.
    return _bucket_keys(company_id, at.replace(second=0, microsecond=0), timezone)


@lru_cache(maxsize=65536)
def _bucket_keys(
    company_id: int, minute: datetime, timezone: str | None
) -> tuple[BucketKey, BucketKey]:
    return (
        BucketKey(company_id, HOUR, hour_start(minute)),
        BucketKey(company_id, DAY, day_start(minute, timezone)),
    )


def with_groups(keys: Iterable[BucketKey], branch: object, agent: object) -> list[BucketKey]:
    """The company's keys and the same buckets of the row's branch and agent groups."""
    out = []
    for key in keys:
        out += [key, key.in_group(BRANCH, branch), key.in_group(AGENT, agent)]
    return out


def grouped_keys(
    company_id: int, at: datetime, timezone: str | None, branch: object, agent: object
) -> tuple[BucketKey, ...]:
    """The buckets a row placed at ``at`` counts in: its company's hour and day, and the
    same of its branch and agent groups. Cached: a replay asks for the same few again and
    again, and building the keys was a tenth of its cost."""
    return _grouped_keys(
        company_id,
        at.replace(second=0, microsecond=0),
        timezone,
        None if branch is None else str(branch),
        None if agent is None else str(agent),
    )


@lru_cache(maxsize=65536)
def _grouped_keys(
    company_id: int, minute: datetime, timezone: str | None, branch: str | None, agent: str | None
) -> tuple[BucketKey, ...]:
    return tuple(with_groups(_bucket_keys(company_id, minute, timezone), branch, agent))


Contribution = dict[BucketKey, Deltas]


def _add(out: Contribution, keys: Iterable[BucketKey], deltas: Deltas) -> None:
    for key in keys:
        target = out.get(key)
        if target is None:
            out[key] = dict(deltas)  # the same as adding to zeros, without the additions
            continue
        for name, value in deltas.items():
            target[name] = target.get(name, 0) + value


#: A row of calls or appointments: a typed row of the apply path, or a mapping of column
#: values (reconcile's SQL rows, tests). Read through :func:`_reader`.
RowLike = Mapping[str, Any] | object


def _reader(row: RowLike) -> Callable[[str], Any]:
    get = getattr(row, "get", None)  # a mapping (cheaper to ask than isinstance(Mapping))
    if get is not None:
        return get  # type: ignore[no-any-return]
    return lambda name: getattr(row, name, None)


def call_time(row: RowLike) -> datetime | None:
    """The bucket time of a call: its start, else its end, else its last event."""
    get = _reader(row)
    at: datetime | None = get("started_at") or get("ended_at") or get("last_event_at")
    return at


def call_counters(
    row: RowLike | None,
    ended: bool,
    analyzed: bool,
    *,
    timezone: str | None,
    booked: bool = False,
) -> Contribution:
    """What a call row contributes, given whether its call_ended/call_analyzed were applied
    and whether at least one booking names it (``booked``: an appointment of the same
    company with ``booked_at`` whose ``retell_call_id`` is this call's)."""
    out: Contribution = {}
    if row is None or not (ended or analyzed):
        return out
    get = _reader(row)
    at = call_time(row)
    if at is None or get("company_id") is None:
        return out
    keys = grouped_keys(int(get("company_id")), at, timezone, get("branch_id"), get("agent_id"))
    if ended:
        reason = get("disconnection_reason")
        deltas: Deltas = {"calls_total": 1, **_connection(get, booked)}
        deltas["calls_outbound" if get("direction") == "outbound" else "calls_inbound"] = 1
        if reason == "voicemail_reached":
            deltas["calls_voicemail"] = 1
        if reason == "call_transfer" or get("transfer_destination"):
            deltas["calls_transferred"] = 1
        deltas["duration_ms_total"] = int(get("duration_ms") or 0)
        deltas["cost_cents_total"] = Decimal(get("cost_cents") or 0)
        _add(out, keys, deltas)
    if analyzed and (deltas := _analysis(get)):
        _add(out, keys, deltas)
    return out


def _analysis(get: Callable[[str], Any]) -> Deltas:
    """An analyzed call's counters."""
    deltas: Deltas = {}
    # Truthy, not ``is True``: a row read with plain SQL carries MySQL's 1/0.
    if get("successful"):
        deltas["calls_successful"] = 1
    sentiment = (get("sentiment") or "").lower()
    if sentiment in ("positive", "neutral", "negative"):
        deltas[f"sentiment_{sentiment}"] = 1
    return deltas


def call_buckets(
    row: RowLike | None, ended: bool, analyzed: bool, *, timezone: str | None
) -> tuple[BucketKey, ...]:
    """The buckets :func:`call_counters` has entries in, without computing the counters
    (what a replay of the call's applied events republishes)."""
    if row is None or not (ended or analyzed):
        return ()
    get = _reader(row)
    at = call_time(row)
    if at is None or get("company_id") is None or not (ended or _analysis(get)):
        return ()
    return grouped_keys(int(get("company_id")), at, timezone, get("branch_id"), get("agent_id"))


def _connection(get: Callable[[str], Any], booked: bool) -> Deltas:
    """An ended call's connection counters: connected or not and, for a connected inbound
    call, whether a booking names it (the two halves of booking_conversion)."""
    if get("started_at") is None:
        return {"calls_not_connected": 1}
    if get("direction") == "outbound":
        return {"calls_connected": 1}
    if booked:
        return {"calls_connected": 1, "calls_inbound_connected": 1, "calls_booked": 1}
    return {"calls_connected": 1, "calls_inbound_connected": 1}


APPOINTMENT_MARKS = (
    ("booked_at", "appointments_booked"),
    ("cancelled_at", "appointments_cancelled"),
    ("rescheduled_at", "appointments_rescheduled"),
    ("no_show_at", "appointments_no_show"),
)


def appointment_counters(row: RowLike | None, *, timezone: str | None) -> Contribution:
    """What an appointment row contributes: each lifecycle mark in the bucket of its time."""
    out: Contribution = {}
    for column, counter, keys in _marks(row, timezone):
        deltas: Deltas = {counter: 1}
        if column == "booked_at" and not _reader(row)("retell_call_id"):
            deltas["appointments_without_call"] = 1
        _add(out, keys, deltas)
    return out


def appointment_buckets(row: RowLike | None, *, timezone: str | None) -> set[BucketKey]:
    """The buckets :func:`appointment_counters` has entries in, without the counters."""
    return {key for _, _, keys in _marks(row, timezone) for key in keys}


def _marks(
    row: RowLike | None, timezone: str | None
) -> Iterator[tuple[str, str, tuple[BucketKey, ...]]]:
    """Each lifecycle mark an appointment row has: its column, its counter, the buckets of
    its time."""
    if row is None:
        return
    get = _reader(row)
    company_id = get("company_id")
    if company_id is None:
        return
    for column, counter in APPOINTMENT_MARKS:
        at = get(column)
        if at is not None:
            # Per agent, bookings are in the group "": a booking is made in Cal.com, and the
            # call it may come from is another row (docs/analyst.md, "Breakdowns").
            yield (
                column,
                counter,
                grouped_keys(int(company_id), at, timezone, get("branch_id"), None),
            )


def difference(after: Contribution, before: Contribution) -> Contribution:
    """``after − before``, dropping zero entries."""
    out: Contribution = {}
    for key in after.keys() | before.keys():
        a, b = after.get(key), before.get(key)
        if b is None:
            deltas = {n: v for n, v in a.items() if v != 0} if a else {}
        else:
            a = a or {}
            deltas = {n: a.get(n, 0) - b.get(n, 0) for n in a.keys() | b.keys()}
            deltas = {n: v for n, v in deltas.items() if v != 0}
        if deltas:
            out[key] = deltas
    return out


def combine(into: Contribution, other: Contribution) -> None:
    for key, deltas in other.items():
        _add(into, [key], deltas)


def empty_counters() -> dict[str, Number]:
    """Every counter at zero, as a plain dict to fill in."""
    return dict(Counters.zero())


def sum_contributions(parts: Iterable[Contribution]) -> dict[BucketKey, Counters]:
    totals: dict[BucketKey, dict[str, Number]] = defaultdict(empty_counters)
    for part in parts:
        for key, deltas in part.items():
            bucket = totals[key]
            for name, value in deltas.items():
                bucket[name] = bucket[name] + value
    return {key: Counters(values) for key, values in totals.items()}


def derived(counters: Mapping[str, Number]) -> dict[str, float | None]:
    """``avg_duration_s`` (None when nothing connected) and ``booking_conversion``: the
    share of connected inbound calls that at least one booking names (None when no inbound
    call connected). ``calls_booked`` counts a subset of ``calls_inbound_connected`` in the
    same bucket, so the ratio is never above 1, in a bucket or summed over any window."""
    connected = int(counters.get("calls_connected", 0))
    inbound = int(counters.get("calls_inbound_connected", 0))
    return {
        "avg_duration_s": (
            round(int(counters.get("duration_ms_total", 0)) / connected / 1000, 3)
            if connected
            else None
        ),
        "booking_conversion": (
            round(int(counters.get("calls_booked", 0)) / inbound, 4) if inbound else None
        ),
    }


def expired(key: BucketKey, now: datetime) -> bool:
    return key.bucket_start < now - RETENTION[key.granularity]
