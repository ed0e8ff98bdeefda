"""The per-provider watermark: how far back the provider's API has been compared (and healed).

Kept in MySQL (``backfill_watermarks``, one row per provider) rather than in a file or a
Kafka topic: the backfill already needs MySQL to compare, the row survives restarts and
moves between machines with the data it describes, an operator can read or reset it with
SQL, and every periodic process (or a one-shot run next to one) sees the same value. The
periodic mode starts each window a safety margin before it.

The watermark only moves forward, and only over a contiguous stretch: a run over a window
that starts after it (a gap never compared) leaves it where it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects.mysql import insert

from pipeline.models import backfill_watermarks as table


@dataclass(frozen=True, slots=True)
class Watermark:
    provider: str
    covered_until: datetime | None
    last_success_at: datetime | None
    last_run_at: datetime | None
    last_written: int
    last_error: str | None


def read(conn: Connection, provider: str) -> Watermark | None:
    row = conn.execute(select(table).where(table.c.provider == provider)).mappings().first()
    if row is None:
        return None
    return Watermark(
        provider=provider,
        covered_until=row["covered_until"],
        last_success_at=row["last_success_at"],
        last_run_at=row["last_run_at"],
        last_written=int(row["last_written"]),
        last_error=row["last_error"],
    )


def advanced(current: datetime | None, since: datetime, until: datetime) -> datetime | None:
    """The watermark after a successful run over ``[since, until]``."""
    if current is None:
        return until
    if since <= current:
        return max(current, until)
    return current  # a gap between the watermark and this window stays uncompared


def record_success(
    conn: Connection,
    provider: str,
    *,
    since: datetime,
    until: datetime,
    written: int,
    now: datetime,
) -> Watermark:
    """Lock the provider's row, move the watermark, note the run; one transaction."""
    current = conn.execute(
        select(table.c.covered_until).where(table.c.provider == provider).with_for_update()
    ).scalar()
    values = {
        "covered_until": advanced(current, since, until),
        "last_window_start": since,
        "last_window_end": until,
        "last_run_at": now,
        "last_success_at": now,
        "last_written": written,
        "last_error": None,
        "updated_at": now,
    }
    _upsert(conn, provider, values)
    found = read(conn, provider)
    assert found is not None
    return found


def record_failure(conn: Connection, provider: str, *, error: str, now: datetime) -> None:
    _upsert(conn, provider, {"last_run_at": now, "last_error": error[:2000], "updated_at": now})


def _upsert(conn: Connection, provider: str, values: Mapping[str, object]) -> None:
    statement = insert(table).values(provider=provider, **values)
    conn.execute(statement.on_duplicate_key_update(**values))
