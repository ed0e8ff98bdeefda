"""Webhook bodies that tell the simulated story, in the providers' shapes (PROVIDERS.md).

Pure: every random detail (Twilio sids, word timings, idempotency keys) comes from a
``Random`` seeded by the entity's own id, so a body depends only on its call or booking.
Bodies are compact JSON with non-ASCII left unescaped, as Retell and Cal.com send them.

Which fields each event carries is fixed here and mirrored by ``expected.py``: a connected
call's ``start_timestamp`` is in every call event; end data, cost and the final transcript
in ``call_ended`` and ``call_analyzed``; ``transfer_destination`` in the transfer events and
both of those; ``call_analysis`` only in ``call_analyzed``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from random import Random
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson

from pipeline.simulator.model import (
    BookingEvent,
    Branch,
    CallEvent,
    Company,
    SimBooking,
    SimCall,
    Step,
    Turn,
    iso_ms,
    transcript_text,
    utc,
)

OPTIONAL_CALL_FIELDS = (
    "agent_name",
    "telephony_identifier",
    "public_log_url",
    "collected_dynamic_variables",
    "latency",
    "llm_token_usage",
    "retell_llm_dynamic_variables",
)
#: Cal.com triggers whose payload carries the booking's metadata (and so retell_call_id).
METADATA_TRIGGERS = frozenset({"BOOKING_REQUESTED", "BOOKING_CREATED", "MEETING_ENDED"})
ONGOING_EVENTS = frozenset(
    {"call_started", "transcript_updated", "transfer_started", "transfer_bridged"}
)
FINAL_EVENTS = frozenset({"call_ended", "call_analyzed"})
TRANSFER_CARRIERS = frozenset(
    {"transfer_started", "transfer_bridged", "call_ended", "call_analyzed"}
)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def iso_seconds(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_variant(ms: int, uid: str) -> str:
    """Cal.com writes times as ``...Z``, ``....000Z`` or ``+00:00`` depending on the path."""
    variant = hashlib.sha256(uid.encode()).digest()[0] % 3
    if variant == 0:
        return iso_seconds(ms)
    if variant == 1:
        return iso_ms(ms)
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# ---- Retell ------------------------------------------------------------------------------


def inbound_key(call_id: str) -> str:
    return f"retell:call_inbound:{call_id}"


def call_steps(call: SimCall) -> list[tuple[int, Step]]:
    """One step per event of ``call``, with the time it happens."""
    out = []
    final = final_fields(call)  # the same for call_ended and call_analyzed
    for event in call.events:
        if event.event == "call_inbound":
            body = dumps(
                {
                    "event": "call_inbound",
                    "call_inbound": {
                        "agent_id": call.agent_id,
                        "agent_version": _agent_version(call.agent_id),
                        "from_number": call.from_number,
                        "to_number": call.to_number,
                        "call_id": call.call_id,
                    },
                }
            )
            routing = None
            if call.company_id is not None and call.branch_id is not None:
                routing = (call.company_id, call.branch_id)
            step = Step(
                event.key,
                "retell",
                "call_inbound",
                call.call_id,
                body,
                200,
                unroutable=not call.routable,
                routing=routing,
            )
        else:
            body = dumps({"event": event.event, "call": call_object(call, event, final)})
            needs = inbound_key(call.call_id) if call.direction == "inbound" else None
            step = Step(
                event.key,
                "retell",
                event.event,
                f"{event.event}:{call.call_id}",
                body,
                202,
                metadata_from=needs,
                unroutable=not call.routable,
            )
        out.append((event.at_ms, step))
    return out


def _agent_version(agent_id: str) -> int:
    return hashlib.sha256(agent_id.encode()).digest()[0] % 9 + 1


def call_object(
    call: SimCall, event: CallEvent, final: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``call`` object of one event; ``final`` is ``final_fields(call)``, if at hand."""
    same = Random(call.call_id)  # details that must not change between a call's events
    name = event.event
    c: dict[str, Any] = {
        "call_id": call.call_id,
        "agent_id": call.agent_id,
        "agent_version": _agent_version(call.agent_id),
        "call_type": "phone_call",
        "call_status": "ongoing" if name in ONGOING_EVENTS else call.final_status,
        "direction": call.direction,
        "from_number": call.from_number,
        "to_number": call.to_number,
    }
    if "agent_name" not in call.omit:
        c["agent_name"] = "Front Desk"
    if call.start_ms is not None:
        c["start_timestamp"] = call.start_ms
    if "telephony_identifier" not in call.omit:
        c["telephony_identifier"] = {"twilio_call_sid": f"CA{same.getrandbits(128):032x}"}
    if call.direction == "outbound" and call.company_id is not None:
        c["metadata"] = {
            "company_id": str(call.company_id),
            "branch_id": str(call.branch_id),
            "campaign": "appointment_reminders",
        }
        if "retell_llm_dynamic_variables" not in call.omit:
            c["retell_llm_dynamic_variables"] = {"customer_name": call.customer_name}
    if call.transfer_destination is not None and name in TRANSFER_CARRIERS:
        c["transfer_destination"] = call.transfer_destination
    if name == "transcript_updated" and call.keeps_transcript:
        turns = call.turns[: event.turns]
        c["transcript"] = transcript_text(turns)
        c["transcript_with_tool_calls"] = _with_tool_calls(call, turns)
    if name in FINAL_EVENTS:
        c.update(final if final is not None else final_fields(call))
    if name == "call_analyzed":
        analysis: dict[str, Any] = {"call_summary": call.summary}
        if call.sentiment is not None:
            analysis["user_sentiment"] = call.sentiment
        analysis["call_successful"] = call.successful
        analysis["in_voicemail"] = call.in_voicemail
        analysis["custom_analysis_data"] = {"booked": bool(call.tool_calls)}
        c["call_analysis"] = analysis
    return c


