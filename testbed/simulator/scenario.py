"""Seeded, pure generation of a busy day of traffic: the story, its bodies, their order.

``generate(companies, config)`` reads no clock, no environment and no network: the same
tenants, seed and anchor time give the same bytes in the same order. The anchor (``now_ms``)
is the end of the simulated day; every payload time lies in ``[now - span, now]``, so the
ingress sees recent events, while signatures are made later, at send time.

The mixes (shares are of calls unless said otherwise) are documented in docs/simulator.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from random import Random

from pipeline.errors import SwitchboardError
from pipeline.tenants import Branch, Company
from testbed.simulator import bad_traffic, bodies, vocab
from testbed.simulator.booking_bodies import booking_steps
from testbed.simulator.bookings import BookingStory, Person
from testbed.simulator.model import (
    HOUR,
    MINUTE,
    CallEvent,
    Delivery,
    Scenario,
    SimBooking,
    SimCall,
    Step,
    Turn,
)
from testbed.simulator.tenants import unique_phone


class ScenarioError(SwitchboardError, ValueError):
    """The scenario cannot be generated (no tenants, bad shares, ...)."""


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    seed: int = 1
    calls: int | None = None  # good calls to simulate ...
    requests: int | None = None  # ... or about this many deliveries (--duration × --rate)
    now_ms: int | None = None  # the anchor: end of the simulated day (required)
    run_tag: str | None = None  # id prefix; default derived from seed and anchor
    span_hours: float = 6.0
    outbound_share: float = 0.2
    booking_share: float = 0.35  # of inbound conversations that reach a person
    web_booking_share: float = 0.08  # extra online bookings, per call
    repeat_caller_share: float = 0.25
    long_transcript_share: float = 0.05
    duplicate_share: float = 0.08  # of steps, delivered 2-4 times
    reorder_share: float = 0.3  # of steps, moved later by up to reorder_window positions
    reorder_window: int = 12
    burst_share: float = 0.01  # chance per delivery that a burst (10-60 at once) starts
    bad_share: float = 0.0  # of deliveries: unknown numbers, bad signatures, malformed
    drop_share: float = 0.0  # of accepted webhooks: lost upstream, never delivered at all

    def validate(self) -> None:
        if self.now_ms is None:
            raise ScenarioError("now_ms (the anchor time) is required")
        if (self.calls is None) == (self.requests is None):
            raise ScenarioError("give exactly one of calls or requests")
        if (self.calls or 0) < 0 or (self.requests is not None and self.requests < 1):
            raise ScenarioError("calls/requests must be positive")
        if not 1.0 <= self.span_hours <= 23.0:
            raise ScenarioError("span_hours must be between 1 and 23")
        for name in (
            "outbound_share",
            "booking_share",
            "repeat_caller_share",
            "duplicate_share",
            "reorder_share",
            "burst_share",
            "long_transcript_share",
            "web_booking_share",
            "drop_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ScenarioError(f"{name} must be between 0 and 1")
        if not 0.0 <= self.bad_share < 0.9:
            raise ScenarioError("bad_share must be between 0 and 0.9")


class _Builder(BookingStory):
    def __init__(self, companies: tuple[Company, ...], config: ScenarioConfig) -> None:
        config.validate()
        assert config.now_ms is not None
        self.config = config
        self.rng = Random(f"scenario:{config.seed}")
        self.anchor = config.now_ms
        self.day_start = self.anchor - int(config.span_hours * HOUR)
        self.tag = (
            config.run_tag
            or hashlib.sha256(f"{config.seed}:{config.now_ms}".encode()).hexdigest()[:6]
        )
        self.companies = companies
        self.routes = [
            (c, b)
            for c in companies
            if c.id is not None
            for b in c.routable_branches()
            if b.id is not None
        ]
        if not self.routes:
            raise ScenarioError("no active branch in MySQL: run `switchboard tenants seed` first")
        self.taken_numbers = {b.phone_number for c in companies for b in c.branches}
        self.active_agents = {b.retell_agent_id for _, b in self.routes}
        self.people: dict[int, list[Person]] = {}
        self.calls: list[SimCall] = []
        self.bookings: list[SimBooking] = []
        self.deliveries_estimate = 0.0

    # ---- ids --------------------------------------------------------------------------

    def call_id(self) -> str:
        return f"call_{self.tag}{self.rng.getrandbits(104):026x}"

    def booking_uid(self) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
        return self.tag + "".join(self.rng.choice(alphabet) for _ in range(16))

    # ---- people -----------------------------------------------------------------------

    def person(self, company: Company) -> Person:
        assert company.id is not None
        pool = self.people.setdefault(company.id, [])
        if pool and self.rng.random() < self.config.repeat_caller_share:
            return self.rng.choice(pool)
        # One new customer in twenty is someone another company already knows: the same
        # phone, two tenants, two customer rows.
        known_elsewhere = any(ps for cid, ps in self.people.items() if cid != company.id)
        if known_elsewhere and self.rng.random() < 0.05:
            others = [p for cid, ps in self.people.items() if cid != company.id for p in ps]
            shared = self.rng.choice(others)
            if shared not in pool:
                pool.append(shared)
                return shared
        first = self.rng.choice(vocab.FIRST_NAMES)
        last = self.rng.choice(vocab.LAST_NAMES)
        local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
        email = f"{local}{self.rng.randrange(1, 999)}@{self.rng.choice(vocab.EMAIL_DOMAINS)}"
        new = Person(
            f"{first} {last}", unique_phone(self.rng, company.timezone, self.taken_numbers), email
        )
        pool.append(new)
        return new

    # ---- calls ------------------------------------------------------------------------

    def make_call(
        self,
        company: Company | None,
        branch: Branch | None,
        *,
        to_number: str | None = None,
        agent_id: str | None = None,
        timezone: str = "UTC",
    ) -> SimCall:
        rng = self.rng
        inbound = company is None or rng.random() >= self.config.outbound_share
        r = rng.random()
        if inbound:
            outcome = "not_connected" if r < 0.03 else "transfer" if r < 0.15 else "conversation"
        else:
            outcome = (
                "not_connected"
                if r < 0.30
                else "voicemail"
                if r < 0.50
                else "transfer"
                if r < 0.55
                else "conversation"
            )
        if company is not None and branch is not None:
            caller = self.person(company)
            business = branch.phone_number
            agent = branch.retell_agent_id or agent_id or f"agent_{rng.getrandbits(48):012x}"
            timezone = company.timezone
        else:
            caller = Person(
                f"{rng.choice(vocab.FIRST_NAMES)} {rng.choice(vocab.LAST_NAMES)}",
                unique_phone(rng, "America/Chicago", self.taken_numbers),
                "",
            )
            business = to_number or unique_phone(rng, "America/New_York", self.taken_numbers)
            agent = agent_id or f"agent_{rng.getrandbits(96):024x}"
        long_call = outcome == "conversation" and rng.random() < self.config.long_transcript_share
        turns = self.conversation(outcome, company, branch, caller, long_call)
        if outcome == "not_connected":
            ring, talk = rng.randint(8_000, 40_000), 0
        else:
            ring = rng.randint(1_000, 4_000) if inbound else rng.randint(5_000, 20_000)
            talk = sum(rng.randint(2_500, 11_000) for _ in turns) + rng.randint(500, 3_000)
        latest_dial = self.anchor - ring - talk - 2 * MINUTE
        dial = rng.randint(self.day_start, max(self.day_start, latest_dial))
        start = None if outcome == "not_connected" else dial + ring
        end = dial + ring + talk
        if outcome == "not_connected":
            reason = (
                "dial_failed"
                if inbound
                else rng.choice(("dial_no_answer", "dial_no_answer", "dial_busy", "dial_failed"))
            )
        elif outcome == "voicemail":
            reason = "voicemail_reached"
        elif outcome == "transfer":
            reason = "call_transfer"
        else:
            reason = rng.choices(("user_hangup", "agent_hangup", "inactivity"), (70, 25, 5))[0]
        cost: Decimal | None = Decimal(0)
        if start is not None:
            cents_per_s = Decimal(rng.choice(("0.1167", "0.125", "0.0975", "0.14")))
            cost = (Decimal(end - start) / 1000 * cents_per_s).quantize(Decimal("0.0001"))
        if rng.random() < 0.03:
            cost = None
        sentiment: str | None = rng.choices(
            ("Positive", "Neutral", "Negative", "Unknown", None), (45, 30, 12, 8, 5)
        )[0]
        if outcome in ("voicemail", "not_connected"):
            sentiment = "Unknown"
        successful = {"conversation": rng.random() < 0.75, "transfer": rng.random() < 0.6}.get(
            outcome, False
        )
        destination = None
        if outcome == "transfer":
            destination = (
                f"sip:frontdesk@{business[1:]}.sip.example"
                if rng.random() < 0.15
                else unique_phone(rng, timezone, self.taken_numbers)
            )
        call = SimCall(
            call_id=self.call_id(),
            company_id=company.id if company else None,
            branch_id=branch.id if branch else None,
            timezone=timezone,
            agent_id=agent,
            direction="inbound" if inbound else "outbound",
            from_number=caller.phone if inbound else business,
            to_number=business if inbound else caller.phone,
            customer_name=caller.name,
            dial_ms=dial,
            start_ms=start,
            end_ms=end,
            disconnection_reason=reason,
            final_status="not_connected" if start is None else "ended",
            cost=cost,
            transfer_destination=destination,
            in_voicemail=outcome == "voicemail",
            successful=successful,
            sentiment=sentiment,
            summary=rng.choice(vocab.SUMMARIES)
            if start is not None
            else "The call did not connect.",
            storage=rng.choices(
                ("everything", "everything_except_pii", "basic_attributes_only"), (85, 10, 5)
            )[0],
            turns=turns,
            omit=tuple(f for f in bodies.OPTIONAL_CALL_FIELDS if rng.random() < 0.2),
        )
        if (
            company is not None
            and branch is not None
            and branch.calcom_event_type_id is not None
            and outcome == "conversation"
            and inbound
            and rng.random() < self.config.booking_share
        ):
            self.book_during(call, company, branch, caller)
        call.events = self.call_events(call)
        self.deliveries_estimate += len(call.events) * (1 + self.config.duplicate_share * 1.6)
        return call

    def conversation(
        self,
        outcome: str,
        company: Company | None,
        branch: Branch | None,
        caller: Person,
        long_call: bool,
    ) -> tuple[Turn, ...]:
        rng = self.rng
        where = branch.name if branch else "our office"
        if outcome == "not_connected":
            return ()
        if outcome == "voicemail":
            return (
                Turn(
                    "agent",
                    f"Hi {caller.name.split()[0]}, this is the assistant at {where}, "
                    "calling about your appointment. Please call us back.",
                ),
            )
        turns = [
            Turn("agent", f"Thanks for calling {where}, how can I help you today?"),
            Turn("user", rng.choice(vocab.REASONS)),
        ]
        extra = rng.randint(20, 60) if long_call else rng.randint(1, 6)
        for _ in range(extra):
            ask, answer = rng.choice(vocab.SMALL_TALK)
            turns += [Turn("agent", ask), Turn("user", answer)]
        if outcome == "transfer":
            turns.append(Turn("agent", "Let me transfer you to a colleague, one moment please."))
        else:
            turns += [
                Turn("agent", "Is there anything else I can help with?"),
                Turn("user", "No, that's all, thank you."),
                Turn("agent", "Have a lovely day, goodbye."),
            ]
        return tuple(turns)

    def call_events(self, call: SimCall) -> list[CallEvent]:
        rng = self.rng
        cid = call.call_id
        out: list[CallEvent] = []
        if call.direction == "inbound":
            out.append(
                CallEvent(
                    f"retell:call_inbound:{cid}",
                    "call_inbound",
                    call.dial_ms - rng.randint(50, 400),
                )
            )
        if call.start_ms is not None:
            start = call.start_ms
            out.append(
                CallEvent(
                    f"retell:call_started:{cid}", "call_started", start + rng.randint(100, 900)
                )
            )
            if call.keeps_transcript and call.turns:
                total = len(call.turns)
                counts = sorted(rng.sample(range(1, total + 1), k=min(total, rng.randint(1, 4))))
                if counts[-1] != total:
                    counts.append(total)  # Retell's final update at call end
                span = call.end_ms - start
                for n, count in enumerate(counts):
                    at = start + span * count // total
                    out.append(
                        CallEvent(
                            f"retell:transcript_updated:{cid}#{n}", "transcript_updated", at, count
                        )
                    )
            if call.transfer_destination is not None:
                t = call.end_ms - rng.randint(8_000, 20_000)
                out.append(
                    CallEvent(f"retell:transfer_started:{cid}", "transfer_started", max(start, t))
                )
                out.append(
                    CallEvent(
                        f"retell:transfer_bridged:{cid}", "transfer_bridged", call.end_ms - 1_000
                    )
                )
        out.append(
            CallEvent(
                f"retell:call_ended:{cid}", "call_ended", call.end_ms + rng.randint(200, 1_500)
            )
        )
        out.append(
            CallEvent(
                f"retell:call_analyzed:{cid}",
                "call_analyzed",
                call.end_ms + rng.randint(3_000, 40_000),
            )
        )
        return out

    # ---- the whole day ----------------------------------------------------------------

    def build(self) -> Scenario:
        cfg = self.config
        target_calls = cfg.calls
        good_target = None if cfg.requests is None else cfg.requests * (1 - cfg.bad_share)
        while True:
            if target_calls is not None and len(self.calls) >= target_calls:
                break
            if good_target is not None and self.deliveries_estimate >= good_target:
                break
            company, branch = self.rng.choice(self.routes)
            self.calls.append(self.make_call(company, branch))
            if self.rng.random() < cfg.web_booking_share:
                self.web_booking()
        steps = good_steps(self.calls, self.bookings)
        if cfg.bad_share > 0:
            good_deliveries = len(steps) * (1 + cfg.duplicate_share * 1.6)
            bad_total = round(good_deliveries * cfg.bad_share / (1 - cfg.bad_share))
            steps.extend(self.bad_traffic(bad_total))
        ordered = order(steps, cfg, self.rng)
        keyed = {s.key: s for _, s in steps}
        return Scenario(
            seed=cfg.seed,
            run_tag=self.tag,
            anchor_ms=self.anchor,
            companies=self.companies,
            calls=self.calls,
            bookings=self.bookings,
            steps=keyed,
            deliveries=ordered,
            dropped=lost_upstream(keyed, cfg),
        )

    def bad_traffic(self, total: int) -> list[tuple[int, Step]]:
        """About ``total`` deliveries of bad traffic: 40% calls to numbers no active branch
        has (accepted, then unroutable), 35% bad signatures (401), 25% malformed (400)."""
        out: list[tuple[int, Step]] = []
        inactive = [
            b for c in self.companies for b in c.branches if not (c.is_active and b.is_active)
        ]
        unknown_budget = total * 0.4
        spent = 0
        while spent < unknown_budget:
            if inactive and self.rng.random() < 0.5:
                dead = self.rng.choice(inactive)
                number = dead.phone_number
                agent = (
                    dead.retell_agent_id if dead.retell_agent_id not in self.active_agents else None
                )
            else:
                number, agent = None, None
            call = self.make_call(None, None, to_number=number, agent_id=agent)
            self.calls.append(call)
            spent += len(call.events)
            out.extend(bodies.call_steps(call))
        forged = max(0, round(total * 0.35))
        for n in range(forged):
            out.append(bad_traffic.forged_step(n, self, self.rng))
        for n in range(max(0, total - spent - forged)):
            out.append(bad_traffic.malformed_step(n, self, self.rng))
        return out


def good_steps(calls: list[SimCall], bookings: list[SimBooking]) -> list[tuple[int, Step]]:
    """Every body of the story's good traffic, with the time it happens."""
    by_uid = {b.uid: b for b in bookings}
    out: list[tuple[int, Step]] = []
    for call in calls:
        out.extend(bodies.call_steps(call))
    for booking in bookings:
        out.extend(booking_steps(booking, by_uid))
    return out


