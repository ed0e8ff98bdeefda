"""``switchboard dashboard``: the table it prints, and the one-line errors of the analyst API
client, against a stand-in HTTP server (the real worker is in the integration tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import cli, register_commands
from pipeline.cli.analyst import summary_table
from pipeline.dashboard.analyst_api import AnalystApiError, AnalystClient
from pipeline.models import COUNTERS
from testbed.processes import free_port

WINDOWS = ("last_hour", "today", "last_7_days", "last_30_days")


def window(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {n: 0 for n in COUNTERS}
    out.update(cost_cents_total=0.0, avg_duration_s=None, booking_conversion=None)
    out.update(values)
    return out


SUMMARY = {
    "company_id": "7",
    "as_of": "2026-11-28T16:20:05Z",
    "windows": {
        "last_hour": window(),
        "today": window(
            calls_total=3,
            calls_connected=2,
            cost_cents_total=64.2375,
            avg_duration_s=95.25,
            booking_conversion=0.5,
        ),
        "last_7_days": window(calls_total=12),
        "last_30_days": window(calls_total=40, duration_ms_total=1234567),
    },
}


def test_summary_table_has_a_row_per_counter_and_a_column_per_window() -> None:
    lines = summary_table(SUMMARY)
    assert lines[0] == "company 7  as of 2026-11-28T16:20:05Z"
    assert lines[2].split() == list(WINDOWS)
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:] if line.strip()}
    assert set(rows) == {*COUNTERS, "avg_duration_s", "booking_conversion"}
    assert rows["calls_total"] == ["0", "3", "12", "40"]
    assert rows["duration_ms_total"][3] == "1234567"
    assert rows["cost_cents_total"] == ["0.00", "64.24", "0.00", "0.00"]
    assert rows["avg_duration_s"] == ["-", "95.2", "-", "-"]  # no connected calls: no average
    assert rows["booking_conversion"] == ["-", "50.0%", "-", "-"]


class Stub(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, Any]] = {}
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
        status, body = Stub.answers.get(self.path.split("?")[0], (404, {"error": "not_found"}))
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Stub.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("status", "needle"),
    [
        (401, "refused the token (check --token or SWITCHBOARD_ANALYST_TOKENS) (HTTP 401)"),
        (404, "no data for this company (or not one this token may read) (HTTP 404)"),
        (503, "still recovering its tables; retry in a few seconds (HTTP 503)"),
        (500, "answered with an error (HTTP 500)"),
    ],
)
def test_client_errors_are_one_actionable_line(stub: str, status: int, needle: str) -> None:
    Stub.answers = {"/api/v1/companies/7/summary": (status, {"error": "x", "detail": "d"})}
    with pytest.raises(AnalystApiError) as caught:
        AnalystClient(stub, "secret-token").summary(7)
    assert needle in caught.value.detail and caught.value.status == status
    assert "secret-token" not in caught.value.detail
    assert Stub.seen[-1]["auth"] == "Bearer secret-token"


def test_series_sends_utc_times_without_a_plus(stub: str) -> None:
    from datetime import datetime

    Stub.answers = {"/api/v1/companies/7/series": (200, {"buckets": []})}
    AnalystClient(stub, "t").series(
        7, "hour", datetime(2026, 11, 28, 10), datetime(2026, 11, 28, 12)
    )
    assert Stub.seen[-1]["path"] == (
        "/api/v1/companies/7/series?granularity=hour&from=2026-11-28T10%3A00%3A00Z"
        "&to=2026-11-28T12%3A00%3A00Z"
    )


def test_unreachable_worker() -> None:
    with pytest.raises(AnalystApiError, match="worker unreachable at http://127.0.0.1:"):
        AnalystClient(f"http://127.0.0.1:{free_port()}", "t").summary(1)


def test_dashboard_command_prints_the_table_or_one_line(stub: str) -> None:
    register_commands()
    runner = CliRunner()
    env = {"SWITCHBOARD_ANALYST_TOKENS": "tok-a,tok-b"}
    Stub.answers = {"/api/v1/companies/7/summary": (200, SUMMARY)}
    done = runner.invoke(cli, ["dashboard", "7", "--worker-url", stub], env=env)
    assert done.exit_code == 0, done.output
    assert "calls_total" in done.output and "50.0%" in done.output
    assert Stub.seen[-1]["auth"] == "Bearer tok-a"  # the first configured token
    missing = runner.invoke(cli, ["dashboard", "8", "--worker-url", stub], env=env)
    assert missing.exit_code == 1
    assert missing.output.strip() == (
        "switchboard: no data for company 8 in the last 30 days (HTTP 404)"
    )
    bare = runner.invoke(
        cli, ["dashboard", "7", "--worker-url", stub], env={"SWITCHBOARD_ANALYST_TOKENS": ""}
    )
    assert bare.exit_code != 0 and "token" in bare.output
