"""Cal.com webhooks: ``X-Cal-Signature-256`` verification, parsing and event ids.

Cal.com signs the raw body alone (lowercase hex HMAC-SHA256, no prefix, no timestamp), so
there is no replay window to check here (docs/providers.md). When a webhook has no secret it
still sends the header, with the literal ``no-secret-provided``: that is refused, never
treated as "unsigned but fine".

Bodies come in two shapes (§2.3): the ``{triggerEvent, createdAt, payload}`` envelope, and
the flat booking row of the cron-sent ``MEETING_STARTED`` / ``MEETING_ENDED``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pipeline.errors import InvalidSignature, SchemaViolation
from pipeline.providers.base import (
    Envelope,
    any_digest_matches,
    header_value,
    hmac_sha256_hex,
    load_object,
    nonempty_str,
    require_object,
    require_str,
    sha256_hex,
    usable_secrets,
)
from pipeline.providers.facts import (
    BookingFacts,
    Clipped,
    clip,
    fitted,
    id_value,
    integer,
    obj,
    parse_iso,
    text,
)

NAME = "calcom"
TOPIC = "webhooks.calcom"
ROUTE = "/webhooks/calcom"
SIGNATURE_HEADER = "X-Cal-Signature-256"
#: The environment variable with the webhook secret(s) (comma-separated for a rotation),
#: and the settings field it is parsed into.
SECRETS_ENV = "CALCOM_WEBHOOK_SECRET"
SECRETS_SETTING = "calcom_webhook_secrets"
#: The table of the rows an event is about (``events show``).
SUBJECTS = "appointments"
WEBHOOK_VERSION: Final = "2021-10-20"
NO_SECRET: Final = "no-secret-provided"

# Node's digest("hex") is lowercase; anything else did not come from Cal.com unaltered.
_SIGNATURE = re.compile(r"[0-9a-f]{64}")

NO_SHOW_EVENT: Final = "BOOKING_NO_SHOW_UPDATED"
#: Sent flat (no envelope): the booking row with ``triggerEvent`` spread into it.
FLAT_EVENTS: Final = frozenset({"MEETING_STARTED", "MEETING_ENDED"})
#: Enveloped booking events that happen at most once per booking uid.
BOOKING_EVENTS: Final = frozenset(
    {
        "BOOKING_CREATED",
        "BOOKING_REQUESTED",
        "BOOKING_RESCHEDULED",
        "BOOKING_CANCELLED",
        "BOOKING_REJECTED",
        "BOOKING_PAID",
        "BOOKING_PAYMENT_INITIATED",
    }
)
#: Every event type we know (metrics label them by name; others are ``other``).
EVENT_TYPES: Final = BOOKING_EVENTS | FLAT_EVENTS | {NO_SHOW_EVENT}


def sign(body: bytes, secret: str, now_ms: int) -> dict[str, str]:
    """The headers Cal.com would send for ``body``. ``now_ms`` is unused: Cal.com signs no
    time; it is accepted so every provider's ``sign`` has the same signature."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: hmac_sha256_hex(secret, body),
        "X-Cal-Webhook-Version": WEBHOOK_VERSION,
    }


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now_ms: int) -> None:
    """Return if ``body`` was signed by any of ``secrets``; else raise ``InvalidSignature``.

    ``now_ms`` is unused (Cal.com signs no timestamp) but kept for a uniform interface.
    """
    keys = usable_secrets(secrets)
    value = header_value(headers, SIGNATURE_HEADER)
    if value == NO_SECRET:
        raise InvalidSignature(
            "Cal.com sent no-secret-provided: set a secret on the webhook",
            code="missing_signature",
        )
    if _SIGNATURE.fullmatch(value) is None:
        raise InvalidSignature(
            f"{SIGNATURE_HEADER} is not 64 lowercase hex characters", code="malformed_signature"
        )
    if not any_digest_matches(keys, value, lambda key: hmac_sha256_hex(key, body)):
        raise InvalidSignature("signature does not match the body", code="invalid_signature")


