"""The sender against a fake ingress that checks signatures with the providers' own code."""

from __future__ import annotations

import itertools
import time
import uuid
import zlib
from collections import defaultdict
from typing import Any

import orjson
import pytest
from aiohttp import web

from pipeline import providers
from pipeline.errors import InvalidSignature, MalformedPayload
from testbed.simulator import expected, tenants
from testbed.simulator.model import Scenario
from testbed.simulator.run import SimulationError, _preflight, summarize
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.sender import SendConfig, Sender

SECRETS = {"retell": "sim-retell-key", "calcom": "sim-calcom-secret"}


def make_scenario(calls: int = 40, bad_share: float = 0.15, seed: int = 9) -> Scenario:
    companies = tenants.with_ids(tenants.generate(4, seed=2))
    now = int(time.time() * 1000)
    return generate(
        companies,
        ScenarioConfig(
            seed=seed, calls=calls, now_ms=now, bad_share=bad_share, duplicate_share=0.2
        ),
    )


class FakeIngress:
    """Verifies, parses, routes call_inbound by number, and answers 503 when told to."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        flaky_every: int = 5,
        always_503: set[str] = frozenset(),
        accept_anything: bool = False,
        misroute: bool = False,
    ) -> None:
        self.numbers = {
            b.phone_number: b
            for c in scenario.companies
            if c.is_active
            for b in c.branches
            if b.is_active
        }
        self.flaky_every = flaky_every
        self.always_503 = always_503
        self.accept_anything = accept_anything
        self.misroute = misroute
        self.seen: dict[str, int] = defaultdict(int)  # body sha → requests
        self.bodies: dict[str, list[bytes]] = defaultdict(list)  # event_id → bodies accepted
        self.signatures: dict[str, list[str]] = defaultdict(list)
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)  # call_id → answers

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/{provider}", self.webhook)
        app.router.add_get("/healthz", lambda r: web.json_response({"ok": True}))
        app.router.add_get("/readyz", lambda r: web.json_response({"ok": True}))
        return app

    async def webhook(self, request: web.Request) -> web.Response:
        provider = providers.get(request.match_info["provider"])
        body = await request.read()
        if not self.accept_anything:
            try:
                provider.verify(
                    request.headers, body, [SECRETS[provider.NAME]], int(time.time() * 1000)
                )
            except InvalidSignature as exc:
                return web.json_response({"error": exc.code, "detail": exc.detail}, status=401)
        try:
            envelope = provider.parse(body)
        except MalformedPayload as exc:
            return web.json_response({"error": exc.code, "detail": exc.detail}, status=400)
        attempt = self.seen[envelope.event_id + str(len(body))]
        self.seen[envelope.event_id + str(len(body))] += 1
        if envelope.event_id in self.always_503 or (
            attempt == 0 and zlib.crc32(envelope.event_id.encode()) % self.flaky_every == 0
        ):
            return web.json_response(
                {"error": "kafka_unavailable"}, status=503, headers={"Retry-After": "0"}
            )
        self.bodies[envelope.event_id].append(body)
        self.signatures[envelope.event_id].append(
            request.headers.get(provider.SIGNATURE_HEADER, "")
        )
        if envelope.event_type == "call_inbound":
            inbound = envelope.payload["call_inbound"]
            branch = self.numbers.get(inbound["to_number"])
            answer: dict[str, Any] = {"call_inbound": {}}
            if branch is not None:
                answer = {
                    "call_inbound": {
                        "override_agent_id": branch.retell_agent_id,
                        "dynamic_variables": {"branch_name": branch.name},
                        "metadata": {
                            "company_id": str(branch.company_id),
                            "branch_id": str(branch.id + self.misroute),
                            "correlation_id": str(uuid.uuid4()),
                        },
                    }
                }
            self.answers[inbound["call_id"]].append(answer)
            return web.json_response(answer)
        return web.json_response({"status": "accepted", "event_id": envelope.event_id}, status=202)


def ticking_clock():
    counter = itertools.count()
    return lambda: int(time.time() * 1000) + next(counter)


async def test_everything_good_is_accepted_bad_refused_and_503s_retried(aiohttp_server) -> None:
    scenario = make_scenario()
    fake = FakeIngress(scenario)
    server = await aiohttp_server(fake.app())
    config = SendConfig(url=str(server.make_url("")), rate=0, concurrency=16, deadline_s=20)
    outcomes = await Sender(scenario, SECRETS, config, clock_ms=ticking_clock()).run()
    summary = summarize(scenario, outcomes, 1.0)

    assert summary.ok, summary.lines()
    assert summary.answers_503 > 0 and summary.undelivered == 0
    assert summary.deliveries == len(scenario.deliveries) == len(outcomes)
    good = {k for k, s in scenario.steps.items() if s.expect_status < 300}
    assert {o.step for o in outcomes if o.accepted} == good
    assert {
        "401 invalid_signature",
        "401 missing_signature",
        "401 stale_timestamp",
        "400 malformed_payload",
    } <= set(summary.rejected)

    # Every delivery of one body is the same bytes, re-signed each time it is sent.
    for event_id, sent in fake.bodies.items():
        if event_id.startswith("transcript_updated:"):
            continue  # snapshots share an event id but are different bodies
        assert len(set(sent)) == 1, event_id
    assert any(len(set(sigs)) > 1 for sigs in fake.signatures.values())

    # The routing answer's metadata is in every later event of the call, as Retell copies it.
    for call in scenario.calls:
        if call.direction != "inbound":
            continue
        answered = [a["call_inbound"].get("metadata") for a in fake.answers[call.call_id]]
        for event in call.events[1:]:
            step = scenario.steps[event.key]
            for body in fake.bodies[step.event_id]:
                payload = orjson.loads(body)
                if payload["call"]["call_id"] != call.call_id:
                    continue
                assert payload["call"].get("metadata") in answered


async def test_a_delivery_that_never_gets_through_is_left_out_of_the_expected_state(
    aiohttp_server,
) -> None:
    scenario = make_scenario(calls=15, bad_share=0.0)
    victim = next(
        s for s in scenario.steps.values() if s.event_type == "call_ended" and not s.unroutable
    )
    fake = FakeIngress(scenario, flaky_every=10**9, always_503={victim.event_id})
    server = await aiohttp_server(fake.app())
    config = SendConfig(url=str(server.make_url("")), rate=0, concurrency=8, deadline_s=0.5)
    outcomes = await Sender(scenario, SECRETS, config).run()
    summary = summarize(scenario, outcomes, 1.0)
    deliveries = sum(1 for d in scenario.deliveries if d.step == victim.key)
    assert summary.undelivered == deliveries and not summary.ok
    accepted = {o.step for o in outcomes if o.accepted}
    everything = {k for k, s in scenario.steps.items() if s.expect_status < 300}
    assert accepted == everything - {victim.key}
    full = expected.compute(scenario.companies, scenario.calls, scenario.bookings, everything)
    partial = expected.compute(scenario.companies, scenario.calls, scenario.bookings, accepted)

    def total(result):
        return sum(c["calls_total"] for (_, g, _), c in result.buckets.items() if g == "hour")

    assert total(partial) == total(full) - 1
    assert ("retell", victim.event_id) not in partial.events


async def test_bad_traffic_let_through_is_reported(aiohttp_server) -> None:
    scenario = make_scenario(calls=10, bad_share=0.3)
    fake = FakeIngress(scenario, flaky_every=10**9, accept_anything=True)
    server = await aiohttp_server(fake.app())
    config = SendConfig(url=str(server.make_url("")), rate=0, concurrency=8)
    outcomes = await Sender(scenario, SECRETS, config).run()
    summary = summarize(scenario, outcomes, 1.0)
    assert not summary.ok
    assert any(
        "signature_" in line and "expected 401, got 202" in line for line in summary.unexpected
    )


async def test_preflight_fails_fast_when_nothing_listens() -> None:
    with pytest.raises(SimulationError, match="ingress unreachable"):
        await _preflight("http://127.0.0.1:9", 0.1)


async def test_pacing_keeps_the_rate(aiohttp_server) -> None:
    scenario = make_scenario(calls=6, bad_share=0.0)
    fake = FakeIngress(scenario, flaky_every=10**9)
    server = await aiohttp_server(fake.app())
    rate = 100.0
    began = time.monotonic()
    await Sender(
        scenario, SECRETS, SendConfig(url=str(server.make_url("")), rate=rate, concurrency=8)
    ).run()
    elapsed = time.monotonic() - began
    last_slot = scenario.deliveries[-1].slot
    assert elapsed >= last_slot / rate * 0.95


async def test_a_wrong_routing_answer_is_reported(aiohttp_server) -> None:
    scenario = make_scenario(calls=10, bad_share=0.0)
    fake = FakeIngress(scenario, flaky_every=10**9, misroute=True)
    server = await aiohttp_server(fake.app())
    config = SendConfig(url=str(server.make_url("")), rate=0, concurrency=8)
    summary = summarize(scenario, await Sender(scenario, SECRETS, config).run(), 1.0)
    inbound = sum(1 for s in scenario.steps.values() if s.event_type == "call_inbound")
    assert inbound and not summary.ok
    assert len(summary.inbound_mismatches) >= inbound
    assert all("expected" in line for line in summary.inbound_mismatches)
