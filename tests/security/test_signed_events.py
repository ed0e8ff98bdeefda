"""Issue 13, "Proof": validly signed but hostile events through the real ingress and the
real worker of the shared world (tests/security/world.py), then a scan of every log line.

Each event carries our valid, fresh signature, in half of them one field at or past a limit (column sizes,
integer widths, unicode, instructions) and attribution hints that point across tenants:
numbers of another company's or an inactive branch, unicode look-alikes of a real number,
an agent id shared between companies, ``metadata`` naming another company's branch.
Afterwards:

* the worker consumed everything (its committed offsets reach the end of the webhook
  topics: nothing stalled it) and a plain event sent last is applied;
* every accepted event has its ``webhook_events`` row: ``applied``, or ``unroutable`` /
  ``dead_lettered`` with a reason;
* every call, appointment and customer row sits in a company its event's trusted
  identifiers allow (the number's owner; else the agent's or our metadata's; the event
  type's owner for bookings; never an inactive company), so nothing crossed tenants;
* no log line of either process holds a secret or token, a full phone number, an e-mail
  address or transcript text (over this test's events and those of the suites before it).

The last test plays a simulated day (``switchboard simulate``'s engine: calls with
transcripts, bookings, retries, reordering and some bad traffic) into the same world,
checks it with ``verify-run``'s oracle, and scans every log line once more.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import select

from pipeline.kafka import kafka_options
from pipeline.models import appointments, calls, customers, webhook_events
from testbed.events import booking, call_events
from testbed.simulator.run import SimulationConfig, run_simulation
from testbed.simulator.scenario import ScenarioConfig
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import verify
from tests.security import kafka_check
from tests.security import world as w
from tests.security.hostile import EDGE_VALUES, dumps, paths, set_path
from tests.security.test_hostile_requests import write_figures
from tests.security.world import World, exchange, request_bytes

pytestmark = pytest.mark.integration

CALLS = 250
BOOKINGS = 250
CONCURRENCY = 20
START_MS = 1_767_790_800_000
TRANSCRIPT = "Good morning, Bayview Dental."  # in every call's transcript (testbed.events)

UNKNOWN_NUMBER = "+14155550999"
NUMBERS = [
    *w.NUMBERS.values(),
    UNKNOWN_NUMBER,
    "＋１４１５５５５０１０１",  # full-width look-alike of HARBOR_MAIN's number
    "+14155550101\u200b",
    "\u202e+14155550101",
    "+1415555٠١٠١",
]
AGENT_IDS = [*sorted(set(w.AGENTS.values())), "agent_unknown", "agent_harbor\u200b", ""]
CALL_METADATA: list[dict[str, str] | None] = [
    None,
    {"company_id": "1", "branch_id": "11"},
    {"company_id": "2", "branch_id": "21"},
    {"company_id": "1", "branch_id": "21"},  # company 1 naming company 2's branch
    {"company_id": "1", "branch_id": "12"},  # an inactive branch
    {"company_id": "3", "branch_id": "31"},  # an inactive company
    {"branch_id": "²"},
]
EVENT_TYPES = [*w.EVENT_TYPES.values(), 4242]
BOOKING_METADATA = [
    {},
    {"branch_id": "21"},
    {"branch_id": "11"},
    {"branch_id": "21", "company_id": "2", "retell_call_id": "call_guessed"},
]
# Attribution inputs stay as drawn; every other field may be pushed to a limit.
CALL_FIXED = {"call_id", "to_number", "from_number", "agent_id", "metadata", "direction"}
BOOKING_FIXED = {"uid", "eventTypeId", "metadata", "attendees", "responses"}


@dataclass
class Sent:
    provider: str
    body: bytes
    subject: str  # call id or booking uid
    allowed: set[int]  # companies its rows may be in
    person: str  # the customer's phone (calls) or e-mail (bookings)


def _active(branch: int) -> bool:
    return w.ACTIVE_BRANCHES[branch] and w.ACTIVE_COMPANIES[w.COMPANY_OF[branch]]


def allowed_for_call(number: str, agent: str, metadata: dict[str, str] | None) -> set[int]:
    """The companies the call's trusted identifiers allow (a superset of the rules'
    single answer): the number's owner when the number is ours; else the agent's only
    active branch and our metadata's branch (of the company it names)."""
    owner = next((b for b, n in w.NUMBERS.items() if n == number), None)
    if owner is not None:
        return {w.COMPANY_OF[owner]} if w.ACTIVE_COMPANIES[w.COMPANY_OF[owner]] else set()
    out = set()
    by_agent = [b for b, a in w.AGENTS.items() if a == agent and _active(b)]
    if len(by_agent) == 1:
        out.add(w.COMPANY_OF[by_agent[0]])
    branch = (metadata or {}).get("branch_id", "")
    if branch.isascii() and branch.isdigit() and int(branch) in w.COMPANY_OF:
        b = int(branch)
        if _active(b) and str(w.COMPANY_OF[b]) == (metadata or {}).get("company_id"):
            out.add(w.COMPANY_OF[b])
    return out


