"""What MySQL already holds about the calls and bookings a provider listed: the status of
their webhook events (``webhook_events``) and whether their rows exist.

Read-only, in chunks, with plain ``SELECT``s (no locks): the comparison only decides which
records to *offer* to the apply path; the apply path itself deduplicates on
``(provider, event_id)`` under row locks, so a webhook arriving between this read and the
write is still counted once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from pipeline.models import appointments, calls, webhook_events

CHUNK = 500
NO_SHOW_PREFIX = "BOOKING_NO_SHOW_UPDATED:"


@dataclass(frozen=True, slots=True)
class Row:
    status: str | None
    no_show_at: datetime | None = None


@dataclass
class Ledger:
    provider: str
    events: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id → (status, error)
    rows: dict[str, Row] = field(default_factory=dict)  # call id / booking uid → row
    # booking uid → statuses of its BOOKING_NO_SHOW_UPDATED events (their ids carry a time)
    no_shows: dict[str, list[tuple[str, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def status(self, event_id: str) -> str | None:
        found = self.events.get(event_id)
        return found[0] if found else None

    def parked_no_show(self, uid: str) -> bool:
        """A no-show update waiting for its booking (applied as soon as the booking is)."""
        return any(s == "unroutable" and e == "unknown_booking" for s, e in self.no_shows[uid])

    def applied_no_show(self, uid: str) -> bool:
        return any(s == "applied" for s, _ in self.no_shows[uid])


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def read_events(conn: Connection, ledger: Ledger, event_ids: Iterable[str]) -> None:
    wanted = sorted(set(event_ids))
    for chunk in _chunks(wanted):
        rows = conn.execute(
            select(
                webhook_events.c.event_id, webhook_events.c.status, webhook_events.c.error
            ).where(
                webhook_events.c.provider == ledger.provider,
                webhook_events.c.event_id.in_(chunk),
            )
        )
        for row in rows:
            ledger.events[row.event_id] = (row.status, row.error)


def read_no_shows(conn: Connection, ledger: Ledger, uids: Iterable[str]) -> None:
    """Every ``BOOKING_NO_SHOW_UPDATED:<uid>:*`` event: one index range per booking."""
    wanted = sorted(set(uids))
    for chunk in _chunks(wanted):
        ranges = [webhook_events.c.event_id.like(f"{NO_SHOW_PREFIX}{_escape(u)}:%") for u in chunk]
        rows = conn.execute(
            select(
                webhook_events.c.event_id, webhook_events.c.status, webhook_events.c.error
            ).where(webhook_events.c.provider == "calcom", or_(*ranges))
        )
        members = set(chunk)
        for row in rows:
            uid = _owner(row.event_id[len(NO_SHOW_PREFIX) :], members)
            if uid is not None:
                ledger.no_shows[uid].append((row.status, row.error))


def read_call_rows(conn: Connection, ledger: Ledger, call_ids: Iterable[str]) -> None:
    for chunk in _chunks(sorted(set(call_ids))):
        rows = conn.execute(
            select(calls.c.retell_call_id, calls.c.status).where(calls.c.retell_call_id.in_(chunk))
        )
        for row in rows:
            ledger.rows[row.retell_call_id] = Row(row.status)


def read_appointment_rows(conn: Connection, ledger: Ledger, uids: Iterable[str]) -> None:
    for chunk in _chunks(sorted(set(uids))):
        rows = conn.execute(
            select(
                appointments.c.calcom_uid, appointments.c.status, appointments.c.no_show_at
            ).where(appointments.c.calcom_uid.in_(chunk))
        )
        for row in rows:
            ledger.rows[row.calcom_uid] = Row(row.status, row.no_show_at)


def statuses(conn: Connection, provider: str, event_ids: Iterable[str]) -> dict[str, Any]:
    """``event_id → status`` for the events that have a row (waiting for the worker)."""
    ledger = Ledger(provider)
    read_events(conn, ledger, event_ids)
    return {event_id: status for event_id, (status, _) in ledger.events.items()}


def _owner(rest: str, uids: set[str]) -> str | None:
    """The uid in ``<uid>:<createdAt>`` (either may contain colons): the one we asked for."""
    at = rest.find(":")
    while at != -1:
        if rest[:at] in uids:
            return rest[:at]
        at = rest.find(":", at + 1)
    return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
