"""Pure parts of the analyst API: company ids have one spelling, CSV rows follow the JSON
answer number for number with local dates, and the read model answers from any lookup."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from agents.api import views
from pipeline.dashboard.tokens import Grant
from tables import dashboard

ADMIN = Grant("admin", b"", None, hashed=True)
SCOPED = Grant("scoped", b"", frozenset({1, 3}), hashed=True)


def request_for(company: str) -> Any:
    request = make_mocked_request("GET", f"/api/v1/companies/{company}/summary")
    request.match_info.update({"company_id": company})  # type: ignore[attr-defined]
    return request


@pytest.mark.parametrize("raw", ["007", "0", "²", "١", "1a", " 1", "-1", "9" * 19, "", "1.0"])
def test_company_ids_other_than_plain_decimal_are_400(raw: str) -> None:
    with pytest.raises(views.Refused) as refused:
        views.company_in_scope(request_for(raw), ADMIN)
    assert refused.value.response.status == 400


def test_outside_the_scope_is_the_404_of_a_missing_company() -> None:
    assert views.company_in_scope(request_for("3"), SCOPED) == 3
    with pytest.raises(views.Refused) as refused:
        views.company_in_scope(request_for("2"), SCOPED)
    assert refused.value.response.status == 404
    assert refused.value.response.body == views._not_found().response.body


def test_series_csv_has_local_dates_and_numbers_as_numbers() -> None:
    starts = [datetime(2026, 11, 27, 8), datetime(2026, 11, 28, 8)]
    counters = {
        dashboard.BucketKey(1, "day", starts[0]): {
            "calls_total": 3,
            "calls_connected": 2,
            "calls_inbound_connected": 2,
            "calls_booked": 1,
            "duration_ms_total": 120_000,
            "cost_cents_total": "12.3400",
            "appointments_booked": 1,
        }
    }
    buckets = dashboard.series(1, "day", starts, dashboard.stored(counters))
    body = {"granularity": "day", "buckets": buckets}
    rows = list(csv.reader(io.StringIO(dashboard.series_csv(body, "America/Los_Angeles").decode())))
    header, first, second = rows
    assert header[:2] == ["bucket_start_utc", "local_date"]
    assert first[:2] == ["2026-11-27T08:00:00Z", "2026-11-27"]
    row = dict(zip(header, first, strict=True))
    assert row["calls_total"] == "3" and row["cost_cents_total"] == "12.34"
    assert row["avg_duration_s"] == "60.0" and row["booking_conversion"] == "0.5"
    empty = dict(zip(header, second, strict=True))
    assert empty["calls_total"] == "0" and empty["avg_duration_s"] == ""


def test_hour_rows_carry_the_local_time_with_its_offset() -> None:
    # 1 November 2026 in Los Angeles: 01:00 happens twice, in PDT and then in PST.
    starts = [datetime(2026, 11, 1, 8), datetime(2026, 11, 1, 9)]
    body = {
        "granularity": "hour",
        "buckets": dashboard.series(1, "hour", starts, dashboard.stored({})),
    }
    rows = list(csv.reader(io.StringIO(dashboard.series_csv(body, "America/Los_Angeles").decode())))
    assert rows[0][1] == "local_start"
    assert [r[1] for r in rows[1:]] == ["2026-11-01T01:00-07:00", "2026-11-01T01:00-08:00"]
