"""``switchboard events show`` against the real broker and MariaDB (the README): the
``webhook_events`` row, the rows the event is about, the raw body read back from Kafka;
phone numbers masked unless ``--unmasked``, transcripts truncated; one line and exit 1 for
an unknown event."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from pipeline.cli import cli, register_commands
from pipeline.ops import NotFound
from pipeline.ops.lineage import lineage
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    apply_like_worker,
    call_bodies,
    call_id,
    call_start_ms,
    cli_env,
    phone,
    produce_traffic,
    rows_of,
)
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration


def _applied(settings: Settings, engine: Engine) -> None:
    seed_fixture_tenants(engine)

    async def go() -> None:
        await produce_traffic(settings, 4)
        for provider in ("retell", "calcom"):
            await apply_like_worker(settings, engine, provider)

    asyncio.run(go())


def test_lineage_of_a_call_and_a_booking(stack_settings: Settings, engine: Engine) -> None:
    _applied(stack_settings, engine)

    found = asyncio.run(lineage(stack_settings, "retell", f"call_ended:{call_id(1)}"))
    assert found.event["status"] == "applied" and found.event["company_id"] == 1
    assert found.record is not None and found.body_matches
    assert found.record.value == call_bodies(1, call_start_ms(1))[2]
    assert [c["retell_call_id"] for c in found.calls] == [call_id(1)]
    assert "SHA-256 matches" in found.body_note

    moved = asyncio.run(lineage(stack_settings, "calcom", "BOOKING_RESCHEDULED:bk_ops_0002_r"))
    assert sorted(a["calcom_uid"] for a in moved.appointments) == ["bk_ops_0002", "bk_ops_0002_r"]
    [no_show_id] = [
        r["event_id"]
        for r in rows_of(engine, "SELECT event_id FROM webhook_events WHERE event_type = "
                         "'BOOKING_NO_SHOW_UPDATED'")
    ]  # fmt: skip
    marked = asyncio.run(lineage(stack_settings, "calcom", no_show_id))
    assert [(a["calcom_uid"], a["status"]) for a in marked.appointments] == [
        ("bk_ops_0003", "no_show")
    ]

    # The record gone from Kafka (retention): rows are still found through the event id.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE webhook_events SET kafka_offset = 99999 WHERE event_id = :e"),
            {"e": f"call_analyzed:{call_id(2)}"},
        )
    gone = asyncio.run(lineage(stack_settings, "retell", f"call_analyzed:{call_id(2)}"))
    assert gone.record is None and "not on Kafka any more" in gone.body_note
    assert [c["retell_call_id"] for c in gone.calls] == [call_id(2)]

    with pytest.raises(NotFound):
        asyncio.run(lineage(stack_settings, "retell", "call_ended:no_such_call"))


def test_cli_events_show_masks_truncates_and_fails_in_one_line(
    stack_settings: Settings, engine: Engine
) -> None:
    _applied(stack_settings, engine)
    register_commands()
    runner = CliRunner()
    env = cli_env(stack_settings)

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, list(args), prog_name="switchboard", env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a crash, not a reported failure: show its traceback
        return result.exit_code, result.stdout, result.stderr

    code, out, err = run("events", "show", "retell", f"call_ended:{call_id(1)}")
    assert code == 0, err
    caller = phone(1)  # +14155551001
    assert caller not in out and "+1415*****01" in out
    assert "webhook_events (retell call_ended:call_ops_0001):" in out
    assert "calls (id " in out and "SHA-256 matches" in out
    assert '"event": "call_ended"' in out  # the body, pretty-printed
    assert "more characters)" in out  # transcripts, in the row and in the body
    assert "transcript_object" in out and "items not shown" in out
    assert "signature" not in out.lower()
    body = orjson.loads(call_bodies(1, call_start_ms(1))[2])
    assert body["call"]["transcript"] not in out

    code, out, err = run("events", "show", "retell", f"call_ended:{call_id(1)}", "--unmasked")
    assert code == 0 and caller in out

    code, out, err = run("events", "show", "calcom", "BOOKING_CREATED:bk_ops_0000")
    assert code == 0, err
    assert "appointments (id " in out and "bk_ops_0000" in out and phone(0) not in out

    code, out, err = run("events", "show", "retell", "call_ended:no_such_call")
    assert code == 1 and out == ""
    assert (
        err == "switchboard: no webhook event retell 'call_ended:no_such_call' in webhook_events\n"
    )
    code, out, err = run("events", "show", "twilio", "x")
    assert code == 2 and "Error:" in err
