"""The expected final state of a run: rows and dashboard counters, per docs/data-model.md.

An independent oracle. It reads the simulator's story (who called, what was booked, which
webhook said what) and the set of steps the ingress accepted, and applies the rulebook
itself; it never imports the worker's parsing, merging or aggregation code, so a bug there
shows up as a difference instead of being copied into the expectation.

Because the generated data is consistent (every event that carries a field carries the
same value), the rulebook's order-independent merges reduce to "the value is there if any
accepted event carries it", which is what this module computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.models import COUNTERS, DECIMAL_COUNTERS
from pipeline.tenants import Company
from testbed.simulator.bodies import FINAL_EVENTS, TRANSFER_CARRIERS
from testbed.simulator.booking_bodies import METADATA_TRIGGERS
from testbed.simulator.model import (
    CallEvent,
    SimBooking,
    SimCall,
    iso_dt,
    iso_ms,
    transcript_text,
    utc,
)

FORMAT = "switchboard-expected/1"
CENTS = Decimal("0.0001")

# docs/data-model.md, restated here on purpose (not imported from the worker).
EVENT_RANK = {
    "call_inbound": 0,
    "call_started": 1,
    "transcript_updated": 2,
    "transfer_started": 3,
    "transfer_bridged": 4,
    "transfer_cancelled": 5,
    "transfer_ended": 6,
    "call_ended": 7,
    "call_analyzed": 8,
}
CALL_STATUS_RANK = {"registered": 0, "ongoing": 1, "not_connected": 2, "ended": 2, "error": 2}
BOOKING_STATUS_RANK = {
    "pending": 0,
    "scheduled": 1,
    "completed": 2,
    "no_show": 3,
    "cancelled": 4,
    "rejected": 4,
    "rescheduled": 4,
}
TRIGGER_STATUS = {
    "BOOKING_REQUESTED": "pending",
    "BOOKING_CREATED": "scheduled",
    "BOOKING_RESCHEDULED": "scheduled",
    "BOOKING_CANCELLED": "cancelled",
    "BOOKING_REJECTED": "rejected",
    "MEETING_ENDED": "completed",
}
SENTIMENT_COUNTER = {
    "Positive": "sentiment_positive",
    "Neutral": "sentiment_neutral",
    "Negative": "sentiment_negative",
}

BucketKey = tuple[int, str, datetime]  # (company_id, granularity, bucket_start naive UTC)


def hour_start(ms: int) -> datetime:
    at = utc(ms).replace(tzinfo=None)
    return at.replace(minute=0, second=0, microsecond=0)


def day_start(ms: int, timezone: str) -> datetime:
    """The UTC instant (naive) of local midnight of the company's day containing ``ms``."""
    zone = ZoneInfo(timezone)
    local = utc(ms).astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    return midnight.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def zero_counters() -> dict[str, Any]:
    return {name: (Decimal(0) if name in DECIMAL_COUNTERS else 0) for name in COUNTERS}


@dataclass
class Expected:
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], str] = field(default_factory=dict)  # (provider, id) → status
    # call_inbound records: answered 200 without waiting on Kafka (docs/ingress.md), so the ingress
    # does not promise they are durable; verify reports their absence apart.
    best_effort: set[tuple[str, str]] = field(default_factory=set)
    buckets: dict[BucketKey, dict[str, Any]] = field(default_factory=dict)

    def add(self, company_id: int, timezone: str, ms: int, counter: str, amount: Any = 1) -> None:
        for key in (
            (company_id, "hour", hour_start(ms)),
            (company_id, "day", day_start(ms, timezone)),
        ):
            counters = self.buckets.setdefault(key, zero_counters())
            counters[counter] += amount


def compute(
    companies: Iterable[Company],
    calls: Iterable[SimCall],
    bookings: Iterable[SimBooking],
    accepted: set[str],
) -> Expected:
    """Rows, event statuses and bucket counters after every accepted step is applied once."""
    zones = {c.id: c.timezone for c in companies if c.id is not None}
    out = Expected()
    calls = list(calls)
    for call in calls:
        _call(out, call, accepted, zones)
    _bookings(out, list(bookings), accepted, zones)
    _conversions(out, calls, accepted, zones)
    return out


