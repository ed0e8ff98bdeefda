"""docs/data-model.md's invariants on the fold alone (pipeline/apply/fold.py), no database:
any order, any number of deliveries, any batching of a call's and its bookings' events ends
in the same rows and counters; the counters are exactly what the rows say (the recount
``reconcile`` makes); replaying changes nothing; a replay restores deleted rows. The same
properties run against MariaDB in tests/integration/test_order_independence.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.apply.rows import APPLIED, CallRow
from pipeline.apply.tenancy import Branch
from pipeline.dashboard import aggregates, drift
from pipeline.providers.retell import milestone_key
from pipeline.records import WebhookRecord
from testbed.events import booking, call_events, lifecycle
from testbed.records import record
from tests.support.memory_store import MemoryStore
from tests.support.tenants import BAYVIEW, FIXTURE_AGENT, FIXTURE_NUMBER, OTHER

START_MS = 1_767_790_800_000  # 2026-01-07T13:00:00Z
EVENTS = lifecycle(START_MS)
BRANCHES = [
    Branch(11, BAYVIEW, FIXTURE_NUMBER, FIXTURE_AGENT, 901, True),
    Branch(12, BAYVIEW, "+14155550198", "agent_implants", 905, True),
    Branch(21, OTHER, "+4930555000", "agent_other", 700, True),
]
ZONES = {BAYVIEW: "America/Los_Angeles", OTHER: "Europe/Berlin"}
RECORDS = [
    record(provider, body, received_at_ms=START_MS + 1000 * i, offset=i)
    for i, (provider, body) in enumerate(EVENTS)
]


def store() -> MemoryStore:
    return MemoryStore(BRANCHES, ZONES)


def run(deliveries: list[int], batch_sizes: list[int]) -> MemoryStore:
    """Deliver RECORDS (indexes, repeats allowed) in batches of ``batch_sizes``."""
    db = store()
    records = [RECORDS[i] for i in deliveries]
    position, sizes = 0, iter(batch_sizes)
    while position < len(records):
        size = next(sizes, 1)
        db.apply_and_unpark(records[position : position + size])
        position += size
    return db


REFERENCE = run(list(range(len(EVENTS))), [1] * len(EVENTS))


def recount(db: MemoryStore) -> dict[Any, Any]:
    """The buckets ``reconcile`` would compute from the rows."""

    def applied(kind: str, call: CallRow) -> bool:
        event = db.events.get(milestone_key(kind, call.retell_call_id))
        return event is not None and event.status == APPLIED

    out = {}
    for company, zone in ZONES.items():
        booked = {
            (a.company_id, a.retell_call_id)
            for a in db.appointments.values()
            if a.retell_call_id and a.booked_at is not None
        }
        call_rows = [
            {
                **{f: getattr(c, f) for f in CallRow.__dataclass_fields__},
                "ended_applied": applied("call_ended", c),
                "analyzed_applied": applied("call_analyzed", c),
                "booked": (c.company_id, c.retell_call_id) in booked,
            }
            for c in db.calls.values()
            if c.company_id == company
        ]
        appointment_rows = [
            {f: getattr(a, f) for f in type(a).__dataclass_fields__}
            for a in db.appointments.values()
            if a.company_id == company
        ]
        out.update(drift.recount(call_rows, appointment_rows, timezone=zone))
    return {k: v for k, v in out.items() if not drift.is_zero(v)}


def test_the_reference_run_is_what_the_rulebook_says() -> None:
    state = REFERENCE.state()
    calls, appts = state["calls"], state["appointments"]
    assert calls["call_A"][1].status == "ended" and calls["call_A"][1].sentiment == "Positive"
    assert calls["call_B"][1].status == "not_connected" and calls["call_B"][1].started_at is None
    assert appts["bk_1"][2].status == "no_show" and appts["bk_1"][1] == "call_A"
    assert appts["bk_2"][2].status == "rescheduled" and appts["bk_2"][2].booked_at is not None
    assert appts["bk_3"][2].status == "cancelled"
    assert len(state["customers"]) == 1, "phone, email-only and call sightings are one person"
    assert {e[2] for e in state["events"]} == {"applied"}
    day = Counter[str]()
    for key, bucket in REFERENCE.buckets.items():
        if key.granularity == "day" and not key.grouped:
            day.update({k: int(v) for k, v in bucket.items()})
    assert (
        day["calls_total"],
        day["appointments_booked"],
        day["appointments_cancelled"],
        day["appointments_rescheduled"],
        day["appointments_no_show"],
    ) == (2, 2, 1, 1, 1)


def test_booking_conversion_counts_each_connected_inbound_call_once() -> None:
    """call_A is the only connected inbound call and two bookings name it: conversion is
    1 (it was appointments_booked / calls_connected = 2); a booking naming no call counts
    beside it, never in it."""
    walk_in = booking("BOOKING_CREATED", "bk_walk_in", created_ms=START_MS + 60_000)
    db = run(list(range(len(EVENTS))), [1] * len(EVENTS))
    db.apply([record("calcom", walk_in, received_at_ms=START_MS + 60_000, offset=500)])
    day = Counter[str]()
    for key, bucket in db.buckets.items():
        if key.granularity == "day" and not key.grouped:
            day.update({k: int(v) for k, v in bucket.items()})
    assert (day["appointments_booked"], day["calls_connected"]) == (3, 1)
    assert (day["calls_inbound_connected"], day["calls_booked"]) == (1, 1)
    assert day["appointments_without_call"] == 1
    assert aggregates.derived(day)["booking_conversion"] == 1.0
    # Per agent, the call's agent converted; the walk-in booking is in no agent's group.
    agent: dict[str, Counter[str]] = {}
    for key, bucket in db.buckets.items():
        if key.granularity == "day" and key.dimension == "agent":
            agent.setdefault(key.group, Counter()).update({k: int(v) for k, v in bucket.items()})
    assert agent[FIXTURE_AGENT]["calls_booked"] == 1
    assert agent[""]["appointments_without_call"] == 1


def test_the_counters_are_exactly_the_recount_of_the_rows() -> None:
    assert {k: drift.normalized(v) for k, v in REFERENCE.buckets.items()} == recount(REFERENCE)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_order_any_duplicates_any_batching(data: st.DataObject) -> None:
    copies = data.draw(st.lists(st.integers(1, 3), min_size=len(EVENTS), max_size=len(EVENTS)))
    deliveries = [i for i, n in enumerate(copies) for _ in range(n)]
    deliveries = data.draw(st.permutations(deliveries))
    sizes = data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=len(deliveries)))
    db = run(list(deliveries), sizes)
    assert db.state() == REFERENCE.state()
    assert {k: drift.normalized(v) for k, v in db.buckets.items() if any(v.values())} == recount(db)


def test_everything_reversed_one_by_one() -> None:
    backwards = list(reversed(range(len(EVENTS))))
    assert run(backwards, [1] * len(EVENTS)).state() == REFERENCE.state()


def test_replaying_everything_changes_nothing() -> None:
    db = run(list(range(len(EVENTS))), [len(EVENTS)])
    before = db.state(), dict(db.versions)
    result = db.apply(RECORDS)
    assert Counter(o.status for o in result.outcomes) == {"already_applied": len(RECORDS)}
    assert result.changes == {}
    assert (db.state(), db.versions) == before


def test_a_replay_restores_deleted_rows_and_counts_nothing_twice() -> None:
    db = run(list(range(len(EVENTS))), [len(EVENTS)])
    before = db.state()
    # call_A and the bookings it made (a foreign key keeps them from outliving it)
    for uid in ("bk_1", "bk_2"):
        del db.appointments[uid]
    del db.calls["call_A"]
    result = db.apply(RECORDS)
    totals = {t: sum(c.values(), Counter()) for t, c in result.changes.items()}
    assert totals == {"calls": Counter(insert=1), "appointments": Counter(insert=2)}
    assert db.state() == before


def test_events_of_another_company_never_touch_its_rows() -> None:
    """A booking of company 2's event type and a call to its number stay in company 2."""
    other = [
        record("retell", b, offset=100 + i)
        for i, b in enumerate(call_events("call_X", start_ms=START_MS, to_number="+4930555000"))
    ]
    other.append(
        record(
            "calcom",
            booking("BOOKING_CREATED", "bk_X", created_ms=START_MS, event_type_id=700),
            offset=200,
        )
    )
    db = store()
    db.apply(RECORDS + other)
    assert db.calls["call_X"].company_id == OTHER and db.appointments["bk_X"].company_id == OTHER
    people = {c.company_id for c in db.customers.values()}
    assert people == {BAYVIEW, OTHER}, "the same caller is a customer of each company"
    assert {k.company_id for k in db.buckets} == {BAYVIEW, OTHER}


