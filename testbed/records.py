"""Build WebhookRecords the way the ingress writes them, for apply-path tests."""

from __future__ import annotations

import itertools
import uuid

from pipeline.providers import get
from pipeline.records import WebhookRecord, decode_headers, encode_headers

_offsets = itertools.count()


def record(
    provider: str,
    body: bytes,
    *,
    received_at_ms: int = 1_767_792_000_000,
    partition: int = 0,
    offset: int | None = None,
) -> WebhookRecord:
    envelope = get(provider).parse(body)
    return WebhookRecord(
        topic=f"webhooks.{provider}",
        partition=partition,
        offset=next(_offsets) if offset is None else offset,
        key=envelope.key.encode(),
        value=body,
        headers=decode_headers(
            encode_headers(
                provider, envelope.event_id, envelope.event_type, str(uuid.uuid4()), received_at_ms
            )
        ),
    )
