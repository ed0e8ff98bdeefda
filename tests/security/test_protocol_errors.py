"""Requests that are not HTTP/1.1 get the JSON error body, a counted refusal and at most
a few log lines a second without a traceback or the request's bytes
(:mod:`pipeline.protocol`); before it, aiohttp answered text/plain quoting the bytes and
logged every one at ERROR with a traceback."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from pipeline import protocol
from pipeline.logs import configure_logging
from tests.security.world import exchange, request_bytes

BAD = [
    request_bytes("POST", "/x", [(b"X Bad Name", b"zelda.quokka@example.org")]),
    request_bytes("POST", "/x", [(b"X-Big", b"+14155550177" * 1000)]),
    request_bytes("PO\x01ST", "/x", []),
    request_bytes("POST", "/x", [(b"Content-Length", b"-1")], content_length=None),
    request_bytes("POST", "/x", [(b"Transfer-Encoding", b"chunked")], b"{}"),
]


@pytest.fixture
async def server() -> AsyncIterator[tuple[tuple[str, int], Counter[str], io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("INFO", stream=stream)
    refused: Counter[str] = Counter()
    app = web.Application()
    app.router.add_post("/x", lambda request: web.json_response({"ok": True}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    protocol.answer_in_json(runner.server, lambda code: refused.update([code]))
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield ("127.0.0.1", port), refused, stream
    finally:
        await runner.cleanup()
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])


async def test_malformed_requests_get_the_json_error_body(server) -> None:  # type: ignore[no-untyped-def]
    addr, refused, stream = server
    replies = await asyncio.gather(*(exchange(addr, raw) for raw in BAD))
    for reply in replies:
        assert reply is not None and reply.status == 400
        assert reply.headers["content-type"].startswith("application/json")
        body = orjson.loads(reply.body)
        assert body["error"] == "malformed_request" and "detail" in body
        assert b"zelda" not in reply.body and b"5550177" not in reply.body
    assert refused == Counter({"malformed_request": len(BAD)})
    logged = stream.getvalue()
    assert "Traceback" not in logged and "zelda" not in logged and "5550177" not in logged
    assert logged.count("malformed HTTP request refused") == len(BAD)
    ok = await exchange(addr, request_bytes("POST", "/x", [], b"{}"))
    assert ok is not None and ok.status == 200  # a good request on the same server


async def test_the_log_budget_caps_a_flood(server) -> None:  # type: ignore[no-untyped-def]
    addr, refused, stream = server
    started = time.monotonic()
    await asyncio.gather(*(exchange(addr, BAD[0]) for _ in range(200)))
    windows = math.ceil(time.monotonic() - started) + 1  # one-second windows touched
    assert refused["malformed_request"] == 200
    lines = stream.getvalue().count("malformed HTTP request refused")
    assert 0 < lines <= windows * protocol.LOG_PER_SECOND
