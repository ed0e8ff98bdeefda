"""``switchboard ingress --processes 2`` as operators run it: two processes on one port
(SO_REUSEPORT), metrics aggregated across them, a SIGTERM that lets an in-flight request
finish with its 202 and its record on Kafka, a crashed process restarted in its slot, and a
failed start that stops them all instead of restarting in a loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.cli.ingress import STARTUP_GRACE_S
from pipeline.settings import Settings
from testbed.services import free_port
from tests.integration.ingress_helpers import (
    CALCOM_SECRET,
    RETELL_KEY,
    headers_of,
    read_topic,
    signed,
)
from tests.support.fixtures import fixture_bytes

pytestmark = pytest.mark.integration

SWITCHBOARD = Path(sys.executable).parent / "switchboard"
BOOKING = fixture_bytes("calcom", "BOOKING_CREATED.json")


def children_of(pid: int) -> list[int]:
    """Spawned ingress processes of ``pid`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def start_ingress(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    """``switchboard ingress --processes 2`` on ``port``, as an operator starts it."""
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": settings.database_url.reveal(),
        "SWITCHBOARD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SWITCHBOARD_TOPIC_PREFIX": settings.topic_prefix,
        "SWITCHBOARD_SPOOL_DIR": str(settings.ingress_spool_dir()),
        "RETELL_API_KEY": RETELL_KEY,
        "CALCOM_WEBHOOK_SECRET": CALCOM_SECRET,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cmd = [str(SWITCHBOARD), "ingress", "--processes", "2", "--port", str(port)]
    return subprocess.Popen(cmd + ["--shutdown-timeout", "5"], env=env, stderr=subprocess.PIPE)


@pytest.fixture
def ingress(stack_settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = start_ingress(stack_settings, port)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def wait_ready(session: aiohttp.ClientSession, base: str, proc: Any) -> None:
    """Ready on 10 fresh connections in a row: with SO_REUSEPORT each new connection may
    reach either process, so this is how to know that both have started."""
    deadline = time.monotonic() + 60
    streak = 0
    while streak < 10:
        assert time.monotonic() < deadline, "ingress never became ready"
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            async with session.get(f"{base}/readyz", headers={"Connection": "close"}) as resp:
                streak = streak + 1 if resp.status == 200 else 0
        except aiohttp.ClientConnectionError:
            streak = 0
        await asyncio.sleep(0.05)


async def test_two_processes_share_the_port_and_their_metrics(
    stack_settings: Settings, ingress: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = ingress
    connector = aiohttp.TCPConnector(force_close=True)  # new connection each time: both serve
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, base, proc)
        assert len(children_of(proc.pid)) == 2
        for _ in range(30):
            async with session.post(
                f"{base}/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING)
            ) as resp:
                assert resp.status == 202
        wanted = 'switchboard_ingress_requests_total{event_type="BOOKING_CREATED",provider="calcom",status="202"} 30.0'  # fmt: skip
        for _ in range(10):  # whichever process answers the scrape reports all 30
            async with session.get(f"{base}/metrics") as resp:
                assert wanted in await resp.text()
    assert len(await read_topic(stack_settings, "webhooks.calcom", 30)) == 30


async def test_sigterm_finishes_the_request_in_flight(
    stack_settings: Settings, ingress: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = ingress
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, base, proc)
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed("calcom", BOOKING).items())
    writer.write(
        f"POST /webhooks/calcom HTTP/1.1\r\nHost: {host}\r\n{head}"
        f"Content-Length: {len(BOOKING)}\r\n\r\n".encode()
    )
    half = len(BOOKING) // 2
    writer.write(BOOKING[:half])
    await writer.drain()
    await asyncio.sleep(0.5)  # the request is in a handler, waiting for the rest of its body

    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)  # the processes stop accepting; ours is still being handled
    writer.write(BOOKING[half:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.startswith(b"HTTP/1.1 202"), status_line
    writer.close()

    assert await asyncio.to_thread(proc.wait, 20) == 0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert stderr.count('"ingress stopped"') == 2, stderr[-3000:]
    (record,) = await read_topic(stack_settings, "webhooks.calcom", 1)
    assert record.value == BOOKING
    assert headers_of(record)["event_type"] == b"BOOKING_CREATED"
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection((host, int(port)), timeout=1).close()


async def test_a_process_that_crashes_is_restarted_in_its_slot(
    stack_settings: Settings, ingress: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = ingress
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, base, proc)
        before = children_of(proc.pid)
        assert len(before) == 2
        # Past the start-up grace: a death now is a crash, not a failed start.
        await asyncio.sleep(STARTUP_GRACE_S + 1)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = children_of(proc.pid)
            if len(now) == 2 and before[0] not in now:
                break
            assert time.monotonic() < deadline, f"no restart: {now}"
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            await asyncio.sleep(0.2)
        assert before[1] in now  # the other one served on
        await wait_ready(session, base, proc)
        for _ in range(10):
            async with session.post(
                f"{base}/webhooks/calcom", data=BOOKING, headers=signed("calcom", BOOKING)
            ) as resp:
                assert resp.status == 202
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "restarting" in stderr, stderr[-3000:]


def test_a_process_that_cannot_start_stops_them_all_with_exit_1(
    stack_settings: Settings,
) -> None:
    """The port is held by a socket without SO_REUSEPORT: no process can bind it. The
    supervisor must not restart them in a loop; it stops them all and exits 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        proc = start_ingress(stack_settings, port)
        try:
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 1, stderr[-3000:]
    assert "failed at start" in stderr, stderr[-3000:]
    assert children_of(proc.pid) == []
