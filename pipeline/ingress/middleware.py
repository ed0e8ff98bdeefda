"""The ingress's HTTP plumbing: one middleware that gives every request its correlation id,
turns every failure into the JSON error shape of docs/ingress.md, counts it, and tracks the requests
in flight so that a shutdown can wait for them.

Kept apart from the handlers so that the request path in ``pipeline.ingress.app`` reads as the
contract does: checks, then Kafka, then the answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from pipeline.errors import ClientError, KafkaUnavailable
from pipeline.ingress.metrics import IngressMetrics, event_type_label
from pipeline.ingress.spool import SpoolFull
from pipeline.logs import correlation_id_var

log = logging.getLogger("pipeline.ingress.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Exchange:
    """What the middleware and the handlers share about one request."""

    correlation_id: str
    received_ms: int
    started: float  # time.perf_counter() when the request reached the app
    provider: str = "none"
    event_type: str | None = None
    observe: bool = True  # False for health checks and scrapes: they are not traffic


EXCHANGE = web.RequestKey("exchange", Exchange)


class InFlight:
    """Requests inside a handler right now; ``wait_idle`` is the shutdown's drain."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when every request finished within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class LogBudget:
    """At most ``per_second`` lines a second (the counters count every case): a flood of bad
    requests must not turn into a flood of log lines and the CPU they cost."""

    def __init__(self, per_second: int) -> None:
        self._per_second = per_second
        self._window = 0
        self._used = 0

    def allow(self) -> bool:
        window = int(time.monotonic())
        if window != self._window:
            self._window, self._used = window, 0
        self._used += 1
        return self._used <= self._per_second


_REJECTION_LOGS = LogBudget(20)

_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_V4_SET = (0x4000 << 64) | (0x8000 << 48)
JSON = "application/json"


def new_correlation_id() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` at a third of its cost
    per request: the bits come from ``random`` (reseeded in a forked child) rather than a
    ``getrandom`` system call. An id must be unique, not secret."""
    h = f"{random.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def json_response(status: int, payload: dict[str, Any], **headers: str) -> web.Response:
    if not headers:  # an empty headers mapping is copied all the same: half the cost
        return web.Response(body=orjson.dumps(payload), status=status, content_type=JSON)
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type=JSON, headers=headers
    )


def error_response(status: int, code: str, detail: str, **headers: str) -> web.Response:
    """The one error shape of docs/ingress.md: ``{"error", "detail"}``, detail on one line."""
    one_line = " ".join(detail.split())[:300]
    return json_response(status, {"error": code, "detail": one_line}, **headers)


def exchange_middleware(
    metrics: IngressMetrics, in_flight: InFlight, retry_after_s: int
) -> Middleware:
    """Correlation id, error answers, metrics and in-flight tracking, for every request.

    Every expected failure becomes its status and JSON body here; anything else is a bug in
    this code: a 500 with a JSON body and a logged traceback, never a stack trace on the wire.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        exchange = Exchange(new_correlation_id(), time.time_ns() // 1_000_000, started)
        request[EXCHANGE] = exchange
        token = correlation_id_var.set(exchange.correlation_id)
        in_flight.enter()  # the gauge is set from this count every second (cheaper)
        try:
            response = await _answer(request, handler, exchange, metrics, retry_after_s)
            response.headers["X-Correlation-ID"] = exchange.correlation_id
            if exchange.observe:
                provider = exchange.provider
                kind = event_type_label(exchange.event_type)
                metrics.child(metrics.requests, provider, kind, str(response.status)).inc()
                metrics.child(metrics.latency, provider).observe(time.perf_counter() - started)
            return response
        finally:
            in_flight.leave()
            correlation_id_var.reset(token)

    return middleware


async def _answer(
    request: web.Request,
    handler: Handler,
    exchange: Exchange,
    metrics: IngressMetrics,
    retry_after_s: int,
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientError as exc:
        metrics.child(metrics.rejections, exchange.provider, exc.code).inc()
        if _REJECTION_LOGS.allow():
            log.info(
                "webhook rejected: %s",
                exc.detail,
                extra={"provider": exchange.provider, "status": exc.status, "reason": exc.code},
            )
        return error_response(exc.status, exc.code, exc.detail)
    except SpoolFull as exc:
        metrics.child(metrics.rejections, exchange.provider, "spool_full").inc()
        if _REJECTION_LOGS.allow():
            log.error("webhook refused: %s", exc, extra={"provider": exchange.provider})
        return error_response(503, "spool_full", str(exc), **{"Retry-After": str(retry_after_s)})
    except KafkaUnavailable as exc:
        metrics.child(metrics.rejections, exchange.provider, "kafka_unavailable").inc()
        log.warning(
            "webhook not made durable: %s",
            exc,
            extra={"provider": exchange.provider, "event_type": exchange.event_type},
        )
        return error_response(
            503, "kafka_unavailable", str(exc), **{"Retry-After": str(retry_after_s)}
        )
    except web.HTTPException as exc:
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.reason, **headers)
    except Exception:
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return error_response(
            500, "internal_error", "unexpected error; quote the X-Correlation-ID header"
        )
