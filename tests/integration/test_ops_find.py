"""``events find``, ``events list`` and ``events reapply`` against the real broker and MariaDB.

* find by a Retell call id, a Cal.com booking uid, the correlation id the ingress gave the
  provider, a phone number (masked in the output) and a company with a time range; each
  finds exactly the events of its subject, as text and as ``--json``;
* unroutable events (a call to a number no branch has): listed with their reason;
  ``tenants import`` of the missing branch says how many now have a home and how to apply
  them; the dry run writes nothing; the re-apply applies them once, rows and counters;
  a second re-apply finds nothing, and a replay of the topic changes nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from pipeline.cli import cli, register_commands
from pipeline.kafka_reader import Stretch
from pipeline.ops.replay import replay
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    apply_like_worker,
    call_bodies,
    call_id,
    call_start_ms,
    cli_env,
    fingerprint,
    phone,
    produce,
    produce_traffic,
    rows_of,
)
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

CALLS = 4
LOST_NUMBER = "+14155550777"  # a branch nobody has imported yet
LOST_AGENT = "agent_not_imported"


def _run(settings: Settings, *args: str) -> tuple[int, str, str]:
    register_commands()
    result = CliRunner().invoke(cli, list(args), prog_name="switchboard", env=cli_env(settings))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _json(settings: Settings, *args: str) -> Any:
    code, out, err = _run(settings, *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


def _applied(settings: Settings, engine: Engine) -> None:
    seed_fixture_tenants(engine)

    async def go() -> None:
        await produce_traffic(settings, CALLS)
        for provider in ("retell", "calcom"):
            await apply_like_worker(settings, engine, provider)

    asyncio.run(go())


def _ids(found: Any) -> list[str]:
    return sorted(e["event_id"] for e in found["events"])


def test_find_by_call_booking_correlation_phone_and_company(
    stack_settings: Settings, engine: Engine
) -> None:
    _applied(stack_settings, engine)
    cid = call_id(1)

    by_call = _json(stack_settings, "events", "find", "--call-id", cid)
    assert _ids(by_call) == sorted(
        f"{e}:{cid}" for e in ("call_started", "transcript_updated", "call_ended", "call_analyzed")
    )
    assert by_call["total"] == 4 and {e["status"] for e in by_call["events"]} == {"applied"}

    by_booking = _json(stack_settings, "events", "find", "--booking-uid", "bk_ops_0003")
    assert [e["event_type"] for e in by_booking["events"]] == [
        "BOOKING_CREATED",
        "BOOKING_NO_SHOW_UPDATED",  # its id carries a timestamp: found by prefix
    ]

    [row] = rows_of(
        engine,
        "SELECT correlation_id FROM webhook_events WHERE event_id = :e",
        e=f"call_ended:{cid}",
    )
    by_correlation = _json(
        stack_settings, "events", "find", "--correlation-id", row["correlation_id"]
    )
    assert _ids(by_correlation) == [f"call_ended:{cid}"]

    # A phone number: the calls and the bookings of that person, masked unless asked.
    caller = phone(1)
    by_phone = _json(stack_settings, "events", "find", "--phone", caller.replace("555", " 555-"))
    assert by_phone["call_ids"] == [cid] and by_phone["booking_uids"] == ["bk_ops_0001"]
    assert {e["event_id"].split(":", 1)[1] for e in by_phone["events"]} == {cid, "bk_ops_0001"}
    code, out, err = _run(stack_settings, "events", "find", "--phone", caller)
    assert code == 0, err
    assert caller not in out and "BOOKING_CANCELLED:bk_ops_0001" in out

    everything = _json(stack_settings, "events", "find", "--company", "1")
    total = everything["total"]
    assert total == len(rows_of(engine, "SELECT id FROM webhook_events WHERE company_id = 1"))
    recent = _json(
        stack_settings, "events", "find", "--company", "1", "--limit", "3",
    )  # fmt: skip
    assert recent["total"] == total and len(recent["events"]) == 3
    newest = max(e["created_at"] for e in everything["events"])
    later = _json(stack_settings, "events", "find", "--company", "1", "--since", newest)
    assert 1 <= later["total"] < total

    code, out, err = _run(stack_settings, "events", "find", "--call-id", "x", "--company", "1")
    assert code == 2 and "exactly one of" in err
    code, out, err = _run(stack_settings, "events", "find", "--call-id", "call_unknown")
    assert code == 0 and out.strip() == "no webhook events match"


def _lost_call(i: int) -> list[tuple[bytes, int]]:
    """A call to a number no branch has: call_started and call_ended, both unroutable."""
    start = call_start_ms(10 + i)
    bodies = []
    for body in call_bodies(10 + i, start)[::2]:
        data = orjson.loads(body)
        data["call"].update(to_number=LOST_NUMBER, agent_id=LOST_AGENT, metadata={})
        bodies.append((orjson.dumps(data), start + len(bodies) * 60_000))
    return bodies


def _day_calls(engine: Engine) -> int:
    [row] = rows_of(
        engine,
        "SELECT COALESCE(SUM(calls_total), 0) AS n FROM dashboard_buckets WHERE granularity = 'day'",
    )
    return int(row["n"])


def test_unroutable_events_listed_then_reapplied_once_after_the_import(
    stack_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    _applied(stack_settings, engine)
    asyncio.run(produce(stack_settings, "retell", _lost_call(0) + _lost_call(1)))
    report = asyncio.run(apply_like_worker(stack_settings, engine, "retell"))
    assert report.counts["unroutable"] == 4
    calls_before = _day_calls(engine)

    listed = _json(stack_settings, "events", "list", "--status", "unroutable")
    assert listed["total"] == 4 and listed["by_reason"] == {"no_branch_for_number": 4}
    code, out, _ = _run(stack_settings, "events", "list", "--reason", "no_branch_for_number")
    assert "4 event(s)" in out and "events reapply" in out
    assert _json(stack_settings, "events", "list", "--reason", "branch_inactive")["total"] == 0

    nothing = _json(stack_settings, "events", "reapply", "--dry-run")
    assert nothing["counts"]["unroutable"] == 4 and nothing["counts"]["applied"] == 0

    tenants = tmp_path / "tenants.json"
    tenants.write_bytes(
        orjson.dumps(
            {
                "companies": [
                    {
                        "name": "Harbor Clinic",
                        "timezone": "America/Los_Angeles",
                        "branches": [
                            {"name": "Harbor North", "phone_number": LOST_NUMBER},
                        ],
                    }
                ]
            }
        )
    )
    code, out, err = _run(stack_settings, "tenants", "import", str(tenants))
    assert code == 0, err
    assert "4 unroutable event(s) on record; checked: 4 now have a home, 0 still have none" in out
    assert "switchboard events reapply" in out
    again = _json(stack_settings, "tenants", "import", str(tenants))  # for scripts
    assert (again["companies_created"], again["branches_unchanged"]) == (0, 1), again
    assert again["unroutable"] == {
        "unroutable": 4, "checked": 4, "applicable": 4, "still": 0, "gone": 0, "failed": None
    }  # fmt: skip

    before = fingerprint(engine)
    dry = _json(stack_settings, "events", "reapply", "--dry-run")
    assert dry["counts"]["applied"] == 4 and dry["dry_run"]
    assert fingerprint(engine) == before

    done = _json(stack_settings, "events", "reapply")
    assert done["counts"] == {
        "applied": 4,
        "already_applied": 0,
        "unroutable": 0,
        "dead_lettered": 0,
    }
    assert done["published"]["snapshots"] >= 1
    [company] = rows_of(engine, "SELECT id FROM companies WHERE name = 'Harbor Clinic'")
    lost = rows_of(
        engine,
        "SELECT status, company_id FROM webhook_events WHERE event_id LIKE :p",
        p=f"%{call_id(10)}",
    )
    assert {(r["status"], r["company_id"]) for r in lost} == {("applied", company["id"])}
    assert _day_calls(engine) == calls_before + 2  # each call counted once

    again = _json(stack_settings, "events", "reapply")
    assert again["read"] == 0
    settled = fingerprint(engine)
    replayed = asyncio.run(replay(stack_settings, "webhooks.retell", Stretch(from_offset=0)))
    assert replayed.counts["applied"] == 0 and replayed.counts["unroutable"] == 0
    assert fingerprint(engine) == settled
    assert _day_calls(engine) == calls_before + 2
    code, out, _ = _run(stack_settings, "events", "list")
    assert out.startswith("no webhook events match")


def test_import_without_unroutable_events_says_nothing_more(
    stack_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    seed_fixture_tenants(engine)
    tenants = tmp_path / "tenants.json"
    tenants.write_bytes(orjson.dumps({"companies": []}))
    code, out, err = _run(stack_settings, "tenants", "import", str(tenants))
    assert code == 0, err
    assert "unroutable" not in out
    imported = _json(stack_settings, "tenants", "import", str(tenants))
    assert imported["companies_created"] == 0 and imported["unroutable"]["unroutable"] == 0
