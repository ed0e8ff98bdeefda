"""Comparing what a provider's API says happened with what MySQL holds: the records to offer.

For every webhook a call or booking owes (:mod:`retell_events`, :mod:`calcom_events`):

================================  ============================================================
``webhook_events`` / row          verdict
================================  ============================================================
``applied``, row present          present: nothing to do
``applied``, row gone             ``row_missing``: write it again; the apply path folds an
                                  already-applied event into the rows without counting it
no row for the event              ``missing``: the webhook never arrived
``dead_lettered``                 ``dead_lettered``: what arrived was poison; ours is not
``unroutable``                    ``unroutable``: offered again, written only if attribution
                                  now succeeds (a branch added since)
================================  ============================================================

A no-show mark has no stable id (Cal.com puts the marking time in it and the API keeps no
such time), so it is judged by its row instead: the booking's row already has a
``no_show_at`` (present), a no-show update is parked waiting for the booking (pending: it
is applied with the booking), or it is missing.

I/O is passed in (``fetch_call``, ``fetch_booking``, ``read``), so the decisions stay plain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.backfill import calcom_events, retell_events
from pipeline.backfill.ledger import Ledger
from pipeline.backfill.synthesized import Synthesized
from pipeline.backfill.when import parse_iso

log = logging.getLogger(__name__)

MISSING, ROW_MISSING, DEAD_LETTERED, UNROUTABLE = (
    "missing",
    "row_missing",
    "dead_lettered",
    "unroutable",
)

FetchCall = Callable[[str], Awaitable[dict[str, Any] | None]]
FetchBooking = Callable[[str], Awaitable[dict[str, Any] | None]]
# Reads the ledger: (provider, subjects, event ids) → Ledger (rows, events, no-shows).
ReadLedger = Callable[[str, set[str], set[str]], Awaitable[Ledger]]


@dataclass(frozen=True, slots=True)
class Candidate:
    event: Synthesized
    reason: str  # missing | row_missing | dead_lettered | unroutable


@dataclass
class Plan:
    provider: str
    listed: int = 0  # calls or bookings the API returned (once each)
    owed: int = 0  # webhooks they owe
    present: int = 0  # of those, already applied with their rows
    pending: int = 0  # no-show marks parked until their booking is applied
    candidates: list[Candidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be done, one line each
    fetched: int = 0  # per-item API reads (get-call, a reschedule's other half)


def judge(status: str | None, row_exists: bool) -> str | None:
    """The reason to offer an event (None: it is present). See the module table."""
    if status == "applied":
        return None if row_exists else ROW_MISSING
    if status is None:
        return MISSING
    return DEAD_LETTERED if status == "dead_lettered" else UNROUTABLE


# --- Retell --------------------------------------------------------------------------------


async def plan_retell(
    listed: Iterable[dict[str, Any]], read: ReadLedger, fetch_call: FetchCall
) -> Plan:
    calls = {c["call_id"]: c for c in listed}
    plan = Plan("retell", listed=len(calls))
    owed = {cid: retell_events.owed(c) for cid, c in calls.items()}
    ids = {f"{kind}:{cid}" for cid, kinds in owed.items() for kind in kinds}
    ledger = await read("retell", {cid for cid, kinds in owed.items() if kinds}, ids)
    for call_id, kinds in sorted(owed.items()):
        plan.owed += len(kinds)
        row_exists = call_id in ledger.rows
        reasons = {k: judge(ledger.status(f"{k}:{call_id}"), row_exists) for k in kinds}
        wanted = [k for k in kinds if reasons[k] is not None]
        plan.present += len(kinds) - len(wanted)
        if not wanted:
            continue
        call = calls[call_id]
        # The transcript is only in get-call. A row that applied call_ended holds the final
        # transcript already, so a lone call_analyzed goes out as listed.
        if retell_events.ENDED in wanted or not row_exists:
            plan.fetched += 1
            full = await fetch_call(call_id)
            if full is None:
                plan.notes.append(f"call {call_id}: get-call found nothing; using the listed call")
            else:
                call = full
        for kind in wanted:
            reason = reasons[kind]
            assert reason is not None
            plan.candidates.append(Candidate(retell_events.event(kind, call), reason))
    return plan


# --- Cal.com -------------------------------------------------------------------------------

TRIGGERS = (
    calcom_events.REQUESTED,
    calcom_events.CREATED,
    calcom_events.RESCHEDULED,
    calcom_events.CANCELLED,
    calcom_events.REJECTED,
    calcom_events.MEETING_ENDED,
)


def newest(bookings: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One copy per uid: the most recently updated one (sweeps overlap and pages re-read)."""
    out: dict[str, dict[str, Any]] = {}
    for b in bookings:
        seen = out.get(b["uid"])
        if seen is None or _updated(b) >= _updated(seen):
            out[b["uid"]] = b
    return out


