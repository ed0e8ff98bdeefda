"""The generated scenario: deterministic, in the providers' shapes, with every mix present."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from pipeline import providers
from pipeline.errors import InvalidSignature, MalformedPayload
from testbed.simulator import bodies, tenants
from testbed.simulator.model import Scenario
from testbed.simulator.scenario import ScenarioConfig, ScenarioError, generate
from testbed.simulator.sender import SendConfig, Sender

ANCHOR = 1_790_000_000_000  # 2026-09-21T12:53:20Z
SECRETS = {"retell": "sim-retell-key", "calcom": "sim-calcom-secret"}
REPO = Path(__file__).resolve().parents[2]


def tenants_fixture(count: int = 6, seed: int = 11):
    return tenants.with_ids(tenants.generate(count, seed))


def scenario(seed: int = 5, calls: int = 300, **kw) -> Scenario:
    config = ScenarioConfig(seed=seed, calls=calls, now_ms=ANCHOR, **kw)
    return generate(tenants_fixture(), config)


@pytest.fixture(scope="module")
def big() -> Scenario:
    return scenario(bad_share=0.1)


def test_same_seed_gives_the_same_bytes_in_the_same_order() -> None:
    first, second = scenario(bad_share=0.1), scenario(bad_share=0.1)
    assert first.canonical_bytes() == second.canonical_bytes()
    assert [(d.step, d.attempt, d.slot) for d in first.deliveries] == [
        (d.step, d.attempt, d.slot) for d in second.deliveries
    ]


def test_determinism_does_not_depend_on_the_hash_seed() -> None:
    script = (
        "import hashlib\n"
        "from testbed.simulator import tenants\n"
        "from testbed.simulator.scenario import ScenarioConfig, generate\n"
        f"s = generate(tenants.with_ids(tenants.generate(6, 11)), ScenarioConfig(seed=5, calls=60, now_ms={ANCHOR}, bad_share=0.1))\n"
        "print(hashlib.sha256(s.canonical_bytes()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        digests.add(out.stdout.strip())
    local = scenario(calls=60, bad_share=0.1)
    assert digests == {hashlib.sha256(local.canonical_bytes()).hexdigest()}


def test_different_seeds_differ() -> None:
    assert (
        scenario(seed=5, calls=40).canonical_bytes() != scenario(seed=6, calls=40).canonical_bytes()
    )


def test_the_anchor_moves_times_and_ids_but_seed_keeps_the_shape() -> None:
    a = generate(tenants_fixture(), ScenarioConfig(seed=5, calls=40, now_ms=ANCHOR))
    b = generate(tenants_fixture(), ScenarioConfig(seed=5, calls=40, now_ms=ANCHOR + 3_600_000))
    assert a.run_tag != b.run_tag
    assert [c.direction for c in a.calls] == [c.direction for c in b.calls]
    assert [c.start_ms and c.start_ms + 3_600_000 for c in a.calls] == [c.start_ms for c in b.calls]


def test_config_is_validated() -> None:
    with pytest.raises(ScenarioError):
        generate(tenants_fixture(), ScenarioConfig(seed=1, calls=5))  # no anchor
    with pytest.raises(ScenarioError):
        generate(tenants_fixture(), ScenarioConfig(seed=1, calls=5, requests=5, now_ms=ANCHOR))
    with pytest.raises(ScenarioError, match="tenants seed"):
        generate((), ScenarioConfig(seed=1, calls=5, now_ms=ANCHOR))


def test_requests_sizes_the_run() -> None:
    s = generate(tenants_fixture(), ScenarioConfig(seed=2, requests=2_000, now_ms=ANCHOR))
    assert 1_700 <= len(s.deliveries) <= 2_500


def _signed(step, body: bytes) -> None:
    provider = providers.get(step.provider)
    headers = provider.sign(body, SECRETS[step.provider], ANCHOR)
    provider.verify(headers, body, [SECRETS[step.provider]], ANCHOR)


def test_every_good_body_parses_verifies_and_has_the_expected_event_id(big: Scenario) -> None:
    answered = {"company_id": "1", "branch_id": "1", "correlation_id": "c0ffee"}
    for step in big.steps.values():
        if step.expect_status >= 300:
            continue
        for body in (
            step.body,
            bodies.with_metadata(step.body, answered) if step.metadata_from else step.body,
        ):
            envelope = providers.get(step.provider).parse(body)
            assert envelope.event_id == step.event_id, step.key
            assert envelope.event_type == step.event_type
            _signed(step, body)


def test_bodies_are_compact_json_with_unescaped_non_ascii(big: Scenario) -> None:
    for step in big.steps.values():
        if step.bad is None:
            assert step.body == orjson.dumps(orjson.loads(step.body))
    assert any(
        "\\u" not in s.body.decode() and any(ord(ch) > 127 for ch in s.body.decode())
        for s in big.steps.values()
        if s.bad is None
    )


def test_bad_traffic_is_refused_by_the_providers_own_checks(big: Scenario) -> None:
    sender = Sender(big, SECRETS, SendConfig(), clock_ms=lambda: ANCHOR)
    kinds = Counter()
    for step in big.steps.values():
        if step.bad is None:
            continue
        kinds[step.bad.split("_")[0]] += 1
        provider = providers.get(step.provider)
        headers = sender._headers(step, step.body)
        if step.expect_status == 401:
            with pytest.raises(InvalidSignature):
                provider.verify(headers, step.body, [SECRETS[step.provider]], ANCHOR)
            provider.parse(step.body)  # the body itself is fine: only the signature is bad
        elif step.expect_status == 400:
            provider.verify(headers, step.body, [SECRETS[step.provider]], ANCHOR)
            with pytest.raises(MalformedPayload):
                provider.parse(step.body)
        else:
            pytest.fail(f"unexpected bad step {step}")
    assert kinds["signature"] > 0 and kinds["malformed"] > 0
    unroutable = [s for s in big.steps.values() if s.unroutable]
    assert unroutable and all(s.expect_status in (200, 202) for s in unroutable)


def test_payload_times_are_recent_and_never_in_the_future(big: Scenario) -> None:
    low = ANCHOR - 24 * 3_600_000
    for call in big.calls:
        for event in call.events:
            assert low <= event.at_ms <= ANCHOR
        assert call.end_ms <= ANCHOR and (call.start_ms is None or call.start_ms >= low)
    for booking in big.bookings:
        for event in booking.events:
            assert low <= event.at_ms <= ANCHOR, event


def _calls_by_event(s: Scenario) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for step in s.steps.values():
        if step.provider == "retell" and step.bad is None and step.event_type != "call_inbound":
            call = orjson.loads(step.body)["call"]
            out[call["call_id"]][step.event_type] = call
    return out


def test_the_mixes_are_all_there(big: Scenario) -> None:
    by_call = _calls_by_event(big)
    branch_numbers = {b.phone_number for c in big.companies for b in c.branches}
    ended = [events["call_ended"] for events in by_call.values() if "call_ended" in events]
    # not connected: no call_started, no start_timestamp
    not_connected = [
        c
        for c in ended
        if c["disconnection_reason"] in ("dial_no_answer", "dial_busy", "dial_failed")
    ]
    assert not_connected
    for c in not_connected:
        assert "start_timestamp" not in c and "call_started" not in by_call[c["call_id"]]
    analyzed = [e["call_analyzed"] for e in by_call.values() if "call_analyzed" in e]
    assert any(
        a["disconnection_reason"] == "voicemail_reached" and a["call_analysis"]["in_voicemail"]
        for a in analyzed
    )
    assert any(
        c["disconnection_reason"] == "call_transfer" and c.get("transfer_destination")
        for c in ended
    )
    assert any(c["direction"] == "outbound" and c["from_number"] in branch_numbers for c in ended)
    assert {a["call_analysis"].get("user_sentiment") for a in analyzed} >= {
        "Positive",
        "Neutral",
        "Negative",
        "Unknown",
        None,
    }
    costs = [c["call_cost"]["combined_cost"] for c in ended if "call_cost" in c]
    assert any(cost != int(cost) for cost in costs) and len(costs) < len(
        ended
    )  # fractions; some missing
    assert max(len(c.get("transcript", "")) for c in ended) > 3_000  # long transcripts
    inbound = Counter(c["from_number"] for c in ended if c["direction"] == "inbound")
    assert inbound.most_common(1)[0][1] > 1  # repeat callers
    triggers = Counter(
        s.event_type for s in big.steps.values() if s.provider == "calcom" and s.bad is None
    )
    assert set(triggers) == {
        "BOOKING_CREATED",
        "BOOKING_REQUESTED",
        "BOOKING_RESCHEDULED",
        "BOOKING_CANCELLED",
        "BOOKING_REJECTED",
        "BOOKING_NO_SHOW_UPDATED",
        "MEETING_ENDED",
    }
    # transcript snapshots grow
    for call in big.calls:
        counts = [e.turns for e in call.events if e.event == "transcript_updated"]
        assert counts == sorted(counts)


def test_transcript_snapshots_grow_and_carry_tool_calls(big: Scenario) -> None:
    grew = False
    for call in big.calls:
        snaps = [
            orjson.loads(big.steps[e.key].body)["call"]
            for e in call.events
            if e.event == "transcript_updated"
        ]
        lengths = [len(s["transcript"]) for s in snaps]
        assert lengths == sorted(lengths)
        grew = grew or len(set(lengths)) > 1
    assert grew
    assert any(
        t["role"] == "tool_call_invocation"
        for s in big.steps.values()
        if s.event_type == "call_ended" and s.bad is None
        for t in orjson.loads(s.body)["call"].get("transcript_with_tool_calls", [])
    )


def test_bookings_made_in_calls_point_back_at_the_call(big: Scenario) -> None:
    calls = {c.call_id: c for c in big.calls}
    linked = 0
    for booking in big.bookings:
        if booking.retell_call_id is None:
            continue
        created = next(
            (e for e in booking.events if e.trigger in ("BOOKING_CREATED", "BOOKING_REQUESTED")),
            None,
        )
        assert created is not None
        body = orjson.loads(big.steps[created.key].body)
        call = calls[booking.retell_call_id]
        payload = body["payload"]
        assert payload["metadata"]["retell_call_id"] == call.call_id
        assert payload["responses"]["attendeePhoneNumber"]["value"] == call.from_number
        assert payload["eventTypeId"] == next(
            b.calcom_event_type_id
            for c in big.companies
            for b in c.branches
            if b.id == call.branch_id
        )
        assert payload["attendees"][0]["name"] and payload["attendees"][0]["email"]
        first = min(e.at_ms for e in booking.events)
        assert call.start_ms is not None and call.start_ms <= first <= call.end_ms
        linked += 1
    assert linked > 10
    rescheduled = [b for b in big.bookings if b.rescheduled_from]
    assert rescheduled
    for b in rescheduled:
        body = orjson.loads(big.steps[b.events[0].key].body)
        assert body["payload"]["rescheduleUid"] == b.rescheduled_from != b.uid
    meeting = next(s for s in big.steps.values() if s.event_type == "MEETING_ENDED")
    assert "payload" not in orjson.loads(meeting.body)


def test_delivery_order_keeps_dependencies_and_reorders_duplicates_and_bursts(
    big: Scenario,
) -> None:
    first_position: dict[str, int] = {}
    for index, delivery in enumerate(big.deliveries):
        first_position.setdefault(delivery.step, index)
    assert set(first_position) == set(big.steps)
    for step in big.steps.values():
        for need in (step.metadata_from, step.depends_on):
            if need is not None:
                assert first_position[need] < first_position[step.key], step.key
    reordered = sum(
        1
        for call in big.calls
        if f"retell:call_analyzed:{call.call_id}" in first_position
        and first_position[f"retell:call_analyzed:{call.call_id}"]
        < first_position[f"retell:call_ended:{call.call_id}"]
    )
    assert reordered > 0
    attempts = Counter(d.step for d in big.deliveries)
    assert 1 < max(attempts.values()) <= 4
    assert sum(1 for n in attempts.values() if n > 1) > 0.03 * len(attempts)
    slots = Counter(d.slot for d in big.deliveries)
    assert max(slots.values()) >= 10  # a burst shares one slot


def test_outbound_calls_carry_our_metadata_and_have_no_call_inbound(big: Scenario) -> None:
    for call in big.calls:
        if call.direction != "outbound":
            continue
        assert all(e.event != "call_inbound" for e in call.events)
        ended = orjson.loads(big.steps[f"retell:call_ended:{call.call_id}"].body)["call"]
        assert ended["metadata"]["company_id"] == str(call.company_id)
