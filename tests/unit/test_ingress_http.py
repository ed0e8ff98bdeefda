"""The ingress request path of docs/ingress.md, status by status, with a fake Kafka and router.

The invariant under test throughout: a 2xx is answered only for a record the publisher
acknowledged, and what it was given is exactly the raw body, key and headers of docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline.ingress.app import HANDOFF, METRICS, cap_connections, create_app, runner_options
from tests.support.fixtures import fixture_bytes, fixture_names
from tests.unit.ingress_fakes import FakePublisher, FakeRouter, make_settings, now_ms, signed

CALL_ENDED = fixture_bytes("retell", "call_ended.json")
BOOKING = fixture_bytes("calcom", "BOOKING_CREATED.json")

ClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_client(
    aiohttp_client: Any, publisher: FakePublisher, registry: CollectorRegistry
) -> Callable[..., Awaitable[TestClient]]:
    async def make(**changes: Any) -> TestClient:
        settings = make_settings(**changes)
        publisher.ack_budget_s = settings.ack_budget_s
        app = create_app(settings, publisher=publisher, routing=FakeRouter(), registry=registry)
        # The server runs with the production runner options (auto_decompress, keep-alive);
        # TestServer ignores its constructor's keyword arguments, start_server takes them.
        server = TestServer(app)
        await server.start_server(**runner_options(settings))
        client: TestClient = await aiohttp_client(server)
        return client

    return make


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = orjson.loads(await resp.read())
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    uuid.UUID(resp.headers["X-Correlation-ID"])
    return body


# call_inbound is answered by the routing path (test_ingress_call_inbound); *_response.json
# files are samples of our answers, not webhooks.
QUEUED_FIXTURES = [
    (provider, name)
    for provider in ("retell", "calcom")
    for name in fixture_names(provider)
    if not name.endswith("_response.json") and name != "call_inbound.json"
]


def test_fixture_list_is_not_empty() -> None:
    assert len(QUEUED_FIXTURES) >= 12


@pytest.mark.parametrize("provider,name", QUEUED_FIXTURES)
async def test_every_fixture_is_published_byte_for_byte(
    make_client: ClientFactory, publisher: FakePublisher, provider: str, name: str
) -> None:
    body = fixture_bytes(provider, name)
    client = await make_client()
    before = now_ms()
    resp = await client.post(f"/webhooks/{provider}", data=body, headers=signed(provider, body))
    assert resp.status == 202, await resp.text()
    answer = orjson.loads(await resp.read())
    (record,) = publisher.records
    assert record.topic == f"unit.webhooks.{provider}"
    assert record.value == body
    payload = orjson.loads(body)
    assert answer == {
        "status": "accepted",
        "event_id": record.header("event_id").decode(),
        "correlation_id": resp.headers["X-Correlation-ID"],
    }
    assert [k for k, _ in record.headers] == [
        "provider", "event_id", "event_type", "correlation_id", "received_at",
    ]  # fmt: skip
    assert record.header("provider") == provider.encode()
    assert record.header("correlation_id") == resp.headers["X-Correlation-ID"].encode()
    assert before <= int(record.header("received_at")) <= now_ms()
    if provider == "retell":
        subject = payload.get("call") or payload.get("chat")
        own_id = subject.get("call_id") or subject.get("chat_id")
        assert record.key == own_id.encode()
        assert record.header("event_type") == payload["event"].encode()
    else:
        assert record.header("event_type") == payload["triggerEvent"].encode()
        inner = payload.get("payload", payload)
        assert record.key == (inner.get("uid") or inner.get("bookingUid")).encode()


async def test_retell_event_id_and_key(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client()
    resp = await client.post(
        "/webhooks/retell", data=CALL_ENDED, headers=signed("retell", CALL_ENDED)
    )
    assert resp.status == 202
    (record,) = publisher.records
    call_id = orjson.loads(CALL_ENDED)["call"]["call_id"]
    assert record.key == call_id.encode()
    assert record.header("event_id") == f"call_ended:{call_id}".encode()


async def test_content_length_over_limit_is_413_before_reading(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client(max_body_bytes=1024)
    body = b'{"event":"call_ended","pad":"' + b"x" * 2000 + b'"}'
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    await assert_error(resp, 413, "payload_too_large")
    assert publisher.records == []


async def test_chunked_body_over_limit_is_413(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client(max_body_bytes=1024)
    body = b'{"event":"call_ended","pad":"' + b"x" * 5000 + b'"}'

    async def chunks() -> Any:
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    headers = signed("retell", body)
    resp = await client.post("/webhooks/retell", data=chunks(), headers=headers)
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413, "payload_too_large")
    assert publisher.records == []


async def test_body_at_exactly_the_limit_is_accepted(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    payload = orjson.loads(CALL_ENDED)
    payload["pad"] = ""
    filler = 4096 - len(orjson.dumps(payload))
    payload["pad"] = "x" * filler
    body = orjson.dumps(payload)
    assert len(body) == 4096
    client = await make_client(max_body_bytes=4096)
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    assert resp.status == 202
    assert publisher.records[0].value == body


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_not_json_is_415(
    make_client: ClientFactory, publisher: FakePublisher, content_type: str | None
) -> None:
    client = await make_client()
    headers = signed("retell", CALL_ENDED)
    headers.pop("Content-Type")
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post("/webhooks/retell", data=CALL_ENDED, headers=headers)
    await assert_error(resp, 415, "unsupported_media_type")
    assert publisher.records == []


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON; charset=UTF-8"])  # fmt: skip
async def test_json_with_utf8_charset_is_accepted(
    make_client: ClientFactory, publisher: FakePublisher, content_type: str
) -> None:
    client = await make_client()
    headers = {**signed("calcom", BOOKING), "Content-Type": content_type}
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=headers)
    assert resp.status == 202
    assert len(publisher.records) == 1


async def test_unsigned_is_401(make_client: ClientFactory, publisher: FakePublisher) -> None:
    client = await make_client()
    headers = {"Content-Type": "application/json"}
    resp = await client.post("/webhooks/retell", data=CALL_ENDED, headers=headers)
    await assert_error(resp, 401, "missing_signature")
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=headers)
    await assert_error(resp, 401, "missing_signature")
    assert publisher.records == []


async def test_tampered_body_is_401(make_client: ClientFactory, publisher: FakePublisher) -> None:
    client = await make_client()
    headers = signed("calcom", BOOKING)
    tampered = BOOKING.replace(b"BOOKING_CREATED", b"BOOKING_CANCELLED", 1)
    resp = await client.post("/webhooks/calcom", data=tampered, headers=headers)
    await assert_error(resp, 401, "invalid_signature")
    assert publisher.records == []


async def test_stale_retell_timestamp_is_401(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client()
    headers = signed("retell", CALL_ENDED, at_ms=now_ms() - 6 * 60 * 1000)
    resp = await client.post("/webhooks/retell", data=CALL_ENDED, headers=headers)
    await assert_error(resp, 401, "stale_timestamp")
    assert publisher.records == []


async def test_provider_without_secret_is_401(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client(calcom_webhook_secrets=())
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    await assert_error(resp, 401, "provider_not_configured")
    assert publisher.records == []


async def test_signature_is_checked_before_parsing(make_client: ClientFactory) -> None:
    """Garbage with a wrong signature is a 401, not a 400: nothing unauthenticated is parsed."""
    client = await make_client()
    resp = await client.post(
        "/webhooks/retell",
        data=b"not json",
        headers={"Content-Type": "application/json", "x-retell-signature": "v=1,d=" + "0" * 64},
    )
    await assert_error(resp, 401, "stale_timestamp")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1,2]", b'{"event":"call_ended"}', b'{"event":"call_ended","call":{}}', b"{}"],
)
async def test_signed_but_malformed_is_400(
    make_client: ClientFactory, publisher: FakePublisher, body: bytes
) -> None:
    client = await make_client()
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    await assert_error(resp, 400, "malformed_payload")
    assert publisher.records == []


async def test_kafka_down_is_202_once_fsynced_in_the_spool(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    publisher.mode = "down"
    client = await make_client()
    resp = await client.post(
        "/webhooks/retell", data=CALL_ENDED, headers=signed("retell", CALL_ENDED)
    )
    assert resp.status == 202
    assert publisher.records == []
    (spooled,) = await client.app[HANDOFF].spool.head(10)
    assert spooled.value == CALL_ENDED and spooled.topic == "unit.webhooks.retell"
    assert dict(spooled.headers)["correlation_id"] == resp.headers["X-Correlation-ID"].encode()


async def test_kafka_slower_than_budget_goes_to_the_spool(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    """A publisher that never acks must not hold the request past the budget: the record is
    spooled and the answer is 202 (a hang here would time the test out)."""
    publisher.mode = "hang"
    client = await make_client(ack_budget_s=0.2)
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    assert resp.status == 202
    assert client.app[HANDOFF].spool.count == 1 and publisher.records == []


async def test_a_full_spool_is_503_with_retry_after(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    publisher.mode = "down"
    client = await make_client(spool_max_bytes=len(BOOKING) + 500)
    first = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    assert first.status == 202
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    await assert_error(resp, 503, "spool_full")
    assert resp.headers["Retry-After"] == "7"
    assert client.app[HANDOFF].spool.count == 1  # what was accepted is still there


async def test_new_records_queue_behind_the_spool_in_order(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    publisher.mode = "down"
    client = await make_client()
    bodies = [b'{"event":"call_ended","call":{"call_id":"c1","n":%d}}' % i for i in range(3)]
    await client.post("/webhooks/retell", data=bodies[0], headers=signed("retell", bodies[0]))
    publisher.mode = "ok"  # Kafka is back, but one record is still spooled
    for body in bodies[1:]:
        resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
        assert resp.status == 202
    for _ in range(200):
        if len(publisher.records) == 3:
            break
        await asyncio.sleep(0.05)
    assert [r.value for r in publisher.records] == bodies


async def test_ack_just_inside_budget_is_202(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    publisher.delay_s = 0.1
    client = await make_client(ack_budget_s=0.3)
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    assert resp.status == 202
    assert len(publisher.records) == 1


async def test_no_2xx_for_anything_not_durable(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    """Across good, bad and failing requests: #2xx == #records acknowledged + spooled."""
    client = await make_client(ack_budget_s=0.1, spool_max_bytes=3 * len(BOOKING))
    accepted = refused = 0
    for mode in ("ok", "down", "hang", "ok"):
        publisher.mode = mode
        for provider, body in (("retell", CALL_ENDED), ("calcom", BOOKING)):
            resp = await client.post(
                f"/webhooks/{provider}", data=body, headers=signed(provider, body)
            )
            accepted += resp.status // 100 == 2
            refused += resp.status == 503
            bad = await client.post(f"/webhooks/{provider}", data=body, headers={"Content-Type": "application/json"})  # fmt: skip
            assert bad.status == 401
    spool = client.app[HANDOFF].spool
    assert refused > 0
    assert accepted == len(publisher.records) + spool.count
    assert accepted + refused == 8


