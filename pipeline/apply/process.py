"""The engine in a process of its own: the worker's batches are applied by a child process.

A worker is one Python process, and its Python runs under one interpreter lock: the engine
(parse, fold, SQL) and Faust (fetch, streams, tables, the snapshot round trip) took turns
on one core, and the engine's share made the event loop wait for the lock, heartbeats and
the analyst API included. With an :class:`ApplyProcess` the worker hands each batch to one
spawned child that owns its own database engine and runs :func:`~pipeline.apply.batch.apply_batch`;
the worker meanwhile reads, publishes and acknowledges (docs/architecture.md, "Apply
agents"; the measurements are in docs/benchmarks.md, section 1e).

What stays in the worker, and what crosses:

* The retries. :class:`DatabaseUnavailable` from the child comes back intact (its reason
  and ``busy`` flag) and the worker's :class:`~pipeline.apply.applier.Applier` waits it
  out as before; the conflicts the child retried itself come back as ``(reason, delay)``
  pairs for the worker's counters.
* Bugs. Any other exception is logged in the child with its traceback and comes back as
  :class:`ApplyFailed`, which carries the child's classification of it, so the worker's
  circuit breaker judges it as it judges its own.
* The published-bucket memory (:mod:`pipeline.apply.published`) is the worker's, which
  remembers after each publish and forgets on each rebalance; the child keeps a copy that
  each call brings up to date (:meth:`PublishedBuckets.news`). A child that missed news
  only republishes more.
* A child that dies (killed, out of memory) is replaced and the batch sent again once (the
  memory of published buckets is forgotten first: the child may have died between a
  commit and its reply, and that batch's buckets must be published again); if
  the new child dies on the same batch too, :class:`ApplyFailed` says so and the Applier
  isolates the batch record by record, so one poisonous record cannot stop a partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from sqlalchemy import Engine

from pipeline import database
from pipeline.apply.batch import apply_batch
from pipeline.apply.published import News, PublishedBuckets
from pipeline.apply.results import BatchResult
from pipeline.database import DbFailure, Kind
from pipeline.errors import DatabaseUnavailable
from pipeline.logs import configure_logging
from pipeline.records import WebhookRecord
from pipeline.retry import Breaker, OnRetry
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class ApplyFailed(Exception):
    """The apply process could not apply a batch for a reason that is not the database's
    (a bug, or the process died on it twice): the Applier isolates the batch."""

    def __init__(self, detail: str, failure: DbFailure) -> None:
        super().__init__(detail)
        self.failure = failure

    def __reduce__(self) -> tuple[type[ApplyFailed], tuple[str, DbFailure]]:
        return ApplyFailed, (str(self), self.failure)  # it crosses from the child


@dataclass
class _Reply:
    result: BatchResult | None
    retries: list[tuple[str, float]] = field(default_factory=list)
    error: Exception | None = None


@dataclass
class _Child:
    engine: Engine
    breaker: Breaker
    published: PublishedBuckets


_child: _Child | None = None


def _start(settings: Settings, loglevel: int, worker: int) -> None:
    """The child's initializer. Ctrl-C goes to the worker's whole process group; the worker
    stops its child itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(worker,), daemon=True).start()
    configure_logging(loglevel)
    _open(settings)


def _open(settings: Settings) -> None:
    """The child's own engine, breaker and copy of the published-bucket memory."""
    global _child
    engine = database.create_db_engine(settings, pool_size=2)
    _child = _Child(
        engine, Breaker(functools.partial(database.answers, engine)), PublishedBuckets()
    )