def _conversions(
    out: Expected, calls: list[SimCall], accepted: set[str], zones: Mapping[int, str]
) -> None:
    """calls_booked: a connected inbound call whose call_ended was applied, named by at
    least one booking row of its company with a booked_at, counts once in its bucket."""
    named = {
        (row["company_id"], row["retell_call_id"])
        for row in out.appointments.values()
        if row["retell_call_id"] and row["booked_at"]
    }
    for call in calls:
        ended = any(e.event == "call_ended" and e.key in accepted for e in call.events)
        if call.call_id not in out.calls or not ended or call.company_id is None:
            continue
        if call.start_ms is None or call.direction != "inbound":
            continue
        if (call.company_id, call.call_id) in named:
            zone = zones.get(call.company_id, call.timezone)
            out.add(call.company_id, zone, call.start_ms, "calls_booked")


def _status_of(event: str, call: SimCall) -> str:
    return call.final_status if event in FINAL_EVENTS else "ongoing"


def _call(out: Expected, call: SimCall, accepted: set[str], zones: Mapping[int, str]) -> None:
    got = [e for e in call.events if e.key in accepted]
    if not got:
        return
    status = "applied" if call.routable else "unroutable"
    for e in got:
        event_id = call.call_id if e.event == "call_inbound" else f"{e.event}:{call.call_id}"
        out.events[("retell", event_id)] = status
        if e.event == "call_inbound":
            out.best_effort.add(("retell", event_id))
    rows = [e for e in got if e.event != "call_inbound"]  # call_inbound changes no row
    if not call.routable or not rows:
        return
    assert call.company_id is not None
    names = {e.event for e in rows}
    best = max(
        rows, key=lambda e: (CALL_STATUS_RANK[_status_of(e.event, call)], EVENT_RANK[e.event])
    )
    final = bool(names & FINAL_EVENTS)
    analyzed = "call_analyzed" in names
    out.calls[call.call_id] = {
        "company_id": call.company_id,
        "branch_id": call.branch_id,
        "status": _status_of(best.event, call),
        "direction": call.direction,
        "started_at": iso_ms(call.start_ms) if call.start_ms is not None else None,
        "ended_at": iso_ms(call.end_ms) if final else None,
        "duration_ms": call.duration_ms if final else None,
        "disconnection_reason": call.disconnection_reason if final else None,
        "in_voicemail": call.in_voicemail if analyzed else None,
        "successful": call.successful if analyzed else None,
        "sentiment": call.sentiment if analyzed else None,
        "cost_cents": str(call.cost.quantize(CENTS)) if final and call.cost is not None else None,
        "transfer_destination": call.transfer_destination if names & TRANSFER_CARRIERS else None,
        "customer_phone": call.customer_phone,
        "transcript_chars": _longest_transcript(call, rows),
    }
    _call_counters(out, call, names, zones.get(call.company_id, call.timezone))


def _longest_transcript(call: SimCall, rows: list[CallEvent]) -> int | None:
    """Characters of the longest transcript the received events carried (the merge rule)."""
    transcripts = [0]
    if call.keeps_transcript and call.turns:
        for e in rows:
            if e.event == "transcript_updated":
                transcripts.append(len(transcript_text(call.turns[: e.turns])))
            elif e.event in FINAL_EVENTS:
                transcripts.append(len(transcript_text(call.turns)))
    return max(transcripts) or None


