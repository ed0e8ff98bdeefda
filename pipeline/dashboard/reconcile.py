"""``switchboard reconcile``: recount the dashboard from MySQL rows, report drift in
``dashboard_buckets`` and in the Faust table (through the analyst API), and repair both.

Per company, one ``REPEATABLE READ`` transaction reads the recount and the stored rows
from the same snapshot, so a worker applying events meanwhile cannot show up as drift.
Reads are set-based and streamed (three statements per company, whatever its size).

``--fix`` (docs/analyst.md, "reconcile") works in two transactions per company:

1. *rewrite*: lock the company's in-scope ``dashboard_buckets`` range (``SELECT ... FOR
   UPDATE``: rows and gaps, so a concurrent apply batch waits), recount from a snapshot
   taken after the lock (so it excludes exactly the batches still waiting), and upsert the
   wrong rows with the true values and ``version + 1``; rows that should be empty are set
   to zero, never deleted (versions only grow). A waiting batch then adds its deltas on
   top of true values.
2. *publish*: lock the range again, read every row, and publish each as a forced snapshot
   (``encode(snapshot, force=True)``), plus a forced tombstone for every in-scope bucket
   that has no row; await Kafka's acks (``acks=all``) before committing. Holding the lock
   while publishing means no worker can publish a newer snapshot of these buckets before
   ours, so forcing cannot roll the table back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import Connection, Engine, and_, case, func, or_, select
from sqlalchemy.exc import DBAPIError

from pipeline import topics
from pipeline.dashboard import buckets, drift
from pipeline.dashboard.aggregates import (
    APPOINTMENT_MARKS,
    DAY,
    DIMENSIONS,
    HOUR,
    BucketKey,
    BucketSnapshot,
)
from pipeline.dashboard.analyst_api import AnalystApiError, AnalystClient, iso
from pipeline.dashboard.counters import Counters
from pipeline.dashboard.drift import Drift, Scope
from pipeline.dashboard.snapshots import company_key, encode, reset_message
from pipeline.database import is_transient
from pipeline.errors import DatabaseUnavailable, KafkaUnavailable, SwitchboardError
from pipeline.kafka import kafka_options
from pipeline.models import (
    appointments,
    calls,
    companies,
    dashboard_buckets,
    dashboard_group_buckets,
    webhook_events,
)
from pipeline.providers import retell
from pipeline.settings import Settings

STREAM_CHUNK = 5000
# The analyst API serves at most 336 hour / 400 day buckets per request.
API_CHUNK = {HOUR: timedelta(hours=300), DAY: timedelta(days=300)}
LOCK_RETRIES = 3
API_RETRY_S = 60.0  # how long read_api waits out a table that answers 503


@dataclass(frozen=True, slots=True)
class Stored:
    counters: Counters
    version: int


@dataclass
class CompanyReport:
    company_id: int
    timezone: str
    buckets: int = 0  # in-scope buckets that hold anything in any source
    mysql: list[Drift] = field(default_factory=list)
    api: list[Drift] | None = None  # None: the API was not consulted
    rewritten: int = 0
    published: int = 0
    tombstones: int = 0

    @property
    def drifts(self) -> list[Drift]:
        return self.mysql + (self.api or [])


@dataclass
class Report:
    scope: Scope
    companies: list[CompanyReport]
    fixed: bool = False
    after: list[CompanyReport] | None = None  # the re-check after --fix
    converged: bool | None = None

    @property
    def drift_found(self) -> bool:
        return any(c.drifts for c in self.companies)

    @property
    def ok(self) -> bool:
        if not self.fixed:
            return not self.drift_found
        return self.converged is not False and not any(c.drifts for c in self.after or [])


# --- reads --------------------------------------------------------------------------------


def company_timezones(conn: Connection, ids: Sequence[int] | None) -> dict[int, str]:
    """Timezone of each company to reconcile (``None``: every company, including ids that
    only ``dashboard_buckets`` still mentions). Unknown explicit ids are an error."""
    query = select(companies.c.id, companies.c.timezone)
    if ids is not None:
        query = query.where(companies.c.id.in_(sorted(set(ids))))
    found = {int(r.id): r.timezone or "UTC" for r in conn.execute(query)}
    if ids is None:
        orphans = conn.execute(select(dashboard_buckets.c.company_id).distinct()).scalars()
        for company in orphans:
            found.setdefault(int(company), "UTC")
    else:
        missing = sorted(set(ids) - set(found))
        if missing:
            raise SwitchboardError(f"unknown company id(s): {', '.join(map(str, missing))}")
    return dict(sorted(found.items()))


def _call_rows(
    conn: Connection, company_id: int, lo: datetime, hi: datetime
) -> Iterator[Mapping[str, Any]]:
    ended = webhook_events.alias("ended_event")
    analyzed = webhook_events.alias("analyzed_event")

    def joined(alias: Any, kind: str) -> Any:
        return and_(
            alias.c.provider == retell.NAME,
            alias.c.event_id == func.concat(f"{kind}:", calls.c.retell_call_id),
            alias.c.status == "applied",
        )

    at = func.coalesce(calls.c.started_at, calls.c.ended_at, calls.c.last_event_at)
    naming = appointments.alias("naming")
    booked = (
        select(naming.c.id)
        .where(
            naming.c.retell_call_id == calls.c.retell_call_id,
            naming.c.company_id == calls.c.company_id,
            naming.c.booked_at.is_not(None),
        )
        .exists()
    )
    query = (
        select(
            calls.c.company_id,
            calls.c.started_at,
            calls.c.ended_at,
            calls.c.last_event_at,
            calls.c.direction,
            calls.c.disconnection_reason,
            calls.c.transfer_destination,
            calls.c.duration_ms,
            calls.c.cost_cents,
            calls.c.successful,
            calls.c.sentiment,
            calls.c.branch_id,
            calls.c.agent_id,
            case((ended.c.id.is_not(None), 1), else_=0).label("ended_applied"),
            case((analyzed.c.id.is_not(None), 1), else_=0).label("analyzed_applied"),
            case((booked, 1), else_=0).label("booked"),
        )
        .select_from(
            calls.outerjoin(ended, joined(ended, "call_ended")).outerjoin(
                analyzed, joined(analyzed, "call_analyzed")
            )
        )
        .where(
            calls.c.company_id == company_id,
            at >= lo,
            at < hi,
            or_(ended.c.id.is_not(None), analyzed.c.id.is_not(None)),
        )
    )
    yield from _stream(conn, query)


def _appointment_rows(
    conn: Connection, company_id: int, lo: datetime, hi: datetime
) -> Iterator[Mapping[str, Any]]:
    marks = [appointments.c[column] for column, _ in APPOINTMENT_MARKS]
    query = select(
        appointments.c.company_id,
        appointments.c.branch_id,
        appointments.c.retell_call_id,
        *marks,
    ).where(
        appointments.c.company_id == company_id,
        or_(*[and_(mark >= lo, mark < hi) for mark in marks]),
    )
    yield from _stream(conn, query)


def _stream(conn: Connection, query: Any) -> Iterator[Mapping[str, Any]]:
    """Rows in chunks from a server-side cursor: memory stays flat however many rows."""
    result = conn.execute(query.execution_options(stream_results=True, yield_per=STREAM_CHUNK))
    yield from cast(Iterator[Mapping[str, Any]], result.mappings())


def read_truth(
    conn: Connection, company_id: int, timezone: str, scope: Scope
) -> dict[BucketKey, Counters]:
    lo, hi = scope.row_window(timezone)
    totals = drift.recount(
        _call_rows(conn, company_id, lo, hi),
        _appointment_rows(conn, company_id, lo, hi),
        timezone=timezone,
    )
    return drift.in_scope(totals, scope, timezone)


def read_stored(
    conn: Connection, company_id: int, timezone: str, scope: Scope, *, lock: bool = False
) -> dict[BucketKey, Stored]:
    """The company's in-scope rows of ``dashboard_buckets`` and of the breakdown groups in
    ``dashboard_group_buckets`` (locked in that order with ``lock``: the apply path writes
    them in the same order, so the two cannot deadlock)."""
    lo, hi = scope.bucket_window(timezone)
    out = {}
    for table in (dashboard_buckets, dashboard_group_buckets):
        query = select(table).where(
            table.c.company_id == company_id,
            table.c.granularity.in_(scope.granularities),
            table.c.bucket_start >= lo,
            table.c.bucket_start < hi,
        )
        if lock:
            query = query.order_by(*table.primary_key.columns).with_for_update()
        for row in conn.execute(query).mappings():
            key = buckets.key_of(row)
            if scope.contains(key, timezone):
                out[key] = Stored(
                    drift.normalized(cast(Mapping[str, Any], row)), int(row["version"])
                )
    return out


def read_api(
    client: AnalystClient, company_id: int, timezone: str, scope: Scope
) -> dict[BucketKey, Counters]:
    """The table's buckets of the company and of its breakdown groups, through the API
    (``source=table``: never the MySQL fallback)."""
    out: dict[BucketKey, Counters] = {}
    for granularity in scope.granularities:
        starts = list(scope.bucket_starts(granularity, timezone))
        if not starts:
            continue
        chunk_start = starts[0]
        while chunk_start < scope.end:
            chunk_end = min(chunk_start + API_CHUNK[granularity], scope.end)
            for dimension in DIMENSIONS:
                body = _table_series(
                    client, company_id, granularity, chunk_start, chunk_end, dimension
                )
                found = drift.api_buckets(company_id, granularity, body)
                for group in body.get("groups", []):
                    found.update(
                        drift.api_buckets(
                            company_id, granularity, group, dimension, str(group["id"])
                        )
                    )
                out.update({k: v for k, v in found.items() if scope.contains(k, timezone)})
            chunk_start = chunk_end
    return out


def _table_series(
    client: AnalystClient,
    company_id: int,
    granularity: str,
    start: datetime,
    end: datetime,
    dimension: str,
) -> dict[str, Any]:
    """One series of the table itself. A 503 (the table is recovering or the group
    rebalancing: a worker that just started, a member that left) is waited out for up to
    API_RETRY_S; a 404 means the worker knows nothing of this company."""
    deadline = time.monotonic() + API_RETRY_S
    while True:
        try:
            return client.series(
                company_id, granularity, start, end, table_only=True, group_by=dimension
            )
        except AnalystApiError as exc:
            if exc.status == 404:
                return {}
            if exc.status != 503 or time.monotonic() >= deadline:
                raise
            time.sleep(2.0)


def _repeatable(engine: Engine) -> Connection:
    return engine.connect().execution_options(isolation_level="REPEATABLE READ")


def check_company(
    engine: Engine,
    company_id: int,
    timezone: str,
    scope: Scope,
    client: AnalystClient | None,
) -> CompanyReport:
    with _repeatable(engine) as conn, conn.begin():
        truth = read_truth(conn, company_id, timezone, scope)
        stored = read_stored(conn, company_id, timezone, scope)
    report = CompanyReport(company_id, timezone)
    stored_counters = {k: s.counters for k, s in stored.items()}
    report.mysql = drift.diff("mysql", truth, stored_counters)
    seen = drift.non_zero_keys(truth, stored_counters)
    if client is not None:
        table = read_api(client, company_id, timezone, scope)
        report.api = drift.diff("api", truth, table)
        seen |= drift.non_zero_keys(table)
    report.buckets = len(seen)
    return report


# --- repairs ------------------------------------------------------------------------------


def rewrite_company(
    engine: Engine, company_id: int, timezone: str, scope: Scope, now: datetime
) -> int:
    """Phase 1 of ``--fix``: the wrong rows of one company, rewritten in one transaction."""
    with _repeatable(engine) as conn, conn.begin():
        stored = read_stored(conn, company_id, timezone, scope, lock=True)
        truth = read_truth(conn, company_id, timezone, scope)
        plan = drift.plan_fix(truth, {k: s.counters for k, s in stored.items()})
        if plan:
            write_buckets(conn, plan, now)
        return len(plan)


def write_buckets(conn: Connection, plan: Mapping[BucketKey, Counters], now: datetime) -> None:
    """Absolute values: insert missing rows at version 1, overwrite others with version + 1."""
    buckets.overwrite(conn, plan, now)


async def publish_company(
    engine: Engine,
    producer: AIOKafkaProducer,
    topic: str,
    company_id: int,
    timezone: str,
    scope: Scope,
) -> tuple[int, int]:
    """Phase 2 of ``--fix``: every in-scope bucket as a forced snapshot, under the lock.

    Returns (snapshots, tombstones) published.
    """
    with _repeatable(engine) as conn, conn.begin():
        stored = read_stored(conn, company_id, timezone, scope, lock=True)
        snapshots = [BucketSnapshot(k, s.counters, s.version) for k, s in sorted(stored.items())]
        starts = [
            BucketKey(company_id, granularity, start)
            for granularity in scope.granularities
            for start in scope.bucket_starts(granularity, timezone)
        ]
        absent = [drift.tombstone(k) for k in starts if k not in stored]
        # Breakdown entries are reset first, then their groups MySQL has are re-published:
        # the table forgets groups MySQL does not have (one partition: in order).
        resets = [reset_message(k, d) for k in starts for d in DIMENSIONS]
        messages = [*resets, *(encode(s, force=True) for s in [*snapshots, *absent])]
        key = company_key(company_id)
        futures = [await producer.send(topic, key=key, value=value) for value in messages]
        await asyncio.gather(*futures)
        # Commit (release the lock) only once Kafka holds every snapshot.
    return len(snapshots), len(absent)


def _with_retries(work: Any, *args: Any) -> Any:
    """Deadlocks and lock waits against live workers are retried a few times."""
    for attempt in range(LOCK_RETRIES):
        try:
            return work(*args)
        except DBAPIError as exc:
            if not is_transient(exc) or attempt == LOCK_RETRIES - 1:
                raise DatabaseUnavailable(f"MySQL: {_one_line(exc)}") from exc
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", exc)).split())[:200]


# --- the run ------------------------------------------------------------------------------


@dataclass
class Options:
    company_ids: Sequence[int] | None  # None: every company
    scope: Scope
    fix: bool = False
    client: AnalystClient | None = None
    settle_s: float = 3.0  # wait before re-checking API drift (snapshots in flight)
    converge_s: float = 30.0  # how long --fix waits for the API to show the fixed numbers
    # Told after each company: (phase "check" | "fix", companies done, of how many, company).
    on_company: Callable[[str, int, int, int], None] | None = None


def check_all(engine: Engine, tzs: Mapping[int, str], options: Options) -> list[CompanyReport]:
    reports = []
    for c, tz in tzs.items():
        reports.append(_with_retries(check_company, engine, c, tz, options.scope, options.client))
        if options.on_company is not None:
            options.on_company("check", len(reports), len(tzs), c)
    lagging = [r for r in reports if r.api]
    if lagging and options.settle_s > 0:
        # The table lags MySQL by a snapshot's trip through Kafka: look again before
        # calling it drift.
        time.sleep(options.settle_s)
        again = {
            r.company_id: _with_retries(
                check_company, engine, r.company_id, r.timezone, options.scope, options.client
            )
            for r in lagging
        }
        reports = [again.get(r.company_id, r) for r in reports]
    return reports


def run(settings: Settings, engine: Engine, options: Options) -> Report:
    with engine.connect() as conn:
        tzs = _with_retries(company_timezones, conn, options.company_ids)
    report = Report(options.scope, check_all(engine, tzs, options))
    if not options.fix:
        return report
    report.fixed = True
    asyncio.run(_fix(settings, engine, tzs, options, report))
    report.after, report.converged = _converge(engine, tzs, options)
    return report


async def _fix(
    settings: Settings,
    engine: Engine,
    tzs: Mapping[int, str],
    options: Options,
    report: Report,
) -> None:
    producer = AIOKafkaProducer(
        **kafka_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30_000,
    )
    try:
        await producer.start()  # before touching MySQL: fail early if Kafka is down
    except KafkaError as exc:
        await producer.stop()
        raise KafkaUnavailable(
            f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}; nothing was changed"
        ) from exc
    topic = settings.topic(topics.SNAPSHOTS)
    by_company = {r.company_id: r for r in report.companies}
    now = options.scope.now
    try:
        for done, (company, tz) in enumerate(tzs.items(), start=1):
            entry = by_company[company]
            if entry.mysql:
                entry.rewritten = await asyncio.to_thread(
                    _with_retries, rewrite_company, engine, company, tz, options.scope, now
                )
            try:
                entry.published, entry.tombstones = await publish_company(
                    engine, producer, topic, company, tz, options.scope
                )
            except DBAPIError as exc:
                raise DatabaseUnavailable(
                    f"MySQL, publishing company {company}: {_one_line(exc)}; run reconcile --fix again"
                ) from exc
            except KafkaError as exc:
                raise KafkaUnavailable(
                    f"publishing snapshots of company {company} failed: {exc}; "
                    "MySQL rows already rewritten stay right; run reconcile --fix again"
                ) from exc
            if options.on_company is not None:
                options.on_company("fix", done, len(tzs), company)
    finally:
        await producer.stop()


def _converge(
    engine: Engine, tzs: Mapping[int, str], options: Options
) -> tuple[list[CompanyReport], bool | None]:
    """Re-check after the fix; with the API, wait until the table shows the fixed numbers."""
    quiet = Options(options.company_ids, options.scope, client=options.client, settle_s=0)
    deadline = time.monotonic() + options.converge_s
    while True:
        after = check_all(engine, tzs, quiet)
        if options.client is None:
            return after, None
        if not any(r.drifts for r in after):
            return after, True
        if time.monotonic() >= deadline:
            return after, False
        time.sleep(0.5)


# --- presentation -------------------------------------------------------------------------


def render(report: Report) -> list[str]:
    scope = report.scope
    lines = [
        f"reconcile: {_plural(len(report.companies), 'company', 'companies')}, "
        f"{'+'.join(scope.granularities)} buckets "
        f"starting {_since(scope)} until {iso(scope.end)} (retention: hour 14 d, day 400 d)"
    ]
    lines += _company_lines(report.companies, "before the fix" if report.fixed else "")
    if report.fixed:
        rewritten = sum(c.rewritten for c in report.companies)
        published = sum(c.published for c in report.companies)
        tombstones = sum(c.tombstones for c in report.companies)
        lines.append(
            f"fixed: {rewritten} dashboard_buckets rows rewritten (version + 1); published "
            f"{published} forced snapshots and {tombstones} tombstones"
        )
        after = report.after or []
        left = [d for c in after for d in c.drifts]
        if report.converged is False:
            lines.append("after the fix the analyst API still disagrees:")
            lines += drift.drift_lines(left)
        elif left:
            lines.append("after the fix drift remains:")
            lines += drift.drift_lines(left)
        else:
            checked = "MySQL and the analyst API agree" if report.converged else "MySQL agrees"
            lines.append(f"after the fix: no drift ({checked} with the recount)")
    return lines


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _since(scope: Scope) -> str:
    return iso(scope.start) if scope.start else "at the retention limit"


def _company_lines(reports: list[CompanyReport], when: str) -> list[str]:
    lines = []
    total_buckets = mysql_b = api_b = 0
    api_checked = False
    for r in reports:
        total_buckets += r.buckets
        mysql_n, api_n = drift.drifting_buckets(r.mysql), drift.drifting_buckets(r.api or [])
        mysql_b += mysql_n
        api_b += api_n
        api_checked = api_checked or r.api is not None
        api_part = "" if r.api is None else f", api {api_n} drifting"
        status = "ok" if not r.drifts else "DRIFT"
        lines.append(
            f"company {r.company_id} ({r.timezone}): {r.buckets} buckets with data, "
            f"mysql {mysql_n} drifting{api_part}  {status}"
        )
        lines += drift.drift_lines(r.drifts)
    api_total = f", analyst API {api_b}" if api_checked else ""
    suffix = f" ({when})" if when else ""
    lines.append(
        f"total: {total_buckets} buckets with data; drifting buckets: "
        f"dashboard_buckets {mysql_b}{api_total}{suffix}"
    )
    return lines
