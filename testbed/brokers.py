"""A private Kafka whose client listener is SASL_SSL, as managed clusters are.

Started through ``scripts/stack.sh kafka-instance`` (:mod:`testbed.kafka_instance`) on free
ports with its data under the test's temporary directory, so the shared broker is never
touched. The script's ``KAFKA_SASL_SSL_PORT``, ``KAFKA_SSL_KEYSTORE_PEM`` and
``KAFKA_SASL_USERS`` add the listener (docs/stack.md, "A private broker with TLS and
SASL"); the certificates are made here by a throw-away CA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.certs import Authority
from testbed.kafka_instance import PrivateKafka
from testbed.services import free_port


@dataclass(frozen=True)
class SecureBroker:
    """Where the SASL_SSL listener is, and what a client needs to log in to it."""

    sasl_ssl_bootstrap: str
    plaintext_bootstrap: str  # the inter-broker listener; the tests' clients never use it
    cafile: Path
    users: dict[str, str]
    log: Path


@contextmanager
def sasl_ssl_broker(directory: Path, users: dict[str, str]) -> Iterator[SecureBroker]:
    """A one-node KRaft broker whose client listener is SASL_SSL (SCRAM-SHA-512 and PLAIN)."""
    ca = Authority(directory / "certs")
    server = ca.issue("broker", hosts=("127.0.0.1", "localhost"))
    keystore = directory / "certs" / "broker-keystore.pem"
    keystore.write_text(server.key.read_text() + server.cert.read_text())
    sasl_port = free_port()
    kafka = PrivateKafka(
        f"sasl-{sasl_port}",
        directory / "kafka",
        env={
            "KAFKA_SASL_SSL_PORT": str(sasl_port),
            "KAFKA_SSL_KEYSTORE_PEM": str(keystore),
            "KAFKA_SASL_USERS": " ".join(f"{name}:{pw}" for name, pw in users.items()),
            "KAFKA_NUM_PARTITIONS": "3",
            "KAFKA_OFFSETS_PARTITIONS": "3",
        },
    )
    kafka.start()
    try:
        yield SecureBroker(
            sasl_ssl_bootstrap=f"127.0.0.1:{sasl_port}",
            plaintext_bootstrap=kafka.bootstrap,
            cafile=ca.cafile,
            users=dict(users),
            log=directory / "kafka" / "node1" / "kafka.log",
        )
    finally:
        kafka.stop()
