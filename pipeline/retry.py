"""How the apply path retries: wait out the database, bound key conflicts, and never let
one systematic failure drain a stream into the dead-letter topic.

Three pieces, each used at one place of the apply loop (docs/reliability.md), on one
backoff policy (:class:`Backoff`, also behind :func:`until_done`, the worker's wait for
Kafka):

* :func:`until_available` (async): await the work (its database calls run in a thread or
  in the worker's apply process); while it raises
  :class:`~pipeline.errors.DatabaseUnavailable`, wait with jittered exponential backoff
  and run it again, for as long as it takes. Each wait is logged and counted under the
  failure's real reason (``mysql_1290_read_only``, ``mysql_1213_deadlock``, ...).
* :func:`retry_conflicts` (sync, inside the transaction's thread): a duplicate or missing
  key is usually a concurrent writer that won a race, so the work runs again (it re-reads
  and sees the winner), at most ``attempts`` times; a conflict that survives that is the
  record's (two keys Python tells apart and the collation does not) and is re-raised.
* :class:`Breaker`: before a record is dead-lettered for a failure of unknown cause (an
  errno :func:`~pipeline.database.classify` does not know, an exception of our own code), the
  breaker is asked. When consecutive records fail the same way, it is the database or the
  code, not the records: the breaker opens and turns the rejection into a wait (the stream pauses,
  nothing is acked) until the database answers and a cool-down has passed. Then it lets one
  rejection through and doubles the cool-down, so a genuinely bad run of records drains at
  a bounded, slowing rate instead of stalling the topic for ever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipeline.database import DbFailure, Kind, classify
from pipeline.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
OnRetry = Callable[[str, float], None]


class Backoff:
    """Exponential delays with jitter, so that agents retrying together do not collide again.

    A busy database (deadlock, lock wait) is retried on a short leash: those clear as soon
    as the other transaction ends.
    """

    def __init__(
        self,
        first_s: float = 0.2,
        max_s: float = 10.0,
        busy_max_s: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.busy_max_s = busy_max_s
        self.rng = rng
        self._delay = first_s

    def next(self, *, busy: bool = False) -> float:
        ceiling = min(self._delay, self.busy_max_s) if busy else self._delay
        self._delay = min(self._delay * 2, self.max_s)
        return ceiling * (0.5 + self.rng() / 2)

    def reset(self) -> None:
        self._delay = self.first_s


async def until_available(
    work: Callable[[], Awaitable[T]],
    *,
    on_retry: OnRetry | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await work()`` again and again while the database is unavailable (the work runs
    its database calls in a thread, or in the apply process)."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await work()
        except DatabaseUnavailable as exc:
            delay = backoff.next(busy=exc.busy)
            log.warning(
                "database unavailable (%s), retrying in %.1fs: %s",
                exc.reason,
                delay,
                exc,
                extra={"reason": exc.reason},
            )
            if on_retry is not None:
                on_retry(exc.reason, delay)
            await sleep(delay)


async def until_done(
    work: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    on_retry: Callable[[BaseException, float], None] | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await work()`` until it returns, waiting out failures of ``retry_on`` with the
    same backoff (the worker's dead-letter sends wait for Kafka this way); anything else
    propagates at once."""
    backoff = backoff or Backoff()
    while True:
        try:
            return await work()
        except retry_on as exc:
            delay = backoff.next()
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)


def retry_conflicts(
    work: Callable[[], T],
    *,
    attempts: int = 3,
    pause_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """``work()``, run again after a key conflict, ``attempts`` times in all; the last
    conflict is re-raised, and the caller handles it as a problem of the record."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as exc:
            failure = classify(exc)
            if failure.kind is not Kind.CONFLICT or attempt == attempts:
                raise
            delay = pause_s * attempt
            log.info(
                "key conflict (%s), attempt %d of %d; re-reading",
                failure.reason,
                attempt,
                attempts,
                extra={"reason": failure.reason},
            )
            if on_retry is not None:
                on_retry(failure.reason, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class Breaker:
    """Counts consecutive records rejected for the same reason; trips after ``trip_after``.

    Thread-safe: the apply path calls it from its worker threads. ``probe`` says whether the
    database answers (:func:`pipeline.database.answers`); it is called only while open.
    """

    def __init__(
        self,
        probe: Callable[[], bool],
        *,
        trip_after: int = 3,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.trip_after = trip_after
        self.first_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._streak = 0
        self._last: object = None
        self._opened_at: float | None = None
        self._cooldown_s = cooldown_s

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def succeeded(self) -> None:
        """A record went through: whatever failed before was not systematic."""
        with self._lock:
            if self._opened_at is not None:
                log.warning("circuit closed: records apply again (was %s)", self._reason)
            self._reason, self._streak, self._opened_at, self._last = None, 0, None, None
            self._cooldown_s = self.first_cooldown_s

    def check(self, failure: DbFailure, record: object = None) -> None:
        """Return when ``record`` may be dead-lettered for ``failure``; raise
        :class:`DatabaseUnavailable` (the stream waits, the record is retried) when the
        breaker holds it back. ``record`` identifies the record (its coordinates), so that
        the same record failing again on its way through the apply path counts once.

        A value MySQL says does not fit, or a key that keeps colliding, is a statement about
        that record (a provider's duplicates of one bad event are consecutive too): only
        failures of unknown cause are counted.
        """
        if failure.kind in (Kind.RECORD, Kind.CONFLICT):
            return
        with self._lock:
            if failure.reason != self._reason:
                self._reason, self._streak, self._opened_at = failure.reason, 0, None
                self._last = None
                self._cooldown_s = self.first_cooldown_s
            now = self.clock()
            if self._opened_at is None:
                if record is None or record != self._last:
                    self._streak += 1
                self._last = record
                if self._streak < self.trip_after:
                    return
                self._opened_at = now
                log.error(
                    "circuit open: %d consecutive records failed with %s; pausing the stream "
                    "instead of dead-lettering them",
                    self._streak,
                    failure.reason,
                    extra={"reason": failure.reason},
                )
                raise self._hold(failure)
            if now - self._opened_at < self._cooldown_s:
                raise self._hold(failure)
        answers = self.probe()  # outside the lock: it talks to the database
        with self._lock:
            if not answers:
                raise self._hold(failure)
            self._opened_at = self.clock()
            self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
            log.error(
                "circuit half-open: the database answers and the record still fails with %s; "
                "dead-lettering it, the next one not before %.0fs",
                failure.reason,
                self._cooldown_s,
                extra={"reason": failure.reason},
            )

    def _hold(self, failure: DbFailure) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"circuit open: {self._streak} consecutive records failed this way",
            reason=failure.reason,
        )