def parse(body: bytes) -> Envelope:
    """Decode and validate the body; raise ``MalformedPayload`` (400) if it is unusable.

    Unknown triggers are accepted as long as the envelope (``createdAt`` and a ``payload``
    object) is there; their Kafka key is the booking uid when they carry one.
    """
    payload = load_object(body, NAME)
    trigger = require_str(payload, "triggerEvent", "", NAME)
    if trigger in FLAT_EVENTS:
        key = require_str(payload, "uid", "", NAME)
    else:
        require_str(payload, "createdAt", "", NAME)
        inner = require_object(payload, "payload", NAME)
        if trigger == NO_SHOW_EVENT:
            key = require_str(inner, "bookingUid", "payload.", NAME)
        elif trigger in BOOKING_EVENTS:
            key = require_str(inner, "uid", "payload.", NAME)
        else:
            key = nonempty_str(inner.get("uid")) or nonempty_str(inner.get("bookingUid")) or ""
    eid = event_id(payload, body)
    return Envelope(
        provider=NAME, event_id=eid, event_type=trigger, key=key or eid, payload=payload
    )


def event_id(payload: dict[str, Any], body: bytes) -> str:
    """The dedup id of docs/architecture.md: ``{triggerEvent}:{uid}``.

    ``BOOKING_NO_SHOW_UPDATED`` adds ``createdAt`` because it legitimately repeats (an
    attendee can be marked and unmarked). Unknown triggers, and bodies without a usable id,
    fall back to the SHA-256 of the raw body: guessing that an unknown trigger happens once
    per booking could drop real events as duplicates.
    """
    trigger = nonempty_str(payload.get("triggerEvent"))
    inner = payload.get("payload")
    inner = inner if isinstance(inner, dict) else {}
    if trigger in FLAT_EVENTS:
        uid = nonempty_str(payload.get("uid"))
        if uid is not None:
            return f"{trigger}:{uid}"
    elif trigger in BOOKING_EVENTS:
        uid = nonempty_str(inner.get("uid"))
        if uid is not None:
            return f"{trigger}:{uid}"
    elif trigger == NO_SHOW_EVENT:
        booking_uid = nonempty_str(inner.get("bookingUid"))
        created_at = nonempty_str(payload.get("createdAt"))
        if booking_uid is not None and created_at is not None:
            return no_show_prefix(booking_uid) + created_at
    return sha256_hex(body)


def subjects(payload: Any, event_id: str) -> list[str]:
    """The booking uids an event is about (a reschedule: the new and the original one),
    from the body if it parsed, else from the event id (``{trigger}:{uid}[:...]``)."""
    found: list[str] = []
    if isinstance(payload, dict):
        inner = payload.get("payload")
        inner = inner if isinstance(inner, dict) else payload
        for name in ("uid", "bookingUid", "rescheduleUid"):
            if isinstance(inner.get(name), str) and inner[name]:
                found.append(inner[name])
    if not found:
        parts = event_id.split(":")
        if len(parts) >= 2 and parts[1]:
            found.append(parts[1])
    return list(dict.fromkeys(found))


#: Cal.com has no latest-snapshot events: every event id names one body.
SUPERSEDED_BY: Final[dict[str, str]] = {}


def rows_of_applied(event_type: str, event_id: str) -> tuple[str, ...] | None:
    """The booking uids whose rows an *applied* event of this type and id stands for, read
    from the id alone (no body); None when the id does not say (a reschedule touches two
    bookings, an unknown trigger's id is a hash): the apply path then parses the body."""
    if event_type == NO_SHOW_EVENT:
        rest = (
            event_id[len(NO_SHOW_EVENT) + 1 :] if event_id.startswith(f"{NO_SHOW_EVENT}:") else ""
        )
        uid = rest.split(":", 1)[0]
        return (uid,) if uid else None
    if event_type in (BOOKING_EVENTS | FLAT_EVENTS) - {"BOOKING_RESCHEDULED"}:
        prefix = f"{event_type}:"
        if event_id.startswith(prefix) and len(event_id) > len(prefix):
            return (event_id[len(prefix) :],)
    return None


def no_show_prefix(booking_uid: str) -> str:
    """How the event ids of a booking's no-show updates start (they are found by it)."""
    return f"{NO_SHOW_EVENT}:{booking_uid}:"