def _updated(b: Mapping[str, Any]) -> datetime:
    return parse_iso(b.get("updatedAt")) or parse_iso(b.get("createdAt")) or datetime.min


async def complete_chains(
    bookings: dict[str, dict[str, Any]], fetch: FetchBooking, plan: Plan, max_rounds: int = 10
) -> None:
    """Fetch the other half of every reschedule the sweeps saw only one half of."""
    for _ in range(max_rounds):
        wanted = {
            other
            for b in bookings.values()
            for other in (b.get("rescheduledFromUid"), b.get("rescheduledToUid"))
            if isinstance(other, str) and other and other not in bookings
        }
        if not wanted:
            return
        for uid in sorted(wanted):
            plan.fetched += 1
            found = await fetch(uid)
            if found is None:
                plan.notes.append(f"booking {uid}: named by a reschedule but not found")
                found = {"uid": uid, "status": None}  # a placeholder: it owes nothing
            bookings[uid] = found


def stories(bookings: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """uid → the first uid of its reschedule chain: a chain is judged and written together."""
    parent = {uid: uid for uid in bookings}

    def root(uid: str) -> str:
        while parent[uid] != uid:
            parent[uid] = parent[parent[uid]]
            uid = parent[uid]
        return uid

    for uid, b in bookings.items():
        other = b.get("rescheduledFromUid")
        if isinstance(other, str) and other in parent:
            a, c = root(uid), root(other)
            if a != c:
                parent[max(a, c)] = min(a, c)
    return {uid: root(uid) for uid in bookings}


async def plan_calcom(
    listed: Iterable[dict[str, Any]],
    read: ReadLedger,
    fetch_booking: FetchBooking,
    until: datetime,
) -> Plan:
    bookings = newest(listed)
    plan = Plan("calcom", listed=len(bookings))
    await complete_chains(bookings, fetch_booking, plan)
    story_of = stories(bookings)
    ids = {f"{t}:{uid}" for uid in bookings for t in TRIGGERS}
    ledger = await read("calcom", set(bookings), ids)
    for uid, booking in sorted(bookings.items()):
        if booking.get("status") is None:
            continue
        row = ledger.rows.get(uid)
        known = calcom_events.Known(
            requested=ledger.status(f"{calcom_events.REQUESTED}:{uid}") == "applied"
            or (row is not None and row.status == "pending")
        )
        previous = bookings.get(str(booking.get("rescheduledFromUid") or ""))
        try:
            owed = calcom_events.events(
                booking, known, until, story=story_of[uid], previous=previous
            )
        except calcom_events.UnusableBooking as exc:
            plan.notes.append(str(exc))
            continue
        plan.owed += len(owed)
        for event in owed:
            if event.event_type == calcom_events.NO_SHOW:
                _judge_no_show(plan, ledger, event)
                continue
            reason = judge(ledger.status(event.event_id), event.subject in ledger.rows)
            if reason is None:
                plan.present += 1
            else:
                plan.candidates.append(Candidate(event, reason))
    return plan


def _judge_no_show(plan: Plan, ledger: Ledger, event: Synthesized) -> None:
    uid = event.subject
    row = ledger.rows.get(uid)
    if row is not None and row.no_show_at is not None:
        plan.present += 1
    elif ledger.parked_no_show(uid):
        plan.pending += 1  # applied as soon as its booking is
    elif row is None and ledger.applied_no_show(uid):
        plan.notes.append(
            f"booking {uid}: its no-show mark was applied but the row is gone; replay "
            "webhooks.calcom to restore it (the API keeps no marking time)"
        )
    else:
        plan.candidates.append(Candidate(event, MISSING))
