"""The simulator's outage mode: which webhooks it loses, that the sender never sends them
(and still sends what the provider would send regardless), the REST view the fake APIs
serve, and the healed expectation's rules (docs/backfill.md) on hand-made stories."""

from __future__ import annotations

import dataclasses

from testbed.simulator import expected, healing, tenants
from testbed.simulator.model import HOUR, MINUTE, BookingEvent, SimBooking, iso_ms
from testbed.simulator.rest_view import calcom_booking, provider_state
from testbed.simulator.run import summarize
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.sender import SendConfig, Sender
from tests.unit.test_simulator_sender import SECRETS, FakeIngress

ANCHOR = 1_790_000_000_000


def story(**kw: object):
    companies = tenants.with_ids(tenants.generate(4, seed=2))
    return generate(companies, ScenarioConfig(seed=15, calls=60, now_ms=ANCHOR, **kw))  # type: ignore[arg-type]


def test_a_share_of_good_webhooks_is_lost_and_nothing_else_changes() -> None:
    plain, lossy = story(), story(drop_share=0.3)
    assert plain.dropped == frozenset()
    assert plain.steps == lossy.steps and plain.deliveries == lossy.deliveries
    assert lossy.dropped == story(drop_share=0.3).dropped  # deterministic
    good = [k for k, s in lossy.steps.items() if s.expect_status == 202]
    assert 0.2 < len(lossy.dropped) / len(good) < 0.4
    assert all(lossy.steps[k].expect_status == 202 for k in lossy.dropped)
    assert not any(lossy.steps[k].event_type == "call_inbound" for k in lossy.dropped)


async def test_lost_webhooks_are_never_sent_but_what_depends_on_them_is(aiohttp_server) -> None:
    scenario = story(drop_share=0.4)
    fake = FakeIngress(scenario, flaky_every=10**9)
    server = await aiohttp_server(fake.app())
    outcomes = await Sender(
        scenario, SECRETS, SendConfig(url=str(server.make_url("")), rate=0)
    ).run()
    sent = {o.step for o in outcomes if o.accepted}
    assert not sent & scenario.dropped
    summary = summarize(scenario, outcomes, 1.0)
    assert summary.ok and summary.dropped == sum(1 for o in outcomes if o.error == "dropped") > 0
    orphans = [
        s for s in scenario.steps.values()
        if s.depends_on in scenario.dropped and s.key not in scenario.dropped
    ]  # fmt: skip
    assert orphans and all(o.key in sent for o in orphans)  # no-shows of lost bookings: sent
    assert not any(o.error == "skipped" for o in outcomes)


