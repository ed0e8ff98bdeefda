"""A canonical, id-free picture of everything the apply path writes, for comparisons."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Engine, delete, select

from pipeline.models import (
    COUNTERS,
    appointments,
    calls,
    customers,
    dashboard_buckets,
    webhook_events,
)

VOLATILE = {"id", "created_at", "updated_at"}


def statuses(engine: Engine) -> Counter[str]:
    """``webhook_events`` rows by status."""
    with engine.connect() as conn:
        return Counter(r.status for r in conn.execute(select(webhook_events.c.status)))


def db_state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        people = {r.id: (r.company_id, r.phone, r.email) for r in conn.execute(select(customers))}
        call_ids = {
            r.id: r.retell_call_id for r in conn.execute(select(calls.c.id, calls.c.retell_call_id))
        }
        customer_rows = sorted(
            (r.company_id, r.phone or "", r.email or "", r.name, r.first_seen_at, r.last_seen_at)
            for r in conn.execute(select(customers))
        )
        call_rows = {}
        for row in conn.execute(select(calls)).mappings():
            data = {k: v for k, v in row.items() if k not in VOLATILE}
            data["customer_id"] = people.get(row["customer_id"])
            call_rows[row["retell_call_id"]] = data
        appointment_rows = {}
        for row in conn.execute(select(appointments)).mappings():
            data = {k: v for k, v in row.items() if k not in VOLATILE}
            data["customer_id"] = people.get(row["customer_id"])
            data["call_id"] = call_ids.get(row["call_id"])
            appointment_rows[row["calcom_uid"]] = data
        events = sorted(
            (r.provider, r.event_id, r.event_type, r.status, r.error or "", r.company_id or 0)
            for r in conn.execute(select(webhook_events))
        )
        buckets = {
            (r.company_id, r.granularity, r.bucket_start): tuple(getattr(r, n) for n in COUNTERS)
            for r in conn.execute(select(dashboard_buckets))
        }
        # A bucket whose counters all returned to zero is the same as no bucket.
        buckets = {k: v for k, v in buckets.items() if any(v)}
    return {
        "customers": customer_rows,
        "calls": call_rows,
        "appointments": appointment_rows,
        "webhook_events": events,
        "dashboard_buckets": buckets,
    }


def clear_applied(engine: Engine) -> None:
    """Remove everything the apply path wrote; tenants stay."""
    with engine.begin() as conn:
        for table in (webhook_events, dashboard_buckets, appointments, calls, customers):
            conn.execute(delete(table))
