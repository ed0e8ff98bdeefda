"""The apply engine: one batch of webhook records → one MySQL transaction, as
load → fold → write.

Used by the Faust agents, ``switchboard replay`` and ``dlq redrive`` alike, so there is one
copy of the logic. Per batch, a fixed number of statements (no statement per event):

0. recognise the records applied before, byte for byte, whose rows exist
   (:mod:`pipeline.apply.recognise`): nothing to parse, lock or write for them;
1. decode the others (:mod:`pipeline.apply.items`); poison is set aside for the DLQ; read
   the erasure list for the people they name (:mod:`pipeline.apply.privacy`, a shared lock
   taken before any row lock) and drop an erased person's personal facts (a recognised
   record writes nothing, so it has nothing to drop);
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.apply import fold, load, lookup, privacy, recognise, write
from pipeline.apply.items import Item, decode
from pipeline.apply.published import PublishedBuckets
from pipeline.apply.results import BatchResult, add_changes
from pipeline.dashboard.aggregates import BucketKey
from pipeline.database import classify, unavailable
from pipeline.errors import SchemaViolation
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord
from pipeline.retry import Breaker, OnRetry, retry_conflicts

log = logging.getLogger(__name__)


def apply_batch(
    engine: Engine,
    records: Sequence[WebhookRecord],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    breaker: Breaker | None = None,
    on_retry: OnRetry | None = None,
    published: PublishedBuckets | None = None,
) -> BatchResult:
    """Apply ``records`` in one transaction (rolled back when ``dry_run``).

    Raises :class:`DatabaseUnavailable` when the database, not the batch, is the problem
    (:func:`pipeline.database.classify`): retry the whole batch later. Key conflicts are
    retried a few times (a concurrent writer won a race). A database error that is about the
    records is narrowed down record by record, so that only the record MySQL refuses is
    dead-lettered, and only while ``breaker`` agrees that it is the record's fault.

    ``published``: the buckets this consumer published lately; an already-applied event
    does not republish them again (:mod:`pipeline.apply.published`).
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    seen = published or PublishedBuckets()
    try:
        return _attempt(engine, records, dry_run, now, breaker, on_retry, seen)
    except Exception as exc:
        _raise_if_unavailable(exc)
        if not isinstance(exc, DBAPIError):
            raise  # a bug: the caller isolates it
        if len(records) == 1:
            return _refused(engine, records[0], exc, dry_run, now, breaker)
        log.warning("batch refused by MySQL (%s); retrying record by record", classify(exc).reason)
    result = BatchResult()
    for record in records:
        try:
            result.merge(_attempt(engine, [record], dry_run, now, breaker, on_retry, seen))
        except DBAPIError as exc:
            _raise_if_unavailable(exc)
            result.merge(_refused(engine, record, exc, dry_run, now, breaker))
    return result


def _attempt(
    engine: Engine,
    records: Sequence[WebhookRecord],
    dry_run: bool,
    now: datetime,
    breaker: Breaker | None,
    on_retry: OnRetry | None,
    published: PublishedBuckets,
) -> BatchResult:
    # Conflicts retried here are counted under their errno too (mysql_1062_duplicate_key).
    result = retry_conflicts(
        lambda: _transaction(
            engine, lambda conn: apply_records(conn, records, now, published), dry_run
        ),
        on_retry=on_retry,
    )
    if breaker is not None:
        breaker.succeeded()
    return result


def _raise_if_unavailable(exc: BaseException) -> None:
    waiting = unavailable(exc)
    if waiting is not None:
        raise waiting from exc


def _refused(
    engine: Engine,
    record: WebhookRecord,
    exc: DBAPIError,
    dry_run: bool,
    now: datetime,
    breaker: Breaker | None,
) -> BatchResult:
    failure = classify(exc)
    if breaker is not None:
        breaker.check(failure, record.coordinates)  # many alike: wait instead (raises)
    poison = SchemaViolation(
        f"MySQL refused the event (error {failure.errno}, {failure.reason})", reason="db_rejected"
    )
    refused = [replace(decode(record), facts=None, poison=poison)]
    try:
        return _transaction(engine, lambda conn: apply_items(conn, refused, now), dry_run)
    except Exception as again:
        _raise_if_unavailable(again)
        raise


def _transaction(
    engine: Engine, work: Callable[[Connection], BatchResult], dry_run: bool
) -> BatchResult:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = work(conn)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
            result.snapshots = []
        else:
            transaction.commit()
        return result


def apply_records(
    conn: Connection,
    records: Sequence[WebhookRecord],
    now: datetime,
    published: PublishedBuckets | None = None,
) -> BatchResult:
    """Recognise the records applied before byte for byte (:mod:`pipeline.apply.recognise`),
    then load → fold → write the others, inside the caller's transaction."""
    published = published or PublishedBuckets()
    shas = [sha256_hex(r.value) for r in records]
    known = _recognise(conn, records, shas)
    rest = known.rest(len(records))
    if not rest:
        return BatchResult(
            outcomes=[known.outcomes[i] for i in range(len(records))],
            snapshots=write.read_buckets(conn, sorted(published.unpublished(known.revisited))),
        )
    items = [decode(records[i], shas[i]) for i in rest]
    result = apply_items(conn, items, now, revisited=known.revisited, published=published)
    if known.outcomes:
        done = dict(zip(rest, result.outcomes, strict=True)) | known.outcomes
        result.outcomes = [done[i] for i in range(len(records))]
    return result


def _recognise(
    conn: Connection, records: Sequence[WebhookRecord], shas: Sequence[str]
) -> recognise.Recognised:
    found = recognise.candidates(records, shas)
    if not found:
        return recognise.Recognised()
    known = lookup.known_events(conn, recognise.lookup_keys(found), recognise.spans(records))
    rows = recognise.known_rows(found, known)
    if not rows:
        return recognise.Recognised()
    call_ids = {i for table, ids in rows.values() if table == recognise.CALLS for i in ids}
    uids = {i for table, ids in rows.values() if table == recognise.APPOINTMENTS for i in ids}
    calls, appointments = lookup.bucket_columns(conn, call_ids, uids)
    if named := recognise.named_calls(appointments) - calls.keys():
        # The calls the bookings name, whose buckets they republish too: a round trip for
        # their milestones and one for their rows, only when a known booking names a call.
        known = {**known, **lookup.known_events(conn, recognise.milestone_keys(named))}
        calls |= lookup.bucket_columns(conn, named, ())[0]
    timezones = {r["company_id"]: r["timezone"] for r in [*calls.values(), *appointments.values()]}
    return recognise.recognise(found, known, rows, calls, appointments, timezones)


def apply_items(
    conn: Connection,
    items: Sequence[Item],
    now: datetime,
    *,
    revisited: Iterable[BucketKey] = (),
    published: PublishedBuckets | None = None,
) -> BatchResult:
    """load → fold → write, inside the caller's transaction. ``revisited``: buckets of
    recognised records to republish with the batch's own, unless ``published`` says this
    consumer published them lately (the buckets the batch adds to are always published)."""
    items = privacy.scrub(conn, items)  # first: its shared lock orders it with erasures
    wants = fold.wants(items)
    loaded = load.load(conn, wants)
    load.load_links(conn, loaded, wants)
    verdicts = fold.attribute(items, loaded)
    companies, sightings = fold.people(verdicts)
    load.load_people(conn, loaded, companies, sightings)
    plan = fold.fold(verdicts, loaded, now)
    plan.revisited |= set(revisited)
    if published is not None:
        plan.revisited = published.unpublished(plan.revisited)
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
