"""A webhook the provider should have sent, rebuilt from its API, ready for the webhook topic.

The body is what the provider would have POSTed; its event id and Kafka key come from the
provider module's own ``parse`` (the same code the ingress runs), so a real delivery of the
same event, late, and this record are one event to the apply path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline import providers


@dataclass(frozen=True, slots=True)
class Synthesized:
    provider: str
    event_type: str
    event_id: str
    key: str  # the Kafka record key the ingress would use
    body: bytes
    at: datetime  # when the provider would have sent it (the record's received_at)
    subject: str  # the call id or booking uid whose row the event changes
    story: str  # events judged and written together (a call; a reschedule chain)
    order: int  # creation first, then the rest of the story

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


def synthesize(
    provider: str, payload: dict[str, Any], *, at: datetime, subject: str, story: str, order: int
) -> Synthesized:
    """Encode ``payload`` compactly, as both providers send JSON, and name it as the ingress would."""
    body = orjson.dumps(payload)
    envelope = providers.get(provider).parse(body)
    return Synthesized(
        provider=provider,
        event_type=envelope.event_type,
        event_id=envelope.event_id,
        key=envelope.key,
        body=body,
        at=at,
        subject=subject,
        story=story,
        order=order,
    )
