"""A private three-node KRaft cluster (replication 3, ``min.insync.replicas`` 2) for tests
that kill a broker under load: started through ``scripts/stack.sh kafka-cluster`` on six
consecutive free ports with its data under the test's temporary directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.services import free_run

STACK = Path(__file__).resolve().parents[1] / "scripts" / "stack.sh"
NODES = (1, 2, 3)


class PrivateCluster:
    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.base_port = free_run(2 * len(NODES))

    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in NODES)

    def run(self, action: str, *node: str, timeout_s: float = 300.0) -> None:
        env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m"}
        args = [
            str(STACK), "kafka-cluster", self.name, action, *node,
            "--base-port", str(self.base_port), "--dir", str(self.directory),
        ]  # fmt: skip
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise AssertionError(f"stack.sh kafka-cluster {action} failed:\n{done.stderr[-3000:]}")

    def kill_broker(self, node: int) -> None:
        self.run("kill-broker", str(node))

    def start_broker(self, node: int) -> None:
        self.run("start-broker", str(node))


@contextmanager
def private_cluster(name: str, directory: Path) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(name, directory)
    cluster.run("up")
    try:
        yield cluster
    finally:
        cluster.run("kill")
