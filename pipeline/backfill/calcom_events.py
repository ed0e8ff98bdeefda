"""Which Cal.com webhooks a booking owes, and their bodies, from the booking of API v2.

A booking's REST object (``cal-api-version`` 2024-08-13) says where it ended up: ``status``
(``accepted``, ``pending``, ``cancelled``, ``rejected``), ``rescheduledFromUid`` on the
booking a reschedule created, ``rescheduledToUid`` on the one it replaced (which Cal.com
marks ``cancelled``), ``attendees[].absent`` for no-shows, ``createdAt`` and ``updatedAt``.
From that, the webhooks it caused (docs/backfill.md has the table and its limits):

=========================================  ==============================================
booking                                    webhooks, with the ``createdAt`` they carry
=========================================  ==============================================
``pending``                                ``BOOKING_REQUESTED`` at ``createdAt``
``rejected``                               ``BOOKING_REQUESTED`` at ``createdAt``,
                                           ``BOOKING_REJECTED`` at ``updatedAt``
has ``rescheduledFromUid``                 ``BOOKING_RESCHEDULED`` at ``createdAt`` (the
                                           reschedule created this booking)
otherwise, ever accepted                   ``BOOKING_CREATED`` at ``createdAt``; at
                                           ``updatedAt`` (the confirmation) when MySQL
                                           knows it was requested first and it is still
                                           ``accepted``
``cancelled`` without ``rescheduledToUid`` ``BOOKING_CANCELLED`` at ``updatedAt``
``accepted``, an attendee ``absent``       ``BOOKING_NO_SHOW_UPDATED`` at the meeting's
                                           start
``accepted``, ended by the window's end    ``MEETING_ENDED`` (flat body) at its end
=========================================  ==============================================

A cancelled booking that MySQL knows was requested owes no ``BOOKING_CREATED``: the API
cannot tell whether it was confirmed before it was cancelled. Cal.com keeps no time for a
no-show mark (marking updates the attendee, not the booking) and allows it only once the
meeting started, so the meeting's start is the one instant that is both knowable and never
later than the real mark: the earliest mark wins in the apply path, so a real webhook
arriving later cannot move the count to a different bucket than this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.backfill.synthesized import Synthesized, synthesize
from pipeline.backfill.when import iso_ms, parse_iso

REQUESTED, CREATED, RESCHEDULED = "BOOKING_REQUESTED", "BOOKING_CREATED", "BOOKING_RESCHEDULED"
CANCELLED, REJECTED = "BOOKING_CANCELLED", "BOOKING_REJECTED"
NO_SHOW, MEETING_ENDED = "BOOKING_NO_SHOW_UPDATED", "MEETING_ENDED"

#: The webhook payload's ``status`` for each trigger (Cal.com's payload builder).
PAYLOAD_STATUS = {
    REQUESTED: "PENDING",
    CREATED: "ACCEPTED",
    RESCHEDULED: "ACCEPTED",
    CANCELLED: "CANCELLED",
    REJECTED: "REJECTED",
}


@dataclass(frozen=True, slots=True)
class Known:
    """What MySQL already knows about a booking that its API object does not say."""

    requested: bool = False  # its BOOKING_REQUESTED was applied, or its row is still pending


class UnusableBooking(ValueError):
    """The API object lacks what a webhook needs (uid, times); reported, never guessed."""


def lifecycle(
    booking: Mapping[str, Any], known: Known, until: datetime
) -> list[tuple[str, datetime]]:
    """``(trigger, createdAt)`` of every webhook ``booking`` owes, its creation first."""
    status = str(booking.get("status") or "").lower()
    created = parse_iso(booking.get("createdAt"))
    if created is None:
        raise UnusableBooking(f"booking {booking.get('uid')} has no createdAt")
    updated = parse_iso(booking.get("updatedAt")) or created
    moved_from = booking.get("rescheduledFromUid")
    moved_to = booking.get("rescheduledToUid")
    if status == "pending":
        return [(REQUESTED, created)]
    if status == "rejected":
        return [(REQUESTED, created), (REJECTED, updated)]
    out: list[tuple[str, datetime]] = []
    if moved_from:
        out.append((RESCHEDULED, created))
    elif status == "accepted":
        out.append((CREATED, updated if known.requested else created))
    elif status == "cancelled" and not known.requested:
        out.append((CREATED, created))
    if status == "cancelled" and not moved_to:
        out.append((CANCELLED, updated))
    if status == "accepted":
        start, end = _times(booking)
        if _absent(booking):
            out.append((NO_SHOW, start))
        if end <= until:
            out.append((MEETING_ENDED, end))
    return out


def events(
    booking: Mapping[str, Any],
    known: Known,
    until: datetime,
    *,
    story: str,
    previous: Mapping[str, Any] | None = None,
) -> list[Synthesized]:
    """The webhooks of :func:`lifecycle` as records. ``previous`` is the booking this one
    was rescheduled from, when at hand (its times fill ``rescheduleStartTime``/``EndTime``)."""
    uid = _uid(booking)
    out = []
    for order, (trigger, at) in enumerate(lifecycle(booking, known, until)):
        if trigger == NO_SHOW:
            payload = no_show_body(booking, at)
        elif trigger == MEETING_ENDED:
            payload = meeting_ended_body(booking)
        else:
            payload = {
                "triggerEvent": trigger,
                "createdAt": iso_ms(at),
                "payload": booking_payload(booking, trigger, previous),
            }
        out.append(synthesize("calcom", payload, at=at, subject=uid, story=story, order=order))
    return out


def booking_payload(
    b: Mapping[str, Any], trigger: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``payload`` of an enveloped BOOKING_* webhook, in the webhook's own field names."""
    event_type = b.get("eventType") if isinstance(b.get("eventType"), dict) else {}
    assert isinstance(event_type, dict)
    payload: dict[str, Any] = {
        "uid": _uid(b),
        "bookingId": b.get("id"),
        "eventTypeId": event_type.get("id", b.get("eventTypeId")),
        "type": event_type.get("slug"),
        "title": b.get("title"),
        "description": b.get("description"),
        "startTime": b.get("start"),
        "endTime": b.get("end"),
        "length": b.get("duration"),
        "status": PAYLOAD_STATUS[trigger],
        "attendees": [_attendee(a) for a in _attendees(b)],
        "responses": _responses(b.get("bookingFieldsResponses")),
        "location": b.get("location"),
        "iCalUID": b.get("icsUid"),
        "metadata": dict(b.get("metadata") or {}),
    }
    hosts = b.get("hosts")
    if isinstance(hosts, list) and hosts and isinstance(hosts[0], dict):
        host = hosts[0]
        payload["organizer"] = {
            "id": host.get("id"),
            "name": host.get("name"),
            "email": host.get("email"),
            "username": host.get("username"),
            "timeZone": host.get("timeZone"),
            "language": {"locale": "en"},
        }
    if trigger == RESCHEDULED:
        payload["rescheduleUid"] = b.get("rescheduledFromUid")
        payload["rescheduledBy"] = b.get("rescheduledByEmail")
        if previous is not None:
            payload["rescheduleId"] = previous.get("id")
            payload["rescheduleStartTime"] = previous.get("start")
            payload["rescheduleEndTime"] = previous.get("end")
        if b.get("reschedulingReason"):
            payload["responses"]["rescheduleReason"] = {
                "label": "reason_for_reschedule",
                "value": b.get("reschedulingReason"),
            }
    elif trigger == CANCELLED:
        del payload["metadata"]  # Cal.com's cancellation payload carries no booking metadata
        payload["cancellationReason"] = b.get("cancellationReason")
        payload["cancelledBy"] = b.get("cancelledByEmail")
        payload["requestReschedule"] = False
    elif trigger == REJECTED:
        del payload["metadata"]
        payload["rejectionReason"] = b.get("rejectionReason") or b.get("cancellationReason")
    return {k: v for k, v in payload.items() if v is not None}