def final_fields(call: SimCall) -> dict[str, Any]:
    """What ``call_ended`` and ``call_analyzed`` add: end data, transcript, recording, cost."""
    same = Random(f"{call.call_id}:final")
    c: dict[str, Any] = {}
    c["end_timestamp"] = call.end_ms
    if call.duration_ms is not None:
        c["duration_ms"] = call.duration_ms
    c["disconnection_reason"] = call.disconnection_reason
    if call.keeps_transcript and call.turns:
        c["transcript"] = transcript_text(call.turns)
        c["transcript_object"] = _with_words(call.turns, same)
        c["transcript_with_tool_calls"] = _with_tool_calls(call, call.turns)
    if call.start_ms is not None and call.storage == "everything":
        slug = call.call_id[5:17]
        c["recording_url"] = f"https://recordings.example.invalid/{slug}/recording.wav"
        c["recording_multi_channel_url"] = f"https://recordings.example.invalid/{slug}/multi.wav"
    if "public_log_url" not in call.omit:
        c["public_log_url"] = f"https://logs.example.invalid/{call.call_id}/public.log"
    if call.cost is not None:
        seconds = (call.duration_ms or 0) / 1000
        c["call_cost"] = {
            "combined_cost": float(call.cost),
            "product_costs": [
                {
                    "product": "retell_platform",
                    "unit_price": 0.07,
                    "cost": round(seconds * 0.07, 4),
                },
                {"product": "elevenlabs_tts", "unit_price": 0.04, "cost": round(seconds * 0.04, 4)},
            ],
            "total_duration_seconds": round(seconds),
            "total_duration_unit_price": 0.11,
        }
    if call.start_ms is not None:
        if "collected_dynamic_variables" not in call.omit:
            c["collected_dynamic_variables"] = {"caller_name": call.customer_name}
        if "latency" not in call.omit:
            values = sorted(same.randint(450, 1900) for _ in range(5))
            c["latency"] = {
                "e2e": {
                    "p50": values[2],
                    "p90": values[4],
                    "p95": values[4],
                    "p99": values[4],
                    "max": values[4],
                    "min": values[0],
                    "num": 5,
                    "values": values,
                }
            }
        if "llm_token_usage" not in call.omit:
            tokens = [same.randint(800, 4000) for _ in range(3)]
            c["llm_token_usage"] = {"average": sum(tokens) / 3, "num_requests": 3, "values": tokens}
    c["data_storage_setting"] = call.storage
    c["opt_in_signed_url"] = False
    return c


def _with_words(turns: tuple[Turn, ...], rng: Random) -> list[dict[str, Any]]:
    clock = 0.4
    out = []
    for turn in turns:
        words = []
        for word in turn.content.split():
            end = clock + 0.15 + rng.random() * 0.3
            words.append({"word": word, "start": round(clock, 2), "end": round(end, 2)})
            clock = end + 0.05
        clock += 0.8
        out.append({"role": turn.role, "content": turn.content, "words": words})
    return out