def allowed_for_booking(event_type: int) -> set[int]:
    """Only the event type's owner (booker-set metadata vouches for nothing)."""
    owner = next((b for b, t in w.EVENT_TYPES.items() if t == event_type), None)
    return {w.COMPANY_OF[owner]} if owner is not None and _active(owner) else set()


def push_to_limit(r: random.Random, obj: dict[str, Any], fixed: set[str]) -> None:
    """Half the events: one field (not an attribution input) at or past a limit."""
    if r.random() < 0.5:
        return
    candidates = [p for p in paths(obj) if p[0] not in fixed]
    if candidates:
        set_path(obj, r.choice(candidates), r.choice(EDGE_VALUES))


def hostile_call(r: random.Random, n: int) -> Sent:
    call_id = f"call_signed{n:05d}"
    number, agent = r.choice(NUMBERS), r.choice(AGENT_IDS)
    metadata = r.choice(CALL_METADATA)
    caller = f"+1628555{n:04d}"
    events = call_events(call_id, start_ms=START_MS + n * 60_000, from_number=caller)
    event = orjson.loads(r.choice(events[-2:]))  # call_ended or call_analyzed
    event["call"].update(to_number=number, agent_id=agent, metadata=metadata)
    push_to_limit(r, event["call"], CALL_FIXED)
    body = dumps(event)
    return Sent("retell", body, call_id, allowed_for_call(number, agent, metadata), caller)


def hostile_booking(r: random.Random, n: int) -> Sent:
    uid = f"bk_signed{n:05d}"
    event_type = r.choice(EVENT_TYPES)
    email = f"booker{n:05d}@example.net"
    body = booking(
        r.choice(["BOOKING_CREATED", "BOOKING_CREATED", "BOOKING_CANCELLED"]),
        uid,
        created_ms=START_MS + n * 60_000,
        event_type_id=event_type,
        email=email,
        phone=f"+1628666{n:04d}",
        metadata=r.choice(BOOKING_METADATA),
    )
    event = orjson.loads(body)
    push_to_limit(r, event["payload"], BOOKING_FIXED)
    return Sent("calcom", dumps(event), uid, allowed_for_booking(event_type), email)


async def send(world: World, events: list[Sent]) -> list[int]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(sent: Sent) -> int:
        headers = [
            (k.encode(), v.encode()) for k, v in world.sign(sent.provider, sent.body).items()
        ]
        raw = request_bytes("POST", f"/webhooks/{sent.provider}", headers, sent.body)
        async with gate:
            reply = await exchange(world.ingress_addr, raw)
        assert reply is not None, f"no answer for {sent.subject}"
        return reply.status

    return list(await asyncio.gather(*(one(s) for s in events)))


async def lag(world: World) -> int:
    """Records on the webhook topics the worker has not committed yet."""
    settings = world.settings
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
    finally:
        await admin.close()
    ends = await kafka_check.end_offsets(settings)
    behind = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        behind += end - (meta.offset if meta is not None and meta.offset >= 0 else 0)
    return behind


