"""``switchboard events show``: what happened to one webhook.

Its ``webhook_events`` row (status, error, company, Kafka coordinates, body checksum), the
rows it is about (Retell: the ``calls`` row of its call id; Cal.com: the ``appointments``
rows of its uid and, for a reschedule, of the original uid), and its raw body read back from
Kafka at the stored coordinates, checked against the stored SHA-256.

The subjects come from the body when Kafka still has it, else from the event id (docs/architecture.md:
``{event}:{call_id}``, ``{triggerEvent}:{uid}``, ``BOOKING_NO_SHOW_UPDATED:{bookingUid}:…``),
so the rows are found even after the topic's retention dropped the record.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, select

from pipeline import database
from pipeline.kafka_reader import Coordinates, fetch
from pipeline.models import appointments, calls, webhook_events
from pipeline.ops import BadArguments, NotFound
from pipeline.providers import PROVIDERS
from pipeline.providers.base import sha256_hex
from pipeline.records import WebhookRecord
from pipeline.settings import Settings


@dataclass
class Lineage:
    event: dict[str, Any]
    record: WebhookRecord | None = None
    body_note: str = ""  # why there is no body, or whether its checksum matches
    call_ids: list[str] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    appointments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def body_matches(self) -> bool | None:
        if self.record is None:
            return None
        return bool(sha256_hex(self.record.value) == self.event["payload_sha256"])


def subjects(provider: str, event_id: str, body: bytes | None) -> tuple[list[str], list[str]]:
    """(Retell call ids, Cal.com booking uids) an event is about: from the body if it
    parses, else from the event id."""
    payload: Any = None
    if body is not None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
    known = PROVIDERS[provider]
    unique = list(dict.fromkeys(known.subjects(payload, event_id)))
    return (unique, []) if known.SUBJECTS == "calls" else ([], unique)


def _rows(engine: Engine, provider: str, event_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(webhook_events).where(
                    webhook_events.c.provider == provider, webhook_events.c.event_id == event_id
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"no webhook event {provider} {event_id!r} in webhook_events")
    return dict(row)


def _touched(
    engine: Engine, call_ids: list[str], uids: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with engine.connect() as conn:
        found_calls = (
            [
                dict(r)
                for r in conn.execute(
                    select(calls).where(calls.c.retell_call_id.in_(call_ids)).order_by(calls.c.id)
                ).mappings()
            ]
            if call_ids
            else []
        )
        found_appts = (
            [
                dict(r)
                for r in conn.execute(
                    select(appointments)
                    .where(appointments.c.calcom_uid.in_(uids))
                    .order_by(appointments.c.id)
                ).mappings()
            ]
            if uids
            else []
        )
    return found_calls, found_appts


async def lineage(
    settings: Settings, provider: str, event_id: str, *, engine: Engine | None = None
) -> Lineage:
    """Everything about one event; :class:`NotFound` when ``webhook_events`` has no row."""
    if provider not in PROVIDERS:
        raise BadArguments(f"PROVIDER must be retell or calcom, got {provider!r}")
    async with AsyncExitStack() as stack:
        if engine is None:
            engine = database.create_db_engine(settings, pool_size=1)
            stack.callback(engine.dispose)
        await asyncio.to_thread(database.check_database, engine)
        event = await asyncio.to_thread(_rows, engine, provider, event_id)
        found = await fetch(
            settings,
            [Coordinates(event["kafka_topic"], event["kafka_partition"], event["kafka_offset"])],
        )
        result = Lineage(event=event, record=found[0] if found else None)
        where = f"{event['kafka_topic']}/{event['kafka_partition']}@{event['kafka_offset']}"
        if result.record is None:
            result.body_note = f"not on Kafka any more at {where} (retention, or topic recreated)"
        elif result.body_matches:
            result.body_note = f"read back from {where}; SHA-256 matches webhook_events"
        else:
            result.body_note = (
                f"read back from {where}; SHA-256 does NOT match webhook_events "
                "(was the topic recreated?)"
            )
        result.call_ids, result.uids = subjects(
            provider, event_id, result.record.value if result.record else None
        )
        result.calls, result.appointments = await asyncio.to_thread(
            _touched, engine, result.call_ids, result.uids
        )
    return result
