"""A :class:`Plan`: everything one batch decided, before anything is written.

The fold fills it; the writer (:func:`pipeline.apply.write.write`) carries it out with a
fixed number of statements; :meth:`Plan.changes` summarises it per table and company for
``replay``/``redrive`` reports (in a dry run: what would be written).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from pipeline.apply.customers import CustomerBook
from pipeline.apply.results import Changes, DeadLetter, Outcome
from pipeline.apply.rows import AppointmentRow, CallRow, CustomerRow, EventRow
from pipeline.dashboard.aggregates import BucketKey, Contribution
from pipeline.providers.facts import EventKey

Row = TypeVar("Row", CallRow, AppointmentRow)


@dataclass
class Writes(Generic[Row]):
    """Rows of one table to insert (missing before) and to update (content changed)."""

    new: list[Row] = field(default_factory=list)
    changed: list[Row] = field(default_factory=list)


def _writes(before: Mapping[str, Row], after: Mapping[str, Row], book: CustomerBook) -> Writes[Row]:
    out: Writes[Row] = Writes()
    for key, row in after.items():
        final = book.final(row.customer_id)
        if final != row.customer_id:
            row = replace(row, customer_id=final)  # its customer was absorbed by another
        if key not in before:
            out.new.append(row)
        elif row != before[key]:
            out.changed.append(row)
    return out


@dataclass(frozen=True, slots=True)
class LinkChecks:
    """What the writer re-reads, with locking reads, after its inserts (a concurrent batch
    may have inserted the other half meanwhile; then the batch is run again): calls this
    batch creates that no known booking names, and call ids its bookings name that no
    known call has."""

    new_calls: frozenset[tuple[str, int]] = frozenset()  # (call id, its company)
    absent_calls: frozenset[str] = frozenset()


@dataclass
class Plan:
    calls_before: Mapping[str, CallRow] = field(default_factory=dict)
    appointments_before: Mapping[str, AppointmentRow] = field(default_factory=dict)
    calls: Writes[CallRow] = field(default_factory=Writes)
    appointments: Writes[AppointmentRow] = field(default_factory=Writes)
    new_customers: dict[int, CustomerRow] = field(default_factory=dict)  # by negative handle
    changed_customers: list[CustomerRow] = field(default_factory=list)
    # stored customers absorbed by another, with the handle of the one absorbing each
    merged_customers: list[tuple[CustomerRow, int]] = field(default_factory=list)
    events: dict[EventKey, EventRow] = field(default_factory=dict)  # id set: an update
    links: list[str] = field(default_factory=list)  # retell_call_ids to link bookings to
    contribution: Contribution = field(default_factory=dict)  # counter deltas of new events
    revisited: set[BucketKey] = field(default_factory=set)  # buckets of replayed events
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    created_uids: set[str] = field(default_factory=set)
    checks: LinkChecks = field(default_factory=LinkChecks)

    def finish(
        self,
        calls: Mapping[str, CallRow],
        appointments: Mapping[str, AppointmentRow],
        book: CustomerBook,
    ) -> None:
        """Turn the fold's final rows into writes."""
        self.calls = _writes(self.calls_before, calls, book)
        self.appointments = _writes(self.appointments_before, appointments, book)
        self.new_customers = book.new
        self.changed_customers = book.changed
        self.merged_customers = book.merged_away
        refs = set(calls) | {a.retell_call_id for a in appointments.values() if a.retell_call_id}
        self.links = sorted(refs)

    @property
    def republish(self) -> list[BucketKey]:
        """Buckets to read back and publish although the batch added nothing to them."""
        return sorted(self.revisited - set(self.contribution))

    def changes(self) -> Changes:
        """Per table and company, the rows this plan inserts, updates and merges (links and
        bucket upserts are counted by the writer, which sees MySQL's answer)."""
        out: Changes = {}

        def note(table: str, company: int | None, kind: str, n: int = 1) -> None:
            out.setdefault(table, {}).setdefault(company, Counter())[kind] += n

        for row in self.new_customers.values():
            note("customers", row.company_id, "insert")
        for row in self.changed_customers:
            note("customers", row.company_id, "update")
        for row, _ in self.merged_customers:
            note("customers", row.company_id, "merge")
        for table, writes in (("calls", self.calls), ("appointments", self.appointments)):
            for subject in writes.new:
                note(table, subject.company_id, "insert")
            for subject in writes.changed:
                note(table, subject.company_id, "update")
        for event in self.events.values():
            note("webhook_events", event.company_id, "update" if event.id else "insert")
        for key in self.contribution:
            table = "dashboard_group_buckets" if key.grouped else "dashboard_buckets"
            note(table, key.company_id, "upsert")
        return out
