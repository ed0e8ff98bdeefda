"""The booking half of the story: bookings made during calls and online, and what happens
to them afterwards (confirmation, rejection, reschedule, cancellation, no-show, meeting).

A mixin of the scenario builder, so both halves draw from the same seeded ``Random`` in one
fixed order. Every time is capped at the anchor: nothing happens in the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING

from pipeline.tenants import Branch, Company
from testbed.simulator import bodies, vocab
from testbed.simulator.model import HOUR, MINUTE, BookingEvent, SimBooking, SimCall

if TYPE_CHECKING:
    from testbed.simulator.scenario import ScenarioConfig


@dataclass(slots=True)
class Person:
    name: str
    phone: str
    email: str


class BookingStory:
    """Needs, from the builder: the seeded rng, the day, the routes and a people pool."""

    rng: Random
    config: ScenarioConfig
    anchor: int
    day_start: int
    routes: list[tuple[Company, Branch]]
    bookings: list[SimBooking]

    def person(self, company: Company) -> Person:
        raise NotImplementedError

    def booking_uid(self) -> str:
        raise NotImplementedError

    def book_during(self, call: SimCall, company: Company, branch: Branch, caller: Person) -> None:
        assert call.start_ms is not None
        created = call.start_ms + (call.end_ms - call.start_ms) * self.rng.randint(50, 90) // 100
        booking = self.new_booking(company, branch, caller, created, phone=caller.phone)
        booking.retell_call_id = call.call_id
        self.lifecycle(booking, created)
        call.successful = True
        call.summary = "Caller booked an appointment with the agent."
        call.tool_calls = (
            (
                len(call.turns) // 2,
                "book_appointment",
                f'{{"slot":"{bodies.iso_seconds(booking.start_ms)}"}}',
                '{"status":"booked"}',
            ),
        )

    def web_booking(self) -> None:
        routes = [(c, b) for c, b in self.routes if b.calcom_event_type_id is not None]
        if not routes:
            return
        company, branch = self.rng.choice(routes)
        person = self.person(company)
        created = self.rng.randint(self.day_start, self.anchor - 5 * MINUTE)
        phone = person.phone if self.rng.random() < 0.6 else None
        self.lifecycle(self.new_booking(company, branch, person, created, phone=phone), created)

    def new_booking(
        self, company: Company, branch: Branch, person: Person, created: int, *, phone: str | None
    ) -> SimBooking:
        assert company.id is not None and branch.id is not None
        assert branch.calcom_event_type_id is not None
        kind = next(
            (k for k in vocab.BUSINESSES if any(w in company.name for w in k[2])),
            vocab.BUSINESSES[0],
        )
        length = self.rng.choice((30, 45, 60))
        start = self.future_slot(created)
        booking = SimBooking(
            uid=self.booking_uid(),
            booking_id=self.rng.randrange(10_000, 99_999_999),
            company_id=company.id,
            branch_id=branch.id,
            event_type_id=branch.calcom_event_type_id,
            timezone=company.timezone,
            start_ms=start,
            end_ms=start + length * MINUTE,
            title=f"{kind[1]} between {branch.name} and {person.name}",
            service=kind[1],
            organizer_name=branch.name,
            attendee_name=person.name,
            attendee_email=person.email,
            attendee_phone=phone,
        )
        self.bookings.append(booking)
        return booking

    def future_slot(self, after: int) -> int:
        at = after + self.rng.randint(1, 10) * 24 * HOUR + self.rng.randint(0, 8) * HOUR
        return at - at % (15 * MINUTE) + 15 * MINUTE

    def later(self, after: int, lo_min: int, hi_min: int) -> int | None:
        """A time ``lo..hi`` minutes after ``after``, or None if it would be in the future."""
        at = after + self.rng.randint(lo_min * MINUTE, hi_min * MINUTE)
        return at if at <= self.anchor - 30_000 else None

    def event(
        self, booking: SimBooking, trigger: str, at: int, no_show: bool | None = None
    ) -> None:
        suffix = f":{at}" if trigger == "BOOKING_NO_SHOW_UPDATED" else ""
        booking.events.append(
            BookingEvent(f"calcom:{trigger}:{booking.uid}{suffix}", trigger, at, no_show)
        )

    def lifecycle(self, booking: SimBooking, created: int) -> None:
        """REQUESTED/CREATED, then maybe rejected, rescheduled, cancelled, no-show or done."""
        rng = self.rng
        if rng.random() < 0.2:
            confirmed = self.requested(booking, created)
            if confirmed is None:
                return
            created = confirmed
        self.event(booking, "BOOKING_CREATED", created)
        roll = rng.random()
        if roll < 0.12:
            self.reschedule(booking, created)
        elif roll < 0.22:
            cancelled = self.later(created, 5, 120)
            if cancelled is not None:
                self.event(booking, "BOOKING_CANCELLED", cancelled)
        elif roll < 0.45:
            self.met(booking, created, no_show=roll < 0.30)

    def requested(self, booking: SimBooking, created: int) -> int | None:
        """A booking that needs confirmation: rejected (None), or when it was confirmed."""
        booking.requires_confirmation = True
        self.event(booking, "BOOKING_REQUESTED", created)
        if self.rng.random() < 0.25:
            rejected = self.later(created, 10, 90)
            if rejected is not None:
                self.event(booking, "BOOKING_REJECTED", rejected)
            return None
        return self.later(created, 5, 60)

    def met(self, booking: SimBooking, created: int, *, no_show: bool) -> None:
        """A same-day slot that has already happened: no-show or completed meeting."""
        rng = self.rng
        start = created + rng.randint(30, 120) * MINUTE
        start += -start % (15 * MINUTE)
        end = start + (booking.end_ms - booking.start_ms)
        if end + 35 * MINUTE > self.anchor:
            return
        booking.start_ms, booking.end_ms = start, end
        if no_show:
            marked = start + rng.randint(10, 30) * MINUTE
            self.event(booking, "BOOKING_NO_SHOW_UPDATED", marked, True)
            unmark = self.later(marked, 1, 20)
            remark = self.later(unmark, 1, 20) if unmark is not None else None
            if rng.random() < 0.3 and unmark is not None and remark is not None:
                self.event(booking, "BOOKING_NO_SHOW_UPDATED", unmark, False)
                self.event(booking, "BOOKING_NO_SHOW_UPDATED", remark, True)
        if not no_show or rng.random() < 0.5:
            self.event(booking, "MEETING_ENDED", end)

    def reschedule(self, old: SimBooking, created: int) -> None:
        at = self.later(created, 10, 120)
        if at is None:
            return
        new_start = old.start_ms + self.rng.randint(1, 5) * 24 * HOUR
        new = SimBooking(
            uid=self.booking_uid(),
            booking_id=self.rng.randrange(10_000, 99_999_999),
            company_id=old.company_id,
            branch_id=old.branch_id,
            event_type_id=old.event_type_id,
            timezone=old.timezone,
            start_ms=new_start,
            end_ms=new_start + (old.end_ms - old.start_ms),
            title=old.title,
            service=old.service,
            organizer_name=old.organizer_name,
            attendee_name=old.attendee_name,
            attendee_email=old.attendee_email,
            attendee_phone=old.attendee_phone,
            rescheduled_from=old.uid,
        )
        self.bookings.append(new)
        self.event(new, "BOOKING_RESCHEDULED", at)
        if self.rng.random() < 0.25:
            cancelled = self.later(at, 5, 60)
            if cancelled is not None:
                self.event(new, "BOOKING_CANCELLED", cancelled)