def test_unknown_providers_and_undecodable_bodies_are_dead_lettered_with_their_reason() -> None:
    good = RECORDS[0]
    bodies = [b"not json", b"[1, 2]", b'{"event":"call_ended","call":{"call_id":5}}']
    records = [
        WebhookRecord("webhooks.retell", 0, 900 + i, None, body, {"provider": "retell"})
        for i, body in enumerate(bodies)
    ]
    records.append(WebhookRecord("webhooks.sms", 0, 999, None, b"{}", {"provider": "sms"}))
    result = store().apply([good, *records])
    reasons = [(o.status, o.reason) for o in result.outcomes]
    assert reasons == [
        ("applied", None),
        ("dead_lettered", "undecodable"),
        ("dead_lettered", "undecodable"),
        ("dead_lettered", "schema_violation"),
        ("dead_lettered", "unknown_provider"),
    ]
    assert [d.error_class for d in result.dead_letters] == [
        "UndecodableEvent",
        "UndecodableEvent",
        "SchemaViolation",
        "SchemaViolation",
    ]


def test_a_metadata_branch_id_of_non_ascii_digits_is_no_branch_id() -> None:
    """``"²".isdigit()`` is true but ``int("²")`` raises: such an id must not crash the batch
    (every record of it would be retried alone, the booking dead-lettered as a bug)."""
    body = booking("BOOKING_CREATED", "bk_sup", created_ms=START_MS, metadata={"branch_id": "²"})
    result = store().apply([record("calcom", body, offset=300)])
    assert [o.status for o in result.outcomes] == ["applied"]


def test_no_show_before_its_booking_waits_and_then_counts_once() -> None:
    no_show_first = [8] + [i for i in range(len(EVENTS)) if i != 8]
    db = run(no_show_first, [1] * len(EVENTS))
    assert db.state() == REFERENCE.state()