def _with_tool_calls(call: SimCall, turns: tuple[Turn, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        out.append({"role": turn.role, "content": turn.content, "words": []})
        for n, (after, tool, args, result) in enumerate(call.tool_calls):
            if after == index + 1:
                tc = f"tc_{n + 1:02d}"
                out.append(
                    {
                        "role": "tool_call_invocation",
                        "tool_call_id": tc,
                        "name": tool,
                        "arguments": args,
                    }
                )
                out.append(
                    {
                        "role": "tool_call_result",
                        "tool_call_id": tc,
                        "content": result,
                        "successful": True,
                    }
                )
    return out


def with_metadata(body: bytes, metadata: dict[str, Any] | None) -> bytes:
    """``body`` with ``call.metadata`` set to what our ``call_inbound`` answer said.

    Retell copies the answer's metadata onto the call; an empty answer adds nothing (Retell
    omits ``metadata`` that was never provided).
    """
    if not metadata:
        return body
    payload = orjson.loads(body)
    payload["call"]["metadata"] = metadata
    return dumps(payload)


# ---- Cal.com -----------------------------------------------------------------------------


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
                "rescheduleStartTime": _iso_variant(old.start_ms, old.uid),
                "rescheduleEndTime": _iso_variant(old.end_ms, old.uid),
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
        "startTime": _iso_variant(b.start_ms, b.uid),
        "endTime": _iso_variant(b.end_ms, b.uid),
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


# ---- all good traffic --------------------------------------------------------------------


def good_steps(calls: list[SimCall], bookings: list[SimBooking]) -> list[tuple[int, Step]]:
    by_uid = {b.uid: b for b in bookings}
    out: list[tuple[int, Step]] = []
    for call in calls:
        out.extend(call_steps(call))
    for booking in bookings:
        out.extend(booking_steps(booking, by_uid))
    return out


# ---- bad traffic -------------------------------------------------------------------------


class _Ids(Protocol):
    routes: list[tuple[Company, Branch]]
    day_start: int
    anchor: int

    def call_id(self) -> str: ...

    def booking_uid(self) -> str: ...


def forged_step(n: int, ids: _Ids, rng: Random) -> tuple[int, Step]:
    """A well-formed body about a real branch with a bad signature: it must be refused (401),
    and if it were let through it would leave a row that the expected state does not have."""
    at = rng.randint(ids.day_start, ids.anchor)
    _, branch = rng.choice(ids.routes)
    if rng.random() < 0.6:
        signing = rng.choice(("wrong_secret", "stale", "missing", "garbled"))
        start = at - rng.randint(60_000, 300_000)
        body = dumps(
            {
                "event": "call_ended",
                "call": {
                    "call_id": ids.call_id(),
                    "agent_id": branch.retell_agent_id or "agent_forged",
                    "agent_version": 1,
                    "call_type": "phone_call",
                    "call_status": "ended",
                    "direction": "inbound",
                    "from_number": "+15555550100",
                    "to_number": branch.phone_number,
                    "start_timestamp": start,
                    "end_timestamp": at,
                    "duration_ms": at - start,
                    "disconnection_reason": "user_hangup",
                    "call_cost": {"combined_cost": 99.5},
                },
            }
        )
        return at, Step(
            f"bad:signature:{n}",
            "retell",
            "call_ended",
            None,
            body,
            401,
            signing=signing,
            bad=f"signature_{signing}",
        )
    signing = rng.choice(("wrong_secret", "missing", "garbled"))
    uid = ids.booking_uid()
    body = dumps(
        {
            "triggerEvent": "BOOKING_CREATED",
            "createdAt": iso_ms(at),
            "payload": {
                "uid": uid,
                "bookingId": rng.randrange(10_000, 99_999_999),
                "eventTypeId": branch.calcom_event_type_id,
                "title": "Forged booking",
                "startTime": iso_seconds(at + 86_400_000),
                "endTime": iso_seconds(at + 88_200_000),
                "status": "ACCEPTED",
                "attendees": [
                    {
                        "name": "Mallory",
                        "email": "mallory@example.com",
                        "timeZone": "UTC",
                        "language": {"locale": "en"},
                    }
                ],
            },
        }
    )
    return at, Step(
        f"bad:signature:{n}",
        "calcom",
        "BOOKING_CREATED",
        None,
        body,
        401,
        signing=signing,
        bad=f"signature_{signing}",
    )


def malformed_step(n: int, ids: _Ids, rng: Random) -> tuple[int, Step]:
    """A correctly signed body that is not a usable webhook: it must be refused (400)."""
    at = rng.randint(ids.day_start, ids.anchor)
    created = iso_ms(at)
    retell: list[tuple[str, bytes]] = [
        ("truncated_json", b'{"event":"call_ended","call":{"call_id":"' + ids.call_id().encode()),
        ("not_an_object", b'[{"event":"call_ended"}]'),
        ("missing_call", b'{"event":"call_ended"}'),
        (
            "missing_call_id",
            dumps(
                {"event": "call_started", "call": {"agent_id": "agent_x", "call_status": "ongoing"}}
            ),
        ),
        ("missing_event", dumps({"call": {"call_id": ids.call_id()}})),
    ]
    calcom: list[tuple[str, bytes]] = [
        ("truncated_json", b'{"triggerEvent":"BOOKING_CREATED","createdAt":"' + created.encode()),
        (
            "missing_created_at",
            dumps({"triggerEvent": "BOOKING_CREATED", "payload": {"uid": ids.booking_uid()}}),
        ),
        ("missing_trigger", dumps({"createdAt": created, "payload": {"uid": ids.booking_uid()}})),
        (
            "missing_uid",
            dumps({"triggerEvent": "BOOKING_CANCELLED", "createdAt": created, "payload": {}}),
        ),
        ("flat_without_uid", dumps({"triggerEvent": "MEETING_ENDED", "id": 1, "title": "x"})),
    ]
    provider = rng.choice(("retell", "calcom"))
    reason, body = rng.choice(retell if provider == "retell" else calcom)
    return at, Step(
        f"bad:malformed:{n}", provider, "malformed", None, body, 400, bad=f"malformed_{reason}"
    )
