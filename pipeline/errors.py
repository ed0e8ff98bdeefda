"""Switchboard's error tree.

Every failure belongs to exactly one branch, and the branch decides what happens to it::

    SwitchboardError
    ├── ClientError            the sender's mistake; the ingress answers 4xx, nothing is written
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   ├── InvalidSignature       401 (missing/invalid signature, stale timestamp, no secret)
    │   └── MalformedPayload       400 (not JSON, not an object, required field missing)
    ├── PoisonEvent            a record on Kafka that can never be applied: dead-letter it
    │   ├── UndecodableEvent       not JSON / not an object
    │   └── SchemaViolation        JSON, but a required field is missing or of the wrong type
    ├── TransientError         the world is briefly broken: retry with backoff, never drop
    │   ├── DatabaseUnavailable    MySQL down, read-only, full, rights revoked, over its limits,
    │   │                          pool exhausted, deadlock, lock wait (``reason`` names which)
    │   └── KafkaUnavailable       broker down or slower than the ack budget (ingress: 503)
    └── ConfigError            bad or missing settings; commands exit non-zero with one line

Client errors carry a stable machine ``code`` (the ``error`` field of the JSON body) and a
one-line ``detail`` that never contains secrets or PII. Poison events carry a ``reason``
that becomes the dead-letter reason header.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ClientError(SwitchboardError):
    """The request is wrong; the sender must fix it. Maps to a 4xx answer."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class InvalidSignature(ClientError):
    """Signature missing, malformed, wrong, stale, or the provider has no secret configured.

    ``code`` distinguishes them (``missing_signature``, ``malformed_signature``,
    ``stale_timestamp``, ``invalid_signature``, ``provider_not_configured``) for metrics;
    all answer 401.
    """

    status = 401
    code = "invalid_signature"


class MalformedPayload(ClientError):
    status = 400
    code = "malformed_payload"


class PoisonEvent(SwitchboardError):
    """A Kafka record that no retry can apply. The worker dead-letters it with ``reason``."""

    reason: str = "poison"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class UndecodableEvent(PoisonEvent):
    reason = "undecodable"


class SchemaViolation(PoisonEvent):
    reason = "schema_violation"


class TransientError(SwitchboardError):
    """Retry later: the event is fine, the infrastructure is not."""


class DatabaseUnavailable(TransientError):
    """The database cannot do this work now; the work itself is fine.

    ``reason`` is a bounded label for metrics and logs (``mysql_1290_read_only``,
    ``pool_timeout``, ...); ``busy`` marks collisions of our own transactions (deadlock,
    lock wait), which clear in moments rather than minutes.
    """

    def __init__(
        self, detail: str, *, reason: str = "database_unavailable", busy: bool = False
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.busy = busy


class KafkaUnavailable(TransientError):
    pass


class ConfigError(SwitchboardError):
    """Settings are missing or invalid. ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))
