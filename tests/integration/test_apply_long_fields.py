"""Issue 12, defect 5, against the real MariaDB: optional fields too long for their column
(a signed ``recording_url`` over 2,048 characters, SIP URIs where numbers go, ...) are
dropped or truncated with a warning (correlation id, no personal data) and a metric; the
event is applied and counted. Only what the event cannot be applied without (the call id,
the booking uid) still makes it poison.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from agents.metrics import WorkerMetrics
from agents.webhooks import count_result
from pipeline.apply.applier import Applier
from testbed.records import record
from tests.integration.ops_helpers import rows_of
from tests.support.fixtures import fixture_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixture_tenants")]

URL = "https://recordings.example.com/r.wav?X-Signature=" + "s" * 3000
SIP = "sip:+14155550199@trunk.example.com;transport=tls"  # 47 characters, a caller


def _call_ended(**changes: Any) -> bytes:
    body = json.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(changes)
    return json.dumps(body).encode()


async def test_a_long_recording_url_and_a_sip_caller_do_not_lose_the_call(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    body = _call_ended(
        recording_url=URL,
        from_number=SIP,
        disconnection_reason="user_hangup_" + "x" * 100,
        transfer_destination="+1" + "9" * 300,
    )
    source = record("retell", body)
    caplog.set_level(logging.WARNING)
    result = await asyncio.wait_for(Applier(engine).apply([source]), 60)
    assert result.dead_letters == []
    assert result.counts() == Counter({"applied": 1})
    [outcome] = result.outcomes
    assert dict(outcome.clipped) == {
        "recording_url": "dropped",
        "from_number": "dropped",
        "disconnection_reason": "truncated",
        "transfer_destination": "truncated",
    }
    [call] = rows_of(engine, "SELECT * FROM calls")
    assert call["recording_url"] is None and call["from_number"] is None
    assert call["disconnection_reason"] == ("user_hangup_" + "x" * 100)[:64]
    assert len(call["transfer_destination"]) == 255
    [bucket] = rows_of(
        engine, "SELECT SUM(calls_total) AS n FROM dashboard_buckets WHERE granularity = 'hour'"
    )
    assert bucket["n"] == 1, "the call is counted on the dashboard"

    warnings = [r for r in caplog.records if "did not fit" in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    for line in warnings:
        assert getattr(line, "correlation_id", None) == source.correlation_id
        assert "X-Signature" not in line.getMessage() and "4155550199" not in line.getMessage()

    metrics = WorkerMetrics(CollectorRegistry())
    count_result(result, metrics)
    value = metrics.registry.get_sample_value(
        "switchboard_worker_fields_clipped_total",
        {"provider": "retell", "field": "recording_url", "action": "dropped"},
    )
    assert value == 1


async def test_a_booking_with_an_overlong_email_is_applied_without_it(engine: Engine) -> None:
    body = json.loads(fixture_bytes("calcom", "BOOKING_CREATED.json"))
    body["payload"]["attendees"][0]["email"] = "x" * 330 + "@example.com"
    body["payload"]["rescheduleUid"] = "u" * 200
    result = await asyncio.wait_for(
        Applier(engine).apply([record("calcom", json.dumps(body).encode())]), 60
    )
    assert result.counts() == Counter({"applied": 1})
    assert dict(result.outcomes[0].clipped) == {
        "attendee_email": "dropped",
        "rescheduleUid": "dropped",
    }


async def test_an_overlong_call_id_is_still_poison(engine: Engine) -> None:
    """Without its id the event cannot be applied at all."""
    result = await asyncio.wait_for(
        Applier(engine).apply([record("retell", _call_ended(call_id="c" * 200))]), 60
    )
    assert [d.reason for d in result.dead_letters] == ["schema_violation"]
