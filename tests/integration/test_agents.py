"""The apply agents driven through Faust's ``test_context`` against the real MariaDB: the
glue between a Faust event and the apply path (coordinates, headers, batching, acks,
dead letters and snapshots) cannot drift from the logic the other tests prove."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from agents.worker import build_worker
from pipeline import database
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.snapshots import decode
from pipeline.models import calls, webhook_events
from pipeline.settings import Settings
from testbed.records import record
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants


class Sent:
    """Stands in for a Kafka topic's ``send``: keeps what the agent published."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> asyncio.Future:
        self.messages.append(kwargs)
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    eng = database.create_db_engine(db_settings, pool_size=2)
    seed_fixture_tenants(eng)
    try:
        yield eng
    finally:
        eng.dispose()


async def _until_counted(metrics: Any, events: int) -> None:
    """Until the agent has applied, published and counted ``events`` more events (the
    outcome metric moves after the publish), instead of a fixed wait that a loaded
    machine outlasts."""

    def counted() -> float:
        samples = metrics.registry.get_sample_value
        return sum(
            samples("switchboard_worker_events_total", {"provider": p, "outcome": o}) or 0.0
            for p in ("retell", "calcom")
            for o in ("applied", "already_applied", "unroutable", "dead_lettered")
        )

    target = counted() + events
    for _ in range(1200):
        if counted() >= target:
            return
        await asyncio.sleep(0.05)


async def drive(
    settings: Settings, engine: Engine, deliveries: list[tuple[str, bytes]]
) -> tuple[Sent, Sent]:
    worker = build_worker(
        settings.with_(worker_batch_within_s=0.01), store="memory://", engine=engine
    )
    app = worker.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    dlq, snapshots = Sent(), Sent()
    worker.outputs.dlq.send = dlq.send  # type: ignore[method-assign]
    worker.outputs.snapshots.send = snapshots.send  # type: ignore[method-assign]
    assert worker.process is not None  # the worker's default: batches go to its apply process
    try:
        for provider in ("retell", "calcom"):
            mine = [(p, b) for p, b in deliveries if p == provider]
            if not mine:
                continue
            agent = app.agents[f"apply-{provider}"]
            async with agent.test_context() as ctx:
                for name, body in mine:
                    rec = record(name, body)
                    headers = [(k, v.encode()) for k, v in rec.headers.items()]
                    await ctx.put(body, key=rec.key, headers=headers)
                await _until_counted(worker.outputs.metrics, len(mine))
    finally:
        worker.process.close()
    return dlq, snapshots


def test_agent_applies_acks_and_publishes_snapshots(db_settings: Settings, engine: Engine) -> None:
    deliveries = [
        ("retell", fixture_bytes("retell", "call_started.json")),
        ("retell", fixture_bytes("retell", "call_ended.json")),
        ("retell", fixture_bytes("retell", "call_ended.json")),  # a provider retry
        ("calcom", fixture_bytes("calcom", "BOOKING_CREATED.json")),
    ]
    dlq, snapshots = asyncio.run(drive(db_settings, engine, deliveries))
    with engine.connect() as conn:
        events = {r.event_id: r for r in conn.execute(select(webhook_events))}
        call = conn.execute(select(calls)).one()
    assert {e.status for e in events.values()} == {"applied"}
    assert len(events) == 3
    assert call.status == "ended"
    assert dlq.messages == []
    # Snapshots are absolute: a bucket published twice (a provider retry in a later batch is
    # republished unchanged) counts once, at its highest version, as the table keeps it.
    latest: dict[BucketKey, BucketSnapshot] = {}
    for message in snapshots.messages:
        for snapshot, _ in decode(message["value"]):
            if snapshot.key not in latest or latest[snapshot.key].version < snapshot.version:
                latest[snapshot.key] = snapshot
    kept = list(latest.values())
    assert {m["key"] for m in snapshots.messages} == {b"1"}, "snapshots are keyed by company"
    company = [s for s in kept if s.key.granularity == "hour" and not s.key.grouped]
    assert sum(s.counters["calls_total"] for s in company) == 1
    assert sum(s.counters["appointments_booked"] for s in company) == 1
    # The branch and agent buckets of the same events are published beside them.
    for dimension in ("branch", "agent"):
        groups = [s for s in kept if s.key.granularity == "hour" and s.key.dimension == dimension]
        assert sum(s.counters["calls_total"] for s in groups) == 1
        assert sum(s.counters["appointments_booked"] for s in groups) == 1


def test_agent_dead_letters_poison_with_reason_and_source(
    db_settings: Settings, engine: Engine
) -> None:
    poison = b'{"event":"call_ended","call":{"call_id":"c1","duration_ms":"long"}}'
    deliveries = [("retell", poison), ("retell", fixture_bytes("retell", "call_started.json"))]
    dlq, _ = asyncio.run(drive(db_settings, engine, deliveries))
    assert len(dlq.messages) == 1
    letter = dlq.messages[0]
    headers = {k: v.decode() for k, v in letter["headers"]}
    assert letter["value"] == poison
    assert headers["reason"] == "schema_violation"
    assert headers["source_topic"].endswith("webhooks.retell")
    assert headers["source_offset"].isdigit()
    with engine.connect() as conn:
        statuses = {r.event_id: r.status for r in conn.execute(select(webhook_events))}
    assert statuses == {
        "call_ended:c1": "dead_lettered",
        "call_started:call_aaa33b1c0b1d5c6f11ed9879bb453974": "applied",
    }
