"""One backfill run for one provider over one window: list, compare, judge, write, wait, note.

1. list the provider's calls (ended in the window) or bookings (three sweeps) through its
   REST API, within its request budget;
2. compare with ``webhook_events`` and the rows (:mod:`pipeline.backfill.plan`);
3. have the apply path judge the candidates in a transaction it rolls back (``judge``,
   passed in by the command: this stage does not import the apply stage). Only events it
   would apply are written; those no branch would take are reported as unattributable,
   never written;
4. write them to the webhook topic (:mod:`pipeline.backfill.writer`) and, unless told not
   to, wait until the workers have applied them;
5. move the provider's watermark and publish the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from pipeline.backfill import ledger as ledger_module
from pipeline.backfill import plan as planning
from pipeline.backfill import watermark
from pipeline.backfill.calcom_api import MEETINGS, SWEEPS, CalcomApi
from pipeline.backfill.metrics import BackfillMetrics
from pipeline.backfill.report import BackfillReport, Changes
from pipeline.backfill.retell_api import RetellApi
from pipeline.backfill.synthesized import Synthesized
from pipeline.backfill.transport import RequestBudget, Transport
from pipeline.backfill.when import to_ms, utc_now
from pipeline.backfill.writer import EventWriter
from pipeline.errors import SwitchboardError
from pipeline.settings import Secret, Settings

log = logging.getLogger(__name__)

PROVIDERS = ("retell", "calcom")
JUDGE_BATCH = 500
APPLIED = "applied"
ALREADY_APPLIED = "already_applied"


class ProviderDisabled(SwitchboardError):
    """The provider's API key is not configured: its backfill cannot run."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Judgement:
    """The apply path's verdict on candidate events (a dry run): event id → (status,
    reason), and what the apply would change per table and company."""

    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    changes: Changes = field(default_factory=dict)


Judge = Callable[[Sequence[Synthesized]], Awaitable[Judgement]]


@dataclass(frozen=True, slots=True)
class Options:
    retell_page_size: int = 1000
    calcom_page_size: int = 250
    retell_per_minute: float = 300.0  # Retell publishes no limit; stay polite
    calcom_per_minute: float = 110.0  # + a burst of 10: never above 120 in any minute
    request_timeout_s: float = 120.0
    meetings_lookback: timedelta = timedelta(hours=24)  # no-shows marked after the meeting
    wait_applied_s: float = 120.0  # how long to wait for the workers; 0: do not wait


def budget_for(provider: str, options: Options) -> RequestBudget:
    per_minute = options.retell_per_minute if provider == "retell" else options.calcom_per_minute
    return RequestBudget(per_minute)


def api_key(settings: Settings, provider: str) -> Secret:
    """The provider's REST key, or :class:`ProviderDisabled` naming the variable to set."""
    if provider == "retell":
        key = settings.retell_api_key()
        variable = "RETELL_API_KEY"
    elif provider == "calcom":
        key = settings.calcom_api_key
        variable = "CALCOM_API_KEY"
    else:
        raise ProviderDisabled(f"unknown provider {provider!r} (known: retell, calcom)")
    if key is None:
        raise ProviderDisabled(f"{provider} backfill is disabled: {variable} is not set")
    return key


@asynccontextmanager
async def transport_for(
    settings: Settings,
    provider: str,
    options: Options,
    metrics: BackfillMetrics | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    budget: RequestBudget | None = None,
) -> AsyncIterator[Transport]:
    """The provider's transport; pass ``budget`` to share one request budget between runs
    (the periodic mode does: a fresh bucket per run would allow a burst every tick)."""
    key = api_key(settings, provider)
    if provider == "retell":
        url, per_minute, extra = settings.retell_api_url, options.retell_per_minute, {}
    else:
        url, per_minute = settings.calcom_api_url, options.calcom_per_minute
        extra = {"cal-api-version": settings.calcom_api_version}
    transport = Transport(
        provider,
        url,
        key,
        budget or RequestBudget(per_minute, sleep=sleep),
        extra_headers=extra,
        timeout_s=options.request_timeout_s,
        sleep=sleep,
        on_answer=metrics.on_answer if metrics else None,
    )
    async with transport:
        yield transport


