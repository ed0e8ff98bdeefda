"""Tenants import/seed and verify-run against a real, freshly migrated MariaDB database.

No worker runs here: for verify-run the rows are written straight from an expected-state
file, then damaged on purpose, and every damage must be reported.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, func, select, update

from pipeline.cli import cli, register_commands
from pipeline.models import (
    COUNTERS,
    appointments,
    branches,
    calls,
    companies,
    customers,
    dashboard_buckets,
    webhook_events,
)
from pipeline.settings import Settings
from testbed.simulator import expected, tenants
from testbed.simulator.run import write_json
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.tenants import TenantFileError
from testbed.simulator.verify import parse_time, verify

pytestmark = pytest.mark.integration

register_commands()


def run_cli(settings: Settings, *args: str):
    env = {
        "SWITCHBOARD_DATABASE_URL": settings.database_url.reveal(),
        "SWITCHBOARD_ANALYST_TOKENS": "",
        "RETELL_API_KEY": "",
        "CALCOM_WEBHOOK_SECRET": "",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(companies)),
            conn.scalar(select(func.count()).select_from(branches)),
        )


# ---- tenants -----------------------------------------------------------------------------


def test_import_is_an_idempotent_upsert_by_phone(engine: Engine) -> None:
    items = tenants.generate(5, seed=21)
    with engine.begin() as conn:
        first = tenants.import_tenants(conn, items)
    assert (first.companies_created, first.branches_created) == (
        5,
        sum(len(c.branches) for c in items),
    )
    with engine.begin() as conn:
        again = tenants.import_tenants(conn, items)
    assert (
        again.companies_created,
        again.companies_updated,
        again.branches_created,
        again.branches_updated,
    ) == (0, 0, 0, 0)
    assert again.company_ids == first.company_ids
    before = counts(engine)

    changed = list(items)
    moved = dataclasses.replace(
        changed[0],
        timezone="Asia/Kolkata",
        branches=(
            dataclasses.replace(changed[0].branches[0], name="Renamed", is_active=False),
            *changed[0].branches[1:],
        ),
    )
    changed[0] = moved
    with engine.begin() as conn:
        report = tenants.import_tenants(conn, changed)
    assert (
        report.companies_updated,
        report.branches_updated,
        report.companies_created,
        report.branches_created,
    ) == (1, 1, 0, 0)
    assert counts(engine) == before
    with engine.connect() as conn:
        loaded = {c.id: c for c in tenants.load_tenants(conn)}
    company = loaded[first.company_ids[0]]
    assert company.timezone == "Asia/Kolkata"
    assert (company.branches[0].name, company.branches[0].is_active) == ("Renamed", False)


def test_conflicts_are_refused_and_roll_back(engine: Engine) -> None:
    items = tenants.generate(2, seed=5)
    with engine.begin() as conn:
        tenants.import_tenants(conn, items)
    before = counts(engine)
    # One file entry claiming branches of two different companies.
    merged = tenants.Company("Merged", branches=(items[0].branches[0], items[1].branches[0]))
    with pytest.raises(TenantFileError, match="several companies"), engine.begin() as conn:
        tenants.import_tenants(
            conn,
            [tenants.Company("New Co", branches=(tenants.Branch("n", "+14155550999"),)), merged],
        )
    assert counts(engine) == before
    # A new branch taking an event type id another branch has.
    taken = items[0].branches[0].calcom_event_type_id
    thief = tenants.Company(
        "Thief", branches=(tenants.Branch("t", "+14155550998", calcom_event_type_id=taken),)
    )
    with pytest.raises(TenantFileError, match="already belongs"), engine.begin() as conn:
        tenants.import_tenants(conn, [thief])
    assert counts(engine) == before


def test_cli_seed_and_import_are_idempotent(
    db_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "tenants.json"
    result = run_cli(
        db_settings, "tenants", "seed", "--companies", "4", "--seed", "8", "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "companies: 4 created" in result.output
    created = counts(engine)
    again = run_cli(db_settings, "tenants", "seed", "--companies", "4", "--seed", "8")
    assert "companies: 0 created, 0 updated, 4 unchanged" in again.output
    imported = run_cli(db_settings, "tenants", "import", str(out))
    assert imported.exit_code == 0 and "branches: 0 created, 0 updated" in imported.output
    assert counts(engine) == created
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"companies": [{"name": "x", "branches": [{"name": "y", "phone_number": "555"}]}]}'
    )
    refused = run_cli(db_settings, "tenants", "import", str(bad))
    assert refused.exit_code == 1 and "not E.164" in refused.output


# ---- verify-run --------------------------------------------------------------------------


@pytest.fixture
def run_file(engine: Engine, tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Tenants in MySQL, a scenario over them, and its expected state (everything accepted)."""
    with engine.begin() as conn:
        tenants.import_tenants(conn, tenants.generate(3, seed=12))
        loaded = tenants.load_tenants(conn)
    scenario = generate(
        loaded, ScenarioConfig(seed=4, calls=40, now_ms=int(time.time() * 1000), bad_share=0.1)
    )
    accepted = {k for k, s in scenario.steps.items() if s.expect_status < 300}
    result = expected.compute(scenario.companies, scenario.calls, scenario.bookings, accepted)
    doc = expected.document(
        result,
        run={"seed": 4},
        windows=expected.windows_for(result.buckets),
        id_prefixes={"calls": f"call_{scenario.run_tag}", "appointments": scenario.run_tag},
    )
    path = tmp_path / "expected.json"
    write_json(path, doc)
    yield path, doc


