"""Slow clients cannot starve the ingress (docs/ingress.md, "Slow clients"): 1,000
connections that trickle their headers or their bodies one byte at a time, and a normal
signed webhook still gets its 202; the trickling connections are closed by the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from pipeline.settings import Settings
from testbed import services
from tests.integration.ingress_helpers import signed
from tests.support.fixtures import fixture_bytes

TRICKLERS = 1000


async def trickle(host: str, port: int, body_phase: bool, stop: asyncio.Event) -> str:
    """Open a connection and feed it a byte a second; how it ended: ``closed`` (EOF or a
    reset from the server), ``answered <status>`` or ``still open``."""
    reader, writer = await asyncio.open_connection(host, port)
    head = f"POST /webhooks/calcom HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if body_phase:  # complete headers, then a body that never finishes
        writer.write((head + "Content-Length: 1048576\r\n\r\n{").encode())
    else:  # headers that never finish
        writer.write(head.encode())
    try:
        while not stop.is_set():
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(200), timeout=1.0)
            except TimeoutError:
                writer.write(b"x" if not body_phase else b" ")
                continue
            if not data:
                return "closed"
            return "answered " + data.split(b" ", 2)[1].decode()
        return "still open"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    finally:
        writer.close()


async def scenario(settings: Settings) -> tuple[int, list[str]]:
    host, port = settings.ingress_host, settings.ingress_port
    stop = asyncio.Event()
    tricklers = [
        asyncio.create_task(trickle(host, port, i % 2 == 1, stop)) for i in range(TRICKLERS)
    ]
    await asyncio.sleep(2.0)  # all connected and trickling
    assert not any(t.done() for t in tricklers), "the server closed connections too early"
    body = fixture_bytes("calcom", "BOOKING_CREATED.json")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://{host}:{port}/webhooks/calcom", data=body, headers=signed("calcom", body)
        ) as resp:
            status = resp.status
    # Each trickler is closed by the idle (headers) or body timeout: give them 3× that.
    wait = 3 * max(settings.ingress_idle_timeout_s, settings.ingress_body_timeout_s)
    _done, pending = await asyncio.wait(tricklers, timeout=wait)
    stop.set()
    await asyncio.gather(*pending, return_exceptions=True)
    return status, [t.result() for t in tricklers]


def test_a_thousand_trickling_connections_do_not_block_a_webhook(
    stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings.with_(
        ingress_port=services.free_port(),
        ingress_idle_timeout_s=4.0,
        ingress_body_timeout_s=4.0,
    )
    with services.running(services.ingress(settings, tmp_path)):
        status, endings = asyncio.run(scenario(settings))
    assert status == 202
    header_tricklers = endings[0::2]
    body_tricklers = endings[1::2]
    assert header_tricklers.count("closed") == len(header_tricklers), set(header_tricklers)
    assert body_tricklers.count("answered 408") == len(body_tricklers), set(body_tricklers)
