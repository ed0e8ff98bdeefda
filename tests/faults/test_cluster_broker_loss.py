"""Fault 4: a three-broker KRaft cluster (replication 3, ``min.insync.replicas`` 2; a private
one, ``scripts/stack.sh kafka-cluster``) loses the broker that leads the webhook topic's
first partition, killed with SIGKILL under load; it rejoins 20 s later. Producers use
``acks=all``: nothing the ingress acknowledged may be lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline import topics
from pipeline.settings import Settings
from testbed.kafka_cluster import private_cluster
from testbed.simulator.scenario import ScenarioConfig
from tests.faults.harness import Figures, World

# Minutes each, on private services: `long`; beyond the suite's default 300 s limit.
pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

COMMAND = ".venv/bin/pytest -q tests/faults/test_cluster_broker_loss.py"
DOWN_S = 20.0


async def leaders(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> leader node id (-1: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        return {
            (d["topic"], p["partition"]): p["leader"] for d in described for p in d["partitions"]
        }
    finally:
        await admin.close()


def test_one_of_three_brokers_killed_under_load(
    shared: Settings, tmp_path: Path, worlds: list[World]
) -> None:
    figures = Figures(
        "cluster-broker-loss",
        "One of three brokers killed",
        "a three-broker KRaft cluster (replication 3, min.insync.replicas 2): the leader of "
        f"the Retell topic's first partition is killed with SIGKILL under load and started "
        f"again {DOWN_S:.0f} s later",
        times=1,
        command=COMMAND,
    )
    with private_cluster("fault-cluster", tmp_path / "cluster") as cluster:
        world = World(
            shared.with_(kafka_bootstrap=cluster.bootstrap),
            tmp_path,
            "cluster-broker-loss",
            replication=3,
        )
        worlds.append(world)
        world.ingress()
        worker = world.worker()
        worker.wait_ready(180)
        simulation = world.simulate(
            ScenarioConfig(seed=91, calls=50, duplicate_share=0.2, reorder_share=0.5), rate=8
        )
        world.send_poison(1)
        time.sleep(10)
        webhook_topics = [world.settings.topic(t) for t in topics.WEBHOOK_TOPICS]
        before_kill = asyncio.run(leaders(cluster.bootstrap, webhook_topics))
        victim = before_kill[(webhook_topics[0], 0)]
        led = sorted(tp for tp, node in before_kill.items() if node == victim)
        cluster.kill_broker(victim)
        killed = time.monotonic()
        while True:
            try:
                now = asyncio.run(leaders(cluster.bootstrap, webhook_topics))
            except KafkaError:  # asked the dead broker: it stays in the metadata a while
                now = before_kill
            if all(now[tp] not in (victim, -1) for tp in led):
                break
            assert time.monotonic() - killed < 120, f"no new leaders: {now}"
            time.sleep(0.5)
        figures.recover_s.append(round(time.monotonic() - killed, 1))
        figures.notes.append(
            f"broker {victim} led {len(led)} of {len(before_kill)} webhook partitions; new "
            f"leaders within {figures.recover_s[-1]} s"
        )
        before = world.processed()
        figures.recover_s.append(world.resumed(killed, before))
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))
        # The JVM takes tens of seconds to start here; the run goes on meanwhile.
        failed: list[BaseException] = []

        def start_again() -> None:
            try:
                cluster.start_broker(victim)
            except BaseException as exc:  # reported below
                failed.append(exc)

        rejoin = threading.Thread(target=start_again, daemon=True)
        rejoin.start()
        summary = simulation.result()
        rejoin.join(300)
        assert not rejoin.is_alive() and not failed, f"broker {victim} did not start: {failed}"
        world.send_poison(1)
        worker._check_alive()
        figures.notes.append(
            f"the simulated providers saw {summary.answers_503} answers 503 and "
            f"{summary.other_retries} other retryable failures"
        )
        world.finish(figures, summary, api_url=worker.url)
