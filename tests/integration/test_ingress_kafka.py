"""The ingress against the real broker: every provider fixture, signed and POSTed, is on its
topic byte for byte with the key and headers of docs/architecture.md; an unreachable broker is a 503."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.ingress.app import create_app
from pipeline.settings import Settings
from tests.integration.ingress_helpers import headers_of, read_topic, signed, wait_ready
from tests.support.fixtures import fixture_bytes, fixture_names

pytestmark = pytest.mark.integration

WEBHOOKS = [
    (provider, name)
    for provider in ("retell", "calcom")
    for name in fixture_names(provider)
    if not name.endswith("_response.json")  # a sample of our answer, not a webhook
]


def expected_key(provider: str, payload: dict[str, Any]) -> str:
    if provider == "calcom":
        inner = payload.get("payload", payload)
        return str(inner.get("uid") or inner.get("bookingUid"))
    if payload["event"] == "call_inbound":
        return str(payload["call_inbound"]["call_id"])
    subject = payload.get("call") or payload.get("chat") or {}
    return str(subject.get("call_id") or subject.get("chat_id"))


async def test_every_fixture_is_on_its_topic_byte_for_byte(
    stack_settings: Settings, aiohttp_client: Any
) -> None:
    assert len(WEBHOOKS) >= 13
    client = await aiohttp_client(create_app(stack_settings))
    await wait_ready(client)
    sent: dict[str, tuple[str, bytes, int]] = {}
    for provider, name in WEBHOOKS:
        body = fixture_bytes(provider, name)
        before = time.time_ns() // 1_000_000
        resp = await client.post(f"/webhooks/{provider}", data=body, headers=signed(provider, body))
        inbound = name == "call_inbound.json"
        assert resp.status == (200 if inbound else 202), (name, await resp.text())
        sent[resp.headers["X-Correlation-ID"]] = (provider, body, before)

    for provider in ("retell", "calcom"):
        mine = {c: v for c, v in sent.items() if v[0] == provider}
        records = await read_topic(stack_settings, f"webhooks.{provider}", len(mine))
        assert len(records) == len(mine), provider
        for record in records:
            headers = headers_of(record)
            _, body, before = mine.pop(headers["correlation_id"].decode())
            payload = orjson.loads(body)
            assert record.value == body
            assert record.key == expected_key(provider, payload).encode()
            assert headers["provider"] == provider.encode()
            event_type = payload.get("event") or payload.get("triggerEvent")
            assert headers["event_type"] == event_type.encode()
            assert headers["event_id"]
            assert before <= int(headers["received_at"]) <= time.time() * 1000
            assert list(headers) == [
                "provider", "event_id", "event_type", "correlation_id", "received_at",
            ]  # fmt: skip
        assert mine == {}


async def test_one_call_is_one_partition(stack_settings: Settings, aiohttp_client: Any) -> None:
    """Events of one call share a key, hence a partition, hence their order on Kafka."""
    client = await aiohttp_client(create_app(stack_settings))
    await wait_ready(client)
    for name in ("call_started.json", "call_ended.json", "call_analyzed.json"):
        body = fixture_bytes("retell", name)
        resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
        assert resp.status == 202
    records = await read_topic(stack_settings, "webhooks.retell", 3)
    assert len({r.partition for r in records}) == 1
    assert [headers_of(r)["event_type"] for r in records] == [
        b"call_started",
        b"call_ended",
        b"call_analyzed",
    ]


async def test_body_at_the_size_limit_is_accepted_by_the_broker(
    stack_settings: Settings, aiohttp_client: Any
) -> None:
    """The broker's own record limit must not turn a legal body into a retry loop of 503s."""
    client = await aiohttp_client(create_app(stack_settings))
    await wait_ready(client)
    payload = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    payload["call"]["transcript"] = ""
    pad = stack_settings.max_body_bytes - len(orjson.dumps(payload))
    payload["call"]["transcript"] = "y" * pad
    body = orjson.dumps(payload)
    assert len(body) == stack_settings.max_body_bytes
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    assert resp.status == 202, await resp.text()
    (record,) = await read_topic(stack_settings, "webhooks.retell", 1)
    assert record.value == body


async def test_unreachable_broker_is_202_from_the_spool_and_not_ready(
    db_settings: Settings, aiohttp_client: Any, tmp_path: Path
) -> None:
    """No broker at all: the ingress is not ready (a load balancer sends traffic elsewhere),
    but a signed webhook that reaches it anyway is spooled and accepted, never refused."""
    from pipeline.settings import Secret

    settings = db_settings.with_(
        kafka_bootstrap="127.0.0.1:1",
        retell_api_keys=(Secret("test-retell-key"),),
        calcom_webhook_secrets=(Secret("test-calcom-secret"),),
        spool_dir=tmp_path / "spool",
    )
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert "kafka" in orjson.loads(await resp.read())["detail"]
    for provider, name in (("retell", "call_ended.json"), ("calcom", "BOOKING_CREATED.json")):
        body = fixture_bytes(provider, name)
        resp = await client.post(f"/webhooks/{provider}", data=body, headers=signed(provider, body))
        assert resp.status == 202, await resp.text()
    ready = orjson.loads(await (await client.get("/readyz")).read())
    assert ready["spool"]["records"] == 2
    metrics = await (await client.get("/metrics")).text()
    assert 'switchboard_ingress_durable_total{via="spool"} 2.0' in metrics
    assert "switchboard_ingress_kafka_producer_connected 0.0" in metrics


async def test_the_probe_asks_for_the_ingress_topics_only(stack_settings: Settings) -> None:
    """The health probe's metadata request names our topics: asking for the whole cluster's
    (aiokafka's default while its topic list is empty) costs the event loop CPU per topic
    of the broker, every probe. The shared broker holds other tests' topics, so without the
    narrowing the cluster view here has more than ours."""
    from pipeline import providers
    from pipeline.ingress.producer import KafkaPublisher

    ours = {stack_settings.topic(p.TOPIC) for p in providers.PROVIDERS.values()}
    publisher = KafkaPublisher(stack_settings, topics=sorted(ours))
    await publisher.start()
    try:
        assert publisher.is_connected()
        client = publisher._producer.client  # type: ignore[union-attr]
        assert await client.force_metadata_update()  # what the probe sends
        assert client.cluster.topics() == ours
    finally:
        await publisher.close()
