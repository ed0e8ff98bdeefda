"""Issue 5 through real processes: a simulated busy day lands exactly as the simulator's own
oracle says, in MySQL and in the analyst API; with retries and reordering turned up too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pipeline import database
from pipeline.settings import Settings
from testbed import services
from testbed.simulator import tenants
from testbed.simulator.run import SimulationConfig, run_simulation
from testbed.simulator.scenario import ScenarioConfig
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import verify

TOKEN = "test-analyst-token"


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
        tenants.import_tenants(conn, tenants.generate(3, seed=11))
    with services.running(
        services.ingress(settings, tmp_path), services.worker(settings, tmp_path)
    ):
        yield settings, engine
    engine.dispose()


def simulate_and_verify(settings: Settings, tmp_path: Path, scenario: ScenarioConfig) -> list:
    expected = tmp_path / f"expected-{scenario.seed}.json"
    summary = run_simulation(
        settings,
        SimulationConfig(
            scenario=scenario,
            send=SendConfig(
                url=f"http://{settings.ingress_host}:{settings.ingress_port}",
                rate=0,
                concurrency=16,
                progress_every_s=60,
            ),
            expected_path=expected,
        ),
    )
    assert summary.ok, summary
    assert summary.accepted > 0
    api = f"http://{settings.worker_host}:{settings.worker_port}"
    return verify(settings, expected, api_url=api, token=TOKEN, timeout=120)


def test_a_simulated_day_verifies_with_zero_differences(
    live: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = live
    differences = simulate_and_verify(
        settings, tmp_path, ScenarioConfig(seed=5, calls=60, bad_share=0.05)
    )
    assert differences == []


def test_heavy_retries_and_reordering_still_verify(
    live: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, _ = live
    scenario = ScenarioConfig(
        seed=6, calls=60, duplicate_share=0.6, reorder_share=0.9, reorder_window=40
    )
    assert simulate_and_verify(settings, tmp_path, scenario) == []


def test_verify_notices_a_lost_row(live: tuple[Settings, Engine], tmp_path: Path) -> None:
    """The check above can fail: delete one applied call and verify-run reports it."""
    settings, engine = live
    expected = tmp_path / "expected.json"
    run_simulation(
        settings,
        SimulationConfig(
            scenario=ScenarioConfig(seed=8, calls=10),
            send=SendConfig(
                url=f"http://{settings.ingress_host}:{settings.ingress_port}",
                rate=0,
                progress_every_s=60,
            ),
            expected_path=expected,
        ),
    )
    api = f"http://{settings.worker_host}:{settings.worker_port}"
    assert verify(settings, expected, api_url=api, token=TOKEN, timeout=120) == []
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE appointments SET call_id = NULL"))
        conn.execute(text("DELETE FROM calls ORDER BY id LIMIT 1"))
    assert verify(settings, expected, timeout=0) != []
