"""The apply path's decisions, with no database: a batch of decoded events folded into the
rows the load phase read, giving a :class:`~pipeline.apply.plan.Plan` of every row and
counter change.

The engine (:mod:`pipeline.apply.batch`) runs ``wants`` → load → ``attribute`` → load the
customers → ``fold`` → write. Everything between the loads and the write is here, pure,
so the property tests can fold thousands of orderings in milliseconds
(``tests/unit/test_apply_fold.py``) while the integration tests keep the SQL honest.

Rules (docs/data-model.md): an event is *new* until a ``webhook_events`` row says it was
applied; every event's facts merge into the rows (merges are idempotent, which is what
lets a replay restore lost rows), but only new events change counters, by the difference
between what the rows contribute after and before the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pipeline.apply.customers import CustomerBook, Sighting
from pipeline.apply.items import Item
from pipeline.apply.merge import (
    merge_booking,
    merge_call,
    merge_rescheduled_original,
    new_appointment,
    new_call,
)
from pipeline.apply.plan import LinkChecks, Plan
from pipeline.apply.results import DeadLetter, Outcome
from pipeline.apply.rows import (
    ALREADY_APPLIED,
    APPLIED,
    DEAD_LETTERED,
    UNROUTABLE,
    AppointmentRow,
    CallRow,
    CustomerRow,
    EventRow,
    StoredEvent,
)
from pipeline.apply.tenancy import (
    Attribution,
    Directory,
    Unroutable,
    attribute_booking,
    attribute_retell,
)
from pipeline.dashboard import aggregates
from pipeline.dashboard.aggregates import Contribution
from pipeline.identifiers import normalise_email, normalise_phone
from pipeline.providers.facts import BookingFacts, CallFacts, EventKey, Mention
from pipeline.providers.retell import milestone_key

Subject = CallRow | AppointmentRow


def milestones(call_id: str) -> tuple[EventKey, EventKey]:
    """The call_ended and call_analyzed event keys of a call."""
    return milestone_key("call_ended", call_id), milestone_key("call_analyzed", call_id)


@dataclass(frozen=True, slots=True)
class Wants:
    """What the load phase must read (and lock) for a batch."""

    events: frozenset[EventKey] = frozenset()
    call_ids: frozenset[str] = frozenset()
    uids: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()
    agent_ids: frozenset[str] = frozenset()
    event_type_ids: frozenset[int] = frozenset()
    branch_ids: frozenset[int] = frozenset()


@dataclass
class Loaded:
    """What the load phase read: the state the fold starts from."""

    events: dict[EventKey, StoredEvent] = field(default_factory=dict)
    calls: dict[str, CallRow] = field(default_factory=dict)
    appointments: dict[str, AppointmentRow] = field(default_factory=dict)
    directory: Directory = field(default_factory=Directory)
    timezones: dict[int, str] = field(default_factory=dict)
    customers: list[CustomerRow] = field(default_factory=list)
    # Per call id: the stored appointments with booked_at naming it ({uid: company}), for
    # calls_booked (:mod:`pipeline.apply.load`, ``load_links``).
    bookings: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An item and where it belongs: a company, or why none."""

    item: Item
    attribution: Attribution | None = None
    unroutable: str | None = None
    customer: Sighting | None = None  # who it is about, if attributed and it names someone


def wants(items: Sequence[Item]) -> Wants:
    call_ids, uids, phones, agents, types, branch_ids = set(), set(), set(), set(), set(), set()
    for item in items:
        facts = item.facts
        if isinstance(facts, CallFacts):
            call_ids.add(facts.call_id)
        if isinstance(facts, CallFacts | Mention):
            if facts.business_number:
                phones.add(facts.business_number)
            if facts.agent_id:
                agents.add(facts.agent_id)
            if (branch := facts.metadata_branch_id) is not None:
                branch_ids.add(branch)
        elif isinstance(facts, BookingFacts):
            uids.add(facts.uid)
            if facts.reschedule_uid:
                uids.add(facts.reschedule_uid)
            if facts.event_type_id is not None:
                types.add(facts.event_type_id)
            if facts.metadata_branch_id is not None:
                branch_ids.add(facts.metadata_branch_id)
            if facts.retell_call_id:  # vouches for a branch; its calls_booked may change
                call_ids.add(facts.retell_call_id)
    events = {i.key for i in items}
    events |= {m for i in items if isinstance(i.facts, CallFacts) for m in i.facts.milestones}
    return Wants(
        frozenset(events),
        frozenset(call_ids),
        frozenset(uids),
        frozenset(phones),
        frozenset(agents),
        frozenset(types),
        frozenset(branch_ids),
    )


