"""The periodic backfill: every ``every`` seconds, per provider, one run over a moving window.

The window of a run is ``[watermark - margin, now - settle]``:

* ``margin`` looks back over what the previous runs already compared, because a window
  is not final when it closes: a call ended but not yet analysed, a webhook still in the
  provider's retries. Re-comparing costs API requests, never duplicates (event ids);
* ``settle`` leaves the newest minutes alone, so the backfill does not race webhooks that
  are seconds from arriving (it would be harmless, only wasted work);
* the first window starts at ``--since`` when given (an operator asking for a stretch
  is obeyed even if a watermark exists), else at the watermark minus the margin, else
  ``lookback`` ago.

A failed run (API down, Kafka unreachable) is logged, counted and retried at the next tick;
the watermark does not move, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from pipeline.backfill import watermark
from pipeline.backfill.metrics import BackfillMetrics
from pipeline.backfill.run import Judge, Options, budget_for, run_backfill
from pipeline.backfill.when import utc_now
from pipeline.errors import SwitchboardError
from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Schedule:
    every: timedelta
    margin: timedelta = timedelta(minutes=30)
    settle: timedelta = timedelta(minutes=2)
    lookback: timedelta = timedelta(hours=24)
    first_since: datetime | None = None


def window(
    schedule: Schedule, covered_until: datetime | None, now: datetime, *, first: bool = False
) -> tuple[datetime, datetime]:
    """The next run's ``(since, until)``."""
    until = now - schedule.settle
    if first and schedule.first_since is not None:
        since = schedule.first_since
    elif covered_until is not None:
        since = covered_until - schedule.margin
    else:
        since = now - schedule.lookback
    return min(since, until - timedelta(seconds=1)), until


async def run_periodically(
    settings: Settings,
    providers: Sequence[str],
    schedule: Schedule,
    *,
    engine: Engine,
    judge: Judge,
    metrics: BackfillMetrics,
    options: Options = Options(),
    stop: asyncio.Event | None = None,
) -> None:
    """Run every provider's loop until ``stop`` is set."""
    stop = stop or asyncio.Event()
    await asyncio.gather(
        *(_loop(settings, p, schedule, engine, judge, metrics, options, stop) for p in providers)
    )


async def _loop(
    settings: Settings,
    provider: str,
    schedule: Schedule,
    engine: Engine,
    judge: Judge,
    metrics: BackfillMetrics,
    options: Options,
    stop: asyncio.Event,
) -> None:
    state = await asyncio.to_thread(_read, engine, provider)
    if state is not None:
        metrics.observe_state(
            provider, covered_until=state.covered_until, last_success_at=state.last_success_at
        )
    budget = budget_for(provider, options)  # one bucket across ticks
    first = True
    while not stop.is_set():
        state = await asyncio.to_thread(_read, engine, provider)
        mark = state.covered_until if state else None
        since, until = window(schedule, mark, utc_now(), first=first)
        first = False
        try:
            report = await run_backfill(
                settings,
                provider,
                since,
                until,
                engine=engine,
                judge=judge,
                options=options,
                metrics=metrics,
                budget=budget,
            )
        except SwitchboardError as exc:
            log.error("%s backfill failed: %s", provider, getattr(exc, "detail", None) or str(exc))
        except Exception:
            log.exception("%s backfill failed unexpectedly", provider)
        else:
            level = (
                logging.WARNING if report.total_written or report.unattributable else logging.INFO
            )
            for line in report.lines():
                log.log(level, line.strip(), extra={"provider": provider})
        try:
            await asyncio.wait_for(stop.wait(), schedule.every.total_seconds())
        except TimeoutError:
            pass


def _read(engine: Engine, provider: str) -> watermark.Watermark | None:
    with engine.connect() as conn:
        return watermark.read(conn, provider)
