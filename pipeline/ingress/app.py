"""The webhook ingress: an aiohttp app that turns provider webhooks into Kafka records.

The request path follows docs/ingress.md and answers honestly at each step: 413 (too big, checked
before reading), 415 (not JSON), 401 (signature, verified on the raw bytes before any
parsing), 400 (unparseable), then the raw body goes to Kafka and the answer is 202 only after
the broker acknowledged it (docs/architecture.md, invariant 1); a broker that is down or slower than the ack
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
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import providers
from pipeline.errors import KafkaUnavailable, PayloadTooLarge, UnsupportedMediaType
from pipeline.ingress import metrics as metrics_mod
from pipeline.ingress.inbound import answer_call_inbound
from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.middleware import (
    EXCHANGE,
    Exchange,
    Handler,
    InFlight,
    error_response,
    exchange_middleware,
    json_response,
)
from pipeline.ingress.producer import Headers, KafkaPublisher, Publisher
from pipeline.ingress.routing import Router, RoutingCache
from pipeline.providers import Envelope, Provider, retell
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey[Publisher]("publisher")
ROUTER = web.AppKey[Router]("router")
METRICS = web.AppKey("metrics", IngressMetrics)
BACKGROUND = web.AppKey[set[asyncio.Task[None]]]("background")
IN_FLIGHT = web.AppKey("in_flight", InFlight)

#: The ingress's own guard around every publish, a little above the producer's ack budget,
#: so that no Publisher (a fake, a future one) can hold a request past the promise.
GUARD_SLACK_S = 0.25
UTF8 = frozenset({"utf-8", "utf8"})


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
    """The headers of docs/architecture.md, as bytes, in a fixed order."""
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


# A call_inbound record is retried for this long (Kafka slow or briefly down) before it is
# given up, logged and counted; the routing answer never waits for it.
INBOUND_RECORD_DEADLINE_S = 60.0


async def publish_in_background(
    app: web.Application, topic: str, envelope: Envelope, body: bytes, headers: Headers
) -> None:
    """Record a ``call_inbound`` after its answer, retrying with backoff (docs/ingress.md: the event
    is still written to Kafka); only past the deadline is a failure logged and counted."""
    deadline = asyncio.get_running_loop().time() + INBOUND_RECORD_DEADLINE_S
    delay = 0.1
    while True:
        try:
            await publish(app, topic, envelope, body, headers)
            return
        except Exception as exc:  # noqa: BLE001 - nothing may escape a fire-and-forget task
            if asyncio.get_running_loop().time() + delay > deadline:
                app[METRICS].background_failures.inc()
                log.warning(
                    "call_inbound record not written to Kafka: %s",
                    type(exc).__name__,
                    extra={"event_id": envelope.event_id},
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


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
    metrics = IngressMetrics(registry if registry is not None else CollectorRegistry())
    in_flight = InFlight()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[exchange_middleware(metrics, in_flight, settings.retry_after_s)],
    )
    app[SETTINGS] = settings
    app[IN_FLIGHT] = in_flight
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


async def drain(runner: web.AppRunner, timeout_s: float) -> None:
    """Graceful stop, part one: close the listening sockets, then let every request already
    in a handler finish (bounded). Only then may ``runner.cleanup()`` close connections:
    aiohttp drops the rest of a body that arrives after it has closed a connection."""
    for site in list(runner.sites):
        await site.stop()
    in_flight = runner.app[IN_FLIGHT]
    if in_flight.count and not await in_flight.wait_idle(timeout_s):
        log.warning("%d requests still in flight after %.1fs", in_flight.count, timeout_s)


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
