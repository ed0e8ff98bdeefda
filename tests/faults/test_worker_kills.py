"""Fault 1: the worker is killed with SIGKILL five times during a simulated run, each time
at a chosen point of its work: inside an apply transaction (mid-batch), right after MySQL
committed and before anything was published or acked (mid-commit), while bucket snapshots
are being handed to the producer (mid-publish). Which occurrence of the point is hit is
drawn at random (seeded). After each kill the worker restarts with the same data
directory; redelivered batches must be deduplicated, never counted twice. (The first two
points are reached in the worker's apply process, which then kills the worker and itself.)

Fault 8: only the apply process dies, again and again, each time just after MySQL
committed one of its batches and before its reply reached the worker: the worker replaces
it and sends the batch again, which must then be recognised as applied and its buckets
published all the same (pipeline/apply/process.py)."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.processes import WorkerProcess
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import Figures, Simulation, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_worker_kills.py"
COMMAND_8 = f"{COMMAND}::test_the_apply_process_killed_after_every_third_commit"
POINTS = ["mid_batch", "after_commit", "mid_publish", "mid_batch", "after_commit"]
SEED = 12


def wait_for_death(worker: WorkerProcess, within_s: float) -> bool:
    """True when the worker killed itself at its point within ``within_s``."""
    assert worker.proc is not None
    try:
        worker.proc.wait(within_s)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: the point was not reached
        return False
    return worker.proc.returncode == -signal.SIGKILL


def gone(worker: WorkerProcess) -> bool:
    return worker.proc is not None and worker.proc.poll() is not None


def traffic_over(simulation: Simulation, died: float) -> bool:
    """The day was sent a minute before (and since the kill) without a new row: the kill
    came at the end, and what was left to apply were redeliveries (no figure for it)."""
    quiet_since = max(simulation.finished_at, died)
    return bool(simulation.finished_at) and time.monotonic() - quiet_since > 60


def test_kill_9_five_times_mid_batch_mid_commit_mid_publish(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    rng = random.Random(SEED)
    world = World(shared, tmp_path, "worker-kills", worker_batch_size=20)
    worlds.append(world)
    figures = Figures(
        "worker-kills",
        "Worker kill -9",
        "the worker kills itself with SIGKILL at a chosen point, the N-th time it gets there "
        "(N drawn at random from 2-8): inside an apply transaction, just after MySQL "
        "committed, while publishing bucket snapshots; it is restarted at once with the same "
        "data directory; batches of 20",
        times=len(POINTS),
        command=COMMAND,
    )
    world.ingress()
    simulation = world.simulate(
        ScenarioConfig(seed=61, calls=70, duplicate_share=0.3, reorder_share=0.5), rate=8
    )
    world.send_poison(1)
    specs = [f"{point}:{rng.randint(2, 8)}" for point in POINTS]
    worker = world.worker("worker", kill_at=specs[0])
    for number, spec in enumerate(specs, start=1):
        started = time.monotonic()
        if wait_for_death(worker, 90):
            figures.notes.append(
                f"kill {number}: {spec.replace(':', ' #')}, {time.monotonic() - started:.0f} s "
                "after the previous incarnation applied"
            )
        else:  # the point was not reached (no traffic left?): a kill -9 from outside
            worker.kill()
            figures.notes.append(f"kill {number}: {spec} not reached; killed from outside")
        died, before = time.monotonic(), world.processed()
        if number == 3:
            world.send_poison(1)
        following = specs[number] if number < len(specs) else None
        worker = world.worker("worker", kill_at=following)
        # Applying again: new rows. (A redelivered batch adds none, and the next incarnation
        # may reach its own point first: then this kill has no figure of its own.)
        resumed = world.time_to_resume(
            died, before, give_up=lambda w=worker, d=died: gone(w) or traffic_over(simulation, d)
        )
        if resumed is not None:
            figures.recover_s.append(resumed)
    last = worker
    last.wait_ready(180)
    summary = simulation.result()
    world.send_poison(1)
    log = last.log_path.read_text(errors="replace")
    hits = log.count("FAULT_KILL_AT: SIGKILL at")
    figures.notes.append(f"{hits} of {len(POINTS)} kills at their point (from the worker log)")
    world.finish(figures, summary, api_url=last.url)
    assert hits >= 3, "most kills must land at their point, or this test proves little"


def restarts(url: str) -> float:
    """The worker's count of apply processes it replaced."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("switchboard_worker_apply_process_restarts_total "):
            return float(line.split()[1])
    raise AssertionError("no switchboard_worker_apply_process_restarts_total in /metrics")


def test_the_apply_process_killed_after_every_third_commit(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    world = World(shared, tmp_path, "apply-process-kills", worker_batch_size=20)
    worlds.append(world)
    figures = Figures(
        "apply-process-kills",
        "Apply process kill -9",
        "the worker's apply process kills itself with SIGKILL just after MySQL committed its "
        "third batch, before its reply reached the worker, and so does every process that "
        "replaces it; the worker itself runs on; batches of 20",
        command=COMMAND_8,
    )
    world.ingress()
    simulation = world.simulate(
        ScenarioConfig(seed=63, calls=50, duplicate_share=0.3, reorder_share=0.5), rate=8
    )
    world.send_poison(1)
    worker = world.worker(
        "worker",
        kill_at="after_commit:3",
        extra_env={"FAULT_KILL_SCOPE": "apply_process", "SWITCHBOARD_WORKER_APPLY_PROCESS": "1"},
    )
    summary = simulation.result()
    worker.wait_ready(60)
    kills = worker.log_path.read_text(errors="replace").count("FAULT_KILL_AT: SIGKILL at")
    figures.times = kills
    figures.notes.append(
        f"{kills} apply processes killed by the end of the traffic; the worker replaced "
        f"{restarts(worker.url):g} by then"
    )
    world.finish(figures, summary, api_url=worker.url)
    assert not gone(worker), "the worker itself must survive its apply process"
    assert kills >= 3, "the apply process must have died several times, or this proves little"
    assert restarts(worker.url) >= kills
