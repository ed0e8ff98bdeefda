"""A private Kafka broker for a test, started by ``scripts/stack.sh`` on other ports.

The shared broker (127.0.0.1:9092) belongs to everyone's tests and is never touched. A test
that needs a broker configured differently (here: a SASL_SSL client listener with
certificates the test made) gets its own: data, logs, pid file and lock under a temporary
``STACK_DIR``, ports picked free, stopped at the end by the same script. Every call passes
that ``STACK_DIR`` explicitly, so a stop can only ever reach this broker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.certs import Authority
from testbed.services import free_port

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "scripts" / "stack.sh"


@dataclass(frozen=True)
class SecureBroker:
    """Where the SASL_SSL listener is, and what a client needs to log in to it."""

    sasl_ssl_bootstrap: str
    plaintext_bootstrap: str  # the inter-broker listener; clients of the tests never use it
    cafile: Path
    users: dict[str, str]
    log: Path


def _env(stack_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STACK_DIR=str(stack_dir),
        KAFKA_LIB_DIR=os.environ.get("KAFKA_LIB_DIR", str(REPO / "docker" / "kafka" / "lib")),
        KAFKA_HEAP_OPTS="-Xms128m -Xmx512m",
        KAFKA_NUM_PARTITIONS="3",
        KAFKA_OFFSETS_PARTITIONS="3",
        **extra,
    )
    return env


@contextmanager
def sasl_ssl_broker(directory: Path, users: dict[str, str]) -> Iterator[SecureBroker]:
    """A one-node KRaft broker whose client listener is SASL_SSL (SCRAM-SHA-512 and PLAIN)."""
    ca = Authority(directory / "certs")
    server = ca.issue("broker", hosts=("127.0.0.1", "localhost"))
    keystore = directory / "certs" / "broker-keystore.pem"
    keystore.write_text(server.key.read_text() + server.cert.read_text())
    stack_dir = directory / "stack"
    port, controller, sasl_port = free_port(), free_port(), free_port()
    env = _env(
        stack_dir,
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(controller),
        KAFKA_SASL_SSL_PORT=str(sasl_port),
        KAFKA_SSL_KEYSTORE_PEM=str(keystore),
        KAFKA_SASL_USERS=" ".join(f"{name}:{password}" for name, password in users.items()),
    )
    started = subprocess.run(
        [str(STACK), "kafka-start"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        if started.returncode != 0:
            raise AssertionError(
                f"private broker did not start:\n{started.stdout}\n{started.stderr}"
            )
        yield SecureBroker(
            sasl_ssl_bootstrap=f"127.0.0.1:{sasl_port}",
            plaintext_bootstrap=f"127.0.0.1:{port}",
            cafile=ca.cafile,
            users=dict(users),
            log=stack_dir / "kafka" / "node1" / "kafka.log",
        )
    finally:
        subprocess.run(
            [str(STACK), "kafka-stop"], env=_env(stack_dir), capture_output=True, timeout=120
        )
