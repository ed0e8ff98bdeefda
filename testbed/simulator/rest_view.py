"""The simulated story as the providers' REST APIs would show it afterwards.

What the fake Retell and Cal.com APIs (:mod:`testbed.fake_providers`) serve, so that
``switchboard backfill`` can heal a simulated outage. Written from the story, in the
documented REST shapes (docs/providers.md, "REST APIs for backfill"), never from the
webhook bodies' parsed effects:

* a Retell call as ``get-call`` returns it once the call is over and analysed: the
  ``call_analyzed`` object, with the ``metadata`` our ``call_inbound`` answer gave it;
* a Cal.com booking (``cal-api-version`` 2024-08-13): lowercase ``status``, ``start``/``end``,
  ``createdAt`` (when the booking was made: requested, booked, or created by a reschedule),
  ``updatedAt`` (its last change: a confirmation, a cancellation, a rejection, the reschedule
  that replaced it; marking an attendee no-show changes the attendee, not the booking),
  ``rescheduledFromUid``/``rescheduledToUid`` and ``attendees[].absent`` (the last mark).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from testbed.simulator.bodies import call_object, final_fields
from testbed.simulator.model import MINUTE, CallEvent, SimBooking, SimCall, iso_ms

CHANGES = frozenset({"BOOKING_CREATED", "BOOKING_CANCELLED", "BOOKING_REJECTED"})


def retell_call(call: SimCall, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``GET /v2/get-call/{id}`` of a finished call; ``metadata``: the routing answer's."""
    analyzed = CallEvent(f"rest:{call.call_id}", "call_analyzed", call.end_ms)
    out = call_object(call, analyzed, final_fields(call))
    if metadata:
        out["metadata"] = dict(metadata)
    return out


def successors(bookings: Iterable[SimBooking]) -> dict[str, SimBooking]:
    """uid → the booking that replaced it (a reschedule)."""
    return {b.rescheduled_from: b for b in bookings if b.rescheduled_from}


def calcom_booking(b: SimBooking, replaced_by: SimBooking | None) -> dict[str, Any] | None:
    """``GET /v2/bookings/{uid}``'s ``data``; None for a booking with no event (never made)."""
    if not b.events:
        return None
    triggers = {e.trigger for e in b.events}
    created = b.events[0].at_ms
    changes = [e.at_ms for e in b.events if e.trigger in CHANGES]
    moved = None
    if replaced_by is not None:
        moved = next(e.at_ms for e in replaced_by.events if e.trigger == "BOOKING_RESCHEDULED")
        changes.append(moved)
    if replaced_by is not None or "BOOKING_CANCELLED" in triggers:
        status = "cancelled"
    elif "BOOKING_REJECTED" in triggers:
        status = "rejected"
    elif triggers & {"BOOKING_CREATED", "BOOKING_RESCHEDULED"}:
        status = "accepted"
    else:
        status = "pending"
    marks = [e for e in b.events if e.trigger == "BOOKING_NO_SHOW_UPDATED"]
    absent = bool(marks[-1].no_show) if marks else False
    slug = "".join(ch if ch.isalnum() else "-" for ch in b.service.lower()).strip("-")
    attendee: dict[str, Any] = {
        "name": b.attendee_name,
        "email": b.attendee_email,
        "displayEmail": b.attendee_email,
        "timeZone": b.timezone,
        "language": "en",
        "absent": absent,
    }
    responses: dict[str, Any] = {"name": b.attendee_name, "email": b.attendee_email}
    if b.attendee_phone is not None:
        attendee["phoneNumber"] = b.attendee_phone
        responses["attendeePhoneNumber"] = b.attendee_phone
    out: dict[str, Any] = {
        "id": b.booking_id,
        "uid": b.uid,
        "title": b.title,
        "description": "",
        "hosts": [
            {
                "id": b.branch_id,
                "name": b.organizer_name,
                "email": f"frontdesk-{b.branch_id}@example.invalid",
                "displayEmail": f"frontdesk-{b.branch_id}@example.invalid",
                "username": f"branch-{b.branch_id}",
                "timeZone": b.timezone,
            }
        ],
        "status": status,
        "start": iso_ms(b.start_ms),
        "end": iso_ms(b.end_ms),
        "duration": (b.end_ms - b.start_ms) // MINUTE,
        "eventTypeId": b.event_type_id,
        "eventType": {"id": b.event_type_id, "slug": slug},
        "location": f"{b.organizer_name}, front desk",
        "absentHost": False,
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(max([created, *changes])),
        "metadata": {"retell_call_id": b.retell_call_id} if b.retell_call_id else {},
        "icsUid": f"{b.uid}@Cal.com",
        "attendees": [attendee],
        "guests": [],
        "bookingFieldsResponses": responses,
    }
    if "BOOKING_CANCELLED" in triggers:
        out["cancellationReason"] = "Schedule conflict"
        out["cancelledByEmail"] = b.attendee_email
    if b.rescheduled_from is not None:
        out["rescheduledFromUid"] = b.rescheduled_from
        out["rescheduledByEmail"] = b.attendee_email
    if replaced_by is not None:
        out["rescheduledToUid"] = replaced_by.uid
    return out


def provider_state(
    calls: Iterable[SimCall],
    bookings: Iterable[SimBooking],
    inbound_metadata: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, Any]:
    """What the fake APIs serve: ``{"retell": {"calls": [...]}, "calcom": {"bookings": [...]}}``.

    ``inbound_metadata``: call id → the metadata our ``call_inbound`` answer gave the call.
    """
    booking_list = list(bookings)
    replaced = successors(booking_list)
    served = [calcom_booking(b, replaced.get(b.uid)) for b in booking_list]
    return {
        "retell": {"calls": [retell_call(c, inbound_metadata.get(c.call_id)) for c in calls]},
        "calcom": {"bookings": [b for b in served if b is not None]},
    }
