"""``switchboard customers erase`` against MariaDB and the broker (docs/runbook.md).

A person's names, contact data and transcripts leave ``customers``, ``calls`` and
``appointments`` of every company (found by phone in any formatting, or by e-mail), the
erasure list holds a hash and not the value, and the dashboard counters are exactly what
they were (``dashboard_buckets`` unchanged, ``reconcile`` finds no drift). A replay after
the erasure does not bring the data back.
"""

from __future__ import annotations

import asyncio
import hashlib
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
    booking_bodies,
    call_bodies,
    call_id,
    call_start_ms,
    cli_env,
    phone,
    produce,
    produce_traffic,
    rows_of,
)
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration

CALLS = 4


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


def _buckets(engine: Engine) -> list[dict[str, Any]]:
    return rows_of(
        engine, "SELECT * FROM dashboard_buckets ORDER BY company_id, granularity, bucket_start"
    )


def _personal_text(engine: Engine) -> str:
    """Every personal column of the three tables, as one string to search."""
    parts = []
    for query in (
        "SELECT name, phone, email FROM customers",
        "SELECT from_number, to_number, transcript, summary, recording_url, "
        "CAST(metadata AS CHAR) AS metadata FROM calls",
        "SELECT title, cancellation_reason FROM appointments",
    ):
        for row in rows_of(engine, query):
            parts += [str(v) for v in row.values() if v is not None]
    return "\n".join(parts)


def _no_drift(settings: Settings) -> None:
    code, out, err = _run(settings, "reconcile", "--all")
    assert code == 0, out + err


def test_erase_by_phone_removes_personal_data_and_keeps_the_counters(
    stack_settings: Settings, engine: Engine
) -> None:
    _applied(stack_settings, engine)
    person = phone(1)  # the caller of call 1, who booked bk_ops_0001
    buckets = _buckets(engine)
    _no_drift(stack_settings)
    assert person in _personal_text(engine)

    formatted = f"{person[:2]} ({person[2:5]}) {person[5:8]}-{person[8:]}"
    dry = _json(stack_settings, "customers", "erase", "--phone", formatted, "--dry-run")
    assert dry["customers"] == 1 and dry["calls"] == 1 and dry["appointments"] == 1
    assert dry["companies"] == [1] and dry["dry_run"]
    assert person in _personal_text(engine)  # the dry run changed nothing
    assert rows_of(engine, "SELECT id FROM erasures") == []

    code, out, err = _run(stack_settings, "customers", "erase", "--phone", formatted)
    assert code == 0, err
    assert (
        "erased phone +1415*****01: 1 customer(s) (companies: 1), 1 call(s), 1 appointment(s)"
        in out
    )
    assert person not in out

    text_left = _personal_text(engine)
    assert person not in text_left and "patient0001@example.com" not in text_left
    [call] = rows_of(engine, "SELECT * FROM calls WHERE retell_call_id = :c", c=call_id(1))
    assert call["from_number"] is None and call["transcript"] is None
    assert call["summary"] is None and call["recording_url"] is None and call["metadata"] is None
    assert call["to_number"] is not None  # the business's number is not personal data
    assert call["duration_ms"] is not None and call["direction"] == "inbound"
    [booking] = rows_of(engine, "SELECT * FROM appointments WHERE calcom_uid = 'bk_ops_0001'")
    assert booking["title"] is None and booking["status"] == "cancelled"
    others = rows_of(
        engine, "SELECT transcript FROM calls WHERE retell_call_id <> :c", c=call_id(1)
    )
    assert all(r["transcript"] for r in others)  # nobody else's data went

    assert _buckets(engine) == buckets
    _no_drift(stack_settings)
    # Listed: the number, and the address the person's customer row held (their bookings
    # by e-mail are covered too); hashes, never the values.
    listed = rows_of(engine, "SELECT kind, value_sha256 FROM erasures ORDER BY kind")
    assert listed == [
        {
            "kind": "email",
            "value_sha256": hashlib.sha256(b"email:patient0001@example.com").hexdigest(),
        },
        {"kind": "phone", "value_sha256": hashlib.sha256(f"phone:{person}".encode()).hexdigest()},
    ]

    again = _json(stack_settings, "customers", "erase", "--phone", person)
    assert not again["newly_listed"] and again["customers"] == 0
    assert len(rows_of(engine, "SELECT id FROM erasures")) == 2

    code, _, err = _run(stack_settings, "customers", "erase", "--phone", "nobody")
    assert code == 2 and "not a phone number" in err
    code, _, err = _run(stack_settings, "customers", "erase")
    assert code == 2 and "exactly one of --phone and --email" in err


def test_erase_by_email_reaches_the_calls_of_that_customer(
    stack_settings: Settings, engine: Engine
) -> None:
    _applied(stack_settings, engine)
    buckets = _buckets(engine)
    found = _json(stack_settings, "customers", "erase", "--email", " Patient0002@EXAMPLE.com ")
    assert found["customers"] == 1 and found["appointments"] >= 1
    assert found["shown"] == "p***@example.com"
    text_left = _personal_text(engine)
    assert "patient0002@example.com" not in text_left and phone(2) not in text_left
    assert _buckets(engine) == buckets
    _no_drift(stack_settings)


def _day_total(engine: Engine, counter: str) -> int:
    [row] = rows_of(
        engine,
        f"SELECT COALESCE(SUM({counter}), 0) AS n FROM dashboard_buckets WHERE granularity = 'day'",
    )
    return int(row["n"])


def test_after_the_erasure_replays_and_new_webhooks_store_no_personal_data(
    stack_settings: Settings, engine: Engine
) -> None:
    _applied(stack_settings, engine)
    person, email = phone(1), "patient0001@example.com"
    _json(stack_settings, "customers", "erase", "--phone", person)
    _json(stack_settings, "customers", "erase", "--email", email)
    buckets = _buckets(engine)
    for topic in ("webhooks.retell", "webhooks.calcom"):
        asyncio.run(replay(stack_settings, topic, Stretch(from_offset=0)))
    assert _buckets(engine) == buckets

    # The same person calls again and books again: counted, but nothing personal stored.
    calls_before = _day_total(engine, "calls_total")
    booked_before = _day_total(engine, "appointments_booked")
    start = call_start_ms(9)
    new_call = [orjson.loads(b) for b in call_bodies(9, start)]
    for body in new_call:
        body["call"]["from_number"] = person
    [new_booking] = [orjson.loads(b) for b in booking_bodies(8, start + 300_000)[:1]]
    new_booking["payload"]["responses"]["attendeePhoneNumber"]["value"] = person
    new_booking["payload"]["attendees"][0]["email"] = email.upper()
    new_booking["payload"]["responses"]["email"]["value"] = email.upper()

    async def deliver() -> None:
        await produce(
            stack_settings,
            "retell",
            [(orjson.dumps(b), start + n * 30_000) for n, b in enumerate(new_call)],
        )
        await produce(stack_settings, "calcom", [(orjson.dumps(new_booking), start + 300_000)])
        for provider in ("retell", "calcom"):
            await apply_like_worker(stack_settings, engine, provider)

    asyncio.run(deliver())
    text_left = _personal_text(engine)
    assert person not in text_left and email not in text_left.lower()
    [call] = rows_of(engine, "SELECT * FROM calls WHERE retell_call_id = :c", c=call_id(9))
    assert call["transcript"] is None and call["from_number"] is None
    assert call["duration_ms"] is not None
    assert _day_total(engine, "calls_total") == calls_before + 1
    assert _day_total(engine, "appointments_booked") == booked_before + 1
    _no_drift(stack_settings)