def booking(uid: str, events: list[tuple[str, int, bool | None]], **kw: object) -> SimBooking:
    b = SimBooking(
        uid=uid, booking_id=7, company_id=1, branch_id=1, event_type_id=901, timezone="UTC",
        start_ms=ANCHOR - 3 * HOUR, end_ms=ANCHOR - 3 * HOUR + 30 * MINUTE, title="t",
        service="Cleaning", organizer_name="o", attendee_name="Ana Lima",
        attendee_email="ana@example.org", attendee_phone=None, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    b.events = [BookingEvent(f"{uid}:{n}", t, at, ns) for n, (t, at, ns) in enumerate(events)]
    return b


T = ANCHOR - 5 * HOUR


def test_the_rest_view_says_where_each_booking_ended_up() -> None:
    a = booking("A", [("BOOKING_CREATED", T, None)])
    b = booking("B", [("BOOKING_RESCHEDULED", T + HOUR, None), ("BOOKING_CANCELLED", T + 2 * HOUR, None)], rescheduled_from="A")  # fmt: skip
    r = booking("R", [("BOOKING_REQUESTED", T, None), ("BOOKING_CREATED", T + 30 * MINUTE, None)], requires_confirmation=True)  # fmt: skip
    n = booking("N", [("BOOKING_CREATED", T, None), ("BOOKING_NO_SHOW_UPDATED", T + 2 * HOUR, True), ("BOOKING_NO_SHOW_UPDATED", T + 3 * HOUR, False)])  # fmt: skip
    views = {x["uid"]: x for x in provider_state([], [a, b, r, n], {})["calcom"]["bookings"]}
    assert (views["A"]["status"], views["A"]["rescheduledToUid"], views["A"]["updatedAt"]) == (
        "cancelled",
        "B",
        iso_ms(T + HOUR),
    )
    assert (
        views["B"]["status"],
        views["B"]["rescheduledFromUid"],
        views["B"]["createdAt"],
        views["B"]["updatedAt"],
    ) == ("cancelled", "A", iso_ms(T + HOUR), iso_ms(T + 2 * HOUR))
    assert (views["R"]["createdAt"], views["R"]["updatedAt"]) == (
        iso_ms(T),
        iso_ms(T + 30 * MINUTE),
    )
    assert views["N"]["updatedAt"] == iso_ms(T)  # a no-show mark changes the attendee only
    assert views["N"]["attendees"][0]["absent"] is False  # the last update unmarked
    assert calcom_booking(booking("X", []), None) is None


def _healed(bookings: list[SimBooking], accepted: set[str]) -> dict[str, dict]:
    healed, delivered = healing.heal([], bookings, accepted, ANCHOR)
    companies = tenants.with_ids(tenants.generate(1, seed=2))
    companies = [dataclasses.replace(companies[0], id=1, timezone="UTC")]
    return expected.compute(companies, [], healed, delivered).appointments


def test_lost_marks_become_one_mark_at_the_meeting_start_unless_one_arrived() -> None:
    events = [("BOOKING_CREATED", T, None), ("BOOKING_NO_SHOW_UPDATED", ANCHOR - 2 * HOUR, True),
              ("BOOKING_NO_SHOW_UPDATED", ANCHOR - 100 * MINUTE, False), ("BOOKING_NO_SHOW_UPDATED", ANCHOR - 90 * MINUTE, True)]  # fmt: skip
    n = booking("N", events)
    lost_all = _healed([n], {"N:0"})
    assert lost_all["N"]["no_show_at"] == iso_ms(n.start_ms)
    assert _healed([n], {"N:0", "N:3"})["N"]["no_show_at"] == iso_ms(ANCHOR - 90 * MINUTE)
    # a parked update (its booking lost too) is left to the apply path
    assert _healed([n], {"N:2"})["N"]["no_show_at"] is None


def test_a_lost_confirmation_is_dated_as_the_backfill_dates_it() -> None:
    events = [("BOOKING_REQUESTED", T, None), ("BOOKING_CREATED", T + 40 * MINUTE, None)]
    r = booking("R", events, requires_confirmation=True)
    assert _healed([r], {"R:0"})["R"]["booked_at"] == iso_ms(T + 40 * MINUTE)  # exact
    assert _healed([r], set())["R"]["booked_at"] == iso_ms(T)  # the request's time
    cancelled = booking(
        "C", [*events, ("BOOKING_CANCELLED", T + 2 * HOUR, None)], requires_confirmation=True
    )
    row = _healed([cancelled], {"C:0"})["C"]
    assert (row["booked_at"], row["cancelled_at"], row["status"]) == (
        None,
        iso_ms(T + 2 * HOUR),
        "cancelled",
    )


def test_superseded_requests_stay_lost_and_pending_ones_come_back() -> None:
    pending = booking("P", [("BOOKING_REQUESTED", T, None)], requires_confirmation=True)
    confirmed = booking("Q", [("BOOKING_REQUESTED", T, None), ("BOOKING_CREATED", T + HOUR, None)], requires_confirmation=True)  # fmt: skip
    healed, delivered = healing.heal([], [pending, confirmed], {"Q:1"}, ANCHOR)
    assert "P:0" in delivered and "Q:0" not in delivered
