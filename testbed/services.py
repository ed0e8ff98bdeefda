"""Real Switchboard processes for integration tests: start, wait until they answer, stop.

Every process gets the test's own settings through the environment (per-test database,
topic prefix, consumer group, ports, data dir), writes its log to a file, and is stopped
with SIGTERM (then SIGKILL) at the end. A process that dies or never gets ready fails the
test with its log tail.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.settings import Settings

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


#: Ports :func:`free_port` and :func:`free_run` handed out in this process: never twice.
_handed_out: set[int] = set()
_LOWEST = 20_000


def _client_ports_from() -> int:
    """The first port of the range the kernel draws the local port of every outgoing
    connection from (``net.ipv4.ip_local_port_range``, 32768-60999 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now, none handed out before by
    this process. They are drawn below the kernel's client-port range: a port found free by
    binding port 0 comes from that range, and a test's own client connections (to MariaDB,
    Kafka, a server under test) can take it in the seconds before the process meant for it
    binds it (a JVM takes that long); binding port 0 twice can also give the same port."""
    high = max(_client_ports_from(), _LOWEST + 1_000)
    for _ in range(500):
        base = random.randrange(_LOWEST, high - count)
        ports = range(base, base + count)
        if _handed_out.intersection(ports) or not all(_bindable(p) for p in ports):
            continue
        _handed_out.update(ports)
        return base
    raise AssertionError(f"no {count} consecutive free ports in {_LOWEST}-{high - 1}")


def free_port() -> int:
    """A port that is free now (see :func:`free_run`)."""
    return free_run(1)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SWITCHBOARD_", "RETELL_", "CALCOM_"))
    }
    env.update(
        SWITCHBOARD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SWITCHBOARD_DATABASE_URL=settings.database_url.reveal(),
        RETELL_API_KEY=",".join(settings.secrets_for("retell")),
        CALCOM_WEBHOOK_SECRET=",".join(settings.secrets_for("calcom")),
        SWITCHBOARD_ANALYST_TOKENS=",".join(t.reveal() for t in settings.analyst_tokens),
        SWITCHBOARD_INGRESS_HOST=settings.ingress_host,
        SWITCHBOARD_INGRESS_PORT=str(settings.ingress_port),
        SWITCHBOARD_WORKER_HOST=settings.worker_host,
        SWITCHBOARD_WORKER_PORT=str(settings.worker_port),
        SWITCHBOARD_DATA_DIR=str(settings.data_dir),
        SWITCHBOARD_TOPIC_PREFIX=settings.topic_prefix,
        SWITCHBOARD_TOPIC_PARTITIONS=str(settings.topic_partitions),
        SWITCHBOARD_CONSUMER_GROUP=settings.consumer_group,
        SWITCHBOARD_ROUTING_REFRESH_S=str(settings.routing_refresh_s),
        SWITCHBOARD_WORKER_BATCH_WITHIN_S=str(settings.worker_batch_within_s),
        SWITCHBOARD_WORKER_BATCH_SIZE=str(settings.worker_batch_size),
        SWITCHBOARD_WORKER_BATCHES_IN_FLIGHT=str(settings.worker_batches_in_flight),
        SWITCHBOARD_WORKER_APPLY_PROCESS=str(settings.worker_apply_process),
        SWITCHBOARD_ACK_BUDGET_S=str(settings.ack_budget_s),
        SWITCHBOARD_SPOOL_DIR=str(settings.ingress_spool_dir()),
        SWITCHBOARD_SPOOL_MAX_BYTES=str(settings.spool_max_bytes),
        SWITCHBOARD_INGRESS_IDLE_TIMEOUT_S=str(settings.ingress_idle_timeout_s),
        SWITCHBOARD_INGRESS_BODY_TIMEOUT_S=str(settings.ingress_body_timeout_s),
        RETELL_API_URL=settings.retell_api_url,
        CALCOM_API_URL=settings.calcom_api_url,
        CALCOM_API_VERSION=settings.calcom_api_version,
        SWITCHBOARD_INGRESS_MAX_CONNECTIONS=str(settings.ingress_max_connections),
        SWITCHBOARD_KAFKA_LINGER_MS=str(settings.kafka_linger_ms),
        SWITCHBOARD_KAFKA_MAX_BATCH_BYTES=str(settings.kafka_max_batch_bytes),
        SWITCHBOARD_KAFKA_COMPRESSION=settings.kafka_compression,
    )
    if settings.calcom_api_key is not None:
        env["CALCOM_API_KEY"] = settings.calcom_api_key.reveal()
    env.update(security_env(settings))
    return env


def security_env(settings: Settings) -> dict[str, str]:
    """The SWITCHBOARD_KAFKA_* security variables (and the advertised worker URL) that
    make a child process connect the way ``settings`` does."""
    env = {"SWITCHBOARD_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol}
    optional = {
        "SWITCHBOARD_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "SWITCHBOARD_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "SWITCHBOARD_KAFKA_SASL_PASSWORD": (
            settings.kafka_sasl_password.reveal() if settings.kafka_sasl_password else None
        ),
        "SWITCHBOARD_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "SWITCHBOARD_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "SWITCHBOARD_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "SWITCHBOARD_WORKER_ADVERTISED_URL": settings.worker_advertised_url,
    }
    env.update({k: str(v) for k, v in optional.items() if v is not None})
    return env


class Service:
    def __init__(
        self,
        name: str,
        args: list[str],
        settings: Settings,
        ready_url: str,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.settings = settings
        self.ready_url = ready_url
        self.log_path = log_dir / f"{name}.log"
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SWITCHBOARD, *self.args],
            env={**settings_env(self.settings), **self.extra_env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if self._answers():
                return self
            time.sleep(0.3)
        self.kill()  # never leave a process behind that no one will stop
        raise AssertionError(f"{self.name} not ready after {timeout_s}s:\n{self.tail()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            return exc.code in (401, 404)  # the server is up and answering
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running(*services: Service) -> Iterator[tuple[Service, ...]]:
    started: list[Service] = []
    try:
        for service in services:
            started.append(service.start())
        yield services
    finally:
        for service in reversed(started):
            service.stop()


def worker(settings: Settings, log_dir: Path, name: str = "worker") -> Service:
    url = f"http://{settings.worker_host}:{settings.worker_port}/healthz"
    return Service(name, ["worker"], settings, url, log_dir)


def ingress(settings: Settings, log_dir: Path, name: str = "ingress") -> Service:
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/readyz"
    return Service(name, ["ingress"], settings, url, log_dir)