async def test_unknown_route_and_method_answer_json(make_client: ClientFactory) -> None:
    client = await make_client()
    await assert_error(await client.post("/webhooks/stripe", data=b"{}"), 404, "not_found")
    resp = await client.get("/webhooks/retell")
    await assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


async def test_a_bug_is_a_json_500_without_a_trace(
    make_client: ClientFactory, publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("secret-ish internals")

    monkeypatch.setattr(publisher, "publish", broken)
    client = await make_client()
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    body = await assert_error(resp, 500, "internal_error")
    assert "secret-ish" not in body["detail"]


async def test_every_answer_has_a_fresh_correlation_id(make_client: ClientFactory) -> None:
    client = await make_client()
    seen = set()
    for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("POST", "/webhooks/retell"), ("GET", "/nope")]:  # fmt: skip
        resp = await client.request(method, path)
        seen.add(str(uuid.UUID(resp.headers["X-Correlation-ID"])))
    assert len(seen) == 5


async def not_ready(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/readyz")
    assert resp.status == 503
    body: dict[str, Any] = orjson.loads(await resp.read())
    assert body["error"] == "not_ready" and set(body) == {"error", "detail", "spool"}
    return body


async def test_health_and_readiness(aiohttp_client: Any) -> None:
    publisher, router = FakePublisher(connected=False), FakeRouter(is_loaded=False)
    client = await aiohttp_client(create_app(make_settings(), publisher=publisher, routing=router))
    assert publisher.started
    assert (await client.get("/healthz")).status == 200
    body = await not_ready(client)
    assert "kafka" in body["detail"] and "routing" in body["detail"]
    assert body["spool"]["records"] == 0  # the spool's state is in the detail either way
    publisher.connected = True
    body = await not_ready(client)
    assert "kafka" not in body["detail"]
    router.is_loaded = True
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = orjson.loads(await resp.read())
    assert body["status"] == "ready"
    assert body["spool"]["records"] == 0 and body["spool"]["limit_bytes"] > 0


async def test_metrics_count_requests_and_rejections(
    make_client: ClientFactory, publisher: FakePublisher, registry: CollectorRegistry
) -> None:
    client = await make_client()
    await client.post("/webhooks/retell", data=CALL_ENDED, headers=signed("retell", CALL_ENDED))
    await client.post(
        "/webhooks/retell", data=CALL_ENDED, headers={"Content-Type": "application/json"}
    )
    publisher.mode = "down"
    await client.post("/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING))
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert 'switchboard_ingress_requests_total{event_type="call_ended",provider="retell",status="202"} 1.0' in text  # fmt: skip
    assert 'switchboard_ingress_requests_total{event_type="none",provider="retell",status="401"} 1.0' in text  # fmt: skip
    assert 'switchboard_ingress_rejections_total{provider="retell",reason="missing_signature"} 1.0' in text  # fmt: skip
    assert 'switchboard_ingress_durable_total{via="kafka"} 1.0' in text
    assert 'switchboard_ingress_durable_total{via="spool"} 1.0' in text
    assert "switchboard_ingress_spool_records 1.0" in text
    assert "switchboard_ingress_kafka_producer_connected 1.0" in text
    assert "switchboard_build_info{" in text and "process_cpu_seconds_total" in text
    assert "switchboard_ingress_request_duration_seconds_bucket" in text
    assert 'provider="none"' not in text  # health, readiness and scrapes are not traffic


async def test_unknown_event_type_does_not_create_a_label(
    make_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await make_client()
    body = b'{"event":"made_up_%s","call":{"call_id":"c1"}}' % uuid.uuid4().hex.encode()
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    assert resp.status == 202
    value = registry.get_sample_value(
        "switchboard_ingress_requests_total",
        {"provider": "retell", "event_type": "other", "status": "202"},
    )
    assert value == 1.0


async def test_dependencies_are_closed_on_cleanup(aiohttp_client: Any) -> None:
    publisher = FakePublisher()
    client = await aiohttp_client(
        create_app(make_settings(), publisher=publisher, routing=FakeRouter())
    )
    await client.close()
    assert publisher.closed


def test_create_app_builds_real_dependencies_by_default() -> None:
    from pipeline.ingress.app import PUBLISHER, ROUTER
    from pipeline.ingress.producer import KafkaPublisher
    from pipeline.ingress.routing import RoutingCache

    app = create_app(make_settings())
    assert isinstance(app[PUBLISHER], KafkaPublisher)
    assert isinstance(app[ROUTER], RoutingCache)
    assert isinstance(app, web.Application)
    asyncio.run(app[ROUTER].close())


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip", "x-custom"])
async def test_a_content_encoding_is_refused_before_reading(
    make_client: ClientFactory, publisher: FakePublisher, encoding: str
) -> None:
    """Neither provider compresses; inflating before the signature check would give anyone
    our CPU and memory. A gzip bomb of 1 MiB never gets inflated: 415 from the headers."""
    import gzip

    bomb = gzip.compress(b"0" * (8 * 1024 * 1024))
    client = await make_client(max_body_bytes=len(bomb) + 1024)
    headers = {**signed("calcom", bomb), "Content-Encoding": encoding}
    resp = await client.post("/webhooks/calcom", data=bomb, headers=headers)
    await assert_error(resp, 415, "unsupported_encoding")
    assert publisher.records == []


async def test_identity_encoding_is_accepted(make_client: ClientFactory) -> None:
    client = await make_client()
    headers = {**signed("calcom", BOOKING), "Content-Encoding": "identity"}
    resp = await client.post("/webhooks/calcom", data=BOOKING, headers=headers)
    assert resp.status == 202


async def test_a_trickling_body_is_cut_off_with_408(
    make_client: ClientFactory, publisher: FakePublisher
) -> None:
    client = await make_client(ingress_body_timeout_s=0.5)

    async def trickle() -> Any:
        yield BOOKING[:10]
        await asyncio.sleep(5)  # longer than the body deadline
        yield BOOKING[10:]

    headers = {**signed("calcom", BOOKING), "Content-Length": str(len(BOOKING))}
    resp = await client.post("/webhooks/calcom", data=trickle(), headers=headers)
    await assert_error(resp, 408, "request_timeout")
    assert publisher.records == []


async def test_connections_beyond_the_cap_are_closed_at_once(aiohttp_client: Any) -> None:
    settings = make_settings(ingress_max_connections=3)
    app = create_app(settings, publisher=FakePublisher(), routing=FakeRouter())
    server = TestServer(app)
    await server.start_server(**runner_options(settings))
    assert server.runner is not None and server.runner.server is not None
    cap_connections(server.runner.server, settings.ingress_max_connections, app[METRICS])
    opened = [await asyncio.open_connection(server.host, server.port) for _ in range(5)]
    await asyncio.sleep(0.2)
    closed = 0
    for reader, writer in opened:
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=0.5)
        except TimeoutError:
            data = None  # still open: waiting for a request
        closed += data == b""
        writer.close()
    assert closed == 2
    client = await aiohttp_client(server)
    text = await (await client.get("/metrics")).text()
    assert "switchboard_ingress_connections_refused_total 2.0" in text
