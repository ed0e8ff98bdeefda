"""One world of real processes for the security suites: a migrated scratch database, this
run's own topics, tenants built to tempt cross-company writes, ONE ``switchboard ingress``
and ONE ``switchboard worker`` (started once for the whole package: the suites send many
requests per Hypothesis example to these two processes instead of starting a process per
example), and a raw HTTP/1.1 client that can send what well-behaved clients cannot.

Secrets and tokens are random per run, so a scan of the logs can look for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import Engine, insert

from pipeline import database, topics
from pipeline.models import branches, companies
from pipeline.providers import calcom, retell
from pipeline.settings import Secret, Settings
from testbed import services
from tests.integration.conftest import (
    base_settings,
    create_test_database,
    delete_topics,
    drop_test_database,
)

# Tenants. Company 1 has an active and an inactive branch; the inactive one shares its agent
# id with company 2's only branch (the agent-fallback trap); company 3 is inactive as a
# whole. Cross-company hints in hostile events always point at another company's branch.
HARBOR, SPREE, CLOSED = 1, 2, 3
HARBOR_MAIN, HARBOR_OLD, SPREE_MAIN, CLOSED_MAIN = 11, 12, 21, 31
NUMBERS = {
    HARBOR_MAIN: "+14155550101",
    HARBOR_OLD: "+14155550102",
    SPREE_MAIN: "+4930555021",
    CLOSED_MAIN: "+14155550131",
}
AGENTS = {
    HARBOR_MAIN: "agent_harbor",
    HARBOR_OLD: "agent_shared",
    SPREE_MAIN: "agent_shared",
    CLOSED_MAIN: "agent_closed",
}
EVENT_TYPES = {HARBOR_MAIN: 901, HARBOR_OLD: 902, SPREE_MAIN: 921, CLOSED_MAIN: 931}
COMPANY_OF = {HARBOR_MAIN: HARBOR, HARBOR_OLD: HARBOR, SPREE_MAIN: SPREE, CLOSED_MAIN: CLOSED}
ACTIVE_BRANCHES = {HARBOR_MAIN: True, HARBOR_OLD: False, SPREE_MAIN: True, CLOSED_MAIN: True}
ACTIVE_COMPANIES = {HARBOR: True, SPREE: True, CLOSED: False}


def seed_tenants(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(companies),
            [
                {
                    "id": HARBOR,
                    "name": "Harbor Dental",
                    "timezone": "America/Los_Angeles",
                    "is_active": True,
                },
                {
                    "id": SPREE,
                    "name": "Spree Salon",
                    "timezone": "Europe/Berlin",
                    "is_active": True,
                },
                {"id": CLOSED, "name": "Closed Clinic", "timezone": "UTC", "is_active": False},
            ],
        )
        conn.execute(
            insert(branches),
            [
                {
                    "id": branch,
                    "company_id": COMPANY_OF[branch],
                    "name": f"branch {branch}",
                    "phone_number": NUMBERS[branch],
                    "retell_agent_id": AGENTS[branch],
                    "calcom_event_type_id": EVENT_TYPES[branch],
                    "is_active": ACTIVE_BRANCHES[branch],
                }
                for branch in NUMBERS
            ],
        )


@dataclass(repr=False)
class World:
    settings: Settings
    engine: Engine
    ingress: services.Service
    worker: services.Service
    log_dir: Path
    retell_key: str
    calcom_secret: str
    admin_token: str
    scoped_token: str  # may read company 1 only (a hashed entry)
    secrets_in_use: list[str] = field(default_factory=list)

    @property
    def ingress_addr(self) -> tuple[str, int]:
        return self.settings.ingress_host, self.settings.ingress_port

    @property
    def worker_addr(self) -> tuple[str, int]:
        return self.settings.worker_host, self.settings.worker_port

    def sign(self, provider: str, body: bytes, *, skew_ms: int = 0) -> dict[str, str]:
        now = time.time_ns() // 1_000_000 + skew_ms
        if provider == retell.NAME:
            return retell.sign(body, self.retell_key, now)
        return calcom.sign(body, self.calcom_secret, now)

    def assert_alive(self) -> None:
        for service in (self.ingress, self.worker):
            assert service.proc is not None and service.proc.poll() is None, (
                f"{service.name} died:\n{service.tail()}"
            )

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def _wait_ready(url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout_s:.0f}s")


@contextlib.contextmanager
def running_world(tmp: Path) -> Iterator[World]:
    retell_key = "rk-" + secrets.token_hex(16)
    calcom_secret = "cs-" + secrets.token_hex(16)
    admin_token = "sbt_admin_" + secrets.token_hex(16)
    scoped_token = "sbt_scoped_" + secrets.token_hex(16)
    scoped_entry = f"harbor=sha256:{hashlib.sha256(scoped_token.encode()).hexdigest()}@{HARBOR}"
    suffix = uuid.uuid4().hex[:8]
    settings = create_test_database(base_settings())
    settings = settings.with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=3,
        consumer_group=f"switchboard-security-{suffix}",
        retell_api_keys=(Secret(retell_key),),
        calcom_webhook_secrets=(Secret(calcom_secret),),
        analyst_tokens=(Secret(f"admin={admin_token}@admin"), Secret(scoped_entry)),
        ingress_host="127.0.0.1",
        ingress_port=services.free_port(),
        worker_host="127.0.0.1",
        worker_port=services.free_port(),
        data_dir=tmp / "worker-data",
        spool_dir=tmp / "spool",
        routing_refresh_s=1.0,
        worker_batch_within_s=0.05,
        ingress_body_timeout_s=1.0,
    )
    engine = database.create_db_engine(settings, pool_size=2)
    log_dir = tmp / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(topics.ensure_topics(settings))
        seed_tenants(engine)
        ingress = services.ingress(settings, log_dir)
        worker = services.worker(settings, log_dir)
        with services.running(ingress, worker):
            _wait_ready(f"http://{settings.worker_host}:{settings.worker_port}/readyz")
            _wait_ready(f"http://{settings.ingress_host}:{settings.ingress_port}/readyz")
            yield World(
                settings=settings,
                engine=engine,
                ingress=ingress,
                worker=worker,
                log_dir=log_dir,
                retell_key=retell_key,
                calcom_secret=calcom_secret,
                admin_token=admin_token,
                scoped_token=scoped_token,
                secrets_in_use=[retell_key, calcom_secret, admin_token, scoped_token],
            )
    finally:
        engine.dispose()
        with contextlib.suppress(Exception):
            asyncio.run(delete_topics(settings))
        drop_test_database(settings)


# ------------------------------------------------------------------ raw HTTP/1.1


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: int | None | str = "auto",
) -> bytes:
    """An HTTP/1.1 request exactly as given; ``Connection: close`` so the answer ends at EOF.
    ``content_length``: "auto" (the body's length), None (no header) or a number to lie."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1", "replace"), b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if content_length == "auto":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_reply(raw: bytes) -> Reply | None:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    if head.startswith(b"HTTP/1.1 1"):  # 100 Continue and friends: the answer follows
        return parse_reply(body)
    first, *rest = head.split(b"\r\n")
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in rest:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Reply(int(parts[1]), headers, body)


def _complete(received: bytes) -> bool:
    """A whole answer with a Content-Length (the server may linger before closing)."""
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head.startswith(b"HTTP/1.1 1"):
        return _complete(body)
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


async def exchange(
    addr: tuple[str, int],
    raw: bytes,
    *,
    stream_after: bytes = b"",
    half_close: bool = False,
    timeout_s: float = 60.0,  # a hang detector, far beyond any answer under load
) -> Reply | None:
    """Send ``raw`` (then ``stream_after``, which the server may refuse to read), read the
    answer until the server closes. None: the server closed without an answer."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            if stream_after:
                for start in range(0, len(stream_after), 256 * 1024):
                    writer.write(stream_after[start : start + 256 * 1024])
                    await writer.drain()
            if half_close:
                writer.write_eof()
        received = b""
        async with asyncio.timeout(timeout_s):
            while not _complete(received):
                try:
                    chunk = await reader.read(65536)
                except ConnectionError:
                    break
                if not chunk:
                    break
                received += chunk
        return parse_reply(received)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
