"""The webhook record on Kafka, and the only code that writes or reads its shape.

The ingress writes one record per accepted webhook: key = the subject's id (call id,
booking uid: every event about one call or booking lands on one partition, in order),
value = the raw body exactly as the provider sent it, and the headers of
:data:`HEADER_NAMES`. A :class:`WebhookRecord` is that record as the worker,
``replay``, ``dlq redrive`` and the tests see it, whether it came from a Faust event, a
plain aiokafka consumer, or was built in memory, so the apply path never depends on where
a record was read.

The headers are a convenience (logs, ``dlq`` filters, ``events show``): the apply path
recomputes the event id from the body and never trusts the header for dedup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipeline.providers import PROVIDERS

EPOCH = datetime(1970, 1, 1)
HEADER_NAMES = ("provider", "event_id", "event_type", "correlation_id", "received_at")
#: The record format this code writes and reads. Version 1 is the five headers above; a
#: later version adds a ``format`` header, which readers already check: a record of a
#: format newer than theirs is dead-lettered (``unknown_format``), never misread.
FORMAT = 1
FORMAT_HEADER = "format"

Headers = list[tuple[str, bytes]]


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
    def format(self) -> int | None:
        """The record format (1 when the header is absent); None if it is unreadable."""
        raw = self.headers.get(FORMAT_HEADER)
        if raw is None:
            return 1
        return int(raw) if raw.isascii() and raw.isdigit() else None

    @property
    def received_at(self) -> datetime:
        """When the ingress accepted the webhook (header), else the record's timestamp."""
        raw = self.headers.get("received_at")
        millis: int | None = None
        if raw and raw.isascii() and raw.isdigit():
            millis = int(raw)
        elif self.timestamp_ms is not None:
            millis = self.timestamp_ms
        return EPOCH + timedelta(milliseconds=millis or 0)

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


def encode_headers(
    provider: str, event_id: str, event_type: str, correlation_id: str, received_ms: int
) -> Headers:
    """The headers of a webhook record (format 1), as bytes, in a fixed order."""
    return [
        ("provider", provider.encode()),
        ("event_id", event_id.encode()),
        ("event_type", event_type.encode()),
        ("correlation_id", correlation_id.encode()),
        ("received_at", str(received_ms).encode()),
    ]


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


def from_message(message: Any) -> WebhookRecord:
    """A record from a consumed Kafka message: aiokafka's ``ConsumerRecord`` (timestamp in
    milliseconds) or a Faust ``Message`` (timestamp in seconds, a float)."""
    stamp = message.timestamp
    if isinstance(stamp, float):
        stamp = int(stamp * 1000)
    return WebhookRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value or b"",
        headers=decode_headers(message.headers),
        timestamp_ms=stamp,
    )


def provider_for_topic(topic: str) -> str | None:
    """``webhooks.retell`` (with any test prefix) → ``retell``."""
    for name, provider in PROVIDERS.items():
        if topic.endswith(provider.TOPIC):
            return name
    return None
