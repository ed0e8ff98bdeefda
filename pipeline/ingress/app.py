"""The webhook ingress: an aiohttp app that turns provider webhooks into durable records.

The request path follows docs/ingress.md and answers honestly at each step: 413 (too big,
checked before reading), 415 (not JSON, or a Content-Encoding), 408 (body too slow), 401
(signature, verified on the raw bytes before any parsing), 400 (unparseable); then the raw
body is made durable by :class:`~pipeline.ingress.handoff.Handoff` (Kafka's ack within the
budget, or the local spool's fsync) and the answer is 202. Only a spool past its bound gets
a 503 with ``Retry-After`` (docs/architecture.md, invariant 1).

Retell's ``call_inbound`` is the exception: the caller is on the line, so it is answered from
the routing cache without waiting, and its record is made durable the same way in a tracked
background task that shutdown waits for.

Dependencies are passed in (``create_app(settings, publisher=..., routing=...)``) and opened
and closed in ``cleanup_ctx``; tests pass fakes for what they are not testing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline import providers, records
from pipeline.errors import ClientError, PayloadTooLarge, UnsupportedMediaType
from pipeline.ingress import metrics as metrics_mod
from pipeline.ingress.forwarder import Forwarder
from pipeline.ingress.handoff import Handoff
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
from pipeline.ingress.spool import Spool
from pipeline.providers import Envelope, Provider, retell
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey[Publisher]("publisher")
ROUTER = web.AppKey[Router]("router")
METRICS = web.AppKey("metrics", IngressMetrics)
BACKGROUND = web.AppKey[set[asyncio.Task[None]]]("background")
IN_FLIGHT = web.AppKey("in_flight", InFlight)
HANDOFF = web.AppKey("handoff", Handoff)
FORWARDER = web.AppKey("forwarder", Forwarder)
SPOOL_GIVEN = web.AppKey[Spool | None]("spool_given")

UTF8 = frozenset({"utf-8", "utf8"})
#: At shutdown, how long the forwarder may keep draining the spool to a reachable Kafka.
DRAIN_AT_SHUTDOWN_S = 10.0


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


async def read_body(request: web.Request, settings: Settings) -> bytes:
    """The raw body, after the 413 and 415 checks that can be made without reading it.

    A ``Content-Encoding`` other than ``identity`` is refused before reading: neither
    provider compresses, and inflating before the signature check would hand any sender
    our CPU and memory (the runner also has ``auto_decompress=False``). The body must arrive
    within ``ingress_body_timeout_s``: a trickling sender is cut off with a 408.
    """
    limit = settings.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {limit}")
    if request.content_type.lower() != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in UTF8:
        raise UnsupportedMediaType("JSON must be UTF-8 encoded")
    encodings = request.headers.getall("Content-Encoding", [])
    if any(e.strip().lower() not in ("", "identity") for e in encodings):
        raise UnsupportedMediaType(
            "Content-Encoding is not accepted; send the body uncompressed",
            code="unsupported_encoding",
        )
    try:
        if request.content.is_eof():  # already all here (the usual case): no timer needed
            body = await request.read()
        else:
            async with asyncio.timeout(settings.ingress_body_timeout_s):
                body = await request.read()
    except TimeoutError as exc:
        raise RequestTimeout(
            f"the body did not arrive within {settings.ingress_body_timeout_s:g}s"
        ) from exc
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes") from exc
    if len(body) > limit:  # client_max_size is the same limit; this keeps the rule explicit
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    return body


def kafka_headers(envelope: Envelope, exchange: Exchange) -> Headers:
    """The headers of docs/architecture.md (:func:`pipeline.records.encode_headers`)."""
    return records.encode_headers(
        envelope.provider,
        envelope.event_id,
        envelope.event_type,
        exchange.correlation_id,
        exchange.received_ms,
    )


def webhook_handler(provider: Provider, settings: Settings) -> Handler:
    """The handler of ``POST /webhooks/<provider>`` (what does not change between requests
    is looked up once, here)."""
    secrets = settings.secrets_for(provider.NAME)
    topic = settings.topic(provider.TOPIC)
    name = provider.NAME
    may_ring = name == retell.NAME  # call_inbound: answered before its record is durable

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        exchange = request[EXCHANGE]
        exchange.provider = name
        body = await read_body(request, settings)
        provider.verify(request.headers, body, secrets, exchange.received_ms)
        envelope = provider.parse(body)
        exchange.event_type = envelope.event_type
        headers = kafka_headers(envelope, exchange)
        if may_ring and envelope.event_type == retell.INBOUND_EVENT:
            spawn(app, record_in_background(app, topic, envelope, body, headers))
            metrics = app[METRICS]
            answer = await answer_call_inbound(
                app[ROUTER], metrics, envelope, exchange.correlation_id
            )
            metrics.call_inbound_latency.observe(time.perf_counter() - exchange.started)
            return json_response(200, answer)
        via = await app[HANDOFF].make_durable(topic, envelope.key.encode(), body, headers)
        if log.isEnabledFor(logging.DEBUG):  # per request: DEBUG only (counters say the rest)
            log.debug(
                "webhook accepted",
                extra={
                    "event_type": envelope.event_type,
                    "event_id": envelope.event_id,
                    "via": via,
                },
            )
        return json_response(
            202,
            {
                "status": "accepted",
                "event_id": envelope.event_id,
                "correlation_id": exchange.correlation_id,
            },
        )

    return handle


async def record_in_background(
    app: web.Application, topic: str, envelope: Envelope, body: bytes, headers: Headers
) -> None:
    """Make a ``call_inbound`` record durable after its answer: Kafka within the budget, else
    the spool (which survives a crash, where the old in-memory retry did not). Only a full
    spool loses it, logged and counted."""
    try:
        await app[HANDOFF].make_durable(topic, envelope.key.encode(), body, headers)
    except Exception as exc:  # noqa: BLE001 - nothing may escape a fire-and-forget task
        app[METRICS].background_failures.inc()
        log.error(
            "call_inbound record not made durable: %s",
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


def spool_detail(app: web.Application) -> dict[str, object]:
    """The spool's state, for /readyz and the runbook."""
    spool = app[HANDOFF].spool
    return {
        "slot": spool.slot,
        "records": spool.count,
        "bytes": spool.bytes,
        "limit_bytes": spool.max_bytes,
        "oldest_age_s": round(spool.oldest_age_s(), 3),
        "max_age_s": spool.max_age_s,
        "forwarded_per_s": round(app[FORWARDER].rate_per_s(), 1),
    }


