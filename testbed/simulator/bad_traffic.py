"""Bad traffic: well-formed bodies with bad signatures (401) and correctly signed bodies
that are not usable webhooks (400). Calls to unknown numbers are ordinary calls whose
number no active branch has; ``scenario`` makes those."""

from __future__ import annotations

from random import Random
from typing import Protocol

from pipeline.tenants import Branch, Company
from testbed.simulator.bodies import dumps, iso_seconds
from testbed.simulator.model import Step, iso_ms


class _Ids(Protocol):
    routes: list[tuple[Company, Branch]]
    day_start: int
    anchor: int

    def call_id(self) -> str: ...

    def booking_uid(self) -> str: ...


def forged_step(n: int, ids: _Ids, rng: Random) -> tuple[int, Step]:
    """A well-formed body about a real branch with a bad signature: it must be refused (401),
    and if it were let through it would leave a row that the expected state does not have."""
    at = rng.randint(ids.day_start, ids.anchor)
    _, branch = rng.choice(ids.routes)
    if rng.random() < 0.6:
        signing = rng.choice(("wrong_secret", "stale", "missing", "garbled"))
        start = at - rng.randint(60_000, 300_000)
        body = dumps(
            {
                "event": "call_ended",
                "call": {
                    "call_id": ids.call_id(),
                    "agent_id": branch.retell_agent_id or "agent_forged",
                    "agent_version": 1,
                    "call_type": "phone_call",
                    "call_status": "ended",
                    "direction": "inbound",
                    "from_number": "+15555550100",
                    "to_number": branch.phone_number,
                    "start_timestamp": start,
                    "end_timestamp": at,
                    "duration_ms": at - start,
                    "disconnection_reason": "user_hangup",
                    "call_cost": {"combined_cost": 99.5},
                },
            }
        )
        return at, Step(
            f"bad:signature:{n}",
            "retell",
            "call_ended",
            None,
            body,
            401,
            signing=signing,
            bad=f"signature_{signing}",
        )
    signing = rng.choice(("wrong_secret", "missing", "garbled"))
    uid = ids.booking_uid()
    body = dumps(
        {
            "triggerEvent": "BOOKING_CREATED",
            "createdAt": iso_ms(at),
            "payload": {
                "uid": uid,
                "bookingId": rng.randrange(10_000, 99_999_999),
                "eventTypeId": branch.calcom_event_type_id,
                "title": "Forged booking",
                "startTime": iso_seconds(at + 86_400_000),
                "endTime": iso_seconds(at + 88_200_000),
                "status": "ACCEPTED",
                "attendees": [
                    {
                        "name": "Mallory",
                        "email": "mallory@example.com",
                        "timeZone": "UTC",
                        "language": {"locale": "en"},
                    }
                ],
            },
        }
    )
    return at, Step(
        f"bad:signature:{n}",
        "calcom",
        "BOOKING_CREATED",
        None,
        body,
        401,
        signing=signing,
        bad=f"signature_{signing}",
    )


def malformed_step(n: int, ids: _Ids, rng: Random) -> tuple[int, Step]:
    """A correctly signed body that is not a usable webhook: it must be refused (400)."""
    at = rng.randint(ids.day_start, ids.anchor)
    created = iso_ms(at)
    retell: list[tuple[str, bytes]] = [
        ("truncated_json", b'{"event":"call_ended","call":{"call_id":"' + ids.call_id().encode()),
        ("not_an_object", b'[{"event":"call_ended"}]'),
        ("missing_call", b'{"event":"call_ended"}'),
        (
            "missing_call_id",
            dumps(
                {"event": "call_started", "call": {"agent_id": "agent_x", "call_status": "ongoing"}}
            ),
        ),
        ("missing_event", dumps({"call": {"call_id": ids.call_id()}})),
    ]
    calcom: list[tuple[str, bytes]] = [
        ("truncated_json", b'{"triggerEvent":"BOOKING_CREATED","createdAt":"' + created.encode()),
        (
            "missing_created_at",
            dumps({"triggerEvent": "BOOKING_CREATED", "payload": {"uid": ids.booking_uid()}}),
        ),
        ("missing_trigger", dumps({"createdAt": created, "payload": {"uid": ids.booking_uid()}})),
        (
            "missing_uid",
            dumps({"triggerEvent": "BOOKING_CANCELLED", "createdAt": created, "payload": {}}),
        ),
        ("flat_without_uid", dumps({"triggerEvent": "MEETING_ENDED", "id": 1, "title": "x"})),
    ]
    provider = rng.choice(("retell", "calcom"))
    reason, body = rng.choice(retell if provider == "retell" else calcom)
    return at, Step(
        f"bad:malformed:{n}", provider, "malformed", None, body, 400, bad=f"malformed_{reason}"
    )