def no_show_body(b: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """``BOOKING_NO_SHOW_UPDATED``: its own shape, naming the booking and the absent attendees."""
    absent = [a for a in _attendees(b) if a.get("absent") is True]
    emails = [str(a.get("email")) for a in absent]
    message = f"{emails[0]} marked as no-show" if len(emails) == 1 else "no_show_updated"
    return {
        "triggerEvent": NO_SHOW,
        "createdAt": iso_ms(at),
        "payload": {
            "message": message,
            "attendees": [{"email": e, "noShow": True} for e in emails],
            "bookingUid": _uid(b),
            "bookingId": b.get("id"),
        },
    }


def meeting_ended_body(b: Mapping[str, Any]) -> dict[str, Any]:
    """``MEETING_ENDED``: the flat booking row the cron sends, without an envelope."""
    event_type = b.get("eventType") if isinstance(b.get("eventType"), dict) else {}
    assert isinstance(event_type, dict)
    body = {
        "triggerEvent": MEETING_ENDED,
        "id": b.get("id"),
        "uid": _uid(b),
        "eventTypeId": event_type.get("id", b.get("eventTypeId")),
        "title": b.get("title"),
        "startTime": b.get("start"),
        "endTime": b.get("end"),
        "status": "ACCEPTED",
        "fromReschedule": b.get("rescheduledFromUid"),
        "metadata": dict(b.get("metadata") or {}),
        "createdAt": b.get("createdAt"),
        "updatedAt": b.get("updatedAt"),
        "attendees": [
            {
                "email": a.get("email"),
                "name": a.get("name"),
                "timeZone": a.get("timeZone"),
                "phoneNumber": a.get("phoneNumber"),
                "noShow": a.get("absent") is True,
            }
            for a in _attendees(b)
        ],
    }
    return {k: v for k, v in body.items() if v is not None}


def _uid(b: Mapping[str, Any]) -> str:
    uid = b.get("uid")
    if not isinstance(uid, str) or not uid:
        raise UnusableBooking("a booking has no uid")
    return uid


def _times(b: Mapping[str, Any]) -> tuple[datetime, datetime]:
    start, end = parse_iso(b.get("start")), parse_iso(b.get("end"))
    if start is None or end is None:
        raise UnusableBooking(f"booking {b.get('uid')} has no start/end")
    return start, end


def _attendees(b: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = b.get("attendees")
    return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []


def _absent(b: Mapping[str, Any]) -> bool:
    return any(a.get("absent") is True for a in _attendees(b))


def _attendee(a: Mapping[str, Any]) -> dict[str, Any]:
    name = a.get("name")
    first, _, last = name.partition(" ") if isinstance(name, str) else ("", "", "")
    out = {
        "name": name,
        "email": a.get("email"),
        "firstName": first or None,
        "lastName": last or None,
        "timeZone": a.get("timeZone"),
        "phoneNumber": a.get("phoneNumber"),
        "language": {"locale": a.get("language") or "en"},
    }
    return {k: v for k, v in out.items() if v is not None or k == "phoneNumber"}


def _responses(raw: Any) -> dict[str, Any]:
    """REST form answers (plain values) → the webhook's ``{label, value}`` objects."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for slug, value in raw.items():
        if isinstance(value, dict) and "value" in value:
            out[slug] = {"label": value.get("label", slug), "value": value["value"]}
        elif value is not None:
            out[slug] = {"label": slug, "value": value}
    return out
