"""Issue 12, defect 2: an event id longer than the ``webhook_events.event_id`` column (255)
was cut on insert but looked up in full, so every later delivery of that event missed its
row, inserted it again and hit a duplicate key. The engine now stores and looks up one
form of the id: ids over 255 characters become ``sha256:<hex of the id>``."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from sqlalchemy import Engine, select

from pipeline.apply.batch import apply_batch
from pipeline.models import webhook_events
from testbed.records import record
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration


def long_no_show() -> bytes:
    """A no-show update whose booking uid is too long to be a uid (poison), so its event id
    (trigger, uid, createdAt) is over 255 characters."""
    return orjson.dumps(
        {
            "triggerEvent": "BOOKING_NO_SHOW_UPDATED",
            "createdAt": "2026-01-08T19:20:00.000Z",
            "payload": {"bookingUid": "u" * 300, "attendees": [{"noShow": True}]},
        }
    )


def test_an_event_id_over_255_characters_is_found_again(engine: Engine) -> None:
    seed_fixture_tenants(engine)
    body = long_no_show()
    first = apply_batch(engine, [record("calcom", body, offset=1)])
    again = apply_batch(engine, [record("calcom", body, offset=2)])  # a provider retry
    assert [o.reason for o in first.outcomes] == ["schema_violation"]
    assert [o.reason for o in again.outcomes] == ["schema_violation"], "not db_rejected"
    with engine.connect() as conn:
        rows = conn.execute(select(webhook_events.c.event_id, webhook_events.c.status)).all()
    assert Counter(r.status for r in rows) == Counter(dead_lettered=1)
    assert rows[0].event_id.startswith("sha256:") and len(rows[0].event_id) <= 255
