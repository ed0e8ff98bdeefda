"""Writing synthesized webhooks to the webhook topics, as the ingress would have.

Same topic, key and headers as a delivered webhook (docs/architecture.md), plus
``source: backfill`` and ``backfilled_at`` (when it was written), so ``events show`` and
anyone reading the topic can tell a rebuilt event from a delivered one. ``received_at`` is
when the provider would have sent it, not now: the apply path dates a call's last event and
a customer's sightings with it. The correlation id is ``backfill-<uuid>``, so the rows a
backfill wrote can be found in ``webhook_events`` with SQL.

The producer is idempotent with ``acks=all`` and every send is awaited: a run that returns
has made every record durable, and a run that fails part-way can simply be repeated (the
event ids dedup whatever got through).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from pipeline import providers
from pipeline.backfill.synthesized import Synthesized
from pipeline.backfill.when import to_ms, utc_now
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import DurableProducer
from pipeline.settings import Settings

SOURCE = "backfill"


def headers(event: Synthesized, written_ms: int) -> list[tuple[str, bytes]]:
    return [
        ("provider", event.provider.encode()),
        ("event_id", event.event_id.encode()),
        ("event_type", event.event_type.encode()),
        ("correlation_id", f"{SOURCE}-{uuid.uuid4()}".encode()),
        ("received_at", str(to_ms(event.at)).encode()),
        ("source", SOURCE.encode()),
        ("backfilled_at", str(written_ms).encode()),
    ]


class EventWriter(DurableProducer):
    """``async with EventWriter(settings) as writer: await writer.write(events)``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, client_id="switchboard-backfill")

    async def write(self, events: Sequence[Synthesized]) -> int:
        """Send every event and wait for all acks; return how many were written."""
        written_ms = to_ms(utc_now())
        try:
            await self.send_all(
                (
                    self.settings.topic(providers.get(e.provider).TOPIC),
                    e.key.encode(),
                    e.body,
                    headers(e, written_ms),
                )
                for e in events
            )
        except KafkaError as exc:
            raise KafkaUnavailable(
                f"Kafka failed while writing backfilled events ({exc.__class__.__name__}); "
                "run the backfill again: the events it already wrote are deduplicated"
            ) from exc
        return len(events)
