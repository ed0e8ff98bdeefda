"""The quiet takeover: a worker dies before its partitions ever carried a record. Webhooks arrive
while the group still counts it alive, onto partitions nobody has committed; the survivor
takes them over and must apply every one.

A failover run of the fault suite lost three Cal.com records this way: the survivor
fetched them while the rebalance finished, Faust dropped the batch, and the seek to the
committed offsets that should have read them again moved nothing on a partition without
a committed offset (agents/consumer.py). With traffic from the start, the victim's
partitions are committed before the kill and the seek hides the drop; here none is.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.settings import Settings
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import PARTITIONS, Figures, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_quiet_takeover.py"
SEEK_PAUSE_S = 3.0


def test_a_worker_killed_before_any_traffic_loses_nothing_of_its_partitions(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    world = World(shared, tmp_path, "quiet-takeover")
    worlds.append(world)
    figures = Figures(
        "quiet-takeover",
        "A worker killed before its partitions carried a record",
        "two workers share the partitions with no traffic yet; one is killed with SIGKILL; "
        "webhooks start at once, so the dead worker's partitions fill before the group "
        "notices and have no committed offset when the survivor takes them over; the "
        f"survivor's seeks to the committed offsets take {SEEK_PAUSE_S:g} s longer (a slow "
        "broker)",
        times=1,
        command=COMMAND,
    )
    survivor, victim = world.survivor_and_victim(SEEK_PAUSE_S)
    assert world.processed() == 0  # nothing committed anywhere yet
    victim.kill()
    killed = time.monotonic()
    simulation = world.simulate(
        ScenarioConfig(seed=57, calls=30, duplicate_share=0.3, reorder_share=0.5), rate=10
    )
    world.send_poison(1)
    figures.recover_s.append(world.resumed(killed, 0))
    summary = simulation.result()
    figures.notes.append(
        f"the victim owned part of the {2 * PARTITIONS} webhook partitions and had "
        "committed none of them"
    )
    world.finish(figures, summary, api_url=survivor.url)
