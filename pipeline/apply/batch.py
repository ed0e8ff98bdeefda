"""The apply path: one batch of webhook records → one MySQL transaction.

Used by the Faust agents, ``switchboard replay`` and ``dlq redrive`` alike, so there is one
copy of the logic. Per batch, a fixed number of statements (no statement per event):

1. decode every record; poison (undecodable, schema-violating) is set aside for the DLQ;
2. lock the ``webhook_events``, ``calls``, ``appointments`` and ``customers`` rows the
   batch can touch (``SELECT ... FOR UPDATE``), load the branches it can be attributed to;
3. fold every event into those rows in memory with the order-independent merges;
4. write changed rows back with multi-row upserts, insert the new ``webhook_events``, link
   appointments to calls, add the counter contributions of *new* events to
   ``dashboard_buckets`` (fixed key order, so concurrent batches cannot deadlock), and read
   back the absolute values of the touched buckets for the snapshot topic.

Already-applied events still fold into the rows (every merge is idempotent), which is what
lets a replay restore lost rows, but only new events change counters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from pipeline.apply import store
from pipeline.apply.facts import BookingFacts, CallFacts, booking_facts, call_facts
from pipeline.apply.merge import (
    merge_booking,
    merge_call,
    merge_customer,
    merge_rescheduled_original,
)
from pipeline.apply.tenancy import (
    Attribution,
    Unroutable,
    attribute_booking,
    attribute_retell,
    load_directory,
)
from pipeline.dashboard import aggregates
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot, Contribution
from pipeline.database import classify, unavailable
from pipeline.errors import MalformedPayload, PoisonEvent, SchemaViolation
from pipeline.providers import get as get_provider
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord, provider_for_topic
from pipeline.retry import Breaker, retry_conflicts

log = logging.getLogger(__name__)

APPLIED, UNROUTABLE, DEAD_LETTERED = "applied", "unroutable", "dead_lettered"
ALREADY_APPLIED = "already_applied"


@dataclass
class Item:
    """One record on its way through the batch."""

    record: WebhookRecord
    provider: str
    event_id: str
    event_type: str
    sha256: str
    payload: dict[str, Any] | None = None
    call: CallFacts | None = None
    booking: BookingFacts | None = None
    poison: PoisonEvent | None = None
    attribution: Attribution | None = None
    unroutable: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    provider: str
    event_id: str
    event_type: str
    status: str  # applied | already_applied | unroutable | dead_lettered
    company_id: int | None
    reason: str | None
    coordinates: str
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: WebhookRecord
    reason: str
    error_class: str
    detail: str


@dataclass
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    snapshots: list[BucketSnapshot] = field(default_factory=list)
    # table → company id → {"insert": n, "update": n}; what the batch wrote (or would write)
    changes: dict[str, dict[int | None, Counter[str]]] = field(default_factory=dict)
    # Bookings this batch saw for the first time: events parked as `unknown_booking`
    # (a no-show update that arrived before its booking) can now be applied.
    created_uids: set[str] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    def merge(self, other: BatchResult) -> None:
        self.outcomes += other.outcomes
        self.dead_letters += other.dead_letters
        self.snapshots += other.snapshots
        self.created_uids |= other.created_uids
        for table, per_company in other.changes.items():
            mine = self.changes.setdefault(table, {})
            for company, counter in per_company.items():
                mine.setdefault(company, Counter()).update(counter)


def decode(record: WebhookRecord) -> Item:
    """Parse one record into an Item; poison is recorded on the item, never raised."""
    provider_name = record.provider or provider_for_topic(record.topic) or "unknown"
    fallback_id = record.headers.get("event_id") or sha256_hex(record.value)
    item = Item(
        record=record,
        provider=provider_name,
        event_id=fallback_id,
        event_type=record.headers.get("event_type") or "unknown",
        sha256=sha256_hex(record.value),
    )
    try:
        provider = get_provider(provider_name)
    except KeyError:
        item.poison = SchemaViolation(
            f"unknown provider {provider_name!r}", reason="unknown_provider"
        )
        return item
    try:
        envelope = provider.parse(record.value)
    except MalformedPayload as exc:
        reason = (
            "undecodable" if "JSON" in exc.detail or "object" in exc.detail else "schema_violation"
        )
        item.poison = PoisonEvent(exc.detail, reason=reason)
        return item
    item.event_id, item.event_type, item.payload = (
        envelope.event_id,
        envelope.event_type,
        envelope.payload,
    )
    try:
        if provider_name == "retell":
            item.call = call_facts(envelope.event_type, envelope.payload)
        else:
            item.booking = booking_facts(envelope.event_type, envelope.payload)
    except PoisonEvent as exc:
        item.poison = exc
    return item


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
    result = retry_conflicts(lambda: _run(engine, items, dry_run, now))
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
    item.poison = SchemaViolation(
        f"MySQL refused the event (error {failure.errno}, {failure.reason})", reason="db_rejected"
    )
    item.call = item.booking = None
    try:
        return _run(engine, [item], dry_run, now)
    except Exception as again:
        _raise_if_unavailable(again)
        raise


def _run(engine: Engine, items: list[Item], dry_run: bool, now: datetime) -> BatchResult:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = Batch(conn, items, now).apply()
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
            result.snapshots = []
        else:
            transaction.commit()
        return result


class Batch:
    """The in-memory state of one apply transaction."""

    def __init__(self, conn: Connection, items: list[Item], now: datetime) -> None:
        self.conn = conn
        self.items = items
        self.now = now
        self.result = BatchResult()
        self.contribution: Contribution = {}
        # Buckets of already-applied events: republished (unchanged) so that a batch
        # redelivered after a crash between commit and publish heals the table.
        self.revisited: set[BucketKey] = set()

    # --- load --------------------------------------------------------------------------

    def apply(self) -> BatchResult:
        live = [i for i in self.items if i.poison is None]
        call_ids = {i.call.call_id for i in live if i.call}
        uids = {i.booking.uid for i in live if i.booking}
        uids |= {i.booking.reschedule_uid for i in live if i.booking and i.booking.reschedule_uid}
        keys = {(i.provider, i.event_id) for i in self.items}
        keys |= {
            ("retell", f"{kind}:{cid}")
            for cid in call_ids
            for kind in ("call_ended", "call_analyzed")
        }
        self.events_db = store.lock_events(self.conn, keys)
        # Working copy: call_ended/call_analyzed flags flip here as the batch applies them.
        self.events = {k: dict(v) for k, v in self.events_db.items()}
        self.calls_before = store.lock_calls(self.conn, call_ids)
        self.appts_before = store.lock_appointments(self.conn, uids)
        self.calls = {k: dict(v) for k, v in self.calls_before.items()}
        self.appts = {k: dict(v) for k, v in self.appts_before.items()}
        self._attribute(live)
        companies = {i.attribution.company_id for i in live if i.attribution}
        self.timezones = store.company_timezones(self.conn, companies)
        self.customers = store.CustomerBook(self.conn, self._customer_keys(live), self.now)
        handles = {id(i): self._customer(i) for i in live if i.attribution is not None}
        self.customers.flush(self.result.changes)
        self.customer_ids = {k: self.customers.id_of(h) for k, h in handles.items()}

        seen: dict[tuple[str, str], str] = {k: v["status"] for k, v in self.events.items()}
        for item in self.items:
            key = (item.provider, item.event_id)
            applied_before = seen.get(key) == APPLIED
            status = self._fold(item, new=not applied_before)
            if status == APPLIED:
                seen[key] = APPLIED
            elif not applied_before and status in (UNROUTABLE, DEAD_LETTERED):
                seen.setdefault(key, status)
        self._write()
        return self.result

    def _attribute(self, live: list[Item]) -> None:
        phones, agents, types, branch_ids = set(), set(), set(), set()
        for item in live:
            payload = item.payload or {}
            if item.provider == "retell":
                number, agent, metadata = _retell_routing(item, payload)
                if number:
                    phones.add(number)
                if agent:
                    agents.add(agent)
                if metadata and str(metadata.get("branch_id", "")).isdigit():
                    branch_ids.add(int(metadata["branch_id"]))
            elif item.booking:
                if item.booking.event_type_id is not None:
                    types.add(item.booking.event_type_id)
                if item.booking.metadata_branch_id is not None:
                    branch_ids.add(item.booking.metadata_branch_id)
        directory = load_directory(
            self.conn, phones=phones, agent_ids=agents, event_type_ids=types, branch_ids=branch_ids
        )
        for item in live:
            if item.provider == "retell":
                number, agent, metadata = _retell_routing(item, item.payload or {})
                verdict: Attribution | Unroutable = attribute_retell(
                    number, agent, metadata, directory
                )
                row = self.calls.get(item.call.call_id) if item.call else None
                if isinstance(verdict, Unroutable) and row is not None:
                    verdict = Attribution(row["company_id"], row.get("branch_id"))
            else:
                assert item.booking is not None
                row = self.appts.get(item.booking.uid)
                known = Attribution(row["company_id"], row.get("branch_id")) if row else None
                verdict = attribute_booking(item.booking, directory, known)
            if isinstance(verdict, Attribution):
                item.attribution = verdict
            else:
                item.unroutable = verdict.reason

    def _customer_keys(self, live: list[Item]) -> list[tuple[int, str | None, str | None]]:
        keys = []
        for item in live:
            if item.attribution is None:
                continue
            phone, email, _ = _customer_of(item)
            if phone or email:
                keys.append((item.attribution.company_id, phone, email))
        return keys

    # --- fold --------------------------------------------------------------------------

    def _fold(self, item: Item, *, new: bool) -> str:
        if item.poison is not None:
            if not new:
                return self._outcome(item, ALREADY_APPLIED, None)
            self.result.dead_letters.append(
                DeadLetter(
                    item.record, item.poison.reason, type(item.poison).__name__, item.poison.detail
                )
            )
            self._event_row(
                item, DEAD_LETTERED, None, f"{item.poison.reason}: {item.poison.detail}"
            )
            return self._outcome(item, DEAD_LETTERED, item.poison.reason)
        if item.attribution is None:
            item.attribution = self._known_subject(item)
        if item.attribution is None:
            if not new:
                return self._outcome(item, ALREADY_APPLIED, None)
            self._event_row(item, UNROUTABLE, None, item.unroutable)
            return self._outcome(item, UNROUTABLE, item.unroutable)
        company_id = item.attribution.company_id
        customer_id = self.customer_ids.get(id(item))
        if item.call is not None:
            self._fold_call(item, item.call, customer_id, new)
        elif item.booking is not None:
            self._fold_booking(item, item.booking, customer_id, new)
        if new:
            self._event_row(item, APPLIED, company_id, None)
            return self._outcome(item, APPLIED, None)
        return self._outcome(item, ALREADY_APPLIED, None)

    def _known_subject(self, item: Item) -> Attribution | None:
        """A call or booking created earlier in this batch attributes its later events."""
        row = None
        if item.call is not None:
            row = self.calls.get(item.call.call_id)
        elif item.booking is not None:
            row = self.appts.get(item.booking.uid)
        return Attribution(row["company_id"], row.get("branch_id")) if row else None

    def _customer(self, item: Item) -> int | None:
        assert item.attribution is not None
        phone, email, name = _customer_of(item)
        if not (phone or email):
            return None
        seen = (
            item.booking.created_at
            if item.booking and item.booking.created_at
            else item.record.received_at
        )
        return self.customers.upsert(
            item.attribution.company_id,
            phone=phone,
            email=email,
            name=name,
            seen_at=seen,
            merge=merge_customer,
        )

    def _call_flags(self, call_id: str) -> tuple[bool, bool]:
        status = lambda kind: self.events.get(("retell", f"{kind}:{call_id}"), {}).get("status")  # noqa: E731
        return status("call_ended") == APPLIED, status("call_analyzed") == APPLIED

    def _fold_call(self, item: Item, facts: CallFacts, customer_id: int | None, new: bool) -> None:
        assert item.attribution is not None
        before = self.calls.get(facts.call_id)
        after = merge_call(before, facts, item.record.received_at)
        if before is None:
            after["company_id"] = item.attribution.company_id
            after["branch_id"] = item.attribution.branch_id
        if after.get("customer_id") is None and customer_id is not None:
            after["customer_id"] = customer_id
        self.calls[facts.call_id] = after
        if not new:
            ended, analyzed = self._call_flags(facts.call_id)
            tz = self.timezones.get(after["company_id"])
            self.revisited |= set(
                aggregates.call_counters(after, ended=ended, analyzed=analyzed, timezone=tz)
            )
            return
        flags_before = self._call_flags(facts.call_id)
        if facts.event_type in ("call_ended", "call_analyzed"):
            self.events[("retell", f"{facts.event_type}:{facts.call_id}")] = {"status": APPLIED}
        flags_after = self._call_flags(facts.call_id)
        tz = self.timezones.get(after["company_id"])
        delta = aggregates.difference(
            aggregates.call_counters(
                after, ended=flags_after[0], analyzed=flags_after[1], timezone=tz
            ),
            aggregates.call_counters(
                before, ended=flags_before[0], analyzed=flags_before[1], timezone=tz
            ),
        )
        aggregates.combine(self.contribution, delta)

    def _fold_booking(
        self, item: Item, facts: BookingFacts, customer_id: int | None, new: bool
    ) -> None:
        assert item.attribution is not None
        touched = [(facts.uid, merge_booking)]
        if facts.trigger == "BOOKING_RESCHEDULED" and facts.reschedule_uid:
            touched.append((facts.reschedule_uid, merge_rescheduled_original))
        for uid, merge in touched:
            before = self.appts.get(uid)
            after = merge(before, facts)
            if before is None:
                after["company_id"] = item.attribution.company_id
                after["branch_id"] = item.attribution.branch_id
                self.result.created_uids.add(uid)
            if after.get("customer_id") is None and customer_id is not None:
                after["customer_id"] = customer_id
            self.appts[uid] = after
            if not new:
                tz = self.timezones.get(after["company_id"])
                self.revisited |= set(aggregates.appointment_counters(after, timezone=tz))
            if new:
                tz = self.timezones.get(after["company_id"])
                aggregates.combine(
                    self.contribution,
                    aggregates.difference(
                        aggregates.appointment_counters(after, timezone=tz),
                        aggregates.appointment_counters(before, timezone=tz),
                    ),
                )

    def _event_row(
        self, item: Item, status: str, company_id: int | None, error: str | None
    ) -> None:
        stored = self.events_db.get((item.provider, item.event_id))
        if stored is not None and stored["status"] == status and status != APPLIED:
            return  # already recorded as such: a replay of it writes nothing
        record = item.record
        self.pending_events[(item.provider, item.event_id)] = {
            "provider": item.provider,
            "event_id": item.event_id[:255],
            "event_type": item.event_type[:64],
            "correlation_id": (record.correlation_id or "")[:64] or None,
            "company_id": company_id,
            "kafka_topic": record.topic,
            "kafka_partition": record.partition,
            "kafka_offset": record.offset,
            "payload_sha256": item.sha256,
            "status": status,
            "error": error,
            "received_at": record.received_at,
            "processed_at": self.now,
        }

    def _outcome(self, item: Item, status: str, reason: str | None) -> str:
        self.result.outcomes.append(
            Outcome(
                provider=item.provider,
                event_id=item.event_id,
                event_type=item.event_type,
                status=status,
                company_id=item.attribution.company_id if item.attribution else None,
                reason=reason,
                coordinates=item.record.coordinates,
                correlation_id=item.record.correlation_id,
            )
        )
        return status

    @property
    def pending_events(self) -> dict[tuple[str, str], dict[str, Any]]:
        if not hasattr(self, "_pending_events"):
            self._pending_events: dict[tuple[str, str], dict[str, Any]] = {}
        return self._pending_events

    # --- write -------------------------------------------------------------------------

    def _write(self) -> None:
        changes = self.result.changes
        for row in [*self.calls.values(), *self.appts.values()]:
            row["customer_id"] = self.customers.canonical(row.get("customer_id"))
        store.write_rows(
            self.conn, "calls", self.calls_before, self.calls, "retell_call_id", self.now, changes
        )
        store.write_rows(
            self.conn,
            "appointments",
            self.appts_before,
            self.appts,
            "calcom_uid",
            self.now,
            changes,
        )
        self.customers.finish(changes)
        store.write_events(self.conn, self.events_db, self.pending_events, changes)
        call_refs = set(self.calls) | {
            a["retell_call_id"] for a in self.appts.values() if a.get("retell_call_id")
        }
        store.link_appointments(self.conn, call_refs, self.now, changes)
        if self.contribution:
            self.result.snapshots = store.add_to_buckets(
                self.conn, self.contribution, self.now, changes
            )
        if revisited := sorted(self.revisited - set(self.contribution)):
            self.result.snapshots += store.read_buckets(self.conn, revisited)


def _retell_routing(
    item: Item, payload: dict[str, Any]
) -> tuple[str | None, str | None, dict | None]:
    """(business number, agent id, metadata) of any Retell event, calls, chats and inbound."""
    if item.call is not None:
        return item.call.business_number, item.call.agent_id, item.call.metadata
    inbound = payload.get("call_inbound") or payload.get("chat_inbound")
    if isinstance(inbound, dict):
        number = inbound.get("to_number")
        agent = inbound.get("agent_id")
        return (
            number if isinstance(number, str) else None,
            agent if isinstance(agent, str) else None,
            None,
        )
    chat = payload.get("chat")
    if isinstance(chat, dict):
        agent = chat.get("agent_id")
        metadata = chat.get("metadata")
        return (
            None,
            agent if isinstance(agent, str) else None,
            metadata if isinstance(metadata, dict) else None,
        )
    return None, None, None


def _customer_of(item: Item) -> tuple[str | None, str | None, str | None]:
    """(phone, email, name) of the customer an event is about."""
    if item.call is not None:
        return item.call.customer_number, None, None
    if item.booking is not None and item.booking.trigger != "BOOKING_NO_SHOW_UPDATED":
        return item.booking.attendee_phone, item.booking.attendee_email, item.booking.attendee_name
    return None, None, None
