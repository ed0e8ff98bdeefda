"""From a Kafka record to an :class:`Item`: the event's identity, its typed facts, or the
reason it is poison. Pure; poison is recorded on the item, never raised.

The event id is recomputed from the body by the provider module, never taken from the
record's headers, so a record cannot claim to be an event it is not (dedup cannot be
bypassed by a redrive or a hand-made record).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import MalformedPayload, PoisonEvent, SchemaViolation, UndecodableEvent
from pipeline.providers import PROVIDERS
from pipeline.providers.base import UndecodableBody, sha256_hex
from pipeline.providers.facts import Facts
from pipeline.records import FORMAT, FORMAT_HEADER, WebhookRecord, provider_for_topic


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

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.event_id


def decode(record: WebhookRecord) -> Item:
    """Parse one record; a record that can never be applied carries its ``poison``."""
    provider_name = record.provider or provider_for_topic(record.topic) or "unknown"
    digest = sha256_hex(record.value)
    fallback = Item(
        record=record,
        provider=provider_name,
        event_id=record.headers.get("event_id") or digest,
        event_type=record.headers.get("event_type") or "unknown",
        sha256=digest,
    )
    if record.format is None or record.format > FORMAT:
        why = f"record format {record.headers.get(FORMAT_HEADER)!r} is not one this worker reads"
        return _poisoned(fallback, SchemaViolation(why, reason="unknown_format"))
    provider = PROVIDERS.get(provider_name)
    if provider is None:
        return _poisoned(
            fallback,
            SchemaViolation(f"unknown provider {provider_name!r}", reason="unknown_provider"),
        )
    try:
        envelope = provider.parse(record.value)
    except UndecodableBody as exc:
        return _poisoned(fallback, UndecodableEvent(exc.detail))
    except MalformedPayload as exc:
        return _poisoned(fallback, SchemaViolation(exc.detail))
    item = Item(
        record=record,
        provider=provider_name,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        sha256=digest,
    )
    try:
        facts = provider.facts(envelope.event_type, envelope.payload)
    except PoisonEvent as exc:
        return _poisoned(item, exc)
    return Item(item.record, item.provider, item.event_id, item.event_type, digest, facts)


def _poisoned(item: Item, poison: PoisonEvent) -> Item:
    return Item(
        item.record, item.provider, item.event_id, item.event_type, item.sha256, None, poison
    )