def _call_counters(out: Expected, call: SimCall, names: set[str], timezone: str) -> None:
    """What a call adds to its company's buckets (docs/data-model.md, counters)."""
    assert call.company_id is not None
    when = call.start_ms if call.start_ms is not None else call.end_ms
    cid = call.company_id
    analyzed = "call_analyzed" in names
    if "call_ended" in names:
        out.add(cid, timezone, when, "calls_total")
        out.add(cid, timezone, when, f"calls_{call.direction}")
        out.add(cid, timezone, when, "calls_connected" if call.connected else "calls_not_connected")
        if call.connected and call.direction == "inbound":
            out.add(cid, timezone, when, "calls_inbound_connected")
        if call.disconnection_reason == "voicemail_reached":
            out.add(cid, timezone, when, "calls_voicemail")
        if call.disconnection_reason == "call_transfer" or call.transfer_destination is not None:
            out.add(cid, timezone, when, "calls_transferred")
        out.add(cid, timezone, when, "duration_ms_total", call.duration_ms or 0)
        out.add(cid, timezone, when, "cost_cents_total", (call.cost or Decimal(0)).quantize(CENTS))
    if analyzed:
        if call.successful:
            out.add(cid, timezone, when, "calls_successful")
        if call.sentiment in SENTIMENT_COUNTER:
            out.add(cid, timezone, when, SENTIMENT_COUNTER[call.sentiment])


def _bookings(
    out: Expected, bookings: list[SimBooking], accepted: set[str], zones: Mapping[int, str]
) -> None:
    # Which uids have a row made by an attributable (non-no-show) event: their own, or a
    # reschedule that replaced them. A no-show update is attributed only through that row.
    has_row: set[str] = set()
    replaced_by: dict[str, SimBooking] = {}
    for b in bookings:
        for e in b.events:
            if e.key in accepted and e.trigger != "BOOKING_NO_SHOW_UPDATED":
                has_row.add(b.uid)
                if e.trigger == "BOOKING_RESCHEDULED" and b.rescheduled_from:
                    has_row.add(b.rescheduled_from)
                    replaced_by[b.rescheduled_from] = b
    for b in bookings:
        if b.uid in has_row:
            _booking_row(out, b, replaced_by.get(b.uid), accepted, zones)
            continue
        for e in b.events:  # no-shows about a booking with no row: nothing to attach them to
            if e.key in accepted:
                out.events[("calcom", _booking_event_id(b, e.trigger, e.at_ms))] = "unroutable"


def _booking_event_id(b: SimBooking, trigger: str, at_ms: int) -> str:
    if trigger == "BOOKING_NO_SHOW_UPDATED":
        return f"{trigger}:{b.uid}:{iso_ms(at_ms)}"
    return f"{trigger}:{b.uid}"


def _booking_row(
    out: Expected,
    b: SimBooking,
    replacement: SimBooking | None,
    accepted: set[str],
    zones: Mapping[int, str],
) -> None:
    timezone = zones.get(b.company_id, b.timezone)
    got = [e for e in b.events if e.key in accepted]
    statuses: list[str] = []
    row: dict[str, Any] = {
        "company_id": b.company_id,
        "booked_at": None,
        "cancelled_at": None,
        "rescheduled_at": None,
        "no_show_at": None,
        "rescheduled_from_uid": None,
        "retell_call_id": None,
    }
    own = [e for e in got if e.trigger != "BOOKING_NO_SHOW_UPDATED"]
    if own:
        row["starts_at"] = iso_ms(b.start_ms)  # only a row of its own knows its start for sure
    marks: list[int] = []
    created_ms: int | None = None
    for e in got:
        out.events[("calcom", _booking_event_id(b, e.trigger, e.at_ms))] = "applied"
        if e.trigger == "BOOKING_NO_SHOW_UPDATED":
            if e.no_show:
                marks.append(e.at_ms)
                statuses.append("no_show")
            continue
        statuses.append(TRIGGER_STATUS.get(e.trigger, "scheduled"))
        if e.trigger in METADATA_TRIGGERS and b.retell_call_id:
            row["retell_call_id"] = b.retell_call_id
        if e.trigger == "BOOKING_CREATED":
            row["booked_at"] = iso_ms(e.at_ms)
            created_ms = e.at_ms
            out.add(b.company_id, timezone, e.at_ms, "appointments_booked")
        elif e.trigger == "BOOKING_CANCELLED":
            row["cancelled_at"] = iso_ms(e.at_ms)
            out.add(b.company_id, timezone, e.at_ms, "appointments_cancelled")
        elif e.trigger == "BOOKING_RESCHEDULED":
            row["rescheduled_from_uid"] = b.rescheduled_from
            out.add(b.company_id, timezone, e.at_ms, "appointments_rescheduled")
    if replacement is not None:
        moved = next(
            e
            for e in replacement.events
            if e.trigger == "BOOKING_RESCHEDULED" and e.key in accepted
        )
        statuses.append("rescheduled")
        row["rescheduled_at"] = iso_ms(moved.at_ms)
    if created_ms is not None and not row["retell_call_id"]:
        out.add(b.company_id, timezone, created_ms, "appointments_without_call")
    if marks:
        first = min(marks)
        row["no_show_at"] = iso_ms(first)
        out.add(b.company_id, timezone, first, "appointments_no_show")
    row["status"] = max(statuses, key=lambda s: BOOKING_STATUS_RANK[s]) if statuses else None
    linked = out.calls.get(b.retell_call_id or "")
    row["call"] = (
        b.retell_call_id
        if row["retell_call_id"] and linked and linked["company_id"] == b.company_id
        else None
    )
    out.appointments[b.uid] = row


