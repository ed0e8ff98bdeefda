"""Issue 12, defect 1, against the real MariaDB: keys that Python and MySQL compared
differently. Phones and e-mail addresses are normalised before they are compared (E.164,
NFKC + casefold), and identifier columns have a binary, no-pad collation, so two values
Python tells apart are never one key to MySQL (a stalled or dead-lettered record before).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from pipeline import database
from pipeline.apply.applier import Applier
from pipeline.models import appointments, customers, webhook_events
from pipeline.records import WebhookRecord
from pipeline.settings import Settings
from testbed.records import record
from tests.support.fixtures import fixture_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fixture_tenants")]


def booking(uid: str, *, phone: str | None = None, email: str | None = None) -> WebhookRecord:
    body: dict[str, Any] = json.loads(fixture_bytes("calcom", "BOOKING_CREATED.json"))
    payload = body["payload"]
    payload["uid"] = uid
    payload.pop("metadata", None)
    if phone is not None:
        payload["responses"]["attendeePhoneNumber"]["value"] = phone
    if email is not None:
        payload["attendees"][0]["email"] = email
    return record("calcom", json.dumps(body).encode())


def table(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query))


@pytest.mark.parametrize("batches", [1, 2], ids=["one-batch", "two-batches"])
async def test_phones_differing_by_a_trailing_space_are_one_customer(
    engine: Engine, batches: int
) -> None:
    """The issue's repro: ``+14155550142`` and ``+14155550142 `` in one company."""
    first = booking("uidSpaceA", phone="+14155550142", email="Dana@Example.com")
    second = booking("uidSpaceB", phone="+14155550142 ", email="dana@example.COM")
    applier = Applier(engine)
    if batches == 1:
        result = await asyncio.wait_for(applier.apply([first, second]), 60)
    else:
        result = await asyncio.wait_for(applier.apply([first]), 60)
        result.merge(await asyncio.wait_for(applier.apply([second]), 60))
    assert result.dead_letters == []
    assert result.counts() == Counter({"applied": 2})
    people = table(engine, select(customers.c.phone, customers.c.email))
    assert [(p.phone, p.email) for p in people] == [("+14155550142", "dana@example.com")]
    owners = table(engine, select(appointments.c.customer_id))
    assert len(owners) == 2 and len({o.customer_id for o in owners}) == 1


async def test_formatted_phone_numbers_are_stored_as_e164(engine: Engine) -> None:
    result = await asyncio.wait_for(
        Applier(engine).apply([booking("uidFormatted", phone="+1 (415) 555-0142")]), 60
    )
    assert result.counts() == Counter({"applied": 1})
    assert [p.phone for p in table(engine, select(customers.c.phone))] == ["+14155550142"]


async def test_uids_differing_only_by_case_are_two_bookings(engine: Engine) -> None:
    """Cal.com uids are case-sensitive; a case-insensitive collation made them one key."""
    result = await asyncio.wait_for(
        Applier(engine).apply(
            [booking("r8YcW3nQe5TjB1uLx7DkPz"), booking("r8ycw3nqe5tjb1ulx7dkpz")]
        ),
        60,
    )
    assert result.dead_letters == []
    assert result.counts() == Counter({"applied": 2})
    uids = sorted(r.calcom_uid for r in table(engine, select(appointments.c.calcom_uid)))
    assert uids == ["r8YcW3nQe5TjB1uLx7DkPz", "r8ycw3nqe5tjb1ulx7dkpz"]
    assert len(table(engine, select(webhook_events.c.event_id))) == 2


IDENTIFIERS = [
    ("webhook_events", "event_id"),
    ("calls", "retell_call_id"),
    ("calls", "from_number"),
    ("calls", "to_number"),
    ("appointments", "calcom_uid"),
    ("appointments", "retell_call_id"),
    ("appointments", "rescheduled_from_uid"),
    ("customers", "phone"),
    ("customers", "email"),
    ("branches", "phone_number"),
]


def test_identifier_columns_compare_byte_for_byte(db_settings: Settings, engine: Engine) -> None:
    """Every identifier column: trailing spaces, case and accents all count."""
    schema = database_name(db_settings)
    with engine.connect() as conn:
        found = {
            (r.TABLE_NAME, r.COLUMN_NAME): r.COLLATION_NAME
            for r in conn.execute(
                text(
                    "SELECT TABLE_NAME, COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = :s"
                ),
                {"s": schema},
            )
        }
        for key in IDENTIFIERS:
            assert found[key] in database.BINARY_COLLATIONS, (key, found[key])
        same = conn.execute(text("SELECT event_id FROM webhook_events WHERE event_id = 'x'")).all()
        assert same == []
        conn.execute(
            text(
                "INSERT INTO webhook_events (provider, event_id, event_type, kafka_topic,"
                " kafka_partition, kafka_offset, payload_sha256, status) VALUES"
                " ('calcom', 'a', 't', 'x', 0, 1, 'h', 'applied'),"
                " ('calcom', 'a ', 't', 'x', 0, 2, 'h', 'applied'),"
                " ('calcom', 'A', 't', 'x', 0, 3, 'h', 'applied'),"
                " ('calcom', 'á', 't', 'x', 0, 4, 'h', 'applied')"
            )
        )
        assert (
            conn.execute(text("SELECT COUNT(*) FROM webhook_events WHERE event_id = 'a'")).scalar()
            == 1
        )


def database_name(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(settings.database_url.reveal()).database
    assert name
    return name
