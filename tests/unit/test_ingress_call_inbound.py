"""``call_inbound``: answered from the routing cache, never waiting on Kafka, never another
company's branch; its record is still made durable (Kafka or the spool) in the background."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from pipeline.ingress import routing as routing_mod
from pipeline.ingress.app import BACKGROUND, HANDOFF, create_app
from pipeline.ingress.routing import CallerContext, RoutingCache
from tests.support.fixtures import fixture_bytes
from tests.unit.ingress_fakes import (
    FakePublisher,
    FakeRouter,
    context,
    make_settings,
    route,
    signed,
    utc,
)

CALLED = "+14155550199"
CALLER = "+14155550142"
CALL_ID = "call_d51f81a19c6cecec7cbe90d98165b7bc"
FIXTURE = fixture_bytes("retell", "call_inbound.json")


def inbound(to: str = CALLED, caller: str = CALLER, call_id: str | None = CALL_ID) -> bytes:
    body: dict[str, Any] = {"agent_id": "agent_x", "from_number": caller, "to_number": to}
    if call_id:
        body["call_id"] = call_id
    return orjson.dumps({"event": "call_inbound", "call_inbound": body})


async def post(client: TestClient, body: bytes) -> tuple[int, Any, Any]:
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    return resp.status, orjson.loads(await resp.read()), resp


async def start(aiohttp_client: Any, router: Any, publisher: FakePublisher | None = None, **kw: Any) -> tuple[TestClient, FakePublisher, CollectorRegistry]:  # fmt: skip
    publisher = publisher or FakePublisher()
    settings = make_settings(**kw)
    publisher.ack_budget_s = settings.ack_budget_s
    registry = CollectorRegistry()
    app = create_app(settings, publisher=publisher, routing=router, registry=registry)
    return await aiohttp_client(app), publisher, registry


async def settle(client: TestClient) -> None:
    tasks = list(client.app[BACKGROUND])
    if tasks:
        await asyncio.wait(tasks, timeout=5)


async def test_fixture_is_routed_to_its_branch(aiohttp_client: Any) -> None:
    router = FakeRouter(routes={CALLED: route(7, 70)})
    client, publisher, _ = await start(aiohttp_client, router)
    status, body, resp = await post(client, FIXTURE)
    assert status == 200
    assert body == {
        "call_inbound": {
            "override_agent_id": "agent_bayview",
            "dynamic_variables": {"branch_name": "Branch 70", "company_name": "Company 7"},
            "metadata": {
                "company_id": "7",
                "branch_id": "70",
                "correlation_id": resp.headers["X-Correlation-ID"],
            },
        }
    }
    await settle(client)
    (record,) = publisher.records
    assert record.topic == "unit.webhooks.retell"
    assert record.value == FIXTURE
    assert record.key == CALL_ID.encode()
    assert record.header("event_id") == CALL_ID.encode()
    assert record.header("event_type") == b"call_inbound"
    assert record.header("correlation_id") == resp.headers["X-Correlation-ID"].encode()


@pytest.mark.parametrize("to,reason", [("+19995550000", "unknown_number"), ("+14155550111", "inactive_number")])  # fmt: skip
async def test_unknown_or_inactive_number_gets_the_empty_answer(
    aiohttp_client: Any, to: str, reason: str
) -> None:
    router = FakeRouter(routes={CALLED: route()}, inactive={"+14155550111"})
    client, publisher, registry = await start(aiohttp_client, router)
    status, body, _ = await post(client, inbound(to=to))
    assert (status, body) == (200, {"call_inbound": {}})
    assert router.lookups == []  # no caller lookup in anybody's company
    labels = {"result": "unrouted", "reason": reason}
    assert registry.get_sample_value("switchboard_ingress_call_inbound_total", labels) == 1.0
    await settle(client)
    assert len(publisher.records) == 1  # recorded all the same


async def test_known_caller_gets_name_and_local_next_appointment(aiohttp_client: Any) -> None:
    at = utc(2026, 1, 8, 18, 30)
    router = FakeRouter(
        routes={CALLED: route(7, 70, tz="America/Los_Angeles")},
        contexts={(7, CALLER): context("Dana Reyes", at), (8, CALLER): context("Other Co", None)},
    )
    client, _, _ = await start(aiohttp_client, router)
    status, body, _ = await post(client, inbound())
    assert status == 200
    variables = body["call_inbound"]["dynamic_variables"]
    assert variables == {
        "branch_name": "Branch 70",
        "company_name": "Company 7",
        "customer_name": "Dana Reyes",
        "next_appointment": "2026-01-08T10:30-08:00",
    }
    assert all(isinstance(v, str) for v in variables.values())
    assert datetime.fromisoformat(variables["next_appointment"]) == at
    assert router.lookups == [(7, CALLER)]  # only inside the routed company


async def test_customer_without_upcoming_appointment(aiohttp_client: Any) -> None:
    router = FakeRouter(routes={CALLED: route()}, contexts={(7, CALLER): context("Sam", None)})
    client, _, _ = await start(aiohttp_client, router)
    _, body, _ = await post(client, inbound())
    assert body["call_inbound"]["dynamic_variables"]["customer_name"] == "Sam"
    assert "next_appointment" not in body["call_inbound"]["dynamic_variables"]


async def test_branch_without_agent_omits_the_override(aiohttp_client: Any) -> None:
    client, _, _ = await start(aiohttp_client, FakeRouter(routes={CALLED: route(agent=None)}))
    _, body, _ = await post(client, inbound())
    assert "override_agent_id" not in body["call_inbound"]
    assert body["call_inbound"]["metadata"]["company_id"] == "7"


async def test_answer_does_not_wait_for_kafka(aiohttp_client: Any) -> None:
    """A hung broker: the routing answer does not wait for it; the record goes to the spool
    once the budget is spent, and nothing is counted as lost."""
    publisher = FakePublisher(mode="hang")
    client, _, registry = await start(
        aiohttp_client, FakeRouter(routes={CALLED: route()}), publisher, ack_budget_s=0.2
    )
    status, body, _ = await post(client, inbound())
    assert client.app[BACKGROUND], "the record is still on its way while the answer is out"
    assert status == 200 and body["call_inbound"]["override_agent_id"] == "agent_bayview"
    await settle(client)
    (spooled,) = await client.app[HANDOFF].spool.head(10)
    assert spooled.key == CALL_ID.encode()
    assert registry.get_sample_value("switchboard_ingress_call_inbound_publish_failures_total") == 0.0  # fmt: skip


async def test_kafka_down_does_not_change_the_answer(aiohttp_client: Any) -> None:
    client, _, registry = await start(
        aiohttp_client, FakeRouter(routes={CALLED: route()}), FakePublisher(mode="down")
    )
    status, body, _ = await post(client, inbound())
    assert status == 200 and body["call_inbound"]["metadata"]["branch_id"] == "70"
    await settle(client)
    assert client.app[HANDOFF].spool.count == 1
    assert registry.get_sample_value("switchboard_ingress_durable_total", {"via": "spool"}) == 1.0  # fmt: skip


async def test_a_full_spool_is_the_only_way_to_lose_the_record(aiohttp_client: Any) -> None:
    client, _, registry = await start(
        aiohttp_client,
        FakeRouter(routes={CALLED: route()}),
        FakePublisher(mode="down"),
        spool_max_bytes=10,
    )
    status, _, _ = await post(client, inbound())
    assert status == 200  # the caller is still routed
    await settle(client)
    assert registry.get_sample_value("switchboard_ingress_call_inbound_publish_failures_total") == 1.0  # fmt: skip


async def test_shutdown_waits_for_background_records(aiohttp_client: Any) -> None:
    publisher = FakePublisher(delay_s=0.2)
    client, _, _ = await start(aiohttp_client, FakeRouter(routes={CALLED: route()}), publisher)
    status, _, _ = await post(client, inbound())
    assert status == 200 and publisher.records == []
    await client.close()  # runs cleanup_ctx: background records before the producer closes
    assert len(publisher.records) == 1
    assert publisher.closed


async def test_before_routing_loads_the_call_gets_the_numbers_default_agent(
    aiohttp_client: Any,
) -> None:
    # A 503 is only for an event that cannot be made durable; this one is (its record is
    # written as always). The ringing phone gets the empty answer at once: Retell then
    # uses the number's default agent, as for a number no branch has.
    client, publisher, registry = await start(aiohttp_client, FakeRouter(is_loaded=False))
    resp = await client.post("/webhooks/retell", data=FIXTURE, headers=signed("retell", FIXTURE))
    assert resp.status == 200
    assert orjson.loads(await resp.read()) == {"call_inbound": {}}
    assert "Retry-After" not in resp.headers
    labels = {"result": "unavailable", "reason": "routing_not_loaded"}
    assert registry.get_sample_value("switchboard_ingress_call_inbound_total", labels) == 1.0
    await settle(client)
    assert len(publisher.records) == 1


async def test_call_inbound_is_still_verified(aiohttp_client: Any) -> None:
    client, publisher, _ = await start(aiohttp_client, FakeRouter(routes={CALLED: route()}))
    resp = await client.post("/webhooks/retell", data=FIXTURE, headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status == 401
    body = inbound().replace(b'"to_number"', b'"to_numbr"')
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    assert resp.status == 400
    await settle(client)
    assert publisher.records == []


async def test_without_call_id_the_key_is_the_body_hash(aiohttp_client: Any) -> None:
    import hashlib

    client, publisher, _ = await start(aiohttp_client, FakeRouter(routes={CALLED: route()}))
    body = inbound(call_id=None)
    status, _, _ = await post(client, body)
    assert status == 200
    await settle(client)
    assert publisher.records[0].key == hashlib.sha256(body).hexdigest().encode()


# --- with the real RoutingCache, its database access replaced ------------------------------


def real_cache(monkeypatch: pytest.MonkeyPatch, load_caller: Any) -> RoutingCache:
    values = (1, 7, "Bayview", CALLED, "agent_bayview", True, "Bayview Dental", "America/Los_Angeles", True)  # fmt: skip
    rows = [_row(*values)]
    monkeypatch.setattr(routing_mod, "_load_branches", lambda engine: rows)
    monkeypatch.setattr(routing_mod, "_load_caller", load_caller)
    return RoutingCache(make_settings(caller_lookup_budget_s=0.05), engine=object())  # type: ignore[arg-type]


def _row(*values: Any) -> Any:
    from types import SimpleNamespace

    names = "id company_id name phone_number retell_agent_id is_active company_name timezone company_active"  # fmt: skip
    return SimpleNamespace(**dict(zip(names.split(), values, strict=True)))


async def test_slow_caller_lookup_answers_without_context(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(engine: Any, company_id: int, phone: str, now: datetime) -> CallerContext:
        time.sleep(0.5)
        return CallerContext("Dana", None)

    cache = real_cache(monkeypatch, slow)
    client, _, _ = await start(aiohttp_client, cache)
    status, body, _ = await post(client, inbound())
    assert status == 200  # without the caller's name: the answer did not wait for the lookup
    assert body["call_inbound"]["dynamic_variables"] == {
        "branch_name": "Bayview",
        "company_name": "Bayview Dental",
    }


async def test_failing_caller_lookup_answers_without_context(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(engine: Any, company_id: int, phone: str, now: datetime) -> CallerContext:
        raise ConnectionError("MySQL went away")

    client, _, _ = await start(aiohttp_client, real_cache(monkeypatch, broken))
    status, body, _ = await post(client, inbound())
    assert status == 200
    assert "customer_name" not in body["call_inbound"]["dynamic_variables"]
    assert body["call_inbound"]["override_agent_id"] == "agent_bayview"


async def test_inbound_record_reaches_kafka_once_it_is_back(aiohttp_client: Any) -> None:
    """The call_inbound event is still written to Kafka: a broker that is down delays the
    record (spooled, then forwarded), never loses it."""
    publisher = FakePublisher(mode="down")
    client, _, registry = await start(
        aiohttp_client, FakeRouter(routes={CALLED: route()}), publisher
    )
    status, _, _ = await post(client, inbound())
    assert status == 200
    await settle(client)
    assert publisher.records == [] and client.app[HANDOFF].spool.count == 1
    publisher.mode = "ok"
    for _ in range(200):
        if publisher.records:
            break
        await asyncio.sleep(0.05)
    assert [r.key for r in publisher.records] == [CALL_ID.encode()]
    assert registry.get_sample_value("switchboard_ingress_call_inbound_publish_failures_total") == 0.0  # fmt: skip
