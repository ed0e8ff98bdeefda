"""Time in the backfill: naive UTC datetimes inside, epoch milliseconds for Retell, and the
``2026-01-05T17:02:11.482Z`` strings Cal.com writes (its webhooks' ``createdAt`` is
``Date.prototype.toISOString()``, so a synthesized one must look the same to give the same
event id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1)


def to_ms(at: datetime) -> int:
    """Naive UTC (or aware) → epoch milliseconds, exactly."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return (at - EPOCH) // timedelta(milliseconds=1)


def from_ms(millis: int) -> datetime:
    return EPOCH + timedelta(milliseconds=millis)


def iso_ms(at: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``, as JavaScript's ``toISOString`` writes it."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_iso(value: Any) -> datetime | None:
    """ISO-8601 with ``Z`` or an offset → naive UTC truncated to the millisecond; else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.replace(microsecond=parsed.microsecond - parsed.microsecond % 1000)


def utc_now() -> datetime:
    """Now, naive UTC, millisecond precision (what MySQL's DATETIME(3) keeps)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)
