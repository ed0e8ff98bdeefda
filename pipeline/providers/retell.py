"""Retell AI webhooks: ``x-retell-signature`` verification, parsing and event ids.

The signature rules mirror the official Python SDK's verifier (``retell/lib/webhook_auth.py``
in retell-sdk 6.2.13, docs/providers.md) so that anything Retell signs and the SDK accepts we
accept, and nothing the SDK rejects gets through here. We are stricter in one place: the SDK's
``\\d`` also matches non-ASCII digits; we accept ASCII digits only.

Retell sends no event or delivery id, so ``event_id`` is derived from the body (docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pipeline.errors import InvalidSignature, MalformedPayload
from pipeline.providers.base import (
    Envelope,
    any_digest_matches,
    header_value,
    hmac_sha256_hex,
    load_object,
    nonempty_str,
    optional_str,
    require_object,
    require_str,
    sha256_hex,
    usable_secrets,
)

NAME = "retell"
TOPIC = "webhooks.retell"
SIGNATURE_HEADER = "x-retell-signature"

#: Same window as the SDK: ±5 minutes, inclusive, in both directions (future stamps too).
TOLERANCE_MS: Final = 300_000

# ``fullmatch`` makes any prefix, suffix, extra field, reordering or uppercase hex malformed.
_SIGNATURE = re.compile(r"v=([0-9]+),d=([0-9a-f]{64})")
# More digits than this cannot be a millisecond clock inside the window; refusing them early
# also keeps int() away from its 4300-digit limit (a ValueError would be a 500, not a 401).
_MAX_TS_DIGITS: Final = 19

CALL_EVENTS: Final = frozenset(
    {
        "call_started",
        "call_ended",
        "call_analyzed",
        "transcript_updated",
        "transfer_started",
        "transfer_bridged",
        "transfer_cancelled",
        "transfer_ended",
    }
)
CHAT_EVENTS: Final = frozenset(
    {"chat_started", "chat_ended", "chat_analyzed", "transcript_updated"}
)
KNOWN_EVENTS: Final = CALL_EVENTS | CHAT_EVENTS
INBOUND_EVENT: Final = "call_inbound"
SMS_INBOUND_EVENT: Final = "chat_inbound"


def sign(body: bytes, secret: str, now_ms: int) -> dict[str, str]:
    """The headers Retell would send for ``body`` at ``now_ms`` (simulator and tests)."""
    stamp = str(int(now_ms))
    digest = hmac_sha256_hex(secret, body + stamp.encode("ascii"))
    return {"Content-Type": "application/json", SIGNATURE_HEADER: f"v={stamp},d={digest}"}


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now_ms: int) -> None:
    """Return if ``body`` was signed by any of ``secrets`` within the window; else raise.

    Raises ``InvalidSignature`` with code ``provider_not_configured``, ``missing_signature``,
    ``malformed_signature``, ``stale_timestamp`` or ``invalid_signature``. The timestamp is
    checked before the MAC, as the SDK does; it is covered by the MAC, so it cannot be moved.
    """
    keys = usable_secrets(secrets)
    match = _SIGNATURE.fullmatch(header_value(headers, SIGNATURE_HEADER))
    if match is None:
        raise InvalidSignature(
            f"{SIGNATURE_HEADER} is not v=<ms>,d=<64 lowercase hex>", code="malformed_signature"
        )
    digits, digest = match.group(1), match.group(2)
    if len(digits.lstrip("0")) > _MAX_TS_DIGITS:
        raise InvalidSignature("signature timestamp is out of range", code="stale_timestamp")
    stamp = int(digits)
    if abs(now_ms - stamp) > TOLERANCE_MS:
        raise InvalidSignature(
            "signature timestamp is outside the 5-minute window", code="stale_timestamp"
        )
    # The SDK signs body + str(int(ts)); normalising the digits keeps leading-zero stamps
    # verifying exactly as they do with the official verifier.
    message = body + str(stamp).encode("ascii")
    if not any_digest_matches(keys, digest, lambda key: hmac_sha256_hex(key, message)):
        raise InvalidSignature("signature does not match the body", code="invalid_signature")


def parse(body: bytes) -> Envelope:
    """Decode and validate the envelope; raise ``MalformedPayload`` (400) if it is unusable.

    Unknown event types are accepted as long as they carry a ``call`` or ``chat`` object with
    its id: the record is kept, and the Kafka key keeps it in order with its call.
    """
    payload = load_object(body, NAME)
    event = require_str(payload, "event", "", NAME)
    if event == INBOUND_EVENT:
        inbound = require_object(payload, INBOUND_EVENT, NAME)
        require_str(inbound, "from_number", "call_inbound.", NAME)
        require_str(inbound, "to_number", "call_inbound.", NAME)
        own_id = optional_str(inbound, "call_id", "call_inbound.", NAME)
    elif event == SMS_INBOUND_EVENT:
        inbound = require_object(payload, SMS_INBOUND_EVENT, NAME)
        own_id = optional_str(inbound, "chat_id", "chat_inbound.", NAME)
    else:
        subject = _subject(payload, event)
        if subject is None:
            raise MalformedPayload(f"{NAME}: {event} carries neither a call nor a chat object")
        holder, id_field = subject
        own_id = require_str(require_object(payload, holder, NAME), id_field, f"{holder}.", NAME)
    eid = event_id(payload, body)
    return Envelope(
        provider=NAME, event_id=eid, event_type=event, key=own_id or eid, payload=payload
    )


def event_id(payload: dict[str, Any], body: bytes) -> str:
    """The dedup id of docs/architecture.md: ``{event}:{call_id}`` (``chat_id`` for chats).

    ``call_inbound`` uses its own ``call_id``, which Retell added precisely to dedup HTTP
    retries. Unknown events and anything without a usable id fall back to the SHA-256 of the
    raw body: a made-up ``{event}:{call_id}`` for an event that may fire several times per
    call would silently drop real events as duplicates, while the hash still catches
    byte-identical retries.
    """
    event = nonempty_str(payload.get("event"))
    if event is None:
        return sha256_hex(body)
    if event == INBOUND_EVENT:
        inbound = payload.get(INBOUND_EVENT)
        call_id = nonempty_str(inbound.get("call_id")) if isinstance(inbound, dict) else None
        return call_id or sha256_hex(body)
    where = _subject(payload, event) if event in KNOWN_EVENTS else None
    if where is not None:
        subject = payload.get(where[0])
        own_id = nonempty_str(subject.get(where[1])) if isinstance(subject, dict) else None
        if own_id is not None:
            return subject_event_id(event, own_id)
    return sha256_hex(body)


def subject_event_id(event: str, own_id: str) -> str:
    """``{event}:{call_id}`` (or chat id): the event id of an event about one call or chat."""
    return f"{event}:{own_id}"


def _subject(payload: Mapping[str, Any], event: str) -> tuple[str, str] | None:
    """Which envelope key holds the subject of ``event``: ``("call", "call_id")`` or chat.

    ``chat_*`` events are always about a chat; ``transcript_updated`` exists for both agent
    kinds, so for it (and unknown events) the key holding an object decides, ``call`` first;
    a key that is present but not an object is still chosen, so the error names it.
    """
    if event.startswith("chat_"):
        return "chat", "chat_id"
    for wanted in (dict, object):
        for holder in ("call", "chat"):
            if holder in payload and isinstance(payload[holder], wanted):
                return holder, f"{holder}_id"
    return None
