"""The analyst API's views (docs/analyst.md): module-level functions of an
:class:`ApiContext` and a request, each answering one route.

Every company route checks, in this order and on the worker that received the request:
the bearer token (401), the company id (400: ASCII digits, no leading zero, so that every
spelling of a company routes to the same worker), the token's scope (404, the same answer
as for a company that does not exist), the query (400). Only then is it answered, by
:func:`agents.api.routing.answer`: from the table of the worker that owns the company, or
from MySQL when the table cannot answer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from agents.api import responses
from agents.api.context import ApiContext
from agents.api.directory import Company
from agents.api.routing import Source, answer
from pipeline.dashboard.aggregates import DAY, DIMENSIONS, HOUR, BucketKey
from pipeline.dashboard.drift import NO_GROUP
from pipeline.dashboard.tokens import Grant, bearer
from tables import dashboard

COMPANY_ID = re.compile(r"[1-9][0-9]{0,17}")  # BIGINT, one spelling per company
# Series bounds: far enough for any real question; the date arithmetic of bucket starts
# must never reach datetime's limits (an OverflowError would be a 500).
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(2200, 1, 1)


class Refused(Exception):
    """An early answer (4xx) from a check."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad(detail: str) -> Refused:
    return Refused(responses.error(400, "bad_request", detail))


def _not_found() -> Refused:
    return Refused(responses.error(404, "not_found", "no data for this company"))


def authorize(ctx: ApiContext, request: web.Request) -> Grant:
    grant = ctx.tokens.check(bearer(request.headers.get("Authorization")) or "")
    if grant is None:
        raise Refused(responses.error(401, "unauthorized", "a valid bearer token is required"))
    return grant


def company_in_scope(request: web.Request, grant: Grant) -> int:
    raw = request.match_info["company_id"]
    if not COMPANY_ID.fullmatch(raw):
        raise _bad("company_id must be a positive decimal number without leading zeros")
    company = int(raw)
    if not grant.may_read(company):
        raise _not_found()  # never tell a token which other companies exist
    return company


def parse_time(raw: str | None) -> datetime | None:
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


def group_by(request: web.Request) -> str | None:
    value = request.query.get("group_by")
    if value is not None and value not in DIMENSIONS:
        raise _bad("group_by must be branch or agent")
    return value


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- GET /api/v1/companies ------------------------------------------------------------------


async def companies(ctx: ApiContext, request: web.Request) -> web.Response:
    grant = authorize(ctx, request)
    known = await ctx.directory.all()
    visible = [c.as_json() for cid, c in sorted(known.items()) if grant.may_read(cid)]
    return responses.json({"companies": visible, "admin": grant.admin})


# --- GET /api/v1/companies/{id}/summary -----------------------------------------------------


async def summary(ctx: ApiContext, request: web.Request) -> web.Response:
    grant = authorize(ctx, request)
    company = company_in_scope(request, grant)
    dimension = group_by(request)

    async def build(source: Source) -> web.Response:
        tz = await ctx.timezones.get(company)
        now = _now()
        keys = dashboard.summary_keys(company, tz, now)
        lookup = await source.read(keys, dimension)
        body = dashboard.summary(company, tz, now, lookup)
        if body is None and (dimension is None or tz is None):
            raise _not_found()
        body = body or dashboard.summary(company, tz, now, lookup, always=True)
        assert body is not None
        body["source"] = source.name
        if dimension:
            groups = dashboard.group_lookups(lookup, keys, dimension)
            body["group_by"] = dimension
            body["groups"] = [
                {
                    **meta,
                    "windows": dashboard.summary(  # type: ignore[index]
                        company, tz, now, groups.get(meta["id"], _nothing), always=True
                    )["windows"],
                }
                for meta in await _groups(ctx, company, dimension, groups)
            ]
        return responses.json(body, headers=source.headers)

    return await answer(ctx, request, company, build)


# --- GET /api/v1/companies/{id}/series ------------------------------------------------------


async def series(ctx: ApiContext, request: web.Request) -> web.Response:
    grant = authorize(ctx, request)
    company = company_in_scope(request, grant)
    dimension = group_by(request)
    granularity = request.query.get("granularity", HOUR)
    if granularity not in (HOUR, DAY):
        raise _bad("granularity must be hour or day")
    fmt = request.query.get("format")
    if fmt not in (None, "json", "csv"):
        raise _bad("format must be json or csv")
    as_csv = responses.wants_csv(request.query, request.headers.get("Accept", ""))
    try:
        start, end = parse_time(request.query.get("from")), parse_time(request.query.get("to"))
    except (ValueError, OverflowError):
        raise _bad("from/to must be ISO-8601 times, years 1970-2200") from None
    end = end or _now()
    start = start or end - (timedelta(hours=24) if granularity == HOUR else timedelta(days=30))
    if start >= end:
        raise _bad("from must be before to")
    limit = dashboard.MAX_SERIES_BUCKETS[granularity]
    if end - start > (timedelta(hours=limit) if granularity == HOUR else timedelta(days=limit)):
        raise _bad(f"at most {limit} {granularity} buckets per request")

    async def build(source: Source) -> web.Response:
        tz = await ctx.timezones.get(company)
        starts = dashboard.bucket_starts(granularity, start, end, tz)
        keys = [BucketKey(company, granularity, s) for s in starts]
        lookup = await source.read(keys, dimension)
        buckets = dashboard.series(company, granularity, starts, lookup)
        if not any(b["version"] for b in buckets) and tz is None:
            raise _not_found()
        body: dict[str, Any] = {
            "company_id": str(company),
            "granularity": granularity,
            "timezone": tz or "UTC",
            "source": source.name,
            "buckets": buckets,
        }
        if dimension:
            groups = dashboard.group_lookups(lookup, keys, dimension)
            body["group_by"] = dimension
            body["groups"] = [
                {
                    **meta,
                    "buckets": dashboard.series(
                        company,
                        granularity,
                        starts,
                        groups.get(meta["id"], _nothing),
                        versions=False,
                    ),
                }
                for meta in await _groups(ctx, company, dimension, groups)
            ]
        if as_csv:
            name = f"company-{company}-{granularity}{'-by-' + dimension if dimension else ''}.csv"
            return responses.csv_response(dashboard.series_csv(body, tz), name, source.headers)
        return responses.json(body, headers=source.headers)

    return await answer(ctx, request, company, build)


# --- breakdowns -----------------------------------------------------------------------------


def _nothing(key: str) -> None:
    return None


async def _groups(
    ctx: ApiContext, company: int, dimension: str, counted: dict[str, Any]
) -> list[dict[str, Any]]:
    """The groups to show: every branch (or agent) the directory knows for the company,
    plus any group the rows mention (a deleted branch, calls without one)."""
    known: Company | None = (await ctx.directory.all()).get(company)
    names: dict[str, str] = {}
    if known is not None:
        for branch in known.branches:
            if dimension == "branch":
                names[str(branch.id)] = branch.name
            elif branch.agent_id:
                label = names.get(branch.agent_id)
                names[branch.agent_id] = f"{label}, {branch.name}" if label else branch.name
    for group in counted:
        names.setdefault(group, "" if group == NO_GROUP else f"{dimension} {group}")
    if NO_GROUP in names:
        names[NO_GROUP] = (
            "no branch" if dimension == "branch" else "no agent (bookings, calls without one)"
        )
    order = sorted(names, key=lambda g: (g == NO_GROUP, names[g].lower(), g))
    return [{"id": g, "name": names[g]} for g in order]
