"""Who answers a company's request, and from where.

The worker that owns the company's partition answers from its table (key lookups,
milliseconds); any other worker forwards the request there. When the table cannot answer,
the request is answered from ``dashboard_buckets`` in MySQL instead (exact, a query
slower), with ``X-Switchboard-Source: mysql`` and ``X-Switchboard-Fallback: <reason>``:

* ``recovering``: this worker's tables are still loading, or
  ``rebalancing``: the group is moving partitions (ownership is unknown meanwhile);
* ``owner_unavailable``: the owner does not answer (dead or hung, until the group notices).

A forwarded request carries ``X-Switchboard-Routed``; the receiver answers it itself (from
its table if it owns the company, else from MySQL), so two workers that briefly disagree
about ownership cannot bounce a request between them. ``source=table`` in the query turns
the fallback off (``reconcile --worker-url`` compares the table itself with MySQL): then
the old 503 answers come back. 503 ``database_unavailable`` when MySQL is needed and down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from agents.api import responses
from agents.api.context import ROUTE_TIMEOUT_S, SELF, ApiContext
from pipeline.dashboard.aggregates import BucketKey
from pipeline.errors import DatabaseUnavailable
from tables.dashboard import Lookup

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Where a view reads buckets from, and the headers that say so."""

    name: str  # "table" | "mysql"
    read: Callable[[Iterable[BucketKey], str | None], Awaitable[Lookup]]
    headers: dict[str, str] = field(default_factory=dict)


Build = Callable[[Source], Awaitable[web.Response]]


def table_source(ctx: ApiContext) -> Source:
    return Source("table", ctx.table_lookup, {responses.SOURCE_HEADER: "table"})


def mysql_source(ctx: ApiContext, reason: str) -> Source:
    ctx.metrics.api_fallbacks.labels(reason).inc()
    return Source(
        "mysql",
        ctx.mysql_lookup,
        {responses.SOURCE_HEADER: "mysql", responses.FALLBACK_HEADER: reason},
    )


async def answer(ctx: ApiContext, request: web.Request, company: int, build: Build) -> web.Response:
    strict = request.query.get("source") == "table"
    state = ctx.refresh_gauge()
    if state != "ready":
        return await _fallback(ctx, build, state, strict, "tables are recovering; retry shortly")
    routed = request.headers.get(responses.HOP_HEADER) is not None
    owner = ctx.owner(company)
    if owner == SELF:
        return await _guarded(build, table_source(ctx))
    if routed or owner is None:
        return await _fallback(ctx, build, "rebalancing", strict, "the group is rebalancing")
    try:
        return await _forward(ctx, request, owner)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.warning("owner %s of company %d not answering: %s", owner, company, type(exc).__name__)
        return await _fallback(
            ctx,
            build,
            "owner_unavailable",
            strict,
            "the worker owning this company is not answering",
        )


async def _fallback(
    ctx: ApiContext, build: Build, reason: str, strict: bool, detail: str
) -> web.Response:
    if strict:
        code = "owner_unavailable" if reason == "owner_unavailable" else "recovering"
        return responses.error(503, code, detail, retry_after=True)
    return await _guarded(build, mysql_source(ctx, reason))


async def _guarded(build: Build, source: Source) -> web.Response:
    try:
        return await build(source)
    except DatabaseUnavailable:
        return responses.error(
            503, "database_unavailable", "MySQL is unavailable", retry_after=True
        )


async def _forward(ctx: ApiContext, request: web.Request, owner: str) -> web.Response:
    headers = {
        name: value
        for name in ("Authorization", "Accept", "X-Correlation-ID")
        if (value := request.headers.get(name)) is not None
    }
    headers[responses.HOP_HEADER] = "1"
    url = owner + request.rel_url.path_qs
    timeout = aiohttp.ClientTimeout(total=ROUTE_TIMEOUT_S)
    session = ctx.app.http_client
    async with session.get(url, headers=headers, timeout=timeout) as reply:
        body = await asyncio.wait_for(reply.read(), ROUTE_TIMEOUT_S)
        passed = {h: reply.headers[h] for h in responses.PASSED_ON if h in reply.headers}
        return web.Response(
            body=body,
            status=reply.status,
            headers={**passed, "Content-Type": reply.headers.get("Content-Type", "")},
        )
