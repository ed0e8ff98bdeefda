"""Generated hostile requests against the analyst API's views: whatever the company id,
query string and Authorization header, the answer is 200 or a 4xx with the JSON error
body, never a 500 (``observed`` turns any exception into a counted 500, so a 500 here is
a bug found). The views run with an in-memory context: a table and a directory, no Kafka or MySQL."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from agents import api
from agents.api import views
from agents.api.context import SELF, ApiContext
from agents.api.directory import Branch, Company
from agents.metrics import WorkerMetrics
from pipeline.dashboard.aggregates import DAY, HOUR, BucketKey, day_start, hour_start
from pipeline.dashboard.snapshots import table_key
from pipeline.dashboard.tokens import TokenBook

ADMIN, SCOPED = "tok-admin", "tok-scoped"
LA = "America/Los_Angeles"
COMPANIES = {
    1: Company(1, "Harbor", LA, True, (Branch(11, "main", "agent_a", True),)),
    2: Company(2, "Spree", "Europe/Berlin", True, ()),
}


class Directory:
    async def all(self) -> dict[int, Company]:
        return COMPANIES


class Timezones:
    async def get(self, company_id: int) -> str | None:
        known = COMPANIES.get(company_id)
        return known.timezone if known else None


class Context(ApiContext):
    """Ready, owning every company, with a dict for a table."""

    def state(self) -> str:
        return "ready"

    def owner(self, company_id: int) -> str | None:
        return SELF


def context() -> Context:
    now = datetime.now(UTC).replace(tzinfo=None)
    table: dict[str, Any] = {}
    for granularity, start in ((HOUR, hour_start(now)), (DAY, day_start(now, LA))):
        key = table_key(BucketKey(1, granularity, start))
        table[key] = {"v": 3, "c": {"calls_total": 2, "calls_connected": 1}}
    tokens = TokenBook.parse([ADMIN, f"s=sha256:{hashlib.sha256(SCOPED.encode()).hexdigest()}@1"])
    return Context(
        app=None,  # type: ignore[arg-type]
        table=table,
        engine=None,  # type: ignore[arg-type]
        metrics=WorkerMetrics(),
        tokens=tokens,
        timezones=Timezones(),  # type: ignore[arg-type]
        directory=Directory(),  # type: ignore[arg-type]
    )


ROUTES = {"summary": views.summary, "series": views.series}
text = st.text(alphabet="0123456789aZ-_.:+%/ ²١é\u200b\x00T", max_size=24)
company_ids = st.one_of(
    st.sampled_from(["1", "2", "3", "007", "0", "²", "١", "1 ", "99999999999999999999"]), text
)
times = st.one_of(
    st.none(),
    st.sampled_from(
        ["2026-11-28T00:00:00Z", "2026-11-28T00:00:00+05:45", "0001-01-01", "9999-12-31T23:59:59"]
    ),
    text,
)
queries = st.fixed_dictionaries(
    {},
    optional={
        "granularity": st.one_of(st.sampled_from([HOUR, DAY, "week", ""]), text),
        "from": times,
        "to": times,
        "group_by": st.one_of(st.sampled_from(["branch", "agent", "clinic"]), text),
        "format": st.one_of(st.sampled_from(["csv", "json", "xml"]), text),
        "source": st.sampled_from(["table", "mysql"]),
    },
)
authorizations = st.one_of(
    st.none(),
    st.sampled_from(
        [f"Bearer {ADMIN}", f"bearer {SCOPED}", f"Basic {ADMIN}", "Bearer", "Bearer tök", ""]
    ),
    text.map(lambda t: "Bearer " + t),
)


def call(ctx: Context, route: str, company: str, query: dict[str, Any], auth: str | None) -> Any:
    path = f"/api/v1/companies/{quote(company, safe='')}/{route}"
    clean = {k: v for k, v in query.items() if v is not None}
    headers = CIMultiDict({"Authorization": auth} if auth is not None else {})
    request = make_mocked_request(
        "GET", path + ("?" + urlencode(clean) if clean else ""), headers=headers
    )
    request.match_info.update({"company_id": company})  # type: ignore[attr-defined]
    return asyncio.run(api.observed(ctx, route, ROUTES[route], request))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(sorted(ROUTES)),
    company=company_ids,
    query=queries,
    auth=authorizations,
)
def test_no_request_gets_a_5xx(route: str, company: str, query: dict, auth: str | None) -> None:
    ctx = context()
    response = call(ctx, route, company, query, auth)
    assert response.status in (200, 400, 401, 404), (response.status, response.body)
    if response.status != 200:
        body = orjson.loads(response.body)
        assert set(body) == {"error", "detail"}
    assert response.headers["X-Correlation-ID"]
    counted = ctx.metrics.api_requests.labels(route, str(response.status))._value.get()
    assert counted == 1


def test_a_bug_is_a_counted_json_500() -> None:
    ctx = context()

    async def broken(ctx: Any, request: Any) -> Any:
        raise RuntimeError("boom with row data that must not be logged")

    request = make_mocked_request("GET", "/api/v1/companies")
    response = asyncio.run(api.observed(ctx, "companies", broken, request))
    assert response.status == 500
    assert orjson.loads(response.body)["error"] == "internal_error"
    assert ctx.metrics.api_requests.labels("companies", "500")._value.get() == 1


def test_the_happy_paths_answer() -> None:
    ctx = context()
    summary = call(ctx, "summary", "1", {"group_by": "branch"}, f"Bearer {SCOPED}")
    assert summary.status == 200
    body = orjson.loads(summary.body)
    assert body["windows"]["today"]["calls_total"] == 2
    assert [g["id"] for g in body["groups"]] == ["11"]
    assert call(ctx, "summary", "2", {}, f"Bearer {SCOPED}").status == 404
    csv = call(ctx, "series", "1", {"format": "csv", "granularity": "day"}, f"Bearer {ADMIN}")
    assert csv.status == 200 and csv.content_type == "text/csv"
