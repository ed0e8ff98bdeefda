"""From a Kafka record to an :class:`Item`: the event's identity, its typed facts, or the
reason it is poison. Pure; poison is recorded on the item, never raised.

The event id is recomputed from the body by the provider module, never taken from the
record's headers, so a record cannot claim to be an event it is not (dedup cannot be
bypassed by a redrive or a hand-made record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline.errors import MalformedPayload, PoisonEvent, SchemaViolation, UndecodableEvent
from pipeline.providers import PROVIDERS
from pipeline.providers.base import UndecodableBody, sha256_hex
from pipeline.providers.facts import Facts
from pipeline.records import EPOCH, FORMAT, FORMAT_HEADER, WebhookRecord, provider_for_topic


@dataclass(frozen=True, slots=True)
class Item:
    """One record on its way through a batch."""

    record: WebhookRecord
    provider: str
    event_id: str
    event_type: str
    sha256: str
    facts: Facts | None = None
    poison: PoisonEvent | None = None
    received_at: datetime = EPOCH  # the record's, read once (decode sets it)

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.event_id


def decode(record: WebhookRecord, digest: str | None = None) -> Item:
    """Parse one record; a record that can never be applied carries its ``poison``.
    ``digest``: the body's SHA-256 if the caller has it already."""
    provider_name = record.provider or provider_for_topic(record.topic) or "unknown"
    digest = digest or sha256_hex(record.value)
    event_id = record.headers.get("event_id") or digest
    event_type = record.headers.get("event_type") or "unknown"
    facts: Facts | None = None
    poison: PoisonEvent | None = None
    provider = PROVIDERS.get(provider_name)
    if record.format is None or record.format > FORMAT:
        why = f"record format {record.headers.get(FORMAT_HEADER)!r} is not one this worker reads"
        poison = SchemaViolation(why, reason="unknown_format")
    elif provider is None:
        why = f"unknown provider {provider_name!r}"
        poison = SchemaViolation(why, reason="unknown_provider")
    else:
        try:
            envelope = provider.parse(record.value)
        except UndecodableBody as exc:
            poison = UndecodableEvent(exc.detail)
        except MalformedPayload as exc:
            poison = SchemaViolation(exc.detail)
        else:
            event_id, event_type = envelope.event_id, envelope.event_type
            try:
                facts = provider.facts(event_type, envelope.payload)
            except PoisonEvent as exc:
                poison = exc
    return Item(
        record,
        provider_name,
        stored_id(event_id),
        event_type,
        digest,
        facts,
        poison,
        record.received_at,
    )


#: The width of ``webhook_events.event_id``.
EVENT_ID_WIDTH = 255


def stored_id(event_id: str) -> str:
    """The event id as ``webhook_events`` holds it, and as it is looked up: an id wider than
    the column becomes ``sha256:<hex of the id>`` (still unique), so a redelivery finds its
    row instead of missing a truncated one and colliding with it."""
    if len(event_id) <= EVENT_ID_WIDTH:
        return event_id
    return "sha256:" + sha256_hex(event_id.encode())
