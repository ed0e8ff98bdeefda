"""The dashboard summary computed the old way: aggregate queries over ``calls`` and
``appointments`` on every read (the baseline of the dashboard benchmark).

It answers the same question as ``tables.dashboard.summary`` (docs/analyst.md: the current hour,
today in the company's time zone, the last 7 and 30 local days) with the same window
starts and the same counting rules (docs/data-model.md), so the two can be checked against
each other before they are timed. The windows are computed exactly as the table reader
computes them; only the counting differs: a ``GROUP BY`` scan of the company's rows here,
key lookups in the table there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from pipeline.dashboard.aggregates import day_start, derived, empty_counters, hour_start
from pipeline.models import COUNTERS

WINDOWS = ("last_hour", "today", "last_7_days", "last_30_days")
CALL_TIME = "COALESCE(started_at, ended_at, last_event_at)"
# A call counts once its call_ended was applied; on these rows that means a final status.
FINAL = "status IN ('ended', 'not_connected', 'error')"
INBOUND = "(direction <> 'outbound' OR direction IS NULL)"
# booking_conversion's numerator: a booking of the company names the call.
BOOKED = (
    "EXISTS (SELECT 1 FROM appointments a WHERE a.company_id = c.company_id"
    " AND a.retell_call_id = c.retell_call_id AND a.booked_at IS NOT NULL)"
)

CALL_EXPRESSIONS = {
    "calls_total": "1",
    "calls_inbound": "direction <> 'outbound' OR direction IS NULL",
    "calls_outbound": "direction = 'outbound'",
    "calls_connected": "started_at IS NOT NULL",
    "calls_inbound_connected": f"started_at IS NOT NULL AND {INBOUND}",
    "calls_booked": f"started_at IS NOT NULL AND {INBOUND} AND {BOOKED}",
    "calls_not_connected": "started_at IS NULL",
    "calls_voicemail": "disconnection_reason = 'voicemail_reached'",
    "calls_transferred": "disconnection_reason = 'call_transfer' OR transfer_destination IS NOT NULL",
    "calls_successful": "successful = 1",
    "sentiment_positive": "LOWER(sentiment) = 'positive'",
    "sentiment_neutral": "LOWER(sentiment) = 'neutral'",
    "sentiment_negative": "LOWER(sentiment) = 'negative'",
}
APPOINTMENT_COLUMNS = {
    "appointments_booked": "booked_at",
    "appointments_cancelled": "cancelled_at",
    "appointments_rescheduled": "rescheduled_at",
    "appointments_no_show": "no_show_at",
}


def window_starts(now: datetime, timezone: str | None) -> dict[str, datetime]:
    """The same window starts as ``tables.dashboard.summary``."""
    day = day_start(now, timezone)
    days = [day]
    for _ in range(29):
        day = day_start(day - timedelta(hours=12), timezone)
        days.append(day)
    return {
        "last_hour": hour_start(now),
        "today": days[0],
        "last_7_days": days[6],
        "last_30_days": days[29],
    }


def _calls_sql() -> str:
    columns = []
    for w in WINDOWS:
        for name, condition in CALL_EXPRESSIONS.items():
            columns.append(
                f"SUM(CASE WHEN t >= :{w} AND ({condition}) THEN 1 ELSE 0 END) AS {w}__{name}"
            )
        columns.append(
            f"SUM(CASE WHEN t >= :{w} THEN COALESCE(duration_ms, 0) ELSE 0 END) AS {w}__duration_ms_total"
        )
        columns.append(
            f"SUM(CASE WHEN t >= :{w} THEN COALESCE(cost_cents, 0) ELSE 0 END) AS {w}__cost_cents_total"
        )
    return (
        f"SELECT company_id, {', '.join(columns)} FROM ("
        f" SELECT *, {CALL_TIME} AS t FROM calls"
        f" WHERE company_id = :company AND {FINAL}) AS c"
        " WHERE t >= :last_30_days GROUP BY company_id"
    )


def _appointments_sql() -> str:
    columns = [
        f"SUM(CASE WHEN {column} >= :{w} THEN 1 ELSE 0 END) AS {w}__{name}"
        for w in WINDOWS
        for name, column in APPOINTMENT_COLUMNS.items()
    ]
    columns += [
        f"SUM(CASE WHEN booked_at >= :{w} AND COALESCE(retell_call_id, '') = '' THEN 1 ELSE 0 END)"
        f" AS {w}__appointments_without_call"
        for w in WINDOWS
    ]
    recent = " OR ".join(f"{c} >= :last_30_days" for c in APPOINTMENT_COLUMNS.values())
    return (
        f"SELECT company_id, {', '.join(columns)} FROM appointments"
        f" WHERE company_id = :company AND ({recent}) GROUP BY company_id"
    )


CALLS_SQL = text(_calls_sql())
APPOINTMENTS_SQL = text(_appointments_sql())
TIMEZONE_SQL = text("SELECT timezone FROM companies WHERE id = :company")


def summary(conn: Connection, company_id: int, now: datetime) -> dict[str, Any] | None:
    """The docs/analyst.md summary body, by scanning rows; None when the company has no data."""
    timezone = conn.execute(TIMEZONE_SQL, {"company": company_id}).scalar()
    params: dict[str, Any] = {"company": company_id, **window_starts(now, timezone)}
    calls = conn.execute(CALLS_SQL, params).mappings().first()
    appointments = conn.execute(APPOINTMENTS_SQL, params).mappings().first()
    if calls is None and appointments is None:
        return None
    windows = {}
    for w in WINDOWS:
        counters: dict[str, Any] = empty_counters()
        for row in (calls, appointments):
            if row is None:
                continue
            for name in COUNTERS:
                value = row.get(f"{w}__{name}")
                if value is not None:
                    counters[name] = Decimal(value) if name == "cost_cents_total" else int(value)
        rendered: dict[str, Any] = {
            n: float(v) if isinstance(v, Decimal) else v for n, v in counters.items()
        }
        rendered.update(derived(counters))
        windows[w] = rendered
    return {
        "company_id": str(company_id),
        "as_of": now.isoformat(timespec="seconds") + "Z",
        "windows": windows,
    }