# ---- the file ----------------------------------------------------------------------------


def counters_json(counters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: (
            str(Decimal(counters[name]).quantize(CENTS))
            if name in DECIMAL_COUNTERS
            else int(counters[name])
        )
        for name in COUNTERS
    }


def windows_for(buckets: Iterable[BucketKey]) -> dict[int, dict[str, tuple[datetime, datetime]]]:
    """Per company and granularity, the time range whose buckets a run may touch (padded)."""
    spans: dict[int, dict[str, list[datetime]]] = {}
    for company_id, granularity, start in buckets:
        spans.setdefault(company_id, {}).setdefault(granularity, []).append(start)
    pad = {"hour": timedelta(hours=2), "day": timedelta(hours=50)}
    return {
        cid: {g: (min(v) - pad[g], max(v) + pad[g]) for g, v in by_g.items()}
        for cid, by_g in spans.items()
    }


def document(
    expected: Expected,
    *,
    run: Mapping[str, Any],
    windows: Mapping[int, Mapping[str, tuple[datetime, datetime]]],
    baseline: Mapping[BucketKey, Mapping[str, Any]] | None = None,
    id_prefixes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The expected-state file (docs/simulator.md): final rows, statuses and counters.

    ``baseline`` holds the buckets as they were before the run; the expected counters are
    baseline + this run's contributions, so a run against a database with history verifies.
    """
    totals: dict[BucketKey, dict[str, Any]] = {}
    for key, counters in (baseline or {}).items():
        totals[key] = {
            n: Decimal(counters[n]) if n in DECIMAL_COUNTERS else int(counters[n]) for n in COUNTERS
        }
    for key, counters in expected.buckets.items():
        into = totals.setdefault(key, zero_counters())
        for name in COUNTERS:
            into[name] += counters[name]
    events = [
        {"provider": p, "event_id": e, "status": s}
        | ({"best_effort": True} if (p, e) in expected.best_effort else {})
        for (p, e), s in sorted(expected.events.items())
    ]
    return {
        "format": FORMAT,
        "run": dict(run),
        "id_prefixes": dict(id_prefixes or {}),
        "calls": expected.calls,
        "appointments": expected.appointments,
        "events": events,
        "unroutable": [
            {"provider": x["provider"], "event_id": x["event_id"]}
            for x in events
            if x["status"] == "unroutable"
        ],
        "bucket_windows": {
            str(cid): {g: [iso_dt(lo), iso_dt(hi)] for g, (lo, hi) in by_g.items()}
            for cid, by_g in sorted(windows.items())
        },
        "buckets": [
            {"company_id": cid, "granularity": g, "bucket_start": iso_dt(start), **counters_json(c)}
            for (cid, g, start), c in sorted(totals.items())
            if any(c[n] for n in COUNTERS) or (cid, g, start) in expected.buckets
        ],
    }
