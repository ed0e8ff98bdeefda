"""Issue 13, defect 8: a negative ``duration_ms`` (a validly signed event can carry one)
must not reach the row or the aggregates: ``duration_ms_total`` only ever grows. The call
still counts; its duration is unknown (NULL), as when Retell leaves it out."""

from __future__ import annotations

import orjson
import pytest

from pipeline.apply.tenancy import Branch
from testbed.events import call_events
from testbed.records import record
from tests.support.memory_store import MemoryStore

START_MS = 1_767_790_800_000


def with_duration(body: bytes, duration: object) -> bytes:
    event = orjson.loads(body)
    if "duration_ms" in event["call"]:
        event["call"]["duration_ms"] = duration
    return orjson.dumps(event)


@pytest.mark.parametrize("duration", [-95_000, -1, -(2**61)])
def test_a_negative_duration_is_no_duration(duration: int) -> None:
    db = MemoryStore([Branch(11, 1, "+14155550199", "agent_a", 901, True)], {1: "UTC"})
    events = [with_duration(e, duration) for e in call_events("c_neg", start_ms=START_MS)]
    result = db.apply([record("retell", e, offset=i) for i, e in enumerate(events)])
    assert {o.status for o in result.outcomes} <= {"applied", "already_applied"}
    assert db.calls["c_neg"].duration_ms is None
    totals = [b["duration_ms_total"] for b in db.buckets.values()]
    assert totals and all(t == 0 for t in totals)
    assert all(b["calls_total"] == 1 for b in db.buckets.values())