async def readyz(request: web.Request) -> web.Response:
    """200 only with the producer connected and routing loaded (the spool keeps accepting
    while Kafka is away, but this process should not get new traffic then)."""
    request[EXCHANGE].observe = False
    app = request.app
    problems = []
    if not app[PUBLISHER].is_connected():
        problems.append("kafka producer not connected")
    if not app[ROUTER].loaded:
        problems.append("routing cache not loaded")
    if problems:
        response = error_response(503, "not_ready", "; ".join(problems))
        payload = {"error": "not_ready", "detail": "; ".join(problems)}
        if HANDOFF in app:
            payload["spool"] = spool_detail(app)  # type: ignore[assignment]
        response.body = orjson.dumps(payload)
        return response
    return json_response(200, {"status": "ready", "spool": spool_detail(app)})


async def metrics_endpoint(request: web.Request) -> web.Response:
    request[EXCHANGE].observe = False
    _observe(request.app)
    body, content_type = metrics_mod.render(request.app[METRICS].registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def _observe(app: web.Application) -> None:
    """Gauges that describe state rather than events (also refreshed every second, so that
    with --processes N every process's values are current whichever one is scraped)."""
    metrics = app[METRICS]
    router = app[ROUTER]
    if isinstance(router, RoutingCache):
        metrics.observe_routing(router.size, router.loaded_at)
    metrics.producer_connected.set(1 if app[PUBLISHER].is_connected() else 0)
    metrics.in_flight.set(app[IN_FLIGHT].count)
    if HANDOFF in app:
        spool = app[HANDOFF].spool
        metrics.observe_spool(spool.count, spool.bytes, spool.max_bytes, spool.oldest_age_s())


def runner_options(settings: Settings) -> dict[str, Any]:
    """The HTTP server's options (``web.AppRunner(app, **runner_options(settings))``).

    Slow clients (docs/ingress.md, "Slow clients"): a connection that has not finished
    sending a request's headers within ``ingress_idle_timeout_s`` of opening, or of the
    previous answer, is closed (aiohttp arms this timer at connect since 3.14), which is
    also the keep-alive; bodies have their own deadline in :func:`read_body`. Bodies are
    never inflated: a ``Content-Encoding`` is refused before reading.
    """
    return {"keepalive_timeout": settings.ingress_idle_timeout_s, "auto_decompress": False}


def cap_connections(server: web.Server, limit: int, metrics: IngressMetrics) -> None:
    """Close any connection beyond ``limit`` open ones as soon as it opens.

    Each connection costs a file descriptor; past the process's limit, accept() fails for
    everyone and the producer, the spool and MySQL cannot open theirs either. Trickling
    connections are closed by the idle and body timeouts within seconds, so under normal
    load the cap is never reached (docs/ingress.md, "Slow clients")."""
    made = server.connection_made

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        if len(server.connections) > limit:
            metrics.connections_refused.inc()
            transport.close()

    server.connection_made = connection_made  # type: ignore[method-assign]


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    routing: Router | None = None,
    registry: CollectorRegistry | None = None,
    spool: Spool | None = None,
) -> web.Application:
    """The ingress app. Whatever is passed in (or built here) is started and closed by it.

    The spool is claimed when the app starts (a slot of ``settings.ingress_spool_dir()``)
    unless one is passed in."""
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
        topics=[settings.topic(p.TOPIC) for p in providers.PROVIDERS.values()],
        on_latency=lambda topic, s: metrics.child(metrics.publish_latency, topic).observe(s),
        on_failure=lambda topic, reason: metrics.child(
            metrics.publish_failures, topic, reason
        ).inc(),
    )
    app[ROUTER] = routing or RoutingCache(settings, metrics=metrics)
    app[SPOOL_GIVEN] = spool
    # Cleanup runs in reverse: background records are made durable before the spool and
    # the forwarder stop, and those before the producer closes.
    app.cleanup_ctx.extend(
        [_publisher_ctx, _spool_ctx, _router_ctx, _observer_ctx, _background_ctx]
    )
    for provider in providers.PROVIDERS.values():
        app.router.add_post(provider.ROUTE, webhook_handler(provider, settings))
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


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    spool = app[SPOOL_GIVEN] or Spool.claim(
        settings.ingress_spool_dir(),
        max_bytes=settings.spool_max_bytes,
        max_age_s=settings.spool_max_age_s,
    )
    await spool.start()
    app[HANDOFF] = Handoff(settings, app[PUBLISHER], spool, metrics)
    forwarder = Forwarder(spool, app[PUBLISHER], on_forwarded=metrics.spool_forwarded.inc)
    app[FORWARDER] = forwarder
    await forwarder.start()
    log.info("spool slot %d at %s", spool.slot, spool.lock.path)
    yield
    deadline = asyncio.get_running_loop().time() + DRAIN_AT_SHUTDOWN_S
    while spool.depth and app[PUBLISHER].is_connected():
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    await forwarder.close()
    if spool.depth:
        log.warning("%d records stay in the spool for the next start", spool.depth)
    await spool.close()


async def _router_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[ROUTER].start()
    yield
    await app[ROUTER].close()


async def _observer_ctx(app: web.Application) -> AsyncIterator[None]:
    async def tick() -> None:
        while True:
            committed = app[HANDOFF].spool.commits
            _observe(app)
            await asyncio.sleep(1.0)
            app[METRICS].spool_commits.inc(app[HANDOFF].spool.commits - committed)

    task = asyncio.create_task(tick(), name="ingress-observer")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    tasks = app[BACKGROUND]
    if tasks:
        log.info("waiting for %d background records", len(tasks))
        timeout = app[SETTINGS].ack_budget_s + 5.0
        _done, pending = await asyncio.wait(list(tasks), timeout=timeout)
        if pending:
            app[METRICS].background_failures.inc(len(pending))
            log.error("%d call_inbound records abandoned at shutdown", len(pending))
