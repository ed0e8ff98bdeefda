"""``switchboard ingress`` argument handling, and the graceful drain it runs on SIGTERM.
Running real processes is in tests/integration/test_ingress_processes.py."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from pipeline.cli import cli, register_commands
from pipeline.ingress.app import create_app, drain
from tests.support.fixtures import fixture_bytes
from tests.unit.ingress_fakes import FakePublisher, FakeRouter, make_settings, signed


@pytest.fixture(scope="module", autouse=True)
def commands() -> None:
    register_commands()


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """The command configures logging for its process; give the test process its own back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(cli, ["ingress", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--processes", "--shutdown-timeout"):
        assert option in result.output


@pytest.mark.parametrize(
    "args",
    [["--processes", "0"], ["--port", "70000"], ["--processes", "2", "--port", "0"]],
)
def test_bad_arguments_exit_non_zero(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["ingress", *args], env={})
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_port_in_use_is_one_line_and_non_zero() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"SWITCHBOARD_KAFKA_BOOTSTRAP": "127.0.0.1:1", "SWITCHBOARD_DATABASE_URL": "mysql+pymysql://u:p@127.0.0.1:1/x"}  # fmt: skip
        result = CliRunner().invoke(cli, ["ingress", "--port", str(port)], env=env)
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


async def test_drain_lets_the_request_in_flight_finish() -> None:
    """The SIGTERM path: sockets close, the slow request still gets its 202, then cleanup."""
    publisher = FakePublisher(delay_s=0.3)
    app = create_app(make_settings(), publisher=publisher, routing=FakeRouter())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    body = fixture_bytes("calcom", "BOOKING_CREATED.json")

    async def post() -> Any:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/webhooks/calcom"
            async with session.post(url, data=body, headers=signed("calcom", body)) as resp:
                return resp.status

    request = asyncio.create_task(post())
    await asyncio.sleep(0.1)  # in the handler, waiting for the (slow) ack
    await drain(runner, timeout_s=5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await runner.cleanup()
    assert await request == 202
    assert len(publisher.records) == 1 and publisher.closed
