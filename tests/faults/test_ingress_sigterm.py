"""Fault 6: the ingress gets SIGTERM twice under load (32 requests in flight at most) and is
started again at once. Requests already in a handler finish (each answered 202 only once
its record is durable: on Kafka or in the spool), the rest are refused at the socket and
retried by the providers; nothing is half-done: no 2xx without a record that gets applied,
no record applied twice."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import Figures, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_ingress_sigterm.py"
TERMS = 2


def test_ingress_sigterm_under_load(shared: Settings, tmp_path: Path, worlds: list[World]) -> None:
    figures = Figures(
        "ingress-sigterm",
        "Ingress SIGTERM under load",
        f"the ingress gets SIGTERM {TERMS} times while the simulated providers send at about "
        "25 requests/s with up to 32 in flight; each time it is started again as soon as it "
        "has exited",
        times=TERMS,
        command=COMMAND,
    )
    world = World(shared, tmp_path, "ingress-sigterm")
    worlds.append(world)
    ingress = world.ingress("ingress-0")
    worker = world.worker()
    worker.wait_ready(120)
    simulation = world.simulate(
        ScenarioConfig(seed=101, calls=70, duplicate_share=0.2, reorder_share=0.5),
        rate=25,
        concurrency=32,
    )
    world.send_poison(1)
    for number in range(1, TERMS + 1):
        time.sleep(6)
        assert ingress.proc is not None
        terminated = time.monotonic()
        ingress.stop(signal.SIGTERM, timeout_s=60)
        exited = time.monotonic()
        assert ingress.proc.returncode == 0, ingress.tail()
        stopped = re.findall(r'"shutdown_s":([0-9.]+)', ingress.log_path.read_text())
        ingress = world.ingress(f"ingress-{number}")
        figures.recover_s.append(round(time.monotonic() - terminated, 1))
        figures.notes.append(
            f"SIGTERM {number}: exited 0 after {exited - terminated:.1f} s (its own shutdown "
            f"{float(stopped[-1]) if stopped else float('nan'):.2f} s), answering again "
            f"{figures.recover_s[-1]} s after the signal"
        )
    summary = simulation.result()
    world.send_poison(1)
    figures.notes.append(
        f"the simulated providers retried {summary.other_retries} deliveries after a refused "
        f"connection or a cut response and saw {summary.answers_503} answers 503"
    )
    world.finish(figures, summary, api_url=worker.url)
