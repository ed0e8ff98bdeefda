"""Issue 4 end to end, through real processes: ingress → Kafka → worker → MariaDB."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import Engine, func, select

from pipeline import database
from pipeline.models import webhook_events
from pipeline.providers import get as provider
from pipeline.settings import Settings
from testbed import services
from testbed.events import lifecycle
from tests.integration.ingress_helpers import read_topic, signed
from tests.support.fixtures import fixture_bytes, fixture_names
from tests.support.state import db_state
from tests.support.tenants import seed_fixture_tenants

REPO = Path(__file__).resolve().parents[2]
START_MS = 1_767_790_800_000


@pytest.fixture
def pipeline_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    return stack_settings.with_(
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "data",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )


@pytest.fixture
def tenant_engine(pipeline_settings: Settings) -> Iterator[Engine]:
    engine = database.create_db_engine(pipeline_settings, pool_size=2)
    seed_fixture_tenants(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def stack(pipeline_settings: Settings, tenant_engine: Engine, tmp_path: Path) -> Iterator[tuple]:
    ingress = services.ingress(pipeline_settings, tmp_path)
    worker = services.worker(pipeline_settings, tmp_path)
    with services.running(ingress, worker):
        yield ingress, worker


async def post_all(settings: Settings, deliveries: list[tuple[str, bytes]]) -> list[int]:
    base = f"http://{settings.ingress_host}:{settings.ingress_port}"
    statuses = []
    async with aiohttp.ClientSession() as session:
        for name, body in deliveries:
            async with session.post(
                f"{base}/webhooks/{name}", data=body, headers=signed(name, body)
            ) as r:
                statuses.append(r.status)
    return statuses


def wait_for_events(engine: Engine, count: int, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    seen = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            seen = conn.execute(select(func.count()).select_from(webhook_events)).scalar_one()
        if seen >= count:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"only {seen} of {count} events reached webhook_events")


def statuses_by_type(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(webhook_events.c.event_type, webhook_events.c.status))
        return {r.event_type: r.status for r in rows}


def distinct(deliveries: list[tuple[str, bytes]]) -> int:
    """How many webhook_events rows the deliveries make (one per provider + event_id)."""
    return len({(name, provider(name).parse(body).event_id) for name, body in deliveries})


def fixtures() -> list[tuple[str, bytes]]:
    out = []
    for name in ("retell", "calcom"):
        for fixture in fixture_names(name):
            if fixture != "call_inbound_response.json":
                out.append((name, fixture_bytes(name, fixture)))
    return out


def test_every_fixture_lands_in_its_rows(
    pipeline_settings: Settings, tenant_engine: Engine, stack: tuple
) -> None:
    deliveries = fixtures()
    statuses = asyncio.run(post_all(pipeline_settings, deliveries))
    assert all(s in (200, 202) for s in statuses), statuses
    wait_for_events(tenant_engine, len(deliveries))
    by_type = statuses_by_type(tenant_engine)
    assert by_type.pop("chat_analyzed") == "unroutable"  # a chat with no agent we know
    assert set(by_type.values()) == {"applied"}, by_type
    state = db_state(tenant_engine)
    call = state["calls"]["call_aaa33b1c0b1d5c6f11ed9879bb453974"]
    assert (call["status"], call["company_id"], call["sentiment"]) == ("ended", 1, "Positive")
    assert call["transfer_destination"] == "+12025550134"
    assert state["appointments"]["r8YcW3nQe5TjB1uLx7DkPa"]["call_id"] == call["retell_call_id"]
    assert state["appointments"]["Kp0Tn5VaJ3eWq8MzC2sHyd"]["status"] == "rejected"
    assert_lag_drains(pipeline_settings)


def assert_lag_drains(settings: Settings, timeout_s: float = 30.0) -> None:
    """The worker's backlog gauge covers the webhook partitions it owns and goes to 0."""
    import urllib.request

    url = f"http://{settings.worker_host}:{settings.worker_port}/metrics"
    topic = settings.topic("webhooks.retell")
    deadline = time.monotonic() + timeout_s
    samples: list[str] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = [
            line
            for line in text.splitlines()
            if line.startswith("switchboard_worker_consumer_lag{") and topic in line
        ]
        if samples and all(line.endswith(" 0.0") for line in samples):
            return
        time.sleep(1)
    raise AssertionError(f"consumer lag did not drain to 0: {samples}")


