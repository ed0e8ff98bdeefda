"""``call_inbound`` against MariaDB and the real broker: routing from rows in the test
database, caller context only inside the routed company, and answers from the last good
cache after MySQL becomes unreachable."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine

from pipeline.errors import DatabaseUnavailable
from pipeline.ingress.app import ROUTER, create_app
from pipeline.ingress.routing import RoutingCache
from pipeline.models import appointments, branches, companies, customers
from pipeline.settings import Settings
from tests.integration.ingress_helpers import headers_of, read_topic, signed, wait_ready

pytestmark = pytest.mark.integration

BAYVIEW_MAIN = "+14155550199"
BAYVIEW_CLOSED = "+14155550111"
OTHER_MAIN = "+14155550177"
DORMANT_CO = "+14155550155"
DANA = "+14155550142"
STRANGER = "+14155550000"
NOW = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
NEXT = NOW + timedelta(days=2, hours=3)


def seed(engine: Engine) -> dict[str, int]:
    with engine.begin() as conn:

        def add(table: Any, **values: Any) -> int:
            key = conn.execute(insert(table).values(**values)).inserted_primary_key
            assert key is not None
            return int(key[0])

        bayview = add(companies, name="Bayview Dental", timezone="America/Los_Angeles")
        other = add(companies, name="Other Co", timezone="Europe/Berlin")
        dormant = add(companies, name="Dormant Co", is_active=False)
        main = add(branches, company_id=bayview, name="Bayview Main", phone_number=BAYVIEW_MAIN, retell_agent_id="agent_bayview")  # fmt: skip
        add(branches, company_id=bayview, name="Bayview Old", phone_number=BAYVIEW_CLOSED, retell_agent_id="agent_old", is_active=False)  # fmt: skip
        add(branches, company_id=other, name="Other Main", phone_number=OTHER_MAIN, retell_agent_id="agent_other")  # fmt: skip
        add(branches, company_id=dormant, name="Dormant", phone_number=DORMANT_CO, retell_agent_id="agent_dormant")  # fmt: skip
        dana = add(customers, company_id=bayview, phone=DANA, name="Dana Reyes")
        # The same phone is a different person at another company: never mixed up.
        namesake = add(customers, company_id=other, phone=DANA, name="D. Namesake")
        for uid, customer, company, starts, status in [
            ("past", dana, bayview, NOW - timedelta(days=1), "scheduled"),
            ("cancelled-soon", dana, bayview, NOW + timedelta(hours=1), "cancelled"),
            ("next", dana, bayview, NEXT, "scheduled"),
            ("later", dana, bayview, NEXT + timedelta(days=7), "pending"),
            ("namesake-soon", namesake, other, NOW + timedelta(hours=2), "scheduled"),
        ]:
            add(appointments, calcom_uid=uid, company_id=company, customer_id=customer, starts_at=starts, status=status)  # fmt: skip
    return {"bayview": bayview, "other": other, "main": main}


def inbound(to: str, caller: str, call_id: str) -> bytes:
    return orjson.dumps(
        {
            "event": "call_inbound",
            "call_inbound": {"from_number": caller, "to_number": to, "call_id": call_id},
        }
    )


async def ask(client: Any, to: str, caller: str, call_id: str) -> dict[str, Any]:
    body = inbound(to, caller, call_id)
    resp = await client.post("/webhooks/retell", data=body, headers=signed("retell", body))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = orjson.loads(await resp.read())
    return answer["call_inbound"]


async def test_routing_answers_from_the_database(
    stack_settings: Settings, engine: Engine, aiohttp_client: Any
) -> None:
    ids = seed(engine)
    settings = stack_settings.with_(caller_lookup_budget_s=1.0)  # generous: this is about SQL
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client)

    answer = await ask(client, BAYVIEW_MAIN, DANA, "call_1")
    local = NEXT.replace(tzinfo=UTC).astimezone(ZoneInfo("America/Los_Angeles"))
    assert answer["override_agent_id"] == "agent_bayview"
    assert answer["dynamic_variables"] == {
        "branch_name": "Bayview Main",
        "company_name": "Bayview Dental",
        "customer_name": "Dana Reyes",
        "next_appointment": local.isoformat(timespec="minutes"),
    }
    assert answer["metadata"]["company_id"] == str(ids["bayview"])
    assert answer["metadata"]["branch_id"] == str(ids["main"])

    stranger = await ask(client, BAYVIEW_MAIN, STRANGER, "call_2")
    assert stranger["dynamic_variables"] == {
        "branch_name": "Bayview Main",
        "company_name": "Bayview Dental",
    }
    other = await ask(client, OTHER_MAIN, DANA, "call_3")
    assert other["override_agent_id"] == "agent_other"
    assert other["dynamic_variables"]["customer_name"] == "D. Namesake"
    assert other["metadata"]["company_id"] == str(ids["other"])

    for n, number in enumerate((BAYVIEW_CLOSED, DORMANT_CO, "+19995550123")):
        assert await ask(client, number, DANA, f"call_x{n}") == {}

    # Every call_inbound is on Kafka too, for the record, keyed by its call id.
    records = await read_topic(stack_settings, "webhooks.retell", 6)
    assert sorted(r.key for r in records) == [b"call_1", b"call_2", b"call_3", b"call_x0", b"call_x1", b"call_x2"]  # fmt: skip
    assert {headers_of(r)["event_type"] for r in records} == {b"call_inbound"}
    metrics = await (await client.get("/metrics")).text()
    assert 'switchboard_ingress_call_inbound_total{reason="",result="routed"} 3.0' in metrics
    assert 'switchboard_ingress_call_inbound_total{reason="inactive_number",result="unrouted"} 2.0' in metrics  # fmt: skip
    assert 'switchboard_ingress_call_inbound_total{reason="unknown_number",result="unrouted"} 1.0' in metrics  # fmt: skip
    assert "switchboard_ingress_routing_cache_entries 2.0" in metrics


async def test_keeps_answering_after_mysql_goes_away(
    stack_settings: Settings, engine: Engine, aiohttp_client: Any
) -> None:
    seed(engine)
    client = await aiohttp_client(create_app(stack_settings.with_(caller_lookup_budget_s=1.0)))
    await wait_ready(client)
    known = await ask(client, BAYVIEW_MAIN, DANA, "call_before")
    assert known["dynamic_variables"]["customer_name"] == "Dana Reyes"

    router = client.app[ROUTER]
    assert isinstance(router, RoutingCache)
    router.engine = create_engine(
        "mysql+pymysql://switchboard:switchboard@127.0.0.1:1/gone",
        connect_args={"connect_timeout": 1},
    )
    with pytest.raises(DatabaseUnavailable):
        await router.refresh()

    started = time.monotonic()
    again = await ask(client, BAYVIEW_MAIN, DANA, "call_after")
    assert time.monotonic() - started < 1.0
    assert again["override_agent_id"] == "agent_bayview"
    assert again["dynamic_variables"]["customer_name"] == "Dana Reyes"  # from the short TTL cache
    fresh_caller = await ask(client, BAYVIEW_MAIN, STRANGER, "call_after_2")
    assert fresh_caller["dynamic_variables"] == {
        "branch_name": "Bayview Main",
        "company_name": "Bayview Dental",
    }
    assert await ask(client, "+19995550123", DANA, "call_after_3") == {}
    assert (await client.get("/readyz")).status == 200  # loaded once: still ready
    metrics = await (await client.get("/metrics")).text()
    assert "switchboard_ingress_routing_refresh_failures_total 1.0" in metrics
    router.engine.dispose()
