"""What MySQL knows of records applied before: the recogniser's two reads per batch
(:mod:`pipeline.apply.recognise`), plain and without locks.

A replay of an applied stretch reads one ``webhook_events`` row per record and one row per
call or booking, and nothing else; the time it takes is mostly these reads. So they skip
what costs most per row in Python (measured, docs/benchmarks.md section 1b):

* SQLAlchemy's rendering of an ``IN`` of hundreds of values and its row objects: the
  statements are fixed text sent through the driver, which escapes every value (a tuple
  becomes a parenthesised list), as safe as a bound statement;
* pymysql's decoding of every column of every row (pure Python, a few microseconds a
  column): MySQL folds the rows into one JSON document (``JSON_ARRAYAGG``), which orjson
  decodes in C. A document cut short (MariaDB caps an aggregate at the session's
  ``group_concat_max_len``, 1 MiB by default, a batch needs about 100 KiB) does not
  decode: the rows are then read one by one, the same columns, the same answer;
* a join that starts from the wrong table: left to itself, MariaDB reads the few
  companies first and walks every call (or booking) of each, so the read grew with the
  table (twice the time of the keyed read at 3,000 calls). The rows are read by their
  unique key first (``FORCE INDEX``), then joined to their company (``STRAIGHT_JOIN``);
* the range optimizer's work: for an ``IN`` of hundreds of event ids MariaDB weighs every
  index that starts with ``provider`` or ``status`` (three), building the list of ranges
  for each; only the unique key is ever right (``FORCE INDEX``): 7.7 against 9.0 ms of
  server time for a batch's ~350 keys, measured with ``SHOW PROFILES``;
* parsing datetimes: ``created_at`` and ``processed_at`` travel as MySQL prints a
  DATETIME(3) and are compared as text (:data:`pipeline.apply.recognise.Stamp`); the times
  that place a row in its buckets are parsed (``fromisoformat``, in C).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from pipeline.apply.recognise import Known
from pipeline.apply.rows import APPLIED
from pipeline.dashboard.aggregates import APPOINTMENT_MARKS
from pipeline.providers.facts import EventKey

log = logging.getLogger(__name__)

EVENT_COLUMNS = "event_id, payload_sha256, event_type, CAST(processed_at AS CHAR)"
EVENTS_WHERE = (
    "FROM webhook_events FORCE INDEX (uq_webhook_events_provider_event_id)"
    f" WHERE status = '{APPLIED}' AND provider = %s AND event_id IN %s"
)

# The one time that places a call (aggregates.call_time), computed by MySQL.
CALL_TIME = "COALESCE(c.started_at, c.ended_at, c.last_event_at)"
CALL_NAMES = (
    "retell_call_id",
    "company_id",
    "created_at",
    "branch_id",
    "agent_id",
    "started_at",
    "timezone",
)
CALL_COLUMNS = (
    "c.retell_call_id, c.company_id, CAST(c.created_at AS CHAR), c.branch_id, c.agent_id,"
    f" CAST({CALL_TIME} AS CHAR), co.timezone"
)
CALLS_WHERE = (
    "FROM calls c FORCE INDEX (uq_calls_retell_call_id) STRAIGHT_JOIN companies co"
    " ON co.id = c.company_id WHERE c.retell_call_id IN %s"
)

MARKS = tuple(column for column, _ in APPOINTMENT_MARKS)  # the times that place a booking
APPOINTMENT_NAMES = ("calcom_uid", "company_id", "created_at", "branch_id", *MARKS, "timezone")
APPOINTMENT_COLUMNS = (
    "a.calcom_uid, a.company_id, CAST(a.created_at AS CHAR), a.branch_id, "
    + ", ".join(f"CAST(a.{m} AS CHAR)" for m in MARKS)
    + ", co.timezone"
)
APPOINTMENTS_WHERE = (
    "FROM appointments a FORCE INDEX (uq_appointments_calcom_uid) STRAIGHT_JOIN companies co"
    " ON co.id = a.company_id WHERE a.calcom_uid IN %s"
)


def known_events(conn: Connection, keys: Iterable[EventKey]) -> dict[EventKey, Known]:
    """The ``applied`` rows of ``webhook_events`` of these keys (only those are known), one
    query per provider (a batch has one)."""
    wanted: dict[str, set[str]] = {}
    for provider, event_id in keys:
        wanted.setdefault(provider, set()).add(event_id)
    found: dict[EventKey, Known] = {}
    for provider, ids in sorted(wanted.items()):
        rows = json_rows(conn, EVENT_COLUMNS, EVENTS_WHERE, (provider, tuple(sorted(ids))))
        for event_id, sha256, event_type, processed_at in rows:
            if event_id in ids:
                found[(provider, event_id)] = Known(APPLIED, sha256, event_type, processed_at)
    return found


def bucket_columns(
    conn: Connection, call_ids: Iterable[str], uids: Iterable[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The columns that place existing calls and appointments in their buckets (no
    transcripts, no locks), by call id and by booking uid, each with its company's time
    zone (joined: one round trip fewer per batch)."""
    calls: dict[str, dict[str, Any]] = {}
    appointments: dict[str, dict[str, Any]] = {}
    if wanted := tuple(sorted(set(call_ids))):
        for row in json_rows(conn, CALL_COLUMNS, CALLS_WHERE, (wanted,)):
            call = dict(zip(CALL_NAMES, row, strict=True))
            call["started_at"] = _time(call["started_at"])
            calls[call["retell_call_id"]] = call
    if wanted := tuple(sorted(set(uids))):
        for row in json_rows(conn, APPOINTMENT_COLUMNS, APPOINTMENTS_WHERE, (wanted,)):
            booking = dict(zip(APPOINTMENT_NAMES, row, strict=True))
            for mark in MARKS:
                booking[mark] = _time(booking[mark])
            appointments[booking["calcom_uid"]] = booking
    return calls, appointments


def json_rows(conn: Connection, columns: str, tail: str, params: tuple[Any, ...]) -> list[Any]:
    """The rows of ``SELECT columns tail`` as lists, fetched as one JSON document. Every
    column must be JSON-safe as MySQL renders it (text, numbers, NULL: cast times to CHAR)."""
    statement = f"SELECT JSON_ARRAYAGG(JSON_ARRAY({columns})) {tail}"
    document = conn.exec_driver_sql(statement, params).scalar()
    if document is None:
        return []  # no row
    try:
        rows: list[Any] = orjson.loads(document)
        return rows
    except orjson.JSONDecodeError:
        log.warning(
            "a JSON aggregate of %d bytes was cut short (group_concat_max_len?); "
            "reading the rows one by one",
            len(document),
        )
        return [list(r) for r in conn.exec_driver_sql(f"SELECT {columns} {tail}", params)]


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
