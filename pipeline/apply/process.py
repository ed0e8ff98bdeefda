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
* A child that dies (killed, out of memory) is replaced and the batches it held (the one
  it applied and the next) sent again in their order (the memory of published buckets is
  forgotten first: the child may have died between a commit and its reply, and that
  batch's buckets must be published again); if the batch it was applying kills the new
  child too, :class:`ApplyFailed` says so and the Applier
  isolates the batch record by record, so one poisonous record cannot stop a partition.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
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


def _lost(reply: asyncio.Future[_Reply]) -> bool:
    """The child died before this reply came (it has none, or the pool's failure)."""
    return not reply.done() or reply.cancelled() or reply.exception() is not None


#: Batches in the child's hands at once: the one it applies, and the next, already sent,
#: so that the child never waits for the worker between two batches (docs/benchmarks.md 1e).
DEPTH = 2


class ApplyProcess:
    """One child process that applies batches in the order they are given, holding the
    next while it applies one (``depth``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_restart: Callable[[], None] | None = None,
        target: Callable[[Sequence[WebhookRecord], bool, News], _Reply] | None = None,
        depth: int = DEPTH,
    ) -> None:
        self.settings = settings
        self.on_restart = on_restart or (lambda: None)
        # what the child runs per batch (tests give one that dies); a module-level function
        self.target = target or _apply
        self.depth = depth
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        # Batches are numbered as they come; they go to the child in that order, at most
        # ``depth`` at a time, and the others wait here. When the child dies, every batch
        # it held comes back here and goes again in its order, and only the first of them,
        # the one the child was applying, counts that death: queued behind it, a batch
        # counting every death would, killing the next child itself, count as having
        # died "twice" and be isolated (the fault suite's apply-process kills found it).
        self._numbers = itertools.count()
        self._waiting: list[int] = []  # a heap: the next to send is the smallest
        # in the child's hands, and the reply to come
        self._sent: dict[int, tuple[ProcessPoolExecutor, asyncio.Future[_Reply]]] = {}
        self._blamed: set[int] = set()  # died on, not yet told
        self._changed = asyncio.Condition()

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
        number = next(self._numbers)
        deaths = 0
        heapq.heappush(self._waiting, number)
        try:
            while True:
                pool, reply = await self._send(number, records, published, dry_run)
                try:
                    return await reply
                except BrokenProcessPool:
                    if await self._died(number, pool, published):
                        deaths += 1
                        log.error(
                            "the apply process died applying a batch of %d record(s) (attempt %d)",
                            len(records),
                            deaths,
                        )
                        if deaths == 2:
                            raise ApplyFailed(
                                "the apply process died twice on this batch",
                                DbFailure(Kind.UNKNOWN, "process_died"),
                            ) from None
        finally:
            async with self._changed:
                self._sent.pop(number, None)
                self._blamed.discard(number)
                if number in self._waiting:
                    self._waiting.remove(number)
                    heapq.heapify(self._waiting)
                self._changed.notify_all()

    async def _send(
        self,
        number: int,
        records: Sequence[WebhookRecord],
        published: PublishedBuckets,
        dry_run: bool,
    ) -> tuple[ProcessPoolExecutor, asyncio.Future[_Reply]]:
        """Send batch ``number`` to the child once it is the next to go and the child has
        room for it."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._waiting[0] == number and len(self._sent) < self.depth
            )
            pool = self._executor()
            heapq.heappop(self._waiting)
            loop = asyncio.get_running_loop()
            try:
                reply = loop.run_in_executor(
                    pool, self.target, list(records), dry_run, published.news(pool)
                )
            except BrokenProcessPool as exc:  # it died between two batches
                reply = loop.create_future()
                reply.set_exception(exc)
            self._sent[number] = (pool, reply)
            self._changed.notify_all()
            return pool, reply

    async def _died(
        self, number: int, pool: ProcessPoolExecutor, published: PublishedBuckets
    ) -> bool:
        """``pool``'s child died with batch ``number`` in its hands: every batch it held goes
        back to wait, in its order, for a new child. True if ``number`` was the one it was
        applying (the first it held)."""
        async with self._changed:
            held = sorted(n for n, (p, reply) in self._sent.items() if p is pool and _lost(reply))
            if held:  # the first of them to hear of it
                self._blamed.add(held[0])
                for n in held:
                    del self._sent[n]
                    heapq.heappush(self._waiting, n)
                # It may have died between a commit and its reply: that batch's buckets
                # must be republished when it comes again, as after a rebalance.
                published.forget()
                self._replace(pool)
                self._changed.notify_all()
            blamed = number in self._blamed
            self._blamed.discard(number)
            return blamed

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:  # else the warm-up or another call replaced it already
            self._pool = None
            self.on_restart()
        pool.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Start the child now (the worker calls this as it starts), so that the first batch
        does not wait for a process to spawn and import, and a child that cannot start
        says so at once."""
        await asyncio.get_running_loop().run_in_executor(self._executor(), _ready)

    def close(self) -> None:
        """Stop the child after the batches it holds; batches waiting their turn then wait
        (``shutting_down``) until the worker's tasks end, unacknowledged, so their records
        come again."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
