"""The expected state after ``switchboard backfill`` healed a simulated outage.

The rules of docs/backfill.md, restated on the story (not imported from the backfill): which
lost webhooks a backfill rebuilds from the providers' REST APIs (:mod:`rest_view`), and at
what time. Where the API keeps everything a webhook said, the healed state is exactly "as
if every webhook had arrived". Where it does not, the documented residual is expected:

* a lost ``BOOKING_CREATED`` of a booking that needed confirmation: when MySQL has its
  ``BOOKING_REQUESTED`` and it is still accepted, at ``updatedAt`` (the confirmation:
  exact); when MySQL has its request but it was cancelled or rescheduled since, not at all
  (the API cannot tell whether it was confirmed first); when the request was lost too, at
  the booking's ``createdAt`` (the request, not the confirmation);
* lost no-show marks: one mark at the meeting's start when no mark arrived and the
  booking is still marked absent (the API keeps no marking time), unless a no-show update
  is parked waiting for its booking (the apply path applies it with the booking);
* ``call_started``, ``transcript_updated``, ``transfer_*`` and lost ``BOOKING_REQUESTED``
  of bookings no longer pending or rejected are not rebuilt (the later events carry all
  their facts): they stay absent from ``webhook_events``, and change no row or counter.

``heal(...)`` returns the bookings (a lost event moved to the time the backfill gives it,
a rebuilt no-show added) and the step keys to treat as accepted; ``expected.compute`` does
the rest, as for any run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from testbed.simulator.model import BookingEvent, SimBooking, SimCall
from testbed.simulator.rest_view import calcom_booking, successors

REBUILT_CALL_EVENTS = frozenset({"call_ended", "call_analyzed"})


def heal(
    calls: Iterable[SimCall],
    bookings: Iterable[SimBooking],
    accepted: set[str],
    until_ms: int,
) -> tuple[list[SimBooking], set[str]]:
    """(bookings as a backfill leaves them, the steps to count as delivered)."""
    delivered = set(accepted)
    for call in calls:
        if call.routable:
            delivered |= {e.key for e in call.events if e.event in REBUILT_CALL_EVENTS}
    booking_list = list(bookings)
    replaced = successors(booking_list)
    healed = []
    for b in booking_list:
        events, keys = _heal_booking(b, replaced.get(b.uid), accepted, until_ms)
        delivered |= keys
        healed.append(dataclasses.replace(b, events=events))
    return healed, delivered


def _heal_booking(
    b: SimBooking, replaced_by: SimBooking | None, accepted: set[str], until_ms: int
) -> tuple[list[BookingEvent], set[str]]:
    view = calcom_booking(b, replaced_by)
    if view is None:
        return list(b.events), set()
    status = view["status"]
    got = [e for e in b.events if e.key in accepted]
    requested_known = any(e.trigger == "BOOKING_REQUESTED" for e in got)
    created_ms = b.events[0].at_ms
    events: list[BookingEvent] = []
    keys: set[str] = set()
    for e in b.events:
        if e.key in accepted or e.trigger == "BOOKING_NO_SHOW_UPDATED":
            events.append(e)
            continue
        t = e.trigger
        moved = e
        if t == "BOOKING_REQUESTED":
            rebuilt = status in ("pending", "rejected")
        elif t == "BOOKING_CREATED":
            if requested_known:
                rebuilt = status == "accepted"  # at updatedAt: the confirmation, exactly
            else:
                rebuilt = status in ("accepted", "cancelled")
                moved = dataclasses.replace(e, at_ms=created_ms)
        elif t == "MEETING_ENDED":
            rebuilt = status == "accepted" and b.end_ms <= until_ms
        else:  # RESCHEDULED, CANCELLED, REJECTED
            rebuilt = True
        events.append(moved)
        if rebuilt:
            keys.add(e.key)
    mark = _rebuilt_no_show(b, view, got, replaced_by, accepted)
    if mark is not None:
        events.append(mark)
        keys.add(mark.key)
    return events, keys


def _rebuilt_no_show(
    b: SimBooking,
    view: dict[str, Any],
    got: list[BookingEvent],
    replaced_by: SimBooking | None,
    accepted: set[str],
) -> BookingEvent | None:
    if view["status"] != "accepted" or not view["attendees"][0]["absent"]:
        return None
    no_shows = [e for e in got if e.trigger == "BOOKING_NO_SHOW_UPDATED"]
    if any(e.no_show for e in no_shows):
        return None  # a mark arrived: the row has it
    had_row = any(e.trigger != "BOOKING_NO_SHOW_UPDATED" for e in got) or (
        replaced_by is not None
        and any(
            e.key in accepted and e.trigger == "BOOKING_RESCHEDULED" for e in replaced_by.events
        )
    )
    if no_shows and not had_row:
        return None  # parked until its booking arrives: the apply path applies it then
    return BookingEvent(
        f"calcom:BOOKING_NO_SHOW_UPDATED:{b.uid}:backfill",
        "BOOKING_NO_SHOW_UPDATED",
        b.start_ms,
        True,
    )
