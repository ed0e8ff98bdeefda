"""What a breakdown (``group_by``) costs today: it is recounted from the rows of the range.

Fills a scratch database with one company of ``--branches`` branches and ``--calls-per-day``
ended, analysed calls a day for 30 days (plus a booking for every fifth call), then times,
in this process and against the same database:

* ``buckets``: what a plain summary reads in a fallback, the 31 stored buckets
  (``tables.fallback.read_buckets``), the baseline;
* ``branch``: the 30-day per-branch recount (``reconcile.read_groups``), what
  ``summary?group_by=branch`` runs;
* ``agent``: the same per agent (bookings joined to their calls).

Reports medians and their ratio to the baseline, measured in the same run (the machine is
shared: compare ratios, not milliseconds across runs).

    python -m bench.breakdown_bench [--calls-per-day 200] [--branches 4] [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert

from pipeline import database
from pipeline.dashboard import reconcile
from pipeline.dashboard.aggregates import DAY, HOUR, hour_start
from pipeline.models import appointments, branches, calls, companies, webhook_events
from pipeline.settings import load_settings
from tables.dashboard import summary_keys
from tables.fallback import read_buckets
from testbed.databases import create_scratch_database, drop_scratch_database

PREFIX = "switchboard_bench_breakdown_"
TZ = "America/Los_Angeles"


def fill(engine: object, calls_per_day: int, n_branches: int, now: datetime) -> None:
    rng = random.Random(5)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(insert(companies), [{"id": 1, "name": "Bench", "timezone": TZ}])
        conn.execute(
            insert(branches),
            [
                {
                    "id": b,
                    "company_id": 1,
                    "name": f"branch {b}",
                    "phone_number": f"+1415555{b:04d}",
                    "retell_agent_id": f"agent_{b}",
                }
                for b in range(1, n_branches + 1)
            ],
        )
        call_rows, event_rows, appt_rows = [], [], []
        for n in range(calls_per_day * 30):
            at = now - timedelta(seconds=rng.randrange(30 * 86400))
            branch = rng.randint(1, n_branches)
            cid = f"call_{n}"
            call_rows.append(
                {
                    "id": n + 1,
                    "retell_call_id": cid,
                    "company_id": 1,
                    "branch_id": branch,
                    "agent_id": f"agent_{branch}",
                    "direction": "inbound",
                    "started_at": at,
                    "ended_at": at + timedelta(minutes=3),
                    "duration_ms": 180_000,
                    "cost_cents": Decimal("12.5"),
                    "sentiment": "Positive",
                    "successful": True,
                }
            )
            for kind in ("call_ended", "call_analyzed"):
                event_rows.append(
                    {
                        "provider": "retell",
                        "event_id": f"{kind}:{cid}",
                        "event_type": kind,
                        "company_id": 1,
                        "kafka_topic": "bench",
                        "kafka_partition": 0,
                        "kafka_offset": len(event_rows),
                        "payload_sha256": "0" * 64,
                        "status": "applied",
                    }
                )
            if n % 5 == 0:
                appt_rows.append(
                    {
                        "calcom_uid": f"bk_{n}",
                        "company_id": 1,
                        "branch_id": branch,
                        "call_id": n + 1,
                        "retell_call_id": cid,
                        "status": "scheduled",
                        "booked_at": at + timedelta(minutes=2),
                    }
                )
        for rows, table in (
            (call_rows, calls),
            (event_rows, webhook_events),
            (appt_rows, appointments),
        ):
            for i in range(0, len(rows), 2000):
                conn.execute(insert(table), rows[i : i + 2000])


def median_ms(work: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls-per-day", type=int, default=200)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    settings = create_scratch_database(load_settings(os.environ), PREFIX)
    engine = database.create_db_engine(settings, pool_size=2)
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        fill(engine, args.calls_per_day, args.branches, now)
        keys = summary_keys(1, TZ, now)
        until = now + timedelta(seconds=1)
        lo_day = keys[-1].bucket_start

        def groups(dimension: str) -> None:
            reconcile.read_groups(engine, 1, TZ, dimension, HOUR, hour_start(now), until)
            reconcile.read_groups(engine, 1, TZ, dimension, DAY, lo_day, until)

        base = median_ms(lambda: read_buckets(engine, keys), args.repeat)
        branch = median_ms(lambda: groups("branch"), args.repeat)
        agent = median_ms(lambda: groups("agent"), args.repeat)
        total = args.calls_per_day * 30
        print(
            f"one company, {total} calls and {total // 5} bookings over 30 days, "
            f"{args.branches} branches; median of {args.repeat}"
        )
        print(f"  buckets (31 stored rows)      {base:8.1f} ms   1.0x")
        print(f"  group_by=branch (recount)     {branch:8.1f} ms  {branch / base:5.1f}x")
        print(f"  group_by=agent  (recount)     {agent:8.1f} ms  {agent / base:5.1f}x")
    finally:
        engine.dispose()
        drop_scratch_database(settings, PREFIX)


if __name__ == "__main__":
    main()
