"""The spool through real processes and real brokers (docs/ingress.md, "Spool").

* ``kill -9`` of an ingress whose records are spooled, a restart: everything lands, verified.
* a full spool: 503 with ``Retry-After``, and nothing that was accepted is lost.
* a broker outage of 60 s under a steady simulated load: every delivery is accepted the
  first time, and after the broker returns ``verify`` finds zero differences. This one
  stops a broker, so it runs its own (``scripts/stack.sh kafka-instance``); it is the
  longest ingress test (marked ``long``; CI runs it).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from sqlalchemy import Engine

from pipeline import database, topics
from pipeline.settings import Settings
from testbed import services
from testbed.kafka_instance import private_kafka
from testbed.services import Service
from testbed.simulator import tenants
from testbed.simulator.run import SimulationConfig, Summary, run_simulation
from testbed.simulator.scenario import ScenarioConfig
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import verify
from tests.integration.ingress_helpers import read_topic, signed
from tests.support.fixtures import fixture_bytes

TOKEN = "test-analyst-token"
NO_BROKER = "127.0.0.1:1"  # nothing listens there: every publish fails at once


def ingress(settings: Settings, log_dir: Path, name: str, *, ready: bool = True) -> Service:
    """An ingress process; ``ready=False`` waits only for /healthz (no broker: never ready)."""
    path = "readyz" if ready else "healthz"
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/{path}"
    return Service(name, ["ingress"], settings, url, log_dir)


@pytest.fixture
def live(stack_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    settings = stack_settings.with_(
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "data",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )
    engine = database.create_db_engine(settings, pool_size=2)
    with engine.begin() as conn:
        tenants.import_tenants(conn, tenants.generate(3, seed=21))
    yield settings, engine
    engine.dispose()


def simulate(settings: Settings, expected: Path, scenario: ScenarioConfig, rate: float) -> Summary:
    summary = run_simulation(
        settings,
        SimulationConfig(
            scenario=scenario,
            send=SendConfig(
                url=f"http://{settings.ingress_host}:{settings.ingress_port}",
                rate=rate,
                concurrency=16,
                progress_every_s=60,
            ),
            expected_path=expected,
            ready_wait_s=0.5,
        ),
    )
    assert summary.ok, summary
    assert summary.accepted > 0
    return summary


def spooled_records(settings: Settings) -> int:
    total = 0
    for path in settings.ingress_spool_dir().glob("ingress-*.sqlite3"):
        db = sqlite3.connect(path)
        try:
            total += db.execute("SELECT count(*) FROM records").fetchone()[0]
        finally:
            db.close()
    return total


def test_kill_9_with_records_spooled_then_restart_loses_nothing(
    live: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = live
    offline = settings.with_(kafka_bootstrap=NO_BROKER)
    expected = tmp_path / "expected.json"
    first = ingress(offline, tmp_path, "ingress-offline", ready=False).start()
    try:
        summary = simulate(offline, expected, ScenarioConfig(seed=31, calls=25), rate=0)
        assert summary.answers_503 == 0 and summary.other_retries == 0
    finally:
        first.kill()  # SIGKILL: no shutdown, no flush; the spool is all there is
    assert first.proc is not None and first.proc.returncode == -9
    assert spooled_records(settings) == summary.accepted > 0  # every 2xx is in the spool

    with services.running(
        ingress(settings, tmp_path, "ingress-restarted"), services.worker(settings, tmp_path)
    ):
        api = f"http://{settings.worker_host}:{settings.worker_port}"
        assert verify(settings, expected, api_url=api, token=TOKEN, timeout=120) == []
        assert spooled_records(settings) == 0  # forwarded and forgotten


def padded_booking(uid: str, pad: int) -> bytes:
    payload = orjson.loads(fixture_bytes("calcom", "BOOKING_CREATED.json"))
    payload["payload"]["uid"] = uid
    payload["payload"]["description"] = "x" * pad
    return orjson.dumps(payload)


async def post_all(base: str, bodies: list[bytes]) -> list[tuple[int, str | None, str]]:
    answers = []
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(
                f"{base}/webhooks/calcom", data=body, headers=signed("calcom", body)
            ) as resp:
                payload = orjson.loads(await resp.read())
                answers.append(
                    (resp.status, resp.headers.get("Retry-After"), payload.get("error", ""))
                )
    return answers


def test_a_full_spool_answers_503_and_keeps_what_it_accepted(
    live: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = live
    small = settings.with_(kafka_bootstrap=NO_BROKER, spool_max_bytes=1024 * 1024)
    bodies = [padded_booking(f"bk_full_{i:03d}", 60_000) for i in range(25)]
    base = f"http://{small.ingress_host}:{small.ingress_port}"
    with services.running(ingress(small, tmp_path, "ingress-small", ready=False)):
        answers = asyncio.run(post_all(base, bodies))
    accepted = [b for b, (status, _, _) in zip(bodies, answers, strict=True) if status == 202]
    refused = [a for a in answers if a[0] != 202]
    assert 10 <= len(accepted) < len(bodies)
    assert refused and all(a == (503, str(small.retry_after_s), "spool_full") for a in refused)
    assert answers[len(accepted)][0] == 503  # accepted until full, then refused: no gaps

    with services.running(ingress(settings, tmp_path, "ingress-online")):
        records = asyncio.run(read_topic(settings, "webhooks.calcom", len(accepted) + 1, 30))
    assert sorted(r.value for r in records) == sorted(accepted)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_a_60s_broker_outage_under_load_refuses_nothing_and_loses_nothing(
    live: tuple[Settings, Engine], tmp_path: Path
) -> None:
    base, _ = live
    with private_kafka("ingress-outage", tmp_path / "kafka") as kafka:
        settings = base.with_(kafka_bootstrap=kafka.bootstrap)
        asyncio.run(topics.ensure_topics(settings))
        expected = tmp_path / "expected.json"
        outage: dict[str, float] = {}

        def break_the_broker() -> None:
            time.sleep(8)
            kafka.stop()
            outage["stopped"] = time.monotonic()
            time.sleep(60)
            outage["starting"] = time.monotonic()
            kafka.start()
            outage["back"] = time.monotonic()

        with services.running(ingress(settings, tmp_path, "ingress-outage")):
            breaker = threading.Thread(target=break_the_broker, daemon=True)
            breaker.start()
            # ~110 s of steady traffic at 8 deliveries/s: before, during and after.
            summary = simulate(settings, expected, ScenarioConfig(seed=41, requests=880), rate=8)
            breaker.join(timeout=300)
            assert outage.get("back"), "the broker never came back"
            assert outage["starting"] - outage["stopped"] >= 60
            assert summary.answers_503 == 0 and summary.other_retries == 0, summary.lines()
            assert summary.undelivered == 0
            # The worker joins after the outage: this test is about the ingress's promise;
            # worker faults are tested elsewhere.
            with services.running(services.worker(settings, tmp_path)):
                api = f"http://{settings.worker_host}:{settings.worker_port}"
                assert verify(settings, expected, api_url=api, token=TOKEN, timeout=180) == []
        assert spooled_records(settings) == 0
