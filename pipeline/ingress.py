"""The webhook ingress: an aiohttp app that turns provider webhooks into Kafka records.

The request path follows SPEC §3 and answers honestly at each step: 413 (too big, checked
before reading), 415 (not JSON), 401 (signature, verified on the raw bytes before any
parsing), 400 (unparseable), then the raw body goes to Kafka and the answer is 202 only after
the broker acknowledged it (DESIGN invariant 1); a broker that is down or slower than the ack
budget gets the provider a 503 with ``Retry-After``, so the provider retries.

Retell's ``call_inbound`` is the exception: the caller is on the line, so it is answered from
the routing cache without waiting on Kafka, and its record is written in a tracked
background task that shutdown waits for.

Dependencies are passed in (``create_app(settings, publisher=..., routing=...)``) and opened
and closed in ``cleanup_ctx``; tests pass fakes for what they are not testing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import metrics as metrics_mod
from pipeline import providers
from pipeline.errors import (
    ClientError,
    KafkaUnavailable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from pipeline.inbound import answer_call_inbound
from pipeline.logs import correlation_id_var
from pipeline.metrics import IngressMetrics, event_type_label
from pipeline.producer import Headers, KafkaPublisher, Publisher
from pipeline.providers import Envelope, Provider, retell
from pipeline.routing import Router, RoutingCache
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey[Publisher]("publisher")
ROUTER = web.AppKey[Router]("router")
METRICS = web.AppKey("metrics", IngressMetrics)
BACKGROUND = web.AppKey[set[asyncio.Task[None]]]("background")

#: The ingress's own guard around every publish, a little above the producer's ack budget,
#: so that no Publisher (a fake, a future one) can hold a request past the promise.
GUARD_SLACK_S = 0.25
UTF8 = frozenset({"utf-8", "utf8"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Exchange:
    """What the middleware and the handlers share about one request."""

    correlation_id: str
    received_ms: int
    provider: str = "none"
    event_type: str | None = None
    observe: bool = True


EXCHANGE = web.RequestKey("exchange", Exchange)


def json_response(status: int, payload: dict[str, Any], **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, code: str, detail: str, **headers: str) -> web.Response:
    """The one error shape of SPEC §3: ``{"error", "detail"}``, detail on one line."""
    one_line = " ".join(detail.split())[:300]
    return json_response(status, {"error": code, "detail": one_line}, **headers)


@web.middleware
async def exchange_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Correlation id, error answers, and metrics, for every request.

    Every expected failure becomes its status and JSON body here; anything else is a bug in
    this code: a 500 with a JSON body and a logged traceback, never a stack trace on the wire.
    """
    exchange = Exchange(str(uuid.uuid4()), time.time_ns() // 1_000_000)
    request[EXCHANGE] = exchange
    token = correlation_id_var.set(exchange.correlation_id)
    metrics = request.app[METRICS]
    started = time.perf_counter()
    try:
        response = await _answer(request, handler, exchange, metrics)
        response.headers["X-Correlation-ID"] = exchange.correlation_id
        if exchange.observe:
            provider = exchange.provider
            event_type = event_type_label(exchange.event_type)
            metrics.requests.labels(provider, event_type, str(response.status)).inc()
            metrics.latency.labels(provider).observe(time.perf_counter() - started)
        return response
    finally:
        correlation_id_var.reset(token)


async def _answer(
    request: web.Request, handler: Handler, exchange: Exchange, metrics: IngressMetrics
) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    try:
        return await handler(request)
    except ClientError as exc:
        metrics.rejections.labels(exchange.provider, exc.code).inc()
        log.info(
            "webhook rejected: %s",
            exc.detail,
            extra={"provider": exchange.provider, "status": exc.status, "reason": exc.code},
        )
        return error_response(exc.status, exc.code, exc.detail)
    except KafkaUnavailable as exc:
        metrics.rejections.labels(exchange.provider, "kafka_unavailable").inc()
        log.warning(
            "webhook not made durable: %s",
            exc,
            extra={"provider": exchange.provider, "event_type": exchange.event_type},
        )
        return error_response(
            503, "kafka_unavailable", str(exc), **{"Retry-After": str(settings.retry_after_s)}
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


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, after the 413 and 415 checks that can be made without reading it."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {limit}")
    if request.content_type.lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in UTF8:
        raise UnsupportedMediaType("JSON must be UTF-8 encoded")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes") from exc
    if len(body) > limit:  # client_max_size is the same limit; this keeps the rule explicit
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    return body


def kafka_headers(envelope: Envelope, exchange: Exchange) -> Headers:
    """The headers of SPEC §4, as bytes, in a fixed order."""
    return [
        ("provider", envelope.provider.encode()),
        ("event_id", envelope.event_id.encode()),
        ("event_type", envelope.event_type.encode()),
        ("correlation_id", exchange.correlation_id.encode()),
        ("received_at", str(exchange.received_ms).encode()),
    ]


async def publish(
    app: web.Application, topic: str, envelope: Envelope, body: bytes, headers: Headers
) -> None:
    """Write one record and wait for the ack, within the budget whatever the publisher."""
    budget = app[SETTINGS].ack_budget_s
    try:
        async with asyncio.timeout(budget + GUARD_SLACK_S):
            published = await app[PUBLISHER].publish(topic, envelope.key.encode(), body, headers)
    except TimeoutError as exc:
        app[METRICS].publish_failures.labels(topic, "ingress_timeout").inc()
        raise KafkaUnavailable(f"Kafka did not acknowledge within {budget:g}s") from exc
    log.info(
        "webhook accepted",
        extra={
            "provider": envelope.provider,
            "event_type": envelope.event_type,
            "event_id": envelope.event_id,
            "topic": published.topic,
            "partition": published.partition,
            "offset": published.offset,
        },
    )


def webhook_handler(provider: Provider, secrets: tuple[str, ...]) -> Handler:
    """The handler of ``POST /webhooks/<provider>``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        settings = app[SETTINGS]
        exchange = request[EXCHANGE]
        exchange.provider = provider.NAME
        body = await read_body(request, settings.max_body_bytes)
        provider.verify(request.headers, body, secrets, exchange.received_ms)
        envelope = provider.parse(body)
        exchange.event_type = envelope.event_type
        topic = settings.topic(provider.TOPIC)
        headers = kafka_headers(envelope, exchange)
        if provider.NAME == retell.NAME and envelope.event_type == retell.INBOUND_EVENT:
            spawn(app, publish_in_background(app, topic, envelope, body, headers))
            answer = await answer_call_inbound(
                app[ROUTER], app[METRICS], envelope, exchange.correlation_id
            )
            if answer is None:
                return error_response(
                    503,
                    "routing_unavailable",
                    "the routing cache has not loaded yet",
                    **{"Retry-After": str(settings.retry_after_s)},
                )
            return json_response(200, answer)
        await publish(app, topic, envelope, body, headers)
        return json_response(
            202,
            {
                "status": "accepted",
                "event_id": envelope.event_id,
                "correlation_id": exchange.correlation_id,
            },
        )

    return handle


async def publish_in_background(
    app: web.Application, topic: str, envelope: Envelope, body: bytes, headers: Headers
) -> None:
    """Record a ``call_inbound`` after its answer; a failure is logged and counted only."""
    try:
        await publish(app, topic, envelope, body, headers)
    except Exception as exc:  # noqa: BLE001 - nothing may escape a fire-and-forget task
        app[METRICS].background_failures.inc()
        log.warning(
            "call_inbound record not written to Kafka: %s",
            type(exc).__name__,
            extra={"event_id": envelope.event_id},
        )


def spawn(app: web.Application, coro: Awaitable[None]) -> None:
    """Run ``coro`` as a task the app keeps a reference to until it is done."""
    tasks = app[BACKGROUND]
    task: asyncio.Task[None] = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def healthz(request: web.Request) -> web.Response:
    request[EXCHANGE].observe = False
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    request[EXCHANGE].observe = False
    problems = []
    if not request.app[PUBLISHER].is_connected():
        problems.append("kafka producer not connected")
    if not request.app[ROUTER].loaded:
        problems.append("routing cache not loaded")
    if problems:
        return error_response(503, "not_ready", "; ".join(problems))
    return json_response(200, {"status": "ready"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    request[EXCHANGE].observe = False
    router = request.app[ROUTER]
    if isinstance(router, RoutingCache):
        request.app[METRICS].observe_routing(router.size, router.loaded_at)
    body, content_type = metrics_mod.render(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    routing: Router | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The ingress app. Whatever is passed in (or built here) is started and closed by it."""
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[exchange_middleware]
    )
    metrics = IngressMetrics(registry if registry is not None else CollectorRegistry())
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[BACKGROUND] = set()
    app[PUBLISHER] = publisher or KafkaPublisher(
        settings,
        on_latency=lambda topic, s: metrics.publish_latency.labels(topic).observe(s),
        on_failure=lambda topic, reason: metrics.publish_failures.labels(topic, reason).inc(),
    )
    app[ROUTER] = routing or RoutingCache(settings, metrics=metrics)
    # Cleanup runs in reverse: background records are flushed before the producer closes.
    app.cleanup_ctx.extend([_publisher_ctx, _router_ctx, _background_ctx])
    for name, provider in providers.PROVIDERS.items():
        handler = webhook_handler(provider, settings.secrets_for(name))
        app.router.add_post(f"/webhooks/{name}", handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


async def _publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[PUBLISHER].start()
    yield
    await app[PUBLISHER].close()


async def _router_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[ROUTER].start()
    yield
    await app[ROUTER].close()


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    tasks = app[BACKGROUND]
    if tasks:
        log.info("waiting for %d background records", len(tasks))
        timeout = app[SETTINGS].ack_budget_s + GUARD_SLACK_S + 1.0
        with contextlib.suppress(Exception):
            await asyncio.wait(list(tasks), timeout=timeout)
