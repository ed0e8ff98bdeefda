"""The analyst API on the worker's web server (docs/analyst.md), and ``/readyz``.

``register`` builds one :class:`ApiContext` and mounts the module-level views of
:mod:`agents.api.views` on Faust's web server. Every answer is counted in
``switchboard_analyst_requests_total`` by route and status (4xx and 5xx included) and timed
in ``switchboard_analyst_request_duration_seconds``; an unexpected exception is a JSON 500
with a log line (exception class and correlation id, never request data).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiohttp import web
from faust.web import View
from sqlalchemy import Engine

from agents.api import responses, views
from agents.api.context import ApiContext
from agents.api.directory import Directory, Timezones
from agents.metrics import WorkerMetrics
from pipeline import protocol
from pipeline.dashboard.tokens import TokenBook
from pipeline.logs import correlation
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[ApiContext, web.Request], Awaitable[web.Response]]
GAUGE_INTERVAL_S = 1.0


def build_context(
    app: faust.App,
    settings: Settings,
    table: faust.Table[str, Any],
    engine: Engine,
    metrics: WorkerMetrics,
) -> ApiContext:
    tokens = TokenBook.parse(t.reveal() for t in settings.analyst_tokens)
    if tokens.plain:
        log.warning(
            "%d analyst token(s) configured in plain text (%s): fine for development; use "
            "hashed entries in production (switchboard tokens new)",
            len(tokens.plain),
            ", ".join(g.name for g in tokens.plain),
        )
    return ApiContext(app, table, engine, metrics, tokens, Timezones(engine), Directory(engine))


async def observed(
    ctx: ApiContext, route: str, handler: Handler, request: web.Request
) -> web.Response:
    started = time.perf_counter()
    cid = request.headers.get("X-Correlation-ID") or uuid.uuid4().hex
    if len(cid) > 64 or not cid.isascii() or not cid.isprintable():
        cid = uuid.uuid4().hex
    with correlation(cid):
        try:
            response = await handler(ctx, request)
        except views.Refused as refused:
            response = refused.response
        except Exception as exc:  # any bug: a JSON 500, counted and logged, never a traceback
            log.error("analyst API %s failed: %s", route, exc.__class__.__name__)
            response = responses.error(500, "internal_error", "the worker failed; see its log")
    response.headers["X-Correlation-ID"] = cid
    ctx.metrics.api_requests.labels(route, str(response.status)).inc()
    ctx.metrics.api_duration.labels(route).observe(time.perf_counter() - started)
    return response


def _mount(app: faust.App, ctx: ApiContext, path: str, route: str, handler: Handler) -> None:
    async def get(view: View, request: web.Request, **_: str) -> web.Response:
        return await observed(ctx, route, handler, request)

    get.__name__ = f"analyst_{route}"
    app.page(path, name=f"analyst_{route}")(View.from_handler(get))  # type: ignore[arg-type]


async def readyz(ctx: ApiContext, request: web.Request) -> web.Response:
    """No token: for load balancers and probes. 200 only when the table answers."""
    state = ctx.refresh_gauge()
    return responses.json({"status": state}, 200 if state == "ready" else 503)


def register(
    app: faust.App,
    settings: Settings,
    table: faust.Table[str, Any],
    engine: Engine,
    metrics: WorkerMetrics,
) -> ApiContext:
    ctx = build_context(app, settings, table, engine, metrics)
    _mount(app, ctx, "/api/v1/companies", "companies", views.companies)
    _mount(app, ctx, "/api/v1/companies/{company_id}/summary", "summary", views.summary)
    _mount(app, ctx, "/api/v1/companies/{company_id}/series", "series", views.series)

    async def ready_view(view: View, request: web.Request) -> web.Response:
        return await readyz(ctx, request)

    app.page("/readyz", name="readyz")(View.from_handler(ready_view))  # type: ignore[arg-type]
    _json_refusals(app)

    @app.timer(interval=GAUGE_INTERVAL_S)
    async def refresh_recovered() -> None:
        """switchboard_worker_tables_recovered stays true on an idle worker too."""
        ctx.refresh_gauge()

    return ctx


@web.middleware
async def _router_refusals(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
    """The router's own 404 and 405 in the JSON error body, like every other refusal."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status >= 500:
            raise
        code = exc.reason.lower().replace(" ", "_")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        response = responses.error(exc.status, code, exc.reason)
        response.headers.update(headers)
        return response


def _json_refusals(app: faust.App) -> None:
    """Faust's web server answers in JSON too: the router's 404/405 (a middleware) and
    requests that are not valid HTTP (:func:`pipeline.protocol.answer_in_json` on its
    server, which Faust creates only when it starts: installed from ``on_startup``, once
    the runner has its server and before the site accepts connections)."""
    web_app = app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(_router_refusals)

    async def on_startup(_: web.Application) -> None:
        loop = asyncio.get_running_loop()

        def install(tries: int = 100) -> None:
            server = app.web._runner.server  # type: ignore[attr-defined]
            if server is not None:
                protocol.answer_in_json(server)
            elif tries:
                loop.call_soon(install, tries - 1)
            else:
                log.warning("web server not found: protocol errors answered in plain text")

        loop.call_soon(install)

    web_app.on_startup.append(on_startup)
