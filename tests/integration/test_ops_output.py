"""What the operations commands print, against the real broker and MariaDB.

* Text a stranger wrote (a booker's name, a poison body) reaches ``events show`` and ``dlq
  show`` with its terminal escape sequences shown as ``\\u001b``, never sent raw to the
  terminal; ``--json`` keeps the exact value for scripts.
* ``--json`` on ``replay``, ``dlq list|show|redrive`` and ``events show`` is one JSON
  document on stdout with the same numbers as the text; progress stays on stderr.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from pipeline.cli import cli, register_commands
from pipeline.ops.present import UNSAFE
from pipeline.settings import Settings
from tests.integration.ops_helpers import (
    apply_like_worker,
    booking_bodies,
    call_start_ms,
    cli_env,
    produce,
    produce_traffic,
)
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

HOSTILE_NAME = "Dana \x1b]0;owned\x07\x1b[2J\u202eReyes\x9b"


def _run(settings: Settings, *args: str) -> tuple[int, str, str]:
    register_commands()
    result = CliRunner().invoke(cli, list(args), prog_name="switchboard", env=cli_env(settings))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _json(settings: Settings, *args: str) -> Any:
    code, out, err = _run(settings, *args, "--json")
    assert code == 0, err
    assert not UNSAFE.search(out)
    return orjson.loads(out)


def _hostile_booking() -> bytes:
    [created] = booking_bodies(40, call_start_ms(40))[:1]
    body = orjson.loads(created)
    body["payload"]["uid"] = "bk_hostile"
    body["payload"]["attendees"][0]["name"] = HOSTILE_NAME
    body["payload"]["title"] = f"Cleaning with {HOSTILE_NAME}"
    return orjson.dumps(body)


def _poison() -> bytes:
    body = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(call_id="call_hostile", start_timestamp="\x1b[31mred\x1b[0m")
    return orjson.dumps(body)


def test_stranger_text_is_neutralised_and_json_is_exact(
    stack_settings: Settings, engine: Engine
) -> None:
    seed_fixture_tenants(engine)

    async def go() -> None:
        await produce_traffic(stack_settings, 3)
        await produce(stack_settings, "calcom", [(_hostile_booking(), call_start_ms(40))])
        await produce(stack_settings, "retell", [(_poison(), call_start_ms(41))])
        for provider in ("retell", "calcom"):
            await apply_like_worker(stack_settings, engine, provider)

    asyncio.run(go())

    code, out, err = _run(stack_settings, "events", "show", "calcom", "BOOKING_CREATED:bk_hostile")
    assert code == 0, err
    assert not UNSAFE.search(out)
    assert "\\u001b]0;owned\\u0007" in out and "\\u202eReyes" in out
    shown = _json(stack_settings, "events", "show", "calcom", "BOOKING_CREATED:bk_hostile")
    assert shown["body"]["payload"]["attendees"][0]["name"] == HOSTILE_NAME
    assert shown["event"]["status"] == "applied"
    assert [a["calcom_uid"] for a in shown["appointments"]] == ["bk_hostile"]

    listed = _json(stack_settings, "dlq", "list")
    [letter] = listed["dead_letters"]
    assert listed["count"] == 1 and letter["event_id"] == "call_ended:call_hostile"
    assert letter["reason"] == "schema_violation" and letter["status"] == "dead_lettered"
    code, out, err = _run(stack_settings, "dlq", "show", letter["position"])
    assert code == 0, err
    assert not UNSAFE.search(out) and "\\u001b[31mred" in out
    detail = _json(stack_settings, "dlq", "show", letter["position"])
    assert detail["body"]["call"]["start_timestamp"] == "\x1b[31mred\x1b[0m"
    assert detail["reason"] == "schema_violation"


def test_json_results_match_the_text(stack_settings: Settings, engine: Engine) -> None:
    seed_fixture_tenants(engine)
    produced = asyncio.run(produce_traffic(stack_settings, 3))
    total = len(produced["retell"])

    code, out, err = _run(stack_settings, "replay", "--topic", "retell", "--from-offset", "0", "--json")  # fmt: skip
    assert code == 0, err
    first = orjson.loads(out)
    assert first["read"] == total and first["counts"]["applied"] == total
    assert first["topic"].endswith("webhooks.retell") and first["partitions"] is None
    calls = [c for c in first["changes"] if c["table"] == "calls"]
    assert calls == [{"table": "calls", "company_id": 1, "insert": 3}], first["changes"]
    assert first["changes_exact"] and first["published"]["snapshots"] >= 1
    again = _json(stack_settings, "replay", "--topic", "retell", "--from-offset", "0", "--dry-run")
    assert again["counts"]["already_applied"] == total and again["dry_run"]

    code, text, _ = _run(stack_settings, "replay", "--topic", "retell", "--from-offset", "0")
    assert f"read {total}, applied 0, already applied {total}" in text

    redriven = _json(stack_settings, "dlq", "redrive")
    assert redriven["read"] == 0 and redriven["redriven"] == []
    assert _json(stack_settings, "dlq", "list", "--pending") == {"dead_letters": [], "count": 0}


def test_reconcile_json_and_metrics_report_drift_for_scripts(
    stack_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    seed_fixture_tenants(engine)

    async def go() -> None:
        await produce_traffic(stack_settings, 3)
        for provider in ("retell", "calcom"):
            await apply_like_worker(stack_settings, engine, provider)

    asyncio.run(go())
    clean = _json(stack_settings, "reconcile", "--all")
    assert clean["ok"] and not clean["drift_found"] and clean["fixed"] is False
    assert [c["company_id"] for c in clean["companies"]] == [1, 2]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE dashboard_buckets SET calls_total = calls_total + 5 "
                "WHERE company_id = 1 AND granularity = 'day' ORDER BY bucket_start LIMIT 1"
            )
        )
    prom = tmp_path / "reconcile.prom"
    code, out, _ = _run(
        stack_settings, "reconcile", "--all", "--json", "--metrics-textfile", str(prom)
    )
    assert code == 1
    gauges = prom.read_text()
    assert 'switchboard_reconcile_drifts{source="mysql"} 1.0' in gauges
    assert 'switchboard_reconcile_drifts{source="api"} 0.0' in gauges
    assert "switchboard_reconcile_drifting_companies 1.0" in gauges
    assert "switchboard_reconcile_companies_checked 2.0" in gauges
    assert "switchboard_reconcile_ok 0.0" in gauges
    drifted = orjson.loads(out)
    assert not drifted["ok"] and drifted["drift_found"]
    [company] = [c for c in drifted["companies"] if c["mysql"]]
    [drift] = company["mysql"]
    assert drift["counter"] == "calls_total" and drift["found"] == drift["expected"] + 5
    assert drift["key"]["granularity"] == "day" and drift["source"] == "mysql"


def test_reconcile_tells_its_progress_per_company(stack_settings: Settings, engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    from pipeline.dashboard import reconcile
    from pipeline.dashboard.aggregates import DAY, HOUR
    from pipeline.dashboard.drift import Scope

    seed_fixture_tenants(engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    told: list[tuple[str, int, int, int]] = []
    options = reconcile.Options(
        company_ids=None,
        scope=Scope((HOUR, DAY), None, now + timedelta(days=1), now),
        fix=True,
        on_company=lambda *call: told.append(call),
    )
    report = reconcile.run(stack_settings, engine, options)
    assert report.ok
    assert told == [("check", 1, 2, 1), ("check", 2, 2, 2), ("fix", 1, 2, 1), ("fix", 2, 2, 2)]