async def run_backfill(
    settings: Settings,
    provider: str,
    since: datetime,
    until: datetime,
    *,
    engine: Engine,
    judge: Judge,
    dry_run: bool = False,
    options: Options = Options(),
    metrics: BackfillMetrics | None = None,
    budget: RequestBudget | None = None,
) -> BackfillReport:
    """Backfill ``provider`` over ``[since, until]`` (naive UTC); return what happened."""
    if until <= since:
        raise SwitchboardError("the window is empty: --until must be after --since")
    report = BackfillReport(provider, since, until, dry_run=dry_run)
    try:
        async with transport_for(settings, provider, options, metrics, budget=budget) as transport:
            plan = await _plan(provider, transport, engine, since, until, settings, options)
            report.requests, report.throttled = transport.requests, transport.throttled
        _absorb(report, plan)
        judgement = await _judge(judge, plan.candidates)
        report.changes = judgement.changes
        chosen = _choose(report, plan.candidates, judgement)
        if not dry_run:
            await _write(settings, engine, report, chosen, options, metrics)
    except Exception as exc:
        if metrics is not None:
            metrics.runs.labels(provider, "failure").inc()
        if not dry_run and not isinstance(exc, ProviderDisabled):
            detail = getattr(exc, "detail", None) or exc.__class__.__name__
            await asyncio.to_thread(_record_failure, engine, provider, str(detail))
        raise
    if metrics is not None:
        _count(metrics, report)
    return report


async def _write(
    settings: Settings,
    engine: Engine,
    report: BackfillReport,
    chosen: Sequence[planning.Candidate],
    options: Options,
    metrics: BackfillMetrics | None,
) -> None:
    """Write the chosen events to the webhook topic, wait (a while) until the workers applied
    them, and move the provider's watermark."""
    provider = report.provider
    if chosen:
        async with EventWriter(settings) as writer:
            await writer.write([c.event for c in chosen])
        if options.wait_applied_s > 0:
            report.not_applied = await _await_applied(
                engine, provider, chosen, options.wait_applied_s
            )
    state = await asyncio.to_thread(
        _record_success, engine, provider, report.since, report.until, report.total_written
    )
    report.watermark = state.covered_until
    if metrics is not None:
        metrics.observe_state(
            provider,
            covered_until=state.covered_until,
            last_success_at=state.last_success_at,
            last_written=state.last_written,
        )


def _count(metrics: BackfillMetrics, report: BackfillReport) -> None:
    """A finished run's counters; the run itself last, so a scrape that sees it counted
    sees its events counted too."""
    provider = report.provider
    if not report.dry_run:
        for kind, n in report.written.items():
            metrics.events.labels(provider, kind).inc(n)
        if report.unattributable:
            metrics.unattributable.labels(provider).inc(len(report.unattributable))
    metrics.runs.labels(provider, "dry_run" if report.dry_run else "success").inc()


async def _plan(
    provider: str,
    transport: Transport,
    engine: Engine,
    since: datetime,
    until: datetime,
    settings: Settings,
    options: Options,
) -> planning.Plan:
    async def read(kind: str, subjects: set[str], ids: set[str]) -> ledger_module.Ledger:
        return await asyncio.to_thread(_read_ledger, engine, kind, subjects, ids)

    if provider == "retell":
        retell = RetellApi(transport, page_size=options.retell_page_size)
        calls: list[dict[str, Any]] = []
        async for page in retell.ended_calls(to_ms(since), to_ms(until)):
            calls.extend(page)
        return await planning.plan_retell(calls, read, retell.get_call)
    calcom = CalcomApi(
        transport, version=settings.calcom_api_version, page_size=options.calcom_page_size
    )
    bookings: list[dict[str, Any]] = []
    for sweep in SWEEPS:
        start = since - options.meetings_lookback if sweep is MEETINGS else since
        async for page in calcom.sweep(sweep, start, until):
            bookings.extend(page)
    return await planning.plan_calcom(bookings, read, calcom.booking, until)


