"""The apply engine over dictionaries instead of MySQL: the same decode → fold the worker
runs, with a load and a write that keep the tables in memory. For property tests of the
fold (order independence, exact counters) that run in milliseconds; the integration tests
prove the SQL store does what this one does."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from itertools import count
from typing import Any

from pipeline.apply import fold
from pipeline.apply.customers import Sighting
from pipeline.apply.items import decode
from pipeline.apply.plan import Plan
from pipeline.apply.results import BatchResult
from pipeline.apply.rows import (
    AppointmentRow,
    CallRow,
    CustomerRow,
    EventRow,
    StoredEvent,
)
from pipeline.apply.tenancy import Branch, Directory
from pipeline.dashboard.aggregates import BucketKey
from pipeline.models import COUNTERS, DECIMAL_COUNTERS
from pipeline.providers import calcom
from pipeline.providers.facts import EventKey
from pipeline.records import WebhookRecord

NOW = datetime(2026, 1, 10, 12, 0)


@dataclass
class MemoryStore:
    branches: list[Branch]
    timezones: dict[int, str]
    events: dict[EventKey, EventRow] = field(default_factory=dict)
    calls: dict[str, CallRow] = field(default_factory=dict)
    appointments: dict[str, AppointmentRow] = field(default_factory=dict)
    customers: dict[int, CustomerRow] = field(default_factory=dict)
    buckets: dict[BucketKey, dict[str, Any]] = field(default_factory=dict)
    versions: dict[BucketKey, int] = field(default_factory=dict)
    records: dict[tuple[str, int, int], WebhookRecord] = field(default_factory=dict)
    _ids: count[int] = field(default_factory=lambda: count(1))

    # --- the engine, as pipeline.apply.batch runs it ---------------------------------------

    def apply(self, records: Sequence[WebhookRecord]) -> BatchResult:
        for r in records:
            self.records[(r.topic, r.partition, r.offset)] = r
        items = [decode(r) for r in records]
        loaded = self.load(fold.wants(items))
        verdicts = fold.attribute(items, loaded)
        companies, sightings = fold.people(verdicts)
        loaded.timezones = {c: self.timezones[c] for c in companies}
        loaded.customers = self.lock_customers(sightings)
        plan = fold.fold(verdicts, loaded, NOW)
        self.write(plan)
        return BatchResult(
            outcomes=plan.outcomes,
            dead_letters=plan.dead_letters,
            changes=plan.changes(),
            created_uids=plan.created_uids,
        )

    def apply_and_unpark(self, records: Sequence[WebhookRecord]) -> BatchResult:
        """Like the Applier: parked no-show updates are applied once their booking exists."""
        result = self.apply(records)
        while result.created_uids:
            parked = self.parked(result.created_uids)
            result.created_uids = set()
            if parked:
                result.merge(self.apply(parked))
        return result

    # --- load -----------------------------------------------------------------------------

    def load(self, wants: fold.Wants) -> fold.Loaded:
        directory = Directory()
        for b in self.branches:
            if (
                b.phone_number in wants.phones
                or b.retell_agent_id in wants.agent_ids
                or b.calcom_event_type_id in wants.event_type_ids
                or b.id in wants.branch_ids
            ):
                directory.add(b)
        loaded = fold.Loaded(
            events={
                k: StoredEvent(e.id or 0, e.status, e.payload_sha256)
                for k, e in self.events.items()
                if k in wants.events
            },
            calls={k: v for k, v in self.calls.items() if k in wants.call_ids},
            appointments={k: v for k, v in self.appointments.items() if k in wants.uids},
            directory=directory,
        )
        self.load_links(loaded, wants)
        return loaded

    def load_links(self, loaded: fold.Loaded, wants: fold.Wants) -> None:
        """pipeline.apply.load.load_links over the dictionaries."""
        named = {a.retell_call_id for a in loaded.appointments.values() if a.retell_call_id}
        loaded.calls.update({k: v for k, v in self.calls.items() if k in named})
        refs = set(loaded.calls) | wants.call_ids
        for ref in refs:
            for key in fold.milestones(ref):
                if key not in wants.events and key in self.events:
                    e = self.events[key]
                    loaded.events[key] = StoredEvent(e.id or 0, e.status, e.payload_sha256)
        for a in self.appointments.values():
            if a.retell_call_id in refs and a.booked_at is not None:
                loaded.bookings.setdefault(a.retell_call_id, {})[a.calcom_uid] = a.company_id

    def lock_customers(self, seen: Iterable[Sighting]) -> list[CustomerRow]:
        seen = list(seen)
        keys = {(s.company_id, s.phone) for s in seen if s.phone}
        keys |= {(s.company_id, s.email) for s in seen if s.email}
        return [
            c
            for _, c in sorted(self.customers.items())
            if (c.company_id, c.phone) in keys or (c.company_id, c.email) in keys
        ]

    def parked(self, uids: Iterable[str]) -> list[WebhookRecord]:
        prefixes = tuple(calcom.no_show_prefix(u) for u in uids)
        return [
            self.records[(e.kafka_topic, e.kafka_partition, e.kafka_offset)]
            for (provider, event_id), e in sorted(self.events.items())
            if provider == calcom.NAME
            and e.status == "unroutable"
            and e.error == "unknown_booking"
            and event_id.startswith(prefixes)
        ]

    # --- write ----------------------------------------------------------------------------

    def write(self, plan: Plan) -> None:
        ids = self._write_customers(plan)

        def resolved(row: Any) -> Any:
            if row.customer_id is not None and row.customer_id < 0:
                return replace(row, customer_id=ids[row.customer_id])
            return row

        for row in plan.calls.new:
            self.calls[row.key] = resolved(replace(row, id=next(self._ids)))
        for row in plan.calls.changed:
            self.calls[row.key] = resolved(row)
        for row in plan.appointments.new:
            self.appointments[row.key] = resolved(replace(row, id=next(self._ids)))
        for row in plan.appointments.changed:
            self.appointments[row.key] = resolved(row)
        for old, handle in plan.merged_customers:
            self._merge_customer(old, ids.get(handle, handle))
        for key, event in plan.events.items():
            self.events[key] = replace(event, id=event.id or next(self._ids))
        self._link(plan.links)
        for key, deltas in plan.contribution.items():
            bucket = self.buckets.setdefault(key, empty())
            for name, value in deltas.items():
                bucket[name] += value
            self.versions[key] = self.versions.get(key, 0) + 1

    def _write_customers(self, plan: Plan) -> dict[int, int]:
        ids: dict[int, int] = {}
        for handle, row in plan.new_customers.items():
            ids[handle] = next(self._ids)
            self.customers[ids[handle]] = replace(row, id=ids[handle])
        for row in plan.changed_customers:
            assert row.id is not None
            self.customers[row.id] = row
        return ids

    def _merge_customer(self, old: CustomerRow, target: int) -> None:
        self.calls = {
            k: replace(c, customer_id=target) if c.customer_id == old.id else c
            for k, c in self.calls.items()
        }
        self.appointments = {
            k: replace(a, customer_id=target) if a.customer_id == old.id else a
            for k, a in self.appointments.items()
        }
        assert old.id is not None
        del self.customers[old.id]

    def _link(self, refs: list[str]) -> None:
        """The writer's ``UPDATE appointments JOIN calls``: same company, not linked yet."""
        for uid, appt in list(self.appointments.items()):
            call = self.calls.get(appt.retell_call_id or "")
            if (
                appt.call_id is None
                and appt.retell_call_id in refs
                and call is not None
                and call.company_id == appt.company_id
            ):
                self.appointments[uid] = replace(appt, call_id=call.id)

    # --- what tests compare ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything written, with ids replaced by the natural keys they point to."""
        people = {c.id: (c.company_id, c.phone, c.email) for c in self.customers.values()}
        by_id = {c.id: c.retell_call_id for c in self.calls.values()}
        return {
            "customers": sorted(
                (
                    c.company_id,
                    c.phone or "",
                    c.email or "",
                    c.name,
                    c.first_seen_at,
                    c.last_seen_at,
                )
                for c in self.customers.values()
            ),  # fmt: skip
            "calls": {
                k: (people.get(c.customer_id), replace(c, id=None, customer_id=None))
                for k, c in self.calls.items()
            },
            "appointments": {
                k: (
                    people.get(a.customer_id),
                    by_id.get(a.call_id),
                    replace(a, id=None, customer_id=None, call_id=None),
                )
                for k, a in self.appointments.items()
            },  # fmt: skip
            "events": sorted(
                (k, e.event_type, e.status, e.error or "", e.company_id or 0)
                for k, e in self.events.items()
            ),
            "buckets": {k: v for k, v in self.buckets.items() if any(v.values())},
        }


def empty() -> dict[str, Any]:
    return {n: Decimal(0) if n in DECIMAL_COUNTERS else 0 for n in COUNTERS}
