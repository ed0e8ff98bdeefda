"""Fault 2: the Kafka broker is killed with SIGKILL under load and restarted, on a private
single-node broker (``scripts/stack.sh kafka-instance``). The ingress keeps accepting (its
spool holds what the broker cannot take); while the broker is down it also gets SIGTERM
with records in its spool and is started again (fault 6 with the spool in play). The
worker waits for the broker and resumes from its committed offsets; nothing is lost or
counted twice."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.kafka_instance import private_kafka
from testbed.processes import eventually
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import Figures, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_broker_restart.py"


def spooled(world: World) -> int:
    """Records waiting in the ingress spools (read from their SQLite files)."""
    total = 0
    for path in world.settings.ingress_spool_dir().glob("ingress-*.sqlite3"):
        db = sqlite3.connect(path)
        try:
            total += db.execute("SELECT count(*) FROM records").fetchone()[0]
        finally:
            db.close()
    return total


def _empty(world: World) -> None:
    assert spooled(world) == 0


DOWN_S = 12.0


def test_the_broker_killed_under_load_and_restarted(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    figures = Figures(
        "broker-restart",
        "Kafka broker killed and restarted",
        f"the only broker (a private one) is killed with SIGKILL under load, left down for "
        f"{DOWN_S:.0f} s, and started again; half-way through, the ingress gets SIGTERM "
        "with records in its spool and is started again",
        times=1,
        command=COMMAND,
    )
    with private_kafka("fault-kafka", tmp_path / "kafka") as kafka:
        world = World(shared.with_(kafka_bootstrap=kafka.bootstrap), tmp_path, "broker-restart")
        worlds.append(world)
        world.ingress()
        worker = world.worker()
        worker.wait_ready(120)
        simulation = world.simulate(
            ScenarioConfig(seed=81, calls=45, duplicate_share=0.2, reorder_share=0.5), rate=8
        )
        world.send_poison(1)
        time.sleep(10)
        kafka.run("kill")
        killed = time.monotonic()
        # While the broker is down, the ingress gets SIGTERM with records in its spool: it
        # must exit cleanly and leave them on disk; the next ingress forwards them.
        time.sleep(DOWN_S / 2)
        ingress = world.ingresses[-1]
        held = spooled(world)
        ingress.stop(signal.SIGTERM, timeout_s=60)
        assert ingress.proc is not None and ingress.proc.returncode == 0, ingress.tail()
        assert spooled(world) >= held > 0, "no records waited in the spool: nothing proven"
        figures.notes.append(
            f"during the outage the ingress got SIGTERM with {held} records in its spool, "
            "exited 0, and was started again"
        )
        world.ingress("ingress-restarted", ready=False)
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))
        kafka.start()
        back, before = time.monotonic(), world.processed()
        figures.notes.append(f"the broker was down {back - killed:.0f} s (restart included)")
        figures.recover_s.append(world.resumed(back, before))
        summary = simulation.result()
        world.send_poison(1)
        worker._check_alive()
        eventually(lambda: _empty(world), timeout=120, what="the spool forwarded")
        figures.notes.append(
            f"the simulated providers saw {summary.answers_503} answers 503 and "
            f"{summary.other_retries} other retryable failures"
        )
        world.finish(figures, summary, api_url=worker.url)
