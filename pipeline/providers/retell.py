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
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pipeline.errors import InvalidSignature, MalformedPayload, SchemaViolation
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
from pipeline.providers.facts import (
    CALL_EVENT_RANK,
    UNKNOWN_CALL_EVENT_RANK,
    CallFacts,
    Clipped,
    EventKey,
    Facts,
    Mention,
    boolean,
    epoch_ms,
    fitted,
    integer,
    obj,
    text,
)

NAME = "retell"
TOPIC = "webhooks.retell"
ROUTE = "/webhooks/retell"
SIGNATURE_HEADER = "x-retell-signature"
#: The environment variable with the API key(s) Retell signs with (comma-separated for a
#: rotation), and the settings field it is parsed into.
SECRETS_ENV = "RETELL_API_KEY"
SECRETS_SETTING = "retell_api_keys"
#: The table of the rows an event is about (``events show``).
SUBJECTS = "calls"

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
#: Every event type we know (metrics label them by name; others are ``other``).
EVENT_TYPES: Final = KNOWN_EVENTS | {INBOUND_EVENT, SMS_INBOUND_EVENT}


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


def subjects(payload: Any, event_id: str) -> list[str]:
    """The call ids an event is about: from the body if it parsed, else from the event id
    (``{event}:{call_id}``; a bare SHA-256 has none)."""
    found = []
    if isinstance(payload, dict):
        for holder in ("call", INBOUND_EVENT):
            inner = payload.get(holder)
            if isinstance(inner, dict) and isinstance(inner.get("call_id"), str):
                found.append(inner["call_id"])
    return found or _subject_of_id(event_id)


#: Latest-snapshot events (one event id, many bodies) and the event that supersedes them:
#: once a call's ``call_ended`` is applied, a ``transcript_updated`` snapshot can change
#: nothing (the final event carries the complete transcript and every field a snapshot
#: has), so a replay need not parse it (pipeline/apply/recognise.py).
SUPERSEDED_BY: Final = {"transcript_updated": "call_ended"}


def rows_of_applied(event_type: str, event_id: str) -> tuple[str, ...] | None:
    """The call ids whose rows an *applied* event of this type and id stands for, read from
    the id alone (no body): ``()`` for events that make no row (``call_inbound``, chats),
    None when the id does not say (the apply path then parses the body)."""
    if event_type == INBOUND_EVENT or event_type in NO_CALL_ROW:
        return ()
    prefix = f"{event_type}:"
    if event_type in CALL_EVENTS and event_id.startswith(prefix) and len(event_id) > len(prefix):
        return (event_id[len(prefix) :],)
    return None


def _subject_of_id(event_id: str) -> list[str]:
    parts = event_id.split(":")
    return [parts[1]] if len(parts) >= 2 and parts[1] else []


# --- facts: what an event says about a call (pipeline.providers.facts) --------------------

#: Events that change no call row: recorded and attributed, nothing more.
NO_CALL_ROW: Final = frozenset(
    {"chat_started", "chat_ended", "chat_analyzed", SMS_INBOUND_EVENT, INBOUND_EVENT}
)


def facts(event_type: str, payload: Mapping[str, Any]) -> Facts:
    """What the event says: a call's facts, or for chats and ``call_inbound`` where it
    belongs. Raises ``SchemaViolation`` for a field of the wrong type."""
    return call_facts(event_type, payload) or _mention(payload)


def milestone_key(event_type: str, call_id: str) -> EventKey:
    """The ``webhook_events`` key of a call's ``call_ended``/``call_analyzed``."""
    return NAME, subject_event_id(event_type, call_id)