# --- facts: what an event says about a booking (pipeline.providers.facts) -----------------


def facts(event_type: str, payload: Mapping[str, Any]) -> BookingFacts:
    """What the event says about its booking. Raises ``SchemaViolation`` for a field of
    the wrong type or a missing uid."""
    return booking_facts(event_type, payload)


def booking_facts(event_type: str, payload: Mapping[str, Any]) -> BookingFacts:
    """Facts of a Cal.com webhook (enveloped or flat ``MEETING_*``)."""
    body = obj(payload, "payload")
    flat = body is None
    if flat:
        body = dict(payload)
    assert body is not None
    created_at = None if flat else parse_iso(payload.get("createdAt"), "createdAt")
    if event_type == "BOOKING_NO_SHOW_UPDATED":
        uid = text(body, "bookingUid", 128)
        attendees = body.get("attendees") or []
        if not isinstance(attendees, list):
            raise SchemaViolation("attendees must be a list")
        marked = any(isinstance(a, dict) and a.get("noShow") is True for a in attendees)
        if not uid:
            raise SchemaViolation("payload.bookingUid is required")
        return BookingFacts(
            trigger=event_type,
            uid=uid,
            created_at=created_at,
            booking_id=integer(body, "bookingId"),
            no_show_marked=marked,
        )
    uid = text(body, "uid", 128)
    if not uid:
        raise SchemaViolation("payload.uid is required")
    clipped: Clipped = []
    attendee = _first_attendee(body)
    responses = obj(body, "responses") or {}
    phone_answer = responses.get("attendeePhoneNumber")
    phone = None
    if isinstance(phone_answer, dict) and isinstance(phone_answer.get("value"), str):
        phone = phone_answer["value"] or None
    if phone is None and attendee is not None:
        phone = text(attendee, "phoneNumber")
    if phone is not None and len(phone) > 32:
        clipped.append(("attendee_phone", "dropped"))
        phone = None
    metadata = obj(body, "metadata") or {}
    call_ref = metadata.get("retell_call_id")
    reason = text(body, "cancellationReason") or text(body, "rejectionReason")
    return BookingFacts(
        trigger=event_type,
        uid=uid,
        created_at=created_at,
        booking_id=integer(body, "bookingId") if not flat else integer(body, "id"),
        event_type_id=integer(body, "eventTypeId"),
        starts_at=parse_iso(body.get("startTime"), "startTime"),
        ends_at=parse_iso(body.get("endTime"), "endTime"),
        title=clip(text(body, "title"), 512),
        reschedule_uid=fitted(body, "rescheduleUid", 128, clipped),
        reschedule_starts_at=parse_iso(body.get("rescheduleStartTime"), "rescheduleStartTime"),
        reschedule_ends_at=parse_iso(body.get("rescheduleEndTime"), "rescheduleEndTime"),
        cancellation_reason=reason,
        attendee_phone=phone,
        attendee_email=_email(attendee, clipped),
        attendee_name=clip(text(attendee, "name"), 255) if attendee else None,
        retell_call_id=_call_ref(call_ref, clipped),
        metadata_branch_id=id_value(metadata.get("branch_id")),
        clipped=tuple(clipped),
    )


def _email(attendee: Mapping[str, Any] | None, clipped: Clipped) -> str | None:
    if attendee is None:
        return None
    email = text(attendee, "email")
    if email is not None and len(email) > 320:
        clipped.append(("attendee_email", "dropped"))
        return None
    return email


def _call_ref(value: object, clipped: Clipped) -> str | None:
    """``metadata.retell_call_id``: ours when we booked it; anything else is ignored."""
    if not isinstance(value, str):
        return None
    if len(value) > 128:
        clipped.append(("retell_call_id", "dropped"))
        return None
    return value


def _first_attendee(body: Mapping[str, Any]) -> dict[str, Any] | None:
    attendees = body.get("attendees")
    if attendees is None:
        return None
    if not isinstance(attendees, list):
        raise SchemaViolation("attendees must be a list")
    first = attendees[0] if attendees else None
    if first is not None and not isinstance(first, dict):
        raise SchemaViolation("attendees[0] must be an object")
    return first
