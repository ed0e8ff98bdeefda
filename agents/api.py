"""The analyst API on the worker's web server (docs/analyst.md).

Bearer tokens; 503 until table recovery has finished (Faust's web answers before that);
requests for a company are routed to the worker that owns the company's partition
(``table_route`` on the company id, which is how the snapshot topic is keyed); reads are
key lookups in the dashboard table.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View
from sqlalchemy import Engine, select

from agents.metrics import WorkerMetrics
from pipeline.dashboard.aggregates import DAY, HOUR
from pipeline.errors import DatabaseUnavailable
from pipeline.models import companies
from pipeline.settings import Settings
from tables import dashboard

TZ_TTL_S = 300.0
UNKNOWN_TTL_S = 10.0
ROUTE_TIMEOUT_S = 10.0  # a request forwarded to the owning worker


class Timezones:
    """Company timezones, cached: the read path must not wait on MySQL per request."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cache: dict[int, tuple[float, str | None]] = {}

    async def get(self, company_id: int) -> str | None:
        hit = self.cache.get(company_id)
        if hit and time.monotonic() - hit[0] < (TZ_TTL_S if hit[1] is not None else UNKNOWN_TTL_S):
            return hit[1]

        def load() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(companies.c.timezone).where(companies.c.id == company_id)
                ).scalar()

        try:
            tz = await asyncio.to_thread(load)
        except Exception as exc:
            if hit and hit[1] is not None:
                return hit[1]  # MySQL down: the last known timezone is still right
            raise DatabaseUnavailable("company timezone unavailable") from exc
        # An unknown id is remembered briefly only: a company created a minute later must
        # not be read in UTC (wrong local days) for the next five minutes.
        self.cache[company_id] = (time.monotonic(), tz)
        return tz


def _error(view: View, status: int, code: str, detail: str) -> Response:
    return view.json({"error": code, "detail": detail}, status=status)


# Series bounds: far enough for any real question; the date arithmetic of bucket starts
# must never reach datetime's limits (an OverflowError would be a 500).
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(2200, 1, 1)


def _parse_time(raw: str | None) -> datetime | None:
    """ISO-8601 → naive UTC (no offset: UTC); ValueError when unparseable or out of bounds.

    ``2026-11-28T10:00:00+01:00`` pasted unencoded into a URL arrives with a space for the
    ``+`` (form encoding); in a ``T`` timestamp a space can only be that, so it is put back.
    """
    if raw is None:
        return None
    text = raw.strip()
    if "T" in text and " " in text:
        text = text.replace(" ", "+")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    naive = parsed.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST <= naive <= LATEST:
        raise ValueError("out of bounds")
    return naive


def register(
    app: faust.App, settings: Settings, table: faust.Table, engine: Engine, metrics: WorkerMetrics
) -> None:
    tokens = [t.reveal().encode() for t in settings.analyst_tokens]
    timezones = Timezones(engine)

    def authorized(request: Request) -> bool:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
            return False
        raw = offered.strip().encode()
        return any(hmac.compare_digest(raw, t) for t in tokens)

    def ready() -> bool:
        recovery = app.tables.recovery  # type: ignore[attr-defined]
        done = recovery.completed.is_set() and not app.rebalancing
        metrics.recovered.set(1 if done else 0)
        return done

    def guard(view: View, request: Request, route: str) -> Response | None:
        if not authorized(request):
            metrics.api_requests.labels(route, "401").inc()
            return _error(view, 401, "unauthorized", "a valid bearer token is required")
        if not ready():
            return unavailable(view, route, "recovering", "tables are recovering; retry shortly")
        return None

    def unavailable(view: View, route: str, code: str, detail: str) -> Response:
        metrics.api_requests.labels(route, "503").inc()
        response = _error(view, 503, code, detail)
        response.headers["Retry-After"] = "2"  # type: ignore[attr-defined]
        return response

    async def routed(view: View, request: Request, handler: Any, route: str) -> Response:
        """The owner answers; when it is dead or hung (until the group notices and
        rebalances) the answer is a 503 to retry, not Faust's bare 500."""
        try:
            return await asyncio.wait_for(handler(request), ROUTE_TIMEOUT_S)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return unavailable(
                view, route, "owner_unavailable", "the worker owning this company is not answering"
            )
        except DatabaseUnavailable:
            return unavailable(view, route, "database_unavailable", "MySQL is unavailable")

    def company_of(request: Request) -> int | None:
        raw = request.match_info["company_id"]
        return int(raw) if raw.isdigit() else None

    def lookup(key: str) -> dict[str, Any] | None:
        return table.get(key)

    @app.page("/api/v1/companies/{company_id}/summary")
    class Summary(View):
        async def get(self, request: Request, company_id: str) -> Response:
            denied = guard(self, request, "summary")
            if denied is not None:
                return denied
            return await routed(self, request, self._routed, "summary")

        @app.table_route(table=table, match_info="company_id")
        async def _routed(self: View, request: Request) -> Response:
            started = time.perf_counter()
            company = company_of(request)
            if company is None:
                return _error(self, 400, "bad_request", "company_id must be a number")
            tz = await timezones.get(company)
            now = datetime.now(UTC).replace(tzinfo=None)
            body = dashboard.summary(company, tz, now, lookup)
            metrics.api_seconds.labels("summary").observe(time.perf_counter() - started)
            if body is None:
                metrics.api_requests.labels("summary", "404").inc()
                return _error(self, 404, "not_found", "no data for this company")
            metrics.api_requests.labels("summary", "200").inc()
            return self.json(body)

    @app.page("/api/v1/companies/{company_id}/series")
    class Series(View):
        async def get(self, request: Request, company_id: str) -> Response:
            denied = guard(self, request, "series")
            if denied is not None:
                return denied
            return await routed(self, request, self._routed, "series")

        @app.table_route(table=table, match_info="company_id")
        async def _routed(self: View, request: Request) -> Response:
            started = time.perf_counter()
            company = company_of(request)
            if company is None:
                return _error(self, 400, "bad_request", "company_id must be a number")
            granularity = request.query.get("granularity", HOUR)
            if granularity not in (HOUR, DAY):
                return _error(self, 400, "bad_request", "granularity must be hour or day")
            now = datetime.now(UTC).replace(tzinfo=None)
            try:
                start = _parse_time(request.query.get("from"))
                end = _parse_time(request.query.get("to"))
            except (ValueError, OverflowError):
                return _error(
                    self, 400, "bad_request", "from/to must be ISO-8601 times, years 1970-2200"
                )
            default_span = timedelta(hours=24) if granularity == HOUR else timedelta(days=30)
            end = end or now
            start = start or end - default_span
            if start >= end:
                return _error(self, 400, "bad_request", "from must be before to")
            limit = dashboard.MAX_SERIES_BUCKETS[granularity]
            span_limit = timedelta(hours=limit) if granularity == HOUR else timedelta(days=limit)
            if end - start > span_limit:
                return _error(
                    self, 400, "bad_request", f"at most {limit} {granularity} buckets per request"
                )
            tz = await timezones.get(company)
            starts = dashboard.bucket_starts(granularity, start, end, tz)
            buckets = dashboard.series(company, granularity, starts, lookup)
            if not any(b["version"] for b in buckets) and tz is None:
                metrics.api_requests.labels("series", "404").inc()
                return _error(self, 404, "not_found", "no data for this company")
            metrics.api_seconds.labels("series").observe(time.perf_counter() - started)
            metrics.api_requests.labels("series", "200").inc()
            return self.json(
                {"company_id": str(company), "granularity": granularity, "buckets": buckets}
            )