def lost_upstream(steps: dict[str, Step], config: ScenarioConfig) -> frozenset[str]:
    """The webhooks an upstream outage loses (``drop_share`` of those the ingress accepts).

    Drawn from a ``Random`` of its own, so a scenario without drops is byte-for-byte what it
    was before drops existed. ``call_inbound`` is never lost: it is Retell's synchronous
    routing request, whose failure is a different story (the call goes to the default
    agent), and its answer is what the call's metadata holds.
    """
    if config.drop_share <= 0:
        return frozenset()
    rng = Random(f"drop:{config.seed}")
    return frozenset(
        key
        for key, step in steps.items()
        if step.expect_status == 202 and rng.random() < config.drop_share
    )


def generate(companies: tuple[Company, ...] | list[Company], config: ScenarioConfig) -> Scenario:
    """The scenario for these tenants and this config; pure and deterministic."""
    return _Builder(tuple(companies), config).build()


def order(steps: list[tuple[int, Step]], config: ScenarioConfig, rng: Random) -> list[Delivery]:
    """Deliveries in send order: by event time, then reordered, duplicated and bunched.

    A step is never moved before what it needs: the ``call_inbound`` whose answer fills its
    metadata, or the step it depends on. Duplicates (the provider delivering the same body
    again) land up to 30 positions after the first delivery.
    """
    natural = sorted(range(len(steps)), key=lambda i: (steps[i][0], i))
    position: dict[str, float] = {}
    keyed: list[tuple[float, int, int, str]] = []
    for rank, index in enumerate(natural):
        step = steps[index][1]
        pos = float(rank)
        if step.provider == "calcom" or step.event_type != "call_inbound":
            if rng.random() < config.reorder_share:
                pos += rng.uniform(0, config.reorder_window)
        for need in (step.metadata_from, step.depends_on):
            if need is not None:
                pos = max(pos, position[need] + 0.5)
        position[step.key] = pos
        keyed.append((pos, rank, 0, step.key))
        if rng.random() < config.duplicate_share:
            for attempt in range(1, rng.choice((1, 1, 1, 2, 3)) + 1):
                keyed.append((pos + rng.uniform(0.5, 30.0), rank, attempt, step.key))
    keyed.sort()
    deliveries: list[Delivery] = []
    burst_left, burst_slot = 0, 0
    for index, (_, _, attempt, key) in enumerate(keyed):
        if burst_left == 0 and rng.random() < config.burst_share:
            burst_left, burst_slot = rng.randint(10, 60), index
        slot = burst_slot if burst_left > 0 else index
        burst_left = max(0, burst_left - 1)
        deliveries.append(Delivery(key, attempt, float(slot)))
    return deliveries
