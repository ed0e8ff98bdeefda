"""Consistent event bodies for one call and its bookings, as Retell and Cal.com send them.

Each function returns compact JSON bytes. The values agree across events of one call or
booking, as the providers' progressively filled objects do.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

BRANCH_NUMBER = "+14155550199"
CALLER = "+14155550142"


def booking_id(uid: str) -> int:
    """Cal.com's numeric booking id, stable for a uid (the same in every event)."""
    return zlib.crc32(uid.encode()) % 100_000


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def call_events(
    call_id: str,
    *,
    start_ms: int,
    to_number: str = BRANCH_NUMBER,
    from_number: str = CALLER,
    connected: bool = True,
    sentiment: str = "Positive",
) -> list[bytes]:
    """call_started, two transcript snapshots, call_ended, call_analyzed."""
    base: dict[str, Any] = {
        "call_id": call_id,
        "agent_id": "agent_8a1d4c2b9e7f",
        "agent_version": 3,
        "call_type": "phone_call",
        "direction": "inbound",
        "from_number": from_number,
        "to_number": to_number,
        "metadata": {"source": "test"},
    }
    end_ms = start_ms + 95_000
    turns = [
        {"role": "agent", "content": "Good morning, Bayview Dental.", "words": []},
        {"role": "user", "content": "I'd like to book a cleaning.", "words": []},
        {"role": "agent", "content": "Thursday at 10:30 works.", "words": []},
    ]
    final_transcript = "\n".join(f"{str(t['role']).capitalize()}: {t['content']}" for t in turns)
    ended = dict(
        base,
        call_status="ended" if connected else "not_connected",
        end_timestamp=end_ms,
        duration_ms=95_000 if connected else 0,
        disconnection_reason="user_hangup" if connected else "dial_no_answer",
        transcript=final_transcript if connected else "",
        recording_url=f"https://example-recordings.invalid/{call_id}.wav",
        call_cost={"combined_cost": 13.37, "product_costs": []},
    )
    if connected:
        ended["start_timestamp"] = start_ms
    analyzed = dict(
        ended,
        call_analysis={
            "call_summary": "Booked a cleaning.",
            "user_sentiment": sentiment,
            "call_successful": True,
            "in_voicemail": False,
        },
    )
    events = []
    if connected:
        started = dict(base, call_status="ongoing", start_timestamp=start_ms)
        events.append({"event": "call_started", "call": started})
        for n in (1, 2):
            snap = dict(
                base,
                call_status="ongoing",
                start_timestamp=start_ms,
                transcript_with_tool_calls=turns[: n + 1],
            )
            events.append({"event": "transcript_updated", "call": snap})
    events.append({"event": "call_ended", "call": ended})
    events.append({"event": "call_analyzed", "call": analyzed})
    return [orjson.dumps(e) for e in events]


def booking(
    trigger: str,
    uid: str,
    *,
    created_ms: int,
    event_type_id: int = 901,
    start: str = "2026-01-08T18:30:00Z",
    end: str = "2026-01-08T19:00:00Z",
    phone: str | None = CALLER,
    email: str = "dana.reyes@example.com",
    call_id: str | None = None,
    **extra: Any,
) -> bytes:
    payload: dict[str, Any] = {
        "uid": uid,
        "bookingId": booking_id(uid),
        "eventTypeId": event_type_id,
        "title": "Cleaning",
        "startTime": start,
        "endTime": end,
        "attendees": [{"name": "Dana Reyes", "email": email, "timeZone": "America/Los_Angeles"}],
        "responses": {"attendeePhoneNumber": {"label": "phone", "value": phone}} if phone else {},
        "metadata": {"retell_call_id": call_id} if call_id else {},
    }
    payload.update(extra)
    return orjson.dumps(
        {"triggerEvent": trigger, "createdAt": _iso(created_ms), "payload": payload}
    )


def no_show(uid: str, *, created_ms: int, marked: bool = True) -> bytes:
    return orjson.dumps(
        {
            "triggerEvent": "BOOKING_NO_SHOW_UPDATED",
            "createdAt": _iso(created_ms),
            "payload": {
                "bookingUid": uid,
                "bookingId": booking_id(uid),
                "attendees": [{"email": "dana.reyes@example.com", "noShow": marked}],
                "message": "marked",
            },
        }
    )


def meeting_ended(uid: str, *, event_type_id: int = 901) -> bytes:
    return orjson.dumps(
        {
            "triggerEvent": "MEETING_ENDED",
            "id": booking_id(uid),
            "uid": uid,
            "eventTypeId": event_type_id,
            "startTime": "2026-01-08T18:30:00.000Z",
            "endTime": "2026-01-08T19:00:00.000Z",
            "status": "ACCEPTED",
            "metadata": {},
            "attendees": [],
        }
    )


def lifecycle(start_ms: int) -> list[tuple[str, bytes]]:
    """A call that books two appointments, one later marked no-show and ended, the other
    requested, confirmed, rescheduled and the new booking cancelled; plus a second,
    unconnected call from the same customer."""
    t = start_ms
    out = [("retell", b) for b in call_events("call_A", start_ms=t)]
    out += [("retell", b) for b in call_events("call_B", start_ms=t + 3_600_000, connected=False)]
    out += [
        ("calcom", booking("BOOKING_CREATED", "bk_1", created_ms=t + 30_000, call_id="call_A")),
        ("calcom", no_show("bk_1", created_ms=t + 86_400_000)),
        ("calcom", meeting_ended("bk_1")),
        (
            "calcom",
            booking(
                "BOOKING_REQUESTED",
                "bk_2",
                created_ms=t + 40_000,
                event_type_id=905,
                call_id="call_A",
                phone=None,
            ),
        ),
        (
            "calcom",
            booking(
                "BOOKING_CREATED",
                "bk_2",
                created_ms=t + 50_000,
                event_type_id=905,
                call_id="call_A",
                phone=None,
            ),
        ),
        (
            "calcom",
            booking(
                "BOOKING_RESCHEDULED",
                "bk_3",
                created_ms=t + 70_000,
                event_type_id=905,
                phone=None,
                rescheduleUid="bk_2",
                rescheduleStartTime="2026-01-08T18:30:00Z",
                rescheduleEndTime="2026-01-08T19:00:00Z",
                start="2026-01-09T17:00:00Z",
                end="2026-01-09T17:30:00Z",
            ),
        ),
        (
            "calcom",
            booking(
                "BOOKING_CANCELLED",
                "bk_3",
                created_ms=t + 90_000,
                event_type_id=905,
                phone=None,
                cancellationReason="Feeling unwell",
                start="2026-01-09T17:00:00Z",
                end="2026-01-09T17:30:00Z",
            ),
        ),
    ]
    return out


def start_of(day: datetime) -> int:
    return (
        int(day.replace(tzinfo=UTC).timestamp() * 1000)
        if day.tzinfo is None
        else int(day.timestamp() * 1000)
    )


__all__ = ["call_events", "booking", "no_show", "meeting_ended", "lifecycle", "timedelta"]
