"""Requests that are not valid HTTP/1.1, answered like every other refusal.

aiohttp's parser refuses a malformed request line, header name or ``Content-Length``, a
``Content-Length`` beside ``Transfer-Encoding``, or more than 8190 bytes of one header line
before any handler or middleware runs. Left alone it answers a ``text/plain`` body that
quotes the offending bytes, and logs each one at ERROR with a traceback: an unauthenticated
sender could fill the log. :func:`answer_in_json` makes such answers the JSON error body
of the ingress and the analyst API (``{"error", "detail"}``, docs/security.md), counts them
through ``on_refused`` and logs at most a few lines a second, without the request's bytes.

aiohttp has no hook for this, so each connection's protocol handler becomes a subclass with
its own ``handle_error`` when the server is told of it (``Server.connection_made``, before
any byte is parsed); the status and the closing of the connection stay aiohttp's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

#: Lines a second at most; the counter counts every refusal.
LOG_PER_SECOND = 5


class _Budget:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.window = 0
        self.used = 0

    def allow(self) -> bool:
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.used = now, 0
        self.used += 1
        return self.used <= self.per_second


def answer_in_json(server: web.Server, on_refused: Callable[[str], None] | None = None) -> None:
    """Every connection ``server`` accepts from now on answers protocol errors in JSON.
    ``on_refused(code)`` is called once per refusal (a metric)."""
    budget = _Budget(LOG_PER_SECOND)

    class JsonErrors(RequestHandler):
        """aiohttp's handler with our ``handle_error``; no new slots, so a handler that
        aiohttp made can become one."""

        __slots__ = ()

        def handle_error(
            self,
            request: web.BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            return _handle_error(on_refused, budget, request, status, exc)

    made = server.connection_made

    def connection_made(handler: RequestHandler, transport: Any) -> None:
        if type(handler) is RequestHandler:
            handler.__class__ = JsonErrors
        made(handler, transport)

    server.connection_made = connection_made  # type: ignore[method-assign]


def _handle_error(
    on_refused: Callable[[str], None] | None,
    budget: _Budget,
    request: web.BaseRequest,
    status: int,
    exc: BaseException | None,
) -> web.StreamResponse:
    if request.writer.output_size > 0:  # part of an answer is out: nothing more to say
        raise ConnectionError("answer already started; cannot send the error")
    reason = type(exc).__name__ if exc is not None else "error"
    if status >= 500:
        log.error("unhandled error answering a request (%s)", reason, exc_info=exc)
        code, detail = "internal_error", "unexpected error"
    else:
        if budget.allow():
            log.info("malformed HTTP request refused (%s)", reason, extra={"status": status})
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        code = "malformed_request" if status == 400 else phrase.lower().replace(" ", "_")
        detail = f"not a valid HTTP/1.1 request ({reason})"
    if on_refused is not None:
        on_refused(code)
    response = web.Response(
        status=status,
        body=orjson.dumps({"error": code or "error", "detail": detail}),
        content_type="application/json",
    )
    response.force_close()
    return response