def _dt(value: str | None):
    return parse_time(value) if value else None


def materialize(engine: Engine, doc: dict[str, Any]) -> None:
    """Write the rows a perfect pipeline would have written for ``doc``."""
    with engine.begin() as conn:
        call_ids: dict[str, int] = {}
        customer_ids: dict[tuple[int, str], int] = {}
        for call_id, row in doc["calls"].items():
            key = (row["company_id"], row["customer_phone"])
            if key not in customer_ids:
                customer_ids[key] = conn.execute(
                    customers.insert().values(company_id=key[0], phone=key[1], name="x")
                ).inserted_primary_key[0]
            call_ids[call_id] = conn.execute(
                calls.insert().values(
                    retell_call_id=call_id,
                    company_id=row["company_id"],
                    branch_id=row["branch_id"],
                    customer_id=customer_ids[key],
                    direction=row["direction"],
                    status=row["status"],
                    started_at=_dt(row["started_at"]),
                    ended_at=_dt(row["ended_at"]),
                    duration_ms=row["duration_ms"],
                    disconnection_reason=row["disconnection_reason"],
                    in_voicemail=row["in_voicemail"],
                    successful=row["successful"],
                    sentiment=row["sentiment"],
                    cost_cents=Decimal(row["cost_cents"]) if row["cost_cents"] else None,
                    transfer_destination=row["transfer_destination"],
                    transcript="x" * row["transcript_chars"] if row["transcript_chars"] else None,
                )
            ).inserted_primary_key[0]
        for uid, row in doc["appointments"].items():
            conn.execute(
                appointments.insert().values(
                    calcom_uid=uid,
                    company_id=row["company_id"],
                    status=row["status"],
                    starts_at=_dt(row.get("starts_at")),
                    booked_at=_dt(row["booked_at"]),
                    cancelled_at=_dt(row["cancelled_at"]),
                    rescheduled_at=_dt(row["rescheduled_at"]),
                    no_show_at=_dt(row["no_show_at"]),
                    rescheduled_from_uid=row["rescheduled_from_uid"],
                    retell_call_id=row["retell_call_id"],
                    call_id=call_ids.get(row["call"] or ""),
                )
            )
        for offset, event in enumerate(doc["events"]):
            conn.execute(
                webhook_events.insert().values(
                    provider=event["provider"],
                    event_id=event["event_id"],
                    event_type=event["event_id"].split(":")[0],
                    kafka_topic=f"webhooks.{event['provider']}",
                    kafka_partition=0,
                    kafka_offset=offset,
                    payload_sha256="0" * 64,
                    status=event["status"],
                )
            )
        for bucket in doc["buckets"]:
            conn.execute(
                dashboard_buckets.insert().values(
                    company_id=bucket["company_id"],
                    granularity=bucket["granularity"],
                    bucket_start=parse_time(bucket["bucket_start"]),
                    version=1,
                    **{n: bucket[n] for n in COUNTERS},
                )
            )


