"""Cal.com bodies that tell the bookings of the simulated story (docs/providers.md).

Enveloped ``{triggerEvent, createdAt, payload}`` bodies for booking triggers, the different
payload of ``BOOKING_NO_SHOW_UPDATED``, and the flat booking row of the cron-sent
``MEETING_ENDED``. Pure: random details come from a ``Random`` seeded by the booking uid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

from testbed.simulator.bodies import dumps, iso_variant
from testbed.simulator.model import BookingEvent, SimBooking, Step, iso_ms

#: Cal.com triggers whose payload carries the booking's metadata (and so retell_call_id).
METADATA_TRIGGERS = frozenset({"BOOKING_REQUESTED", "BOOKING_CREATED", "MEETING_ENDED"})


def booking_steps(booking: SimBooking, by_uid: dict[str, SimBooking]) -> list[tuple[int, Step]]:
    created = next(
        (e.key for e in booking.events if e.trigger in ("BOOKING_CREATED", "BOOKING_RESCHEDULED")),
        None,
    )
    out = []
    for seq, event in enumerate(booking.events):
        body = dumps(booking_body(booking, event, seq, by_uid))
        if event.trigger == "BOOKING_NO_SHOW_UPDATED":
            event_id = f"{event.trigger}:{booking.uid}:{iso_ms(event.at_ms)}"
            depends = created
        else:
            event_id, depends = f"{event.trigger}:{booking.uid}", None
        out.append(
            (
                event.at_ms,
                Step(event.key, "calcom", event.trigger, event_id, body, 202, depends_on=depends),
            )
        )
    return out


def booking_body(
    booking: SimBooking, event: BookingEvent, seq: int, by_uid: dict[str, SimBooking]
) -> dict[str, Any]:
    trigger = event.trigger
    if trigger == "MEETING_ENDED":
        return _flat_meeting(booking, trigger)
    if trigger == "BOOKING_NO_SHOW_UPDATED":
        verb = "marked as no-show" if event.no_show else "unmarked as no-show"
        return {
            "triggerEvent": trigger,
            "createdAt": iso_ms(event.at_ms),
            "payload": {
                "message": f"{booking.attendee_email} {verb}",
                "attendees": [{"email": booking.attendee_email, "noShow": bool(event.no_show)}],
                "bookingUid": booking.uid,
                "bookingId": booking.booking_id,
            },
        }
    status = {
        "BOOKING_REQUESTED": "PENDING",
        "BOOKING_CANCELLED": "CANCELLED",
        "BOOKING_REJECTED": "REJECTED",
    }.get(trigger, "ACCEPTED")
    payload = _booking_payload(booking, status, seq)
    if trigger not in METADATA_TRIGGERS:
        payload.pop("metadata")
    if trigger == "BOOKING_RESCHEDULED" and booking.rescheduled_from is not None:
        old = by_uid[booking.rescheduled_from]
        payload.update(
            {
                "rescheduleId": old.booking_id,
                "rescheduleUid": old.uid,
                "rescheduleStartTime": iso_variant(old.start_ms, old.uid),
                "rescheduleEndTime": iso_variant(old.end_ms, old.uid),
                "rescheduledBy": booking.attendee_email,
            }
        )
        payload["responses"]["rescheduleReason"] = {
            "label": "reason_for_reschedule",
            "value": ("Work conflict", "Childcare", "Travel")[booking.booking_id % 3],
        }
    elif trigger == "BOOKING_CANCELLED":
        payload.update(
            {
                "cancellationReason": "Schedule conflict",
                "cancelledBy": booking.attendee_email,
                "requestReschedule": False,
            }
        )
    elif trigger == "BOOKING_REJECTED":
        payload["rejectionReason"] = "Practitioner unavailable that day"
    return {"triggerEvent": trigger, "createdAt": iso_ms(event.at_ms), "payload": payload}


def _utc_offset(timezone: str, ms: int) -> int:
    offset = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(timezone)).utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:40]


def _booking_payload(b: SimBooking, status: str, seq: int) -> dict[str, Any]:
    first, _, last = b.attendee_name.partition(" ")
    offset = _utc_offset(b.timezone, b.start_ms)
    responses: dict[str, Any] = {
        "name": {"label": "your_name", "value": b.attendee_name, "isHidden": False},
        "email": {"label": "email_address", "value": b.attendee_email, "isHidden": False},
    }
    if b.attendee_phone is not None:
        responses["attendeePhoneNumber"] = {
            "label": "phone_number",
            "value": b.attendee_phone,
            "isHidden": False,
        }
    responses["notes"] = {
        "label": "additional_notes",
        "value": "Booked by phone agent" if b.retell_call_id else "",
        "isHidden": False,
    }
    return {
        "uid": b.uid,
        "bookingId": b.booking_id,
        "eventTypeId": b.event_type_id,
        "type": _slug(b.service),
        "title": b.title,
        "eventTitle": b.service,
        "length": (b.end_ms - b.start_ms) // 60_000,
        "startTime": iso_variant(b.start_ms, b.uid),
        "endTime": iso_variant(b.end_ms, b.uid),
        "status": status,
        "organizer": {
            "id": b.branch_id,
            "name": b.organizer_name,
            "email": f"frontdesk@{_slug(b.organizer_name)}.example",
            "username": _slug(b.organizer_name),
            "timeZone": b.timezone,
            "language": {"locale": "en"},
            "timeFormat": "h:mma",
            "utcOffset": offset,
        },
        "attendees": [
            {
                "name": b.attendee_name,
                "email": b.attendee_email,
                "firstName": first,
                "lastName": last,
                "timeZone": b.timezone,
                "phoneNumber": b.attendee_phone,
                "language": {"locale": "en"},
                "utcOffset": offset,
            }
        ],
        "responses": responses,
        "location": f"{b.organizer_name}, front desk",
        "iCalUID": f"{b.uid}@Cal.com",
        "iCalSequence": seq,
        "metadata": {"retell_call_id": b.retell_call_id} if b.retell_call_id else {},
        "requiresConfirmation": b.requires_confirmation,
        "price": 0,
        "currency": "usd",
    }


def _flat_meeting(b: SimBooking, trigger: str) -> dict[str, Any]:
    rng = Random(b.uid)
    key = (
        f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
        f"{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}"
    )
    created = b.start_ms - 24 * 3_600_000
    return {
        "triggerEvent": trigger,
        "id": b.booking_id,
        "uid": b.uid,
        "idempotencyKey": key,
        "userId": b.branch_id,
        "eventTypeId": b.event_type_id,
        "title": b.title,
        "startTime": iso_ms(b.start_ms),
        "endTime": iso_ms(b.end_ms),
        "status": "ACCEPTED",
        "fromReschedule": b.rescheduled_from,
        "rescheduled": None,
        "metadata": {"retell_call_id": b.retell_call_id} if b.retell_call_id else {},
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(created + 1_200),
        "attendees": [
            {
                "id": b.booking_id % 100_000,
                "email": b.attendee_email,
                "name": b.attendee_name,
                "timeZone": b.timezone,
                "phoneNumber": b.attendee_phone,
                "locale": "en",
                "bookingId": b.booking_id,
                "noShow": False,
            }
        ],
    }
