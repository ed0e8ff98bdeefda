"""Benchmark 3: the analyst summary read, table key lookups vs a SQL scan per read.

Setup: a fresh database with a few companies; calls spread over the last 30 days (each
``call_ended`` and ``call_analyzed``) plus bookings and cancellations, loaded with
``apply_batch`` in batches of 500; the bucket snapshots those transactions return (the
latest version of each bucket) are published to this run's snapshot topic, and a real
``switchboard worker`` (started with ``testbed/services.py``) reads them into its
dashboard table, as it would have after applying the events itself.

Then, before anything is timed, every company's summary from the worker's API is compared
with the one the SQL computes: the comparison only means something if both give the same
answer. Timed, one request at a time, round-robin over the companies:

* ``GET /api/v1/companies/{id}/summary`` on the worker (table key lookups) — Switchboard;
* the same route on the baseline server, which runs :mod:`bench.old_summary` (aggregate
  queries over ``calls``/``appointments``) inside the request — the baseline, same HTTP
  stack shape (aiohttp), so the ratio compares the read paths;
* the SQL alone, in this process (no HTTP), and ``tables.dashboard.summary`` alone over an
  in-memory dict of the same bucket values (no HTTP, no Faust): what each read path costs
  by itself.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine, text

from bench import harness, loadgen, old_summary, servers, workload
from bench.harness import ANALYST_TOKEN, Latency
from pipeline.apply.batch import apply_batch
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.snapshots import company_key, encode, table_key, table_value
from pipeline.kafka import kafka_options
from pipeline.settings import Settings
from pipeline.topics import SNAPSHOTS
from tables import dashboard
from testbed.services import Service, free_port, running

DAY_MS = 86_400_000
LOAD_BATCH = 500


@dataclass(frozen=True, slots=True)
class Plan:
    calls: int
    companies: int
    requests: int
    in_process_reads: int


@dataclass
class Measurement:
    name: str
    path: str
    latency: Latency
    statuses: dict[int, int] = field(default_factory=dict)


@dataclass
class DashboardResult:
    plan: Plan
    events: int
    rows: dict[str, int]
    buckets: int
    load_seconds: float
    agreement: dict[int, str]  # company → "same" or what differs
    measurements: list[Measurement]

    def get(self, name: str) -> Measurement:
        return next(m for m in self.measurements if m.name == name)


def run(base: Settings, plan: Plan) -> DashboardResult:
    items = workload.tenants(plan.companies)
    now_ms = time.time_ns() // 1_000_000
    deliveries = workload.events(
        items, plan.calls, end_ms=now_ms, span_ms=29 * DAY_MS, seed=31, with_started=False
    )
    records = workload.records(deliveries)
    with (
        harness.bench_topics(base, partitions=3) as with_topics,
        harness.bench_database(with_topics) as (settings, engine),
        tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp,
    ):
        log_dir = Path(tmp)
        settings = settings.with_(worker_port=free_port(), data_dir=log_dir / "data")
        workload.seed_tenants(engine, items)
        worker = servers.worker(settings, log_dir)
        starting = _start_in_background(worker)  # Faust takes a while; load meanwhile
        try:
            started = time.perf_counter()
            latest: dict[BucketKey, BucketSnapshot] = {}
            for i in range(0, len(records), LOAD_BATCH):
                for snap in apply_batch(engine, records[i : i + LOAD_BATCH]).snapshots:
                    if snap.key not in latest or latest[snap.key].version < snap.version:
                        latest[snap.key] = snap
            load_seconds = time.perf_counter() - started
            rows = _row_counts(engine)
            print(
                f"  dashboard: loaded {len(records)} events ({rows}) in {load_seconds:.1f}s; "
                f"{len(latest)} buckets",
                flush=True,
            )
            asyncio.run(_publish(settings, list(latest.values())))
            starting.join()
            if starting.error is not None:
                raise starting.error
            api = f"http://{settings.worker_host}:{settings.worker_port}"
            agreement = _await_table(api, engine, [c.id for c in items])
            baseline = servers.BaselineServer(settings, free_port(), log_dir)
            with running(baseline):
                old_way = f"http://127.0.0.1:{baseline.port}"
                measurements = _measure(api, old_way, engine, items, latest, plan)
        finally:
            starting.join()
            worker.stop()
    return DashboardResult(
        plan, len(records), rows, len(latest), load_seconds, agreement, measurements
    )


class _Starter(threading.Thread):
    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.service.start(timeout_s=120)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            self.error = exc


def _start_in_background(service: Service) -> _Starter:
    starter = _Starter(service)
    starter.start()
    return starter


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
            for t in ("calls", "appointments", "customers", "webhook_events")
        }


async def _publish(settings: Settings, snapshots: list[BucketSnapshot]) -> None:
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.topic(SNAPSHOTS), key=company_key(s.key.company_id), value=encode(s)
            )
            for s in snapshots
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _sql_summary(engine: Engine, company: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        return old_summary.summary(conn, company, datetime.now(UTC).replace(tzinfo=None))


def _differences(api: dict[str, Any] | None, sql: dict[str, Any] | None) -> list[str]:
    if api is None or sql is None:
        return [
            f"api={'missing' if api is None else 'ok'} sql={'missing' if sql is None else 'ok'}"
        ]
    out = []
    for window, counters in sql["windows"].items():
        for name, expected in counters.items():
            got = api["windows"].get(window, {}).get(name)
            if expected is None or got is None:
                if expected != got:
                    out.append(f"{window}.{name}: api {got} sql {expected}")
            elif abs(float(got) - float(expected)) > 1e-6 * max(1.0, abs(float(expected))):
                out.append(f"{window}.{name}: api {got} sql {expected}")
    return out


def _await_table(
    api: str, engine: Engine, companies: list[int], timeout_s: float = 90.0
) -> dict[int, str]:
    """Wait until the worker's summaries equal the SQL's (the table has every snapshot)."""
    headers = {"Authorization": f"Bearer {ANALYST_TOKEN}"}
    deadline = time.monotonic() + timeout_s
    while True:
        agreement: dict[int, str] = {}
        for company in companies:
            status, body = asyncio.run(
                _get_json(f"{api}/api/v1/companies/{company}/summary", headers)
            )
            if status != 200:
                agreement[company] = f"HTTP {status}"
                continue
            diffs = _differences(body, _sql_summary(engine, company))
            agreement[company] = "same" if not diffs else "; ".join(diffs[:5])
        if all(v == "same" for v in agreement.values()) or time.monotonic() > deadline:
            print(f"  dashboard: worker vs SQL summaries: {agreement}", flush=True)
            return agreement
        time.sleep(1.0)


async def _get_json(url: str, headers: dict[str, str]) -> tuple[int | None, Any]:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url, headers=headers) as response:
                body = await response.json() if response.status == 200 else None
                return response.status, body
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None, None


def _measure(
    api: str,
    baseline: str,
    engine: Engine,
    items: tuple[workload.BenchCompany, ...],
    latest: dict[BucketKey, BucketSnapshot],
    plan: Plan,
) -> list[Measurement]:
    companies = [c.id for c in items]
    path = "/api/v1/companies/{id}/summary"
    urls = [path.format(id=companies[i % len(companies)]) for i in range(plan.requests)]
    headers = {"Authorization": f"Bearer {ANALYST_TOKEN}"}
    out = []
    for name, host in (("table_http", api), ("sql_http", baseline)):
        warm = [host + u for u in urls[: min(20, len(urls))]]
        asyncio.run(loadgen.get_many(warm, headers))
        latencies, statuses = asyncio.run(loadgen.get_many([host + u for u in urls], headers))
        out.append(
            Measurement(name, "HTTP GET " + path, Latency.of_seconds(latencies), dict(statuses))
        )
        _print(out[-1])

    seconds = []
    for i in range(plan.requests):
        company = companies[i % len(companies)]
        started = time.perf_counter()
        _sql_summary(engine, company)
        seconds.append(time.perf_counter() - started)
    out.append(
        Measurement(
            "sql_direct", "bench.old_summary.summary() in process", Latency.of_seconds(seconds)
        )
    )
    _print(out[-1])

    values = {table_key(k): table_value(s) for k, s in latest.items()}
    timezones = {c.id: c.timezone for c in items}
    seconds = []
    for i in range(plan.in_process_reads):
        company = companies[i % len(companies)]
        started = time.perf_counter()
        dashboard.summary(
            company, timezones[company], datetime.now(UTC).replace(tzinfo=None), values.get
        )
        seconds.append(time.perf_counter() - started)
    out.append(
        Measurement(
            "table_direct", "tables.dashboard.summary() over a dict", Latency.of_seconds(seconds)
        )
    )
    _print(out[-1])
    return out


def _print(m: Measurement) -> None:
    print(
        f"  dashboard {m.name:<12} n={m.latency.count:<6} p50 {m.latency.p50:.3f} ms  "
        f"p99 {m.latency.p99:.3f} ms  {m.statuses or ''}",
        flush=True,
    )
