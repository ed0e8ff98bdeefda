"""What every provider module shares: the envelope, the provider protocol, and the helpers
that make verification fail closed in the same way for every provider.

Providers are sans-I/O (model: gidgethub's ``sansio``): pure functions over the raw request
bytes and a plain header mapping, with ``now`` passed in. Nothing here reads the clock, the
environment or the network, so the ingress, the worker, the traffic simulator and the tests
all run exactly the same code.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from pipeline.errors import InvalidSignature, MalformedPayload
from pipeline.providers.facts import Facts


@dataclass(frozen=True, slots=True)
class Envelope:
    """One verified-and-parsed webhook, with the identifiers the pipeline routes on.

    ``event_id`` together with ``provider`` is the dedup key (docs/architecture.md); ``key`` is the Kafka
    record key, chosen so that every event about one call or booking lands on one partition
    and is therefore consumed in order.
    """

    provider: str
    event_id: str
    event_type: str
    key: str
    payload: dict[str, Any]


class Provider(Protocol):
    """The shape every module in ``pipeline.providers`` has, so callers can stay generic."""

    NAME: str
    TOPIC: str  # unprefixed
    ROUTE: str  # the ingress's POST route
    SIGNATURE_HEADER: str
    SECRETS_ENV: str  # the environment variable holding its secrets
    SECRETS_SETTING: str  # the Settings field they are parsed into
    EVENT_TYPES: frozenset[str]  # the event types it knows
    SUBJECTS: str  # the table of the rows its events are about
    SUPERSEDED_BY: dict[str, str]  # latest-snapshot event type → the event superseding it

    def verify(
        self, headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now_ms: int
    ) -> None: ...

    def parse(self, body: bytes) -> Envelope: ...

    def event_id(self, payload: dict[str, Any], body: bytes) -> str: ...

    def sign(self, body: bytes, secret: str, now_ms: int) -> dict[str, str]: ...

    def facts(self, event_type: str, payload: Mapping[str, Any]) -> Facts: ...

    def subjects(self, payload: Any, event_id: str) -> list[str]: ...

    def rows_of_applied(self, event_type: str, event_id: str) -> tuple[str, ...] | None: ...


def sha256_hex(body: bytes) -> str:
    """The fallback event id: identical retries of an event we cannot name still dedup."""
    return hashlib.sha256(body).hexdigest()


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256, keyed by the secret's UTF-8 bytes as both providers do."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def usable_secrets(secrets: Sequence[str]) -> list[str]:
    """The configured secrets worth trying, or ``provider_not_configured``.

    Blank entries (e.g. from a trailing comma in ``RETELL_API_KEY``) are dropped rather than
    used: an empty HMAC key is a key anyone can guess. A bare ``str`` is refused outright,
    because iterating it would try every single character as a secret.
    """
    if isinstance(secrets, str | bytes):
        raise TypeError("secrets must be a sequence of strings, not a single string")
    keys = [s for s in secrets if isinstance(s, str) and s.strip()]
    if not keys:
        raise InvalidSignature(
            "no secret is configured for this provider", code="provider_not_configured"
        )
    return keys


def header_value(headers: Mapping[str, str], name: str) -> str:
    """The one value of header ``name``, matched case-insensitively.

    Works for a plain ``dict`` in any case and for multidicts (whose ``items()`` yields every
    value). A repeated header is refused rather than guessed at: two signatures for one body
    mean something in between is misbehaving.
    """
    wanted = name.lower()
    found = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted]
    if not found:
        raise InvalidSignature(f"{name} header is missing", code="missing_signature")
    if len(found) > 1:
        raise InvalidSignature(f"{name} header is repeated", code="malformed_signature")
    value = found[0]
    if not isinstance(value, str):
        raise InvalidSignature(f"{name} header is not text", code="malformed_signature")
    if not value.strip():
        raise InvalidSignature(f"{name} header is empty", code="missing_signature")
    return value


def any_digest_matches(secrets: Sequence[str], digest: str, expected: Callable[[str], str]) -> bool:
    """Compare ``digest`` in constant time against the expected digest of every secret.

    Every secret is tried (no early exit) so the timing does not reveal which key of a
    rotation pair is live.
    """
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(expected(secret), digest)
    return matched


class UndecodableBody(MalformedPayload):
    """The body is not a JSON object at all (the ingress answers 400 like any malformed
    payload; on Kafka it is an ``undecodable`` dead letter, not a ``schema_violation``)."""


def load_object(body: bytes, provider: str) -> dict[str, Any]:
    """Decode ``body`` as a JSON object; anything else is the sender's mistake (400)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UndecodableBody(
            f"{provider}: body is not valid JSON: {exc.msg} (char {exc.pos})"
        ) from exc
    if not isinstance(value, dict):
        raise UndecodableBody(f"{provider}: body is a JSON {type(value).__name__}, not an object")
    return value


def require_str(obj: Mapping[str, Any], field: str, where: str, provider: str) -> str:
    """A required, non-empty string field. Empty ids would collide in the dedup key."""
    value = obj.get(field)
    if not isinstance(value, str) or not value:
        problem = "is missing" if value is None else "must be a non-empty string"
        raise MalformedPayload(f"{provider}: {where}{field} {problem}")
    return value


def require_object(obj: Mapping[str, Any], field: str, provider: str) -> dict[str, Any]:
    """A required JSON object field."""
    value = obj.get(field)
    if not isinstance(value, dict):
        problem = "is missing" if value is None else "must be an object"
        raise MalformedPayload(f"{provider}: {field} {problem}")
    return value


def optional_str(obj: Mapping[str, Any], field: str, where: str, provider: str) -> str | None:
    """An optional string field: absent or null is fine, any other type is not."""
    value = obj.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{provider}: {where}{field} must be a non-empty string")
    return value


def nonempty_str(value: Any) -> str | None:
    """``value`` if it is a usable id, else None (for the lenient ``event_id`` paths)."""
    return value if isinstance(value, str) and value else None
