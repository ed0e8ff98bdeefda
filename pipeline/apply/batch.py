"""The apply engine: one batch of webhook records → one MySQL transaction, as
load → fold → write.

Used by the Faust agents, ``switchboard replay`` and ``dlq redrive`` alike, so there is one
copy of the logic. Per batch, a fixed number of statements (no statement per event):

1. decode every record (:mod:`pipeline.apply.items`); poison is set aside for the DLQ;
2. *load*: lock the ``webhook_events``, ``calls`` and ``appointments`` rows the batch can
   touch (``SELECT ... FOR UPDATE``) and read the branches it can be attributed to;
   attribute (pure), then lock the customers it names and read the companies' time zones;
3. *fold* (:mod:`pipeline.apply.fold`, pure): every row, event and counter change;
4. *write* (:func:`pipeline.apply.write.write`): multi-row inserts and upserts, links of
   appointments to calls, counter deltas added to ``dashboard_buckets`` in a fixed key
   order (concurrent batches cannot deadlock on them), and the absolute values of the
   touched buckets read back for the snapshot topic.

Already-applied events still fold into the rows (every merge is idempotent), which is what
lets a replay restore lost rows, but only new events change counters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.apply import fold, load, privacy, write
from pipeline.apply.items import Item, decode
from pipeline.apply.results import BatchResult, add_changes
from pipeline.database import classify, unavailable
from pipeline.errors import SchemaViolation
from pipeline.records import WebhookRecord
from pipeline.retry import Breaker, retry_conflicts

log = logging.getLogger(__name__)


def apply_batch(
    engine: Engine,
    records: Sequence[WebhookRecord],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    breaker: Breaker | None = None,
) -> BatchResult:
    """Apply ``records`` in one transaction (rolled back when ``dry_run``).

    Raises :class:`DatabaseUnavailable` when the database, not the batch, is the problem
    (:func:`pipeline.database.classify`): retry the whole batch later. Key conflicts are
    retried a few times (a concurrent writer won a race). A database error that is about the
    records is narrowed down record by record, so that only the record MySQL refuses is
    dead-lettered, and only while ``breaker`` agrees that it is the record's fault.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    items = [decode(r) for r in records]
    try:
        return _attempt(engine, items, dry_run, now, breaker)
    except Exception as exc:
        _raise_if_unavailable(exc)
        if not isinstance(exc, DBAPIError):
            raise  # a bug: the caller isolates it
        if len(items) == 1:
            return _refused(engine, items[0], exc, dry_run, now, breaker)
        log.warning("batch refused by MySQL (%s); retrying record by record", classify(exc).reason)
    result = BatchResult()
    for item in items:
        try:
            result.merge(_attempt(engine, [item], dry_run, now, breaker))
        except DBAPIError as exc:
            _raise_if_unavailable(exc)
            result.merge(_refused(engine, item, exc, dry_run, now, breaker))
    return result


def _attempt(
    engine: Engine, items: list[Item], dry_run: bool, now: datetime, breaker: Breaker | None
) -> BatchResult:
    result = retry_conflicts(lambda: _transaction(engine, items, dry_run, now))
    if breaker is not None:
        breaker.succeeded()
    return result


def _raise_if_unavailable(exc: BaseException) -> None:
    waiting = unavailable(exc)
    if waiting is not None:
        raise waiting from exc


def _refused(
    engine: Engine,
    item: Item,
    exc: DBAPIError,
    dry_run: bool,
    now: datetime,
    breaker: Breaker | None,
) -> BatchResult:
    failure = classify(exc)
    if breaker is not None:
        breaker.check(failure, item.record.coordinates)  # many alike: wait instead (raises)
    poison = SchemaViolation(
        f"MySQL refused the event (error {failure.errno}, {failure.reason})", reason="db_rejected"
    )
    try:
        return _transaction(engine, [replace(item, facts=None, poison=poison)], dry_run, now)
    except Exception as again:
        _raise_if_unavailable(again)
        raise


def _transaction(engine: Engine, items: list[Item], dry_run: bool, now: datetime) -> BatchResult:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = apply_items(conn, items, now)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
            result.snapshots = []
        else:
            transaction.commit()
        return result


def apply_items(conn: Connection, items: Sequence[Item], now: datetime) -> BatchResult:
    """load → fold → write, inside the caller's transaction."""
    items = privacy.scrub(conn, items)  # first: its shared lock orders it with erasures
    loaded = load.load(conn, fold.wants(items))
    verdicts = fold.attribute(items, loaded)
    companies, sightings = fold.people(verdicts)
    load.load_people(conn, loaded, companies, sightings)
    plan = fold.fold(verdicts, loaded, now)
    written = write.write(conn, plan, now)
    changes = plan.changes()
    if written.links:
        add_changes(changes, {"appointments": {None: Counter(link=written.links)}})
    return BatchResult(
        outcomes=plan.outcomes,
        dead_letters=plan.dead_letters,
        snapshots=written.snapshots,
        changes=changes,
        created_uids=plan.created_uids,
    )
