"""The apply path for async callers: retries, un-parking, and a blast radius of one.

``Applier.apply(records)`` never raises for a record's sake and never gives up on a
transient failure:

* ``DatabaseUnavailable`` (the database, not the batch, is the problem: down, read-only,
  full, rights revoked, over its limits, pool exhausted, deadlock; :mod:`pipeline.retry`):
  wait with backoff and retry the same batch, for as long as it takes, each wait counted
  under its reason. The caller's stream waits too, which is the point: nothing is acked
  that is not applied.
* an unexpected exception (a bug): the batch is retried record by record, and a record
  that still fails is dead-lettered with reason ``internal_error`` so the rest flow on;
  it can be redriven after the fix. When consecutive records fail the same way, the
  circuit breaker holds them back instead (the stream waits).
* parked no-show updates (``unknown_booking``) are fetched back from Kafka and applied as
  soon as a batch creates their booking, and found again from the committed state after a
  crash or a Kafka failure in between (:meth:`Applier._unpark`).

Database work runs in a thread, or in the worker's apply process
(:mod:`pipeline.apply.process`): the event loop keeps serving Kafka and HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka.errors import KafkaError
from sqlalchemy import Connection, Engine

from pipeline import database
from pipeline.apply import load
from pipeline.apply.batch import apply_batch
from pipeline.apply.process import ApplyFailed, ApplyProcess
from pipeline.apply.published import PublishedBuckets
from pipeline.apply.results import BatchResult, DeadLetter, Outcome
from pipeline.errors import DatabaseUnavailable
from pipeline.kafka_reader import Coordinates, fetch
from pipeline.records import WebhookRecord
from pipeline.retry import Backoff, Breaker, until_available, until_done
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: How often a running applier looks for parked updates whose booking exists (besides its
#: first batch and the bookings each batch creates).
SWEEP_EVERY_S = 60.0

Fetch = Callable[[list[Coordinates]], Awaitable[list[WebhookRecord]]]
OnRetry = Callable[[str, float], None]
T = TypeVar("T")


class Applier:
    def __init__(
        self,
        engine: Engine,
        *,
        fetch: Fetch | None = None,
        dry_run: bool = False,
        on_retry: OnRetry | None = None,
        max_backoff_s: float = 10.0,
        breaker: Breaker | None = None,
        first_sweep_s: float = 10.0,
        process: ApplyProcess | None = None,
    ) -> None:
        self.engine = engine
        # Batches go to this child process when given (the worker); the engine above still
        # serves the parked-update lookups and the breaker's probe.
        self.process = process
        self.fetch = fetch
        self.dry_run = dry_run
        self.on_retry = on_retry or (lambda reason, delay: None)
        self.max_backoff_s = max_backoff_s
        self.breaker = breaker or Breaker(functools.partial(database.answers, engine))
        # The first sweep for due parked updates, after a start: soon, but not in the way
        # of the first batches (their publish waits for it).
        self._next_sweep = time.monotonic() + first_sweep_s
        # Buckets published lately: an already-applied event does not republish them.
        self.published = PublishedBuckets()

    async def apply(self, records: Sequence[WebhookRecord]) -> BatchResult:
        result = await self._apply_isolating_bugs(list(records))
        if self.fetch is not None and not self.dry_run:
            await self._unpark(result, self.fetch)
        warn_clipped(result)
        return result

    async def _unpark(self, result: BatchResult, fetch_: Fetch) -> None:
        """Apply the parked no-show updates whose booking exists now (docs/integrity.md).

        Right after a batch that created bookings, their updates; on the first batch
        ``first_sweep_s`` after a start and every ``SWEEP_EVERY_S`` after that, every update
        whose booking exists,
        which is what makes the un-parking durable: the booking's commit is the record of
        it, so a crash or a Kafka failure after that commit only delays it. Kafka errors
        while fetching are waited out (raising would let Faust ack the batch).
        """
        uids, result.created_uids = set(result.created_uids), set()
        sweep = self._sweep_due()
        for _ in range(5):
            if sweep:
                lookup = functools.partial(due_parked, self.engine)
            elif uids:
                lookup = functools.partial(store_parked, self.engine, uids)
            else:
                return
            sweep = False
            coords = await self._transient_retry(functools.partial(asyncio.to_thread, lookup))
            if not coords:
                return
            wanted = [Coordinates(*c) for c in coords]
            parked = await until_done(
                functools.partial(fetch_, wanted),
                retry_on=(KafkaError, OSError, asyncio.TimeoutError),
                on_retry=self._kafka_retry,
                backoff=Backoff(max_s=self.max_backoff_s),
            )
            log.info("un-parking %d event(s) whose booking arrived", len(parked))
            result.merge(await self._apply_isolating_bugs(parked))
            uids, result.created_uids = set(result.created_uids), set()

    def _sweep_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_sweep:
            return False
        self._next_sweep = now + SWEEP_EVERY_S
        return True

    def _kafka_retry(self, failure: BaseException, delay: float) -> None:
        log.warning("fetching parked events failed, retrying in %.1fs: %r", delay, failure)
        self.on_retry("kafka_unavailable", delay)

    async def _apply_isolating_bugs(self, records: list[WebhookRecord]) -> BatchResult:
        if not records:
            return BatchResult()
        if len(records) > 1:
            try:
                return await self._transient_retry(functools.partial(self._apply, records))
            except Exception:
                log.exception("apply failed unexpectedly; isolating the batch record by record")
        result = BatchResult()
        for record in records:
            try:
                result.merge(
                    await self._transient_retry(functools.partial(self._apply_or_hold, record))
                )
            except Exception:
                result.merge(self._internal_error(record))
        return result

    async def _apply(self, records: list[WebhookRecord]) -> BatchResult:
        if self.process is not None:
            return await self.process.apply(
                records, published=self.published, dry_run=self.dry_run, on_retry=self.on_retry
            )
        return await asyncio.to_thread(
            apply_batch,
            self.engine,
            records,
            dry_run=self.dry_run,
            breaker=self.breaker,
            on_retry=self.on_retry,
            published=self.published,
        )

    async def _apply_or_hold(self, record: WebhookRecord) -> BatchResult:
        """One record; a bug's exception passes the breaker first (it may hold it back)."""
        try:
            return await self._apply([record])
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            failure = exc.failure if isinstance(exc, ApplyFailed) else database.classify(exc)
            # in a thread: an open breaker probes the database
            await asyncio.to_thread(self.breaker.check, failure, record.coordinates)
            raise

    async def _transient_retry(self, work: Callable[[], Awaitable[T]]) -> T:
        return await until_available(
            work, on_retry=self._database_retry, backoff=Backoff(max_s=self.max_backoff_s)
        )

    def _database_retry(self, reason: str, delay: float) -> None:
        # A connection lost during a commit leaves it unknown whether the batch committed:
        # when it comes again as already applied, its buckets must be published again.
        self.published.forget()
        self.on_retry(reason, delay)

    def _internal_error(self, record: WebhookRecord) -> BatchResult:
        log.exception(
            "record %s could not be applied (bug); dead-lettering as internal_error",
            record.coordinates,
            extra={"correlation_id": record.correlation_id},
        )
        result = BatchResult()
        result.dead_letters.append(
            DeadLetter(record, "internal_error", "InternalError", "unexpected error while applying")
        )
        result.outcomes.append(
            Outcome(
                provider=record.provider or "unknown",
                event_id=record.headers.get("event_id", ""),
                event_type=record.headers.get("event_type", ""),
                status="dead_lettered",
                company_id=None,
                reason="internal_error",
                coordinates=record.coordinates,
                correlation_id=record.correlation_id,
            )
        )
        return result