def _read_ledger(
    engine: Engine, provider: str, subjects: set[str], ids: set[str]
) -> ledger_module.Ledger:
    found = ledger_module.Ledger(provider)
    with engine.connect() as conn:
        ledger_module.read_events(conn, found, ids)
        if provider == "retell":
            ledger_module.read_call_rows(conn, found, subjects)
        else:
            ledger_module.read_appointment_rows(conn, found, subjects)
            ledger_module.read_no_shows(conn, found, subjects)
    return found


def _absorb(report: BackfillReport, plan: planning.Plan) -> None:
    report.listed, report.owed, report.present = plan.listed, plan.owed, plan.present
    report.pending, report.notes, report.fetched = plan.pending, plan.notes, plan.fetched


async def _judge(judge: Judge, candidates: Sequence[planning.Candidate]) -> Judgement:
    """Judge whole stories together (a no-show needs its booking in the same transaction),
    in batches of about ``JUDGE_BATCH`` events."""
    by_story: dict[str, list[Synthesized]] = {}
    for c in sorted(candidates, key=lambda c: (c.event.story, c.event.at, c.event.order)):
        by_story.setdefault(c.event.story, []).append(c.event)
    outcomes: dict[str, tuple[str, str | None]] = {}
    changes: Changes = {}
    batch: list[Synthesized] = []

    async def flush() -> None:
        if not batch:
            return
        verdict = await judge(list(batch))
        outcomes.update(verdict.outcomes)
        for table, per_company in verdict.changes.items():
            mine = changes.setdefault(table, {})
            for company, counter in per_company.items():
                mine.setdefault(company, Counter()).update(counter)
        batch.clear()

    for events in by_story.values():
        if batch and len(batch) + len(events) > JUDGE_BATCH:
            await flush()
        batch.extend(events)
    await flush()
    return Judgement(outcomes, changes)


def _choose(
    report: BackfillReport, candidates: Sequence[planning.Candidate], judgement: Judgement
) -> list[planning.Candidate]:
    chosen = []
    for c in sorted(candidates, key=lambda c: (c.event.story, c.event.at, c.event.order)):
        status, reason = judgement.outcomes.get(c.event.event_id, ("unjudged", None))
        if status in (APPLIED, ALREADY_APPLIED):
            chosen.append(c)
            report.written[c.event.event_type] += 1
            if c.reason == planning.ROW_MISSING:
                report.restored += 1
        elif status == "unroutable" and c.reason == planning.UNROUTABLE:
            report.still_unroutable += 1
        elif status == "unroutable":
            report.unattributable.append((c.event.event_id, reason or "unroutable"))
        else:
            report.refused.append((c.event.event_id, f"{status}: {reason or '?'}"))
    return chosen


async def _await_applied(
    engine: Engine, provider: str, written: Sequence[planning.Candidate], timeout_s: float
) -> list[str]:
    """Poll MySQL until the workers applied every written event (and restored every lost
    row); return the event ids still waiting when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = await asyncio.to_thread(_unapplied, engine, provider, written)
        if not waiting or time.monotonic() >= deadline:
            return waiting
        await asyncio.sleep(0.5)


def _unapplied(engine: Engine, provider: str, written: Sequence[planning.Candidate]) -> list[str]:
    found = ledger_module.Ledger(provider)
    with engine.connect() as conn:
        ledger_module.read_events(conn, found, [c.event.event_id for c in written])
        subjects = {c.event.subject for c in written if c.reason == planning.ROW_MISSING}
        if provider == "retell":
            ledger_module.read_call_rows(conn, found, subjects)
        else:
            ledger_module.read_appointment_rows(conn, found, subjects)
    return [
        c.event.event_id
        for c in written
        if found.status(c.event.event_id) != APPLIED
        or (c.reason == planning.ROW_MISSING and c.event.subject not in found.rows)
    ]


def _record_success(
    engine: Engine, provider: str, since: datetime, until: datetime, written: int
) -> watermark.Watermark:
    with engine.begin() as conn:
        return watermark.record_success(
            conn, provider, since=since, until=until, written=written, now=utc_now()
        )


def _record_failure(engine: Engine, provider: str, error: str) -> None:
    try:
        with engine.begin() as conn:
            watermark.record_failure(conn, provider, error=error, now=utc_now())
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        log.warning("could not record the failed %s backfill run", provider, exc_info=True)