def call_facts(event_type: str, payload: Mapping[str, Any]) -> CallFacts | None:
    """Facts of a Retell call event; None for events that change no call row."""
    if event_type in NO_CALL_ROW or "chat" in payload:
        return None
    call = obj(payload, "call")
    if call is None:
        raise SchemaViolation("call must be an object")
    call_id = text(call, "call_id", 128)
    if not call_id:
        raise SchemaViolation("call.call_id is required")
    analysis = obj(call, "call_analysis") or {}
    metadata = obj(call, "metadata")
    clipped: Clipped = []
    disconnection = fitted(call, "disconnection_reason", 64, clipped, truncate=True)
    in_voicemail = boolean(analysis, "in_voicemail")
    return CallFacts(
        call_id=call_id,
        event_type=event_type,
        rank=CALL_EVENT_RANK.get(event_type, UNKNOWN_CALL_EVENT_RANK),
        milestones=(milestone_key("call_ended", call_id), milestone_key("call_analyzed", call_id)),
        agent_id=fitted(call, "agent_id", 128, clipped),
        call_type=fitted(call, "call_type", 32, clipped),
        direction=fitted(call, "direction", 16, clipped),
        from_number=fitted(call, "from_number", 32, clipped),
        to_number=fitted(call, "to_number", 32, clipped),
        status=fitted(call, "call_status", 32, clipped),
        started_at=epoch_ms(call, "start_timestamp"),
        ended_at=epoch_ms(call, "end_timestamp"),
        duration_ms=_duration(call),
        disconnection_reason=disconnection,
        transfer_destination=fitted(call, "transfer_destination", 255, clipped, truncate=True),
        recording_url=fitted(call, "recording_url", 2048, clipped),
        cost_cents=_cents(obj(call, "call_cost")),
        transcript=_transcript(call),
        in_voicemail=in_voicemail,
        successful=boolean(analysis, "call_successful"),
        sentiment=fitted(analysis, "user_sentiment", 16, clipped),
        summary=text(analysis, "call_summary"),
        metadata=metadata,
        clipped=tuple(clipped),
    )


def _duration(call: Mapping[str, Any]) -> int | None:
    """``duration_ms``; a negative one is no duration (NULL, as when Retell leaves it out):
    the call still counts, and ``duration_ms_total`` never shrinks."""
    duration = integer(call, "duration_ms")
    return duration if duration is None or duration >= 0 else None


def _cents(cost: Mapping[str, Any] | None) -> Decimal | None:
    if cost is None:
        return None
    value = cost.get("combined_cost")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaViolation("call_cost.combined_cost must be a number")
    try:
        cents = Decimal(str(value)).quantize(Decimal("0.0001"))
    except InvalidOperation as exc:
        raise SchemaViolation("call_cost.combined_cost is not a finite number") from exc
    if not Decimal(0) <= cents < Decimal(10) ** 10:
        raise SchemaViolation("call_cost.combined_cost is out of range")
    return cents


def _transcript(call: Mapping[str, Any]) -> str | None:
    whole = text(call, "transcript")
    if whole is not None:
        return whole
    turns = call.get("transcript_with_tool_calls") or call.get("transcript_object")
    if not isinstance(turns, list):
        return None
    lines = []
    for turn in turns:
        if isinstance(turn, dict) and turn.get("role") in ("agent", "user"):
            content = turn.get("content")
            if isinstance(content, str):
                lines.append(f"{turn['role'].capitalize()}: {content}")
    return "\n".join(lines) or None


def _mention(payload: Mapping[str, Any]) -> Mention:
    """Where a Retell event that is not about a call row belongs: the number and agent of a
    ``call_inbound``/``chat_inbound``, the agent and metadata of a chat."""
    inbound = payload.get("call_inbound") or payload.get("chat_inbound")
    if isinstance(inbound, dict):
        number, agent = inbound.get("to_number"), inbound.get("agent_id")
        return Mention(
            business_number=number if isinstance(number, str) else None,
            agent_id=agent if isinstance(agent, str) else None,
        )
    chat = payload.get("chat")
    if isinstance(chat, dict):
        agent, metadata = chat.get("agent_id"), chat.get("metadata")
        return Mention(
            agent_id=agent if isinstance(agent, str) else None,
            metadata=metadata if isinstance(metadata, dict) else None,
        )
    return Mention()