def attribute(items: Sequence[Item], loaded: Loaded) -> list[Verdict]:
    """Attribute every live item by the rules of docs/data-model.md (tenancy).

    A call or booking is attributed once: when its row exists, its company is the answer
    for every later event and replay, whatever the directory says today (a number or an
    event type that moved to another company must not take the old owner's data along)."""
    out = []
    for item in items:
        facts = item.facts
        verdict: Attribution | Unroutable
        if item.poison is not None or facts is None:
            out.append(Verdict(item))
            continue
        if isinstance(facts, BookingFacts):
            verdict = attribute_booking(
                facts,
                loaded.directory,
                _owner(loaded.appointments.get(facts.uid)),
                _owner(loaded.calls.get(facts.retell_call_id or "")),
            )
        elif isinstance(facts, CallFacts) and (stored := loaded.calls.get(facts.call_id)):
            verdict = Attribution(stored.company_id, stored.branch_id)
        else:
            verdict = attribute_retell(
                facts.business_number, facts.agent_id, facts.metadata, loaded.directory
            )
        if isinstance(verdict, Attribution):
            attributed = Verdict(item, attribution=verdict)
            out.append(Verdict(item, verdict, None, sighting(attributed)))
        else:
            out.append(Verdict(item, unroutable=verdict.reason))
    return out


def _owner(row: Subject | None) -> Attribution | None:
    return Attribution(row.company_id, row.branch_id) if row is not None else None


def sighting(verdict: Verdict) -> Sighting | None:
    """The customer an attributed event is about, if it names one."""
    facts, attribution = verdict.item.facts, verdict.attribution
    if attribution is None:
        return None
    if isinstance(facts, CallFacts):
        phone, email, name = facts.customer_number, None, None
        seen_at = verdict.item.received_at
    elif isinstance(facts, BookingFacts) and facts.trigger != BookingFacts.NO_SHOW:
        phone, email, name = facts.attendee_phone, facts.attendee_email, facts.attendee_name
        seen_at = facts.created_at or verdict.item.received_at
    else:
        return None
    # Keys are compared normalised (docs/integrity.md): "+14155550142 " is "+14155550142".
    phone, email = normalise_phone(phone), normalise_email(email)
    if not (phone or email):
        return None
    return Sighting(attribution.company_id, phone, email, name, seen_at)


def people(verdicts: Iterable[Verdict]) -> tuple[set[int], list[Sighting]]:
    """The companies (for their time zones) and the customers the load phase must read."""
    companies = {v.attribution.company_id for v in verdicts if v.attribution}
    return companies, [v.customer for v in verdicts if v.customer is not None]


def fold(verdicts: Sequence[Verdict], loaded: Loaded, now: datetime) -> Plan:
    """Every row, event and counter change the batch makes, decided in memory."""
    return _Fold(loaded, now).run(verdicts)


