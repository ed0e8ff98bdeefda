"""Issue 13, defects 1 and 7, on the apply engine without a database (the same decode →
attribute → fold the worker runs, tests/support/memory_store.py).

Defect 1: a booker sets ``metadata[branch_id]`` through the booking link's URL; it must
never route a booking into another company. Defect 7: attribution happens once; the agent
id must not catch calls to another company's known but inactive number, and a replay after
a number (or an event type) moved keeps the first owner, customers included.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.apply.tenancy import Branch
from testbed.events import booking, call_events
from testbed.records import record
from tests.support.memory_store import MemoryStore

START_MS = 1_767_790_800_000
A, B = 1, 2
ZONES = {A: "America/Los_Angeles", B: "Europe/Berlin"}
A_MAIN = Branch(11, A, "+14155550199", "agent_a", 901, True)
A_OLD = Branch(12, A, "+14155550102", "agent_shared", 902, False)  # inactive
B_MAIN = Branch(21, B, "+4930555021", "agent_shared", 921, True)


def store(*branches: Branch) -> MemoryStore:
    return MemoryStore(list(branches or (A_MAIN, A_OLD, B_MAIN)), ZONES)


def statuses(db: MemoryStore) -> dict[str, tuple[str, int | None, str | None]]:
    return {key[1]: (e.status, e.company_id, e.error) for key, e in db.events.items()}


def only_company(db: MemoryStore, company: int) -> None:
    """Nothing at all was written into any other company."""
    rows = [*db.calls.values(), *db.appointments.values(), *db.customers.values()]
    assert rows, "nothing was written"
    assert {r.company_id for r in rows} == {company}
    assert {key.company_id for key in db.buckets} <= {company}


def hostile_booking(uid: str, event_type_id: int, **metadata: str) -> bytes:
    return booking(
        "BOOKING_CREATED",
        uid,
        created_ms=START_MS,
        event_type_id=event_type_id,
        metadata=metadata,
        phone="+14155550666",
        email="mallory@example.com",
    )


# --- defect 1: booker-settable metadata never routes across companies ----------------------


def test_an_inactive_branchs_event_type_is_branch_inactive_whatever_the_metadata_says() -> None:
    """The issue's repro: A's event type 902 is on an inactive branch; the booker's
    ``metadata.branch_id`` names B's branch."""
    db = store()
    result = db.apply([record("calcom", hostile_booking("bk1", 902, branch_id="21"), offset=1)])
    assert [(o.status, o.reason) for o in result.outcomes] == [("unroutable", "branch_inactive")]
    assert not db.appointments and not db.customers and not db.buckets


def test_an_unknown_event_type_with_a_metadata_branch_id_alone_is_unroutable() -> None:
    db = store()
    result = db.apply(
        [record("calcom", hostile_booking("bk2", 4242, branch_id="21", company_id="2"), offset=1)]
    )
    assert [(o.status, o.reason) for o in result.outcomes] == [
        ("unroutable", "no_branch_for_event_type")
    ]
    assert not db.appointments and not db.customers and not db.buckets


def test_metadata_branch_id_routes_only_with_a_stored_call_of_that_company() -> None:
    """Our agent books with ``retell_call_id`` and ``branch_id``: a call we attributed to
    the branch's company vouches for it; a call of another company does not."""
    db = store()
    db.apply(
        [record("retell", e, offset=i) for i, e in enumerate(call_events("c_a", start_ms=START_MS))]
    )
    assert db.calls["c_a"].company_id == A
    ours = hostile_booking("bk3", 4242, branch_id="11", retell_call_id="c_a")
    theirs = hostile_booking("bk4", 4242, branch_id="21", retell_call_id="c_a")
    nobody = hostile_booking("bk5", 4242, branch_id="11", retell_call_id="c_unknown")
    result = db.apply(
        [record("calcom", b, offset=100 + i) for i, b in enumerate((ours, theirs, nobody))]
    )
    assert [(o.status, o.reason) for o in result.outcomes] == [
        ("applied", None),
        ("unroutable", "no_branch_for_event_type"),
        ("unroutable", "no_branch_for_event_type"),
    ]
    assert db.appointments["bk3"].company_id == A and set(db.appointments) == {"bk3"}
    only_company(db, A)


# --- defect 7: attribution happens once -------------------------------------------------------


def test_the_agent_id_does_not_catch_calls_to_another_companys_inactive_number() -> None:
    """A's inactive branch shares its agent id with B's only branch: a call to A's number
    must not land in B."""
    db = store()
    events = call_events("c_old", start_ms=START_MS, to_number=A_OLD.phone_number)
    events = [e.replace(b'"agent_8a1d4c2b9e7f"', b'"agent_shared"') for e in events]
    result = db.apply([record("retell", e, offset=i) for i, e in enumerate(events)])
    assert {(o.status, o.reason) for o in result.outcomes} == {("unroutable", "branch_inactive")}
    assert not db.calls and not db.customers and not db.buckets


def test_a_replay_after_the_number_moved_keeps_the_calls_first_company() -> None:
    db = store()
    events = call_events("c_moved", start_ms=START_MS)
    db.apply([record("retell", e, offset=i) for i, e in enumerate(events[:2])])
    assert db.calls["c_moved"].company_id == A
    # The number now belongs to B (A's branch gave it up), then everything is replayed.
    db.branches = [
        replace(A_MAIN, phone_number="+14155550100"),
        replace(B_MAIN, phone_number=A_MAIN.phone_number),
    ]
    db.apply([record("retell", e, offset=i) for i, e in enumerate(events)])
    assert {s[1] for s in statuses(db).values()} == {A}
    assert db.calls["c_moved"].company_id == A
    only_company(db, A)


def test_a_replay_after_the_event_type_moved_keeps_the_bookings_first_company() -> None:
    db = store()
    created = booking("BOOKING_CREATED", "bk_moved", created_ms=START_MS, event_type_id=901)
    db.apply([record("calcom", created, offset=1)])
    assert db.appointments["bk_moved"].company_id == A
    db.branches = [
        replace(A_MAIN, calcom_event_type_id=None),
        replace(B_MAIN, calcom_event_type_id=901),
    ]
    rescheduled = booking("BOOKING_RESCHEDULED", "bk_moved", created_ms=START_MS + 60_000)
    db.apply([record("calcom", created, offset=1), record("calcom", rescheduled, offset=2)])
    assert {s[1] for s in statuses(db).values()} == {A}
    only_company(db, A)
