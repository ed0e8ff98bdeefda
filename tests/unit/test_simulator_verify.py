"""verify's analyst-API check against a small fake series endpoint (MySQL checks are in
tests/integration/test_simulator_db.py)."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from testbed.simulator import expected, tenants
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.verify import check_api, parse_time

TOKEN = "analyst-token"


def make_doc() -> dict[str, Any]:
    companies = tenants.with_ids(tenants.generate(3, seed=4))
    scenario = generate(companies, ScenarioConfig(seed=3, calls=40, now_ms=int(time.time() * 1000)))
    accepted = {k for k, s in scenario.steps.items() if s.expect_status < 300}
    result = expected.compute(scenario.companies, scenario.calls, scenario.bookings, accepted)
    return expected.document(result, run={}, windows=expected.windows_for(result.buckets))


class FakeApi:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.tamper: tuple[int, str, str] | None = None  # (company, granularity, counter)
        self.omit_empty = True

    def series(self, company: int, granularity: str, low: str, high: str) -> dict[str, Any]:
        lo, hi = parse_time(low), parse_time(high)
        buckets = []
        for b in self.doc["buckets"]:
            if (
                b["company_id"] == company
                and b["granularity"] == granularity
                and lo <= parse_time(b["bucket_start"]) < hi
            ):
                item = {"start": b["bucket_start"].replace(".000Z", "+00:00")}
                item.update(
                    {
                        k: v
                        for k, v in b.items()
                        if k not in ("company_id", "granularity", "bucket_start")
                    }
                )
                item["cost_cents_total"] = float(
                    item["cost_cents_total"]
                )  # an API may send a number
                item["avg_duration_s"] = 1.5  # derived fields are ignored
                if self.tamper == (company, granularity, "calls_total"):
                    item["calls_total"] += 1
                    self.tamper = None
                buckets.append(item)
        return {"company_id": str(company), "granularity": granularity, "buckets": buckets}


@pytest.fixture
def api() -> Iterator[tuple[str, FakeApi]]:
    fake = FakeApi(make_doc())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's API
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            query = dict(urllib.parse.parse_qsl(url.query))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            if parts[:3] != ["api", "v1", "companies"] or parts[4] != "series":
                self.send_response(404)
                self.end_headers()
                return
            body = orjson.dumps(
                fake.series(int(parts[3]), query["granularity"], query["from"], query["to"])
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


def test_matching_series_give_no_difference(api) -> None:
    url, fake = api
    assert fake.doc["buckets"]
    assert check_api(url, TOKEN, fake.doc) == []


def test_a_wrong_counter_is_reported(api) -> None:
    url, fake = api
    company = fake.doc["buckets"][0]["company_id"]
    fake.tamper = (company, "day", "calls_total")
    diffs = check_api(url, TOKEN, fake.doc)
    assert [(d.field, d.actual - d.expected) for d in diffs] == [("calls_total", 1)]
    assert diffs[0].entity.startswith(f"api bucket {company}/day/")


def test_a_missing_bucket_counts_as_zeros(api) -> None:
    url, fake = api
    wanted = fake.doc
    victim = next(b for b in wanted["buckets"] if b["calls_total"])
    fake.doc = {
        **wanted,
        "buckets": [b for b in wanted["buckets"] if b is not victim],
    }  # API lacks it
    diffs = check_api(url, TOKEN, wanted)
    assert ("calls_total", victim["calls_total"], 0) in {
        (d.field, d.expected, d.actual) for d in diffs
    }


def test_a_refused_token_is_reported(api) -> None:
    url, fake = api
    diffs = check_api(url, "wrong", fake.doc)
    assert diffs and {d.field for d in diffs} == {"http_status"} and diffs[0].actual == 401