class _Fold:
    def __init__(self, loaded: Loaded, now: datetime) -> None:
        self.loaded = loaded
        self.now = now
        self.calls = dict(loaded.calls)
        self.appointments = dict(loaded.appointments)
        # call_ended/call_analyzed flags flip here as the batch applies them
        self.milestones = {k: v.status for k, v in loaded.events.items()}
        self.book = CustomerBook.of(loaded.customers)
        self.plan = Plan(calls_before=loaded.calls, appointments_before=loaded.appointments)
        # call id -> {uid: company} of the bookings naming it, kept current as the batch folds
        self.naming: dict[str, dict[str, int]] = {
            ref: {u: c for u, c in uids.items() if u not in self.appointments}
            for ref, uids in loaded.bookings.items()
        }
        for row in self.appointments.values():
            self._name(row, True)

    def run(self, verdicts: Sequence[Verdict]) -> Plan:
        # Customers first, in item order: every attributed event's sighting, so absorbed
        # customers are settled before any row points to one.
        handles = {id(v): self.book.sight(v.customer) for v in verdicts if v.customer is not None}
        customers = {k: self.book.final(h) for k, h in handles.items()}
        seen = {k: v.status for k, v in self.loaded.events.items()}
        for verdict in verdicts:
            key = verdict.item.key
            applied_before = seen.get(key) == APPLIED
            status = self._fold(verdict, customers.get(id(verdict)), new=not applied_before)
            if status == APPLIED:
                seen[key] = APPLIED
            elif not applied_before and status in (UNROUTABLE, DEAD_LETTERED):
                seen.setdefault(key, status)
        self.plan.finish(self.calls, self.appointments, self.book)
        self.plan.checks = self._checks()
        return self.plan

    def _checks(self) -> LinkChecks:
        """What a concurrent batch could have changed unseen: a booking and the call it
        names, each inserted by one of two transactions that both found the other absent
        (READ COMMITTED has no gap locks). The writer re-reads these after its inserts."""
        new_calls = {
            (ref, call.company_id)
            for ref, call in self.calls.items()
            if ref not in self.loaded.calls and not self._booked(call)
        }
        absent = {
            a.retell_call_id
            for a in self.appointments.values()
            if a.retell_call_id and a.booked_at is not None and a.retell_call_id not in self.calls
        }
        return LinkChecks(frozenset(new_calls), frozenset(absent))

    def _fold(self, verdict: Verdict, customer: int | None, *, new: bool) -> str:
        item = verdict.item
        if item.poison is not None:
            if not new:
                return self._outcome(item, None, ALREADY_APPLIED, None)
            poison = item.poison
            self.plan.dead_letters.append(
                DeadLetter(item.record, poison.reason, type(poison).__name__, poison.detail)
            )
            self._event(item, DEAD_LETTERED, None, f"{poison.reason}: {poison.detail}")
            return self._outcome(item, None, DEAD_LETTERED, poison.reason)
        attribution = verdict.attribution or self._known_subject(item)
        if attribution is None:
            if not new:
                return self._outcome(item, None, ALREADY_APPLIED, None)
            self._event(item, UNROUTABLE, None, verdict.unroutable)
            return self._outcome(item, None, UNROUTABLE, verdict.unroutable)
        if isinstance(item.facts, CallFacts):
            self._call(item, item.facts, attribution, customer, new)
        elif isinstance(item.facts, BookingFacts):
            self._booking(item.facts, attribution, customer, new)
        if new:
            self._event(item, APPLIED, attribution.company_id, None)
            return self._outcome(item, attribution, APPLIED, None)
        return self._outcome(item, attribution, ALREADY_APPLIED, None)

    def _known_subject(self, item: Item) -> Attribution | None:
        """A call or booking created earlier in this batch attributes its later events."""
        row: Subject | None = None
        if isinstance(item.facts, CallFacts):
            row = self.calls.get(item.facts.call_id)
        elif isinstance(item.facts, BookingFacts):
            row = self.appointments.get(item.facts.uid)
        return Attribution(row.company_id, row.branch_id) if row else None

    def _flags(self, milestones: tuple[EventKey, EventKey]) -> tuple[bool, bool]:
        """Whether the call's call_ended and call_analyzed are applied (so far)."""
        ended, analyzed = milestones
        return self.milestones.get(ended) == APPLIED, self.milestones.get(analyzed) == APPLIED

    def _booked(self, call: CallRow) -> bool:
        """Whether at least one booking of the call's company names the call."""
        return call.company_id in self.naming.get(call.retell_call_id, {}).values()

    def _name(self, row: AppointmentRow | None, on: bool) -> None:
        """Enter (``on``) or remove a booking in the index of the calls bookings name."""
        if row is None or not row.retell_call_id:
            return
        names = self.naming.setdefault(row.retell_call_id, {})
        if on and row.booked_at is not None:
            names[row.calcom_uid] = row.company_id
        elif not on:
            names.pop(row.calcom_uid, None)

    def _rename(self, before: AppointmentRow | None, after: AppointmentRow, new: bool) -> None:
        """A booking changed: the calls it names (before and after) may change calls_booked,
        in the call's bucket, counted once per call whatever the number of bookings."""
        refs = {r.retell_call_id for r in (before, after) if r is not None and r.retell_call_id}
        calls = [self.calls[r] for r in sorted(refs) if r in self.calls]
        was = [self._booked(c) for c in calls]
        self._name(before, False)
        self._name(after, True)
        if not new:
            return
        for call, booked_before in zip(calls, was, strict=True):
            booked_after = self._booked(call)
            if booked_after == booked_before:
                continue
            zone = self.loaded.timezones.get(call.company_id)
            flags = self._flags(milestones(call.retell_call_id))
            self._count(
                aggregates.call_counters(call, *flags, timezone=zone, booked=booked_after),
                aggregates.call_counters(call, *flags, timezone=zone, booked=booked_before),
            )

    def _call(
        self, item: Item, facts: CallFacts, owner: Attribution, customer: int | None, new: bool
    ) -> None:
        before = self.calls.get(facts.call_id)
        start = before or new_call(facts.call_id, owner.company_id, owner.branch_id)
        after = merge_call(start, facts, item.received_at)
        if after.customer_id is None and customer is not None:
            after = replace(after, customer_id=customer)
        self.calls[facts.call_id] = after
        zone = self.loaded.timezones.get(after.company_id)
        flags_before = self._flags(facts.milestones)
        booked = self._booked(after)
        if not new:
            self._revisit(
                aggregates.call_counters(after, *flags_before, timezone=zone, booked=booked)
            )
            return
        if item.key in facts.milestones:
            self.milestones[item.key] = APPLIED
        flags_after = self._flags(facts.milestones)
        self._count(
            aggregates.call_counters(after, *flags_after, timezone=zone, booked=booked),
            aggregates.call_counters(before, *flags_before, timezone=zone, booked=booked),
        )

    def _booking(
        self, facts: BookingFacts, owner: Attribution, customer: int | None, new: bool
    ) -> None:
        touched = [(facts.uid, merge_booking)]
        if facts.trigger == BookingFacts.RESCHEDULED and facts.reschedule_uid:
            touched.append((facts.reschedule_uid, merge_rescheduled_original))
        for uid, merge in touched:
            before = self.appointments.get(uid)
            if before is None:
                self.plan.created_uids.add(uid)
            after = merge(before or new_appointment(uid, owner.company_id, owner.branch_id), facts)
            if after.customer_id is None and customer is not None:
                after = replace(after, customer_id=customer)
            self.appointments[uid] = after
            self._rename(before, after, new)
            zone = self.loaded.timezones.get(after.company_id)
            if new:
                self._count(
                    aggregates.appointment_counters(after, timezone=zone),
                    aggregates.appointment_counters(before, timezone=zone),
                )
            else:
                self._revisit(aggregates.appointment_counters(after, timezone=zone))
                self._revisit_named_call(after)

    def _revisit_named_call(self, booking: AppointmentRow) -> None:
        """The buckets of the call a booking names: when the booking was first applied, its
        link may have changed that call's calls_booked there."""
        call = self.calls.get(booking.retell_call_id or "")
        if call is not None and call.company_id == booking.company_id:
            self._revisit(
                aggregates.call_counters(
                    call,
                    *self._flags(milestones(call.retell_call_id)),
                    timezone=self.loaded.timezones.get(call.company_id),
                    booked=self._booked(call),
                )
            )

    def _count(self, after: Contribution, before: Contribution) -> None:
        aggregates.combine(self.plan.contribution, aggregates.difference(after, before))

    def _revisit(self, contribution: Contribution) -> None:
        """Buckets of already-applied events: republished (unchanged) so that a batch
        redelivered after a crash between commit and publish heals the table."""
        self.plan.revisited |= set(contribution)

    def _event(self, item: Item, status: str, company_id: int | None, error: str | None) -> None:
        stored = self.loaded.events.get(item.key)
        if stored is not None and stored.status == status and status != APPLIED:
            return  # already recorded as such: a replay of it writes nothing
        record = item.record
        self.plan.events[item.key] = EventRow(
            provider=item.provider,
            event_id=item.event_id,
            event_type=item.event_type[:64],
            correlation_id=(record.correlation_id or "")[:64] or None,
            company_id=company_id,
            kafka_topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
            payload_sha256=item.sha256,
            status=status,
            error=error,
            received_at=item.received_at,
            processed_at=self.now,
            id=stored.id if stored is not None else None,
        )

    def _outcome(
        self, item: Item, attribution: Attribution | None, status: str, reason: str | None
    ) -> str:
        self.plan.outcomes.append(
            Outcome(
                provider=item.provider,
                event_id=item.event_id,
                event_type=item.event_type,
                status=status,
                company_id=attribution.company_id if attribution else None,
                reason=reason,
                coordinates=item.record.coordinates,
                correlation_id=item.record.correlation_id,
                clipped=getattr(item.facts, "clipped", ()),
            )
        )
        return status