def test_verify_reports_nothing_when_the_database_matches(
    db_settings: Settings, engine: Engine, run_file
) -> None:
    path, doc = run_file
    assert doc["calls"] and doc["appointments"] and doc["unroutable"] and doc["buckets"]
    materialize(engine, doc)
    assert verify(db_settings, path) == []
    result = run_cli(db_settings, "verify-run", str(path), "--timeout", "0")
    assert result.exit_code == 0 and "no differences" in result.output


def test_verify_reports_every_missing_or_wrong_row(
    db_settings: Settings, engine: Engine, run_file
) -> None:
    path, doc = run_file
    assert verify(db_settings, path)  # nothing written yet: everything is missing
    materialize(engine, doc)
    gone = sorted(doc["calls"])[0]
    wrong_booking = sorted(doc["appointments"])[0]
    wrong_event = doc["events"][0]
    bucket = next(b for b in doc["buckets"] if b["granularity"] == "hour" and b["calls_total"])
    extra = doc["id_prefixes"]["calls"] + "f" * 20
    with engine.begin() as conn:
        conn.execute(
            delete(appointments).where(
                appointments.c.call_id
                == select(calls.c.id).where(calls.c.retell_call_id == gone).scalar_subquery()
            )
        )
        conn.execute(delete(calls).where(calls.c.retell_call_id == gone))
        conn.execute(
            update(appointments)
            .where(appointments.c.calcom_uid == wrong_booking)
            .values(status="bogus")
        )
        conn.execute(
            update(webhook_events)
            .where(webhook_events.c.event_id == wrong_event["event_id"])
            .values(status="dead_lettered")
        )
        conn.execute(
            update(dashboard_buckets)
            .where(
                dashboard_buckets.c.company_id == bucket["company_id"],
                dashboard_buckets.c.granularity == "hour",
                dashboard_buckets.c.bucket_start == parse_time(bucket["bucket_start"]),
            )
            .values(calls_total=dashboard_buckets.c.calls_total + 1)
        )
        conn.execute(
            calls.insert().values(
                retell_call_id=extra, company_id=bucket["company_id"], status="ended"
            )
        )
    found = {(d.entity, d.field) for d in verify(db_settings, path)}
    assert (f"call {gone}", "row") in found
    assert (f"appointment {wrong_booking}", "status") in found
    assert (f"event {wrong_event['provider']}:{wrong_event['event_id']}", "status") in found
    assert (f"bucket {bucket['company_id']}/hour/{bucket['bucket_start']}", "calls_total") in found
    assert (f"call {extra}", "row") in found
    result = run_cli(db_settings, "verify-run", str(path), "--timeout", "0")
    assert result.exit_code == 1
    assert f"call {gone}: row: expected 'present', got 'missing'" in result.output


def test_verify_waits_for_the_pipeline_to_catch_up(
    db_settings: Settings, engine: Engine, run_file
) -> None:
    path, doc = run_file
    writer = threading.Timer(1.0, materialize, args=(engine, doc))
    writer.start()
    try:
        began = time.monotonic()
        assert verify(db_settings, path, timeout=30, poll_s=0.3) == []
        assert 0.9 < time.monotonic() - began < 20
    finally:
        writer.join()


def test_an_unreadable_expected_file_is_one_clear_error(
    db_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(orjson.dumps({"format": "something-else"}))
    result = run_cli(db_settings, "verify-run", str(path))
    assert result.exit_code == 1 and "is not a switchboard-expected/1 file" in result.output


def test_a_lost_call_inbound_record_is_a_note_unless_strict(
    db_settings: Settings, engine: Engine, run_file
) -> None:
    path, doc = run_file
    materialize(engine, doc)
    inbound = next(e for e in doc["events"] if e.get("best_effort"))
    assert ":" not in inbound["event_id"]  # a call_inbound's event id is its call id
    with engine.begin() as conn:
        conn.execute(delete(webhook_events).where(webhook_events.c.event_id == inbound["event_id"]))
    notes: list[str] = []
    assert verify(db_settings, path, notes=notes) == []
    assert notes == [f"event retell:{inbound['event_id']}"]
    strict = verify(db_settings, path, strict_inbound=True)
    assert [(d.field, d.expected, d.actual) for d in strict] == [("status", "applied", None)]