def warn_clipped(result: BatchResult) -> None:
    """One warning per event with optional fields that did not fit (docs/integrity.md):
    the field names and what happened to them, never the values (URLs with signatures,
    phone numbers)."""
    for outcome in result.outcomes:
        if outcome.clipped:
            log.warning(
                "%s %s: optional fields did not fit their columns and were stored without them: %s",
                outcome.provider,
                outcome.event_type,
                ", ".join(f"{name} {action}" for name, action in outcome.clipped),
                extra={"correlation_id": outcome.correlation_id},
            )


def parked_fetcher(settings: Settings) -> Fetch:
    """How parked no-show updates are read back from Kafka, by their coordinates."""

    async def fetch_parked(coords: list[Coordinates]) -> list[WebhookRecord]:
        return await fetch(settings, coords)

    return fetch_parked


def store_parked(engine: Engine, uids: set[str]) -> list[tuple[str, int, int]]:
    return _parked_lookup(engine, functools.partial(load.parked_coordinates, uids=uids))


def due_parked(engine: Engine) -> list[tuple[str, int, int]]:
    return _parked_lookup(engine, load.due_parked_coordinates)


def _parked_lookup(
    engine: Engine, query: Callable[[Connection], list[tuple[str, int, int]]]
) -> list[tuple[str, int, int]]:
    try:
        with engine.connect() as conn:
            return query(conn)
    except Exception as exc:
        waiting = database.unavailable(exc, "parked lookup")
        if waiting is not None:
            raise waiting from exc
        raise


__all__ = ["Applier", "DatabaseUnavailable"]