def wait_consumed(world: World, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    behind = -1
    while time.monotonic() < deadline:
        behind = asyncio.run(lag(world))
        if behind == 0:
            return
        world.assert_alive()
        time.sleep(1.0)
    raise AssertionError(f"the worker is {behind} records behind after {timeout_s:.0f}s")


@pytest.mark.timeout(900)
def test_signed_hostile_events_stay_in_their_tenant(world: World) -> None:
    seed = random.randrange(2**32)
    print(f"\nsigned hostile events: seed {seed}")
    r = random.Random(seed)
    sent = [hostile_call(r, n) for n in range(CALLS)]
    sent += [hostile_booking(r, n) for n in range(BOOKINGS)]
    r.shuffle(sent)
    started = time.monotonic()
    statuses = asyncio.run(send(world, sent))
    assert all(s < 500 for s in statuses), Counter(statuses)
    accepted = [s for s, status in zip(sent, statuses, strict=True) if status == 202]
    assert len(accepted) >= 0.9 * len(sent), Counter(statuses)  # signed: the ingress takes them
    wait_consumed(world)
    world.assert_alive()

    digests = {_sha(s.body): s for s in accepted}
    with world.engine.connect() as conn:
        events = {
            row.payload_sha256: row
            for row in conn.execute(
                select(
                    webhook_events.c.payload_sha256,
                    webhook_events.c.status,
                    webhook_events.c.error,
                    webhook_events.c.company_id,
                ).where(webhook_events.c.payload_sha256.in_(list(digests)))
            )
        }
        call_rows = {r.retell_call_id: r for r in conn.execute(select(calls))}
        appointment_rows = {r.calcom_uid: r for r in conn.execute(select(appointments))}
        customer_rows = list(conn.execute(select(customers)))

    outcomes: Counter[str] = Counter()
    for digest, s in digests.items():
        row = events.get(digest)
        assert row is not None, f"no webhook_events row for {s.subject}"
        outcomes[row.status] += 1
        assert row.status in ("applied", "unroutable", "dead_lettered"), (s.subject, row.status)
        if row.status != "applied":
            assert row.error, f"{s.subject} is {row.status} without a reason"
        else:
            assert row.company_id in s.allowed, (s.subject, row.company_id, s.allowed)

    by_subject = {s.subject: s for s in sent}
    for table in (call_rows, appointment_rows):
        for key, row in table.items():
            assert w.ACTIVE_COMPANIES.get(row.company_id), (key, row.company_id)
            assert row.branch_id is None or w.COMPANY_OF[row.branch_id] == row.company_id, key
            if key in by_subject:
                assert row.company_id in by_subject[key].allowed, (key, row.company_id)
    people = {s.person: s.allowed for s in sent}
    for row in customer_rows:
        assert w.ACTIVE_COMPANIES.get(row.company_id), row.id
        for person in (row.phone, row.email):
            if person in people:
                assert row.company_id in people[person], (row.id, row.company_id)

    assert_plain_event_applied(world)
    figures = {
        "events": len(sent),
        "accepted": len(accepted),
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": dict(sorted(outcomes.items())),
    }
    write_figures("signed-events", figures)
    assert_logs_clean(world, sent)


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def assert_plain_event_applied(world: World) -> None:
    """The worker still applies an ordinary event after the hostile ones."""
    body = call_events("call_after_hostile", start_ms=START_MS, from_number="+16285559999")[-1]
    event = orjson.loads(body)
    event["call"].update(to_number=w.NUMBERS[w.HARBOR_MAIN], agent_id="agent_harbor")
    sent = Sent("retell", orjson.dumps(event), "call_after_hostile", {w.HARBOR}, "")
    assert asyncio.run(send(world, [sent])) == [202]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with world.engine.connect() as conn:
            row = conn.execute(
                select(calls.c.company_id).where(calls.c.retell_call_id == "call_after_hostile")
            ).first()
        if row is not None:
            assert row.company_id == w.HARBOR
            return
        time.sleep(0.5)
    raise AssertionError("an ordinary event was not applied after the hostile ones")


PHONE = re.compile(r"\+?\d[\d ()\-]{8,}\d")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def assert_logs_clean(world: World, sent: list[Sent]) -> None:
    """No secret, full phone number, e-mail address or transcript text in any log line."""
    text = world.logs()
    assert text.strip(), "the processes logged nothing"
    for secret in world.secrets_in_use:
        assert secret not in text, "a secret or token is in the logs"
    assert TRANSCRIPT not in text, "transcript text is in the logs"
    for s in sent:
        assert s.person not in text, f"{s.subject}'s phone or e-mail is in the logs"
    for number in w.NUMBERS.values():
        assert number not in text, "a branch's full number is in the logs"
    for line in text.splitlines():
        for match in PHONE.finditer(line):
            digits = re.sub(r"\D", "", match.group())
            assert len(digits) < 10 or not match.group().startswith("+"), line[:300]
        assert not EMAIL.search(line), line[:300]


@pytest.mark.timeout(900)
def test_after_a_simulated_day_no_secret_or_pii_in_any_log_line(
    world: World, tmp_path: Path
) -> None:
    settings = world.settings
    expected = tmp_path / "expected.json"
    summary = run_simulation(
        settings,
        SimulationConfig(
            scenario=ScenarioConfig(seed=13, calls=40, span_hours=23, bad_share=0.1),
            send=SendConfig(
                url=f"http://{settings.ingress_host}:{settings.ingress_port}",
                rate=0,
                concurrency=16,
                progress_every_s=60,
            ),
            expected_path=expected,
        ),
    )
    assert summary.ok, summary
    assert summary.accepted > 0
    api = f"http://{settings.worker_host}:{settings.worker_port}"
    differences = verify(settings, expected, api_url=api, token=world.admin_token, timeout=180)
    assert differences == []
    world.assert_alive()
    day = orjson.loads(expected.read_bytes())
    assert_logs_clean(world, [])
    text = world.logs()
    people = [v for v in _strings(day) if "@" in v or (v.startswith("+") and v[1:].isdigit())]
    assert people, "the simulated day named no phone number or e-mail address"
    for value in people:
        assert value not in text, "a simulated caller's number or e-mail is in the logs"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
