"""A webhook record as the worker (and replay, and redrive) sees it on Kafka.

The same type comes from a Faust event, from a plain aiokafka consumer (replay), and from
tests, so the apply path never depends on where a record was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

EPOCH = datetime(1970, 1, 1)
HEADER_NAMES = ("provider", "event_id", "event_type", "correlation_id", "received_at")


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None

    @property
    def provider(self) -> str | None:
        return self.headers.get("provider")

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get("correlation_id")

    @property
    def received_at(self) -> datetime:
        """When the ingress accepted the webhook (header), else the record's timestamp."""
        raw = self.headers.get("received_at")
        millis: int | None = None
        if raw and raw.isdigit():
            millis = int(raw)
        elif self.timestamp_ms is not None:
            millis = self.timestamp_ms
        return EPOCH + timedelta(milliseconds=millis or 0)

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def decode_headers(
    raw: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes] | None,
) -> dict[str, str]:
    """Kafka headers (bytes values, possibly repeated) → a str dict; the last value wins."""
    if raw is None:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    out: dict[str, str] = {}
    for name, value in items:
        if value is None:
            continue
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


def provider_for_topic(topic: str) -> str | None:
    """``webhooks.retell`` (with any test prefix) → ``retell``."""
    for name in ("retell", "calcom"):
        if topic.endswith(f"webhooks.{name}"):
            return name
    return None