def comparable(state: dict) -> dict:
    """Drop what depends on when the ingress received each delivery."""
    for call in state["calls"].values():
        call.pop("last_event_at")
    state["customers"] = [c[:4] for c in state["customers"]]
    return state


def test_triplicated_shuffled_stream_equals_single_ordered_apply(
    pipeline_settings: Settings, tenant_engine: Engine, stack: tuple, tmp_path: Path
) -> None:
    events = lifecycle(START_MS)
    deliveries = [e for e in events for _ in range(3)]
    random.Random(7).shuffle(deliveries)
    assert set(asyncio.run(post_all(pipeline_settings, deliveries))) == {202}
    wait_for_events(tenant_engine, distinct(events))
    time.sleep(2)  # let the last batch (and any un-parking) commit
    landed = comparable(db_state(tenant_engine))

    from tests.integration.conftest import create_test_database, drop_test_database
    from tests.integration.test_order_independence import run

    reference_settings = create_test_database(pipeline_settings)
    engine = database.create_db_engine(reference_settings, pool_size=1)
    try:
        seed_fixture_tenants(engine)
        expected = comparable(run(engine, list(range(len(events))), [1] * len(events)))
    finally:
        engine.dispose()
        drop_test_database(reference_settings)
    assert landed == expected


def test_poison_goes_to_the_dlq_and_its_neighbours_are_applied(
    pipeline_settings: Settings, tenant_engine: Engine, stack: tuple
) -> None:
    poison = b'{"event":"call_ended","call":{"call_id":"call_poison","start_timestamp":"yesterday","to_number":"+14155550199","direction":"inbound"}}'
    provider("retell").parse(poison)  # the ingress accepts it: the envelope is fine
    deliveries = [*fixtures()[:3], ("retell", poison), *fixtures()[3:6]]
    asyncio.run(post_all(pipeline_settings, deliveries))
    wait_for_events(tenant_engine, len(deliveries))
    with tenant_engine.connect() as conn:
        rows = {r.event_id: (r.status, r.error) for r in conn.execute(select(webhook_events))}
    assert rows["call_ended:call_poison"][0] == "dead_lettered"
    assert "start_timestamp" in rows["call_ended:call_poison"][1]
    assert (
        sum(1 for s, _ in rows.values() if s == "applied") == len(deliveries) - 2
    )  # poison + chat
    letters = asyncio.run(read_topic(pipeline_settings, "webhooks.dlq", 1))
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert letters[0].value == poison
    assert headers["reason"] == "schema_violation"
    assert headers["error_class"] == "SchemaViolation"
    assert headers["source_topic"] == pipeline_settings.topic("webhooks.retell")
    assert headers["event_id"] == "call_ended:call_poison"


@pytest.mark.slow
def test_mariadb_down_for_20s_mid_stream_loses_nothing(
    pipeline_settings: Settings, tenant_engine: Engine, stack: tuple
) -> None:
    events = lifecycle(START_MS)
    first, rest = events[:5], events[5:]
    asyncio.run(post_all(pipeline_settings, first))
    wait_for_events(tenant_engine, distinct(first))
    stack_script = str(REPO / "scripts" / "stack.sh")
    subprocess.run([stack_script, "mariadb-stop"], check=True, timeout=120)
    try:
        # The ingress keeps accepting: it needs Kafka, not MySQL.
        assert set(asyncio.run(post_all(pipeline_settings, rest))) == {202}
        time.sleep(20)
    finally:
        subprocess.run([stack_script, "mariadb-start"], check=True, timeout=120)
    tenant_engine.dispose()
    wait_for_events(tenant_engine, distinct(events))
    time.sleep(2)
    by_status = {}
    with tenant_engine.connect() as conn:
        for row in conn.execute(
            select(webhook_events.c.status, func.count()).group_by(webhook_events.c.status)
        ):
            by_status[row[0]] = row[1]
    assert by_status == {"applied": distinct(events)}
    worker = stack[1]
    assert "database unavailable (" in worker.log_path.read_text()