def _exit_with(parent: int) -> None:
    """The worker was killed (``kill -9`` leaves its child behind): end too, rolling back
    what this process had not committed, instead of holding a database connection."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return _child is not None


def _apply(records: Sequence[WebhookRecord], dry_run: bool, news: News) -> _Reply:
    """In the child: apply one batch, and say what happened without raising."""
    assert _child is not None, "the apply process was not started"
    _child.published.receive(news)
    reply = _Reply(None)
    try:
        reply.result = apply_batch(
            _child.engine,
            records,
            dry_run=dry_run,
            breaker=_child.breaker,
            on_retry=lambda reason, delay: reply.retries.append((reason, delay)),
            published=_child.published,
        )
    except DatabaseUnavailable as exc:
        exc.__cause__ = exc.__context__ = None  # a driver's exception may not cross
        reply.error = exc
    except Exception as exc:
        log.exception("apply failed unexpectedly in the apply process")
        failure = database.classify(exc)
        reply.error = ApplyFailed(f"{type(exc).__name__} in the apply process", failure)
    return reply


class ApplyProcess:
    """One child process that applies batches, one at a time, in the order they are given."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_restart: Callable[[], None] | None = None,
        target: Callable[[Sequence[WebhookRecord], bool, News], _Reply] | None = None,
    ) -> None:
        self.settings = settings
        self.on_restart = on_restart or (lambda: None)
        # what the child runs per batch (tests give one that dies); a module-level function
        self.target = target or _apply
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        # One batch in the child at a time, the others wait here: a child that dies then
        # takes only the batch it was applying with it (queued in the pool, every batch
        # behind it would count a death too, and a second one would isolate them all).
        self._turn = asyncio.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        """The child, started at the first batch (with the worker's log level by then)."""
        if self._closed:
            # The worker is stopping: the batch waits (unacked) until its task is cancelled,
            # never isolated into dead letters.
            raise DatabaseUnavailable("the apply process is stopped", reason="shutting_down")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(self.settings, logging.getLogger().getEffectiveLevel(), os.getpid()),
            )
        return self._pool

    async def apply(
        self,
        records: Sequence[WebhookRecord],
        *,
        published: PublishedBuckets,
        dry_run: bool = False,
        on_retry: OnRetry | None = None,
    ) -> BatchResult:
        """Apply ``records`` in the child (one transaction, as ``apply_batch``); raises what
        ``apply_batch`` would raise there: :class:`DatabaseUnavailable`, or
        :class:`ApplyFailed` for anything else."""
        reply = await self._call(records, published, dry_run)
        for reason, delay in reply.retries:
            if on_retry is not None:
                on_retry(reason, delay)
        if reply.error is not None:
            raise reply.error
        assert reply.result is not None
        return reply.result

    async def _call(
        self, records: Sequence[WebhookRecord], published: PublishedBuckets, dry_run: bool
    ) -> _Reply:
        loop = asyncio.get_running_loop()
        # The turn is kept for the second attempt: the new child's first batch is this one.
        async with self._turn:
            for attempt in (1, 2):
                pool = self._executor()
                news = published.news(pool)
                try:
                    return await loop.run_in_executor(
                        pool, self.target, list(records), dry_run, news
                    )
                except BrokenProcessPool:
                    # It may have died between a commit and its reply: that batch's
                    # buckets must be republished when it comes again, as after a rebalance.
                    published.forget()
                    self._replace(pool)
                log.error(
                    "the apply process died applying a batch of %d record(s) (attempt %d)",
                    len(records),
                    attempt,
                )
        raise ApplyFailed(
            "the apply process died twice on this batch", DbFailure(Kind.UNKNOWN, "process_died")
        )

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # else the warm-up or another call replaced it already
            self._pool = None
            self.on_restart()
        pool.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Start the child now (the worker calls this as it starts), so that the first batch
        does not wait for a process to spawn and import, and a child that cannot start
        says so at once."""
        async with self._turn:
            await asyncio.get_running_loop().run_in_executor(self._executor(), _ready)

    def close(self) -> None:
        """Stop the child after the batch it is applying; batches waiting their turn then
        wait (``shutting_down``) until the worker's tasks end, unacknowledged, so their
        records come again."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
