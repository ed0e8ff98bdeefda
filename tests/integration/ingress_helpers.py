"""Helpers for the ingress integration tests: signing, waiting for readiness, reading back
what the ingress wrote to the real broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from pipeline.providers import calcom, retell
from pipeline.settings import Settings

# The secrets tests/integration/conftest.py puts in ``stack_settings``.
RETELL_KEY = "test-retell-key"
CALCOM_SECRET = "test-calcom-secret"


def signed(provider: str, body: bytes) -> dict[str, str]:
    now = time.time_ns() // 1_000_000
    if provider == "retell":
        return retell.sign(body, RETELL_KEY, now)
    return calcom.sign(body, CALCOM_SECRET, now)


async def wait_ready(client: Any, timeout_s: float = 15.0) -> None:
    """Poll ``/readyz`` (producer connected, routing loaded) until it says 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get("/readyz")
        if resp.status == 200:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"ingress not ready: {await resp.text()}")
        await asyncio.sleep(0.1)


async def read_topic(
    settings: Settings, topic: str, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, until ``count`` arrived (or timeout)."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes]:
    return dict(record.headers)
