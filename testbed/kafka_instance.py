"""A private single-node Kafka for tests and benchmarks that stop or kill the broker: started through
``scripts/stack.sh kafka-instance`` on free ports with its data under the test's temporary
directory, so the shared broker (and everyone else's tests) never notice."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.services import free_port

STACK = Path(__file__).resolve().parents[1] / "scripts" / "stack.sh"


class PrivateKafka:
    def __init__(self, name: str, directory: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.directory = directory
        self.env = env or {}  # scripts/stack.sh variables, e.g. a SASL_SSL listener's
        self.port = free_port()
        self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, action: str, timeout_s: float = 240.0) -> None:
        env = {**os.environ, "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m", **self.env}
        args = [
            str(STACK), "kafka-instance", self.name, action,
            "--port", str(self.port), "--controller-port", str(self.controller_port),
            "--dir", str(self.directory),
        ]  # fmt: skip
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise AssertionError(f"stack.sh kafka-instance {action} failed:\n{done.stderr[-3000:]}")

    def start(self) -> None:
        self.run("start")

    def stop(self) -> None:
        self.run("stop")


@contextmanager
def private_kafka(name: str, directory: Path) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(name, directory)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.run("kill")
