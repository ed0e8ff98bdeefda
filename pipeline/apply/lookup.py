"""What MySQL knows of records applied before: the recogniser's two reads per batch
(:mod:`pipeline.apply.recognise`), plain and without locks.

A replay of an applied stretch reads one ``webhook_events`` row per record and one row per
call or booking, and nothing else; the time it takes is mostly these reads. So they skip
what costs most per row in Python (measured, docs/benchmarks.md section 1b):

* SQLAlchemy's rendering of an ``IN`` of hundreds of values and its row objects: the
  statements are fixed text sent through the driver, which escapes every value (a tuple
  becomes a parenthesised list), as safe as a bound statement;
* the lookup of hundreds of event ids one by one in the unique key (about 15 µs a key
  on this machine, most of the events read): the rows of the batch's records are read
  first by where those records sat in Kafka, one range of an index per partition
  (:func:`pipeline.apply.recognise.spans`); only the keys not found there (the
  milestones of calls, the first body of a snapshot event) are looked up by event id;
* pymysql's decoding of every column of every row (pure Python, a few microseconds a
  column): MySQL folds the rows into one document that is split or decoded in C. The
  events, all text, come as one text with ASCII separators (``GROUP_CONCAT``: MariaDB
  builds a ``JSON_ARRAYAGG`` in a temporary table, 4.1 against 2.5 ms of server time for
  a batch's ~330 rows); the rows' bucket columns, with numbers, as JSON that orjson
  decodes. A document cut short (MariaDB caps an aggregate at the session's
  ``group_concat_max_len``, 1 MiB by default, a batch needs about 100 KiB) or a text
  that does not split into the rows MySQL counted is read again row by row: the same
  columns, the same answer;
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
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import Connection

from pipeline.apply.recognise import Known, Span
from pipeline.apply.rows import APPLIED
from pipeline.dashboard.aggregates import APPOINTMENT_MARKS
from pipeline.database import text_rows
from pipeline.providers.facts import EventKey

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "event_id",
    "payload_sha256",
    "event_type",
    "COALESCE(CAST(processed_at AS CHAR), '')",
)
EVENTS_WHERE = (
    "FROM webhook_events FORCE INDEX (uq_webhook_events_provider_event_id)"
    f" WHERE status = '{APPLIED}' AND provider = %s AND event_id IN %s"
)
# The rows of records from the batch's stretches of partitions, by where each row's record
# sat in Kafka: one range of the index per partition, ordered as it is stored.
SPANS_WHERE = (
    "FROM webhook_events"
    " FORCE INDEX (ix_webhook_events_kafka_topic_kafka_partition_kafka_offset)"
    f" WHERE status = '{APPLIED}' AND provider = %s AND ("
)
SPAN = "(kafka_topic = %s AND kafka_partition = %s AND kafka_offset BETWEEN %s AND %s)"

# The one time that places a call (aggregates.call_time), computed by MySQL; and what an
# analysed call counts (aggregates.call_buckets: an analysed call not yet ended counts in
# its buckets only if its analysis has a sentiment or a success to count).
CALL_TIME = "COALESCE(c.started_at, c.ended_at, c.last_event_at)"
CALL_NAMES = (
    "retell_call_id",
    "company_id",
    "created_at",
    "branch_id",
    "agent_id",
    "started_at",
    "successful",
    "sentiment",
    "timezone",
)
CALL_COLUMNS = (
    "c.retell_call_id, c.company_id, CAST(c.created_at AS CHAR), c.branch_id, c.agent_id,"
    f" CAST({CALL_TIME} AS CHAR), c.successful, c.sentiment, co.timezone"
)
CALLS_WHERE = (
    "FROM calls c FORCE INDEX (uq_calls_retell_call_id) STRAIGHT_JOIN companies co"
    " ON co.id = c.company_id WHERE c.retell_call_id IN %s"
)

MARKS = tuple(column for column, _ in APPOINTMENT_MARKS)  # the times that place a booking
APPOINTMENT_NAMES = (
    "calcom_uid",
    "company_id",
    "created_at",
    "branch_id",
    *MARKS,
    "retell_call_id",  # the call whose calls_booked the booking counts in
    "timezone",
)
APPOINTMENT_COLUMNS = (
    "a.calcom_uid, a.company_id, CAST(a.created_at AS CHAR), a.branch_id, "
    + ", ".join(f"CAST(a.{m} AS CHAR)" for m in MARKS)
    + ", a.retell_call_id, co.timezone"
)
APPOINTMENTS_WHERE = (
    "FROM appointments a FORCE INDEX (uq_appointments_calcom_uid) STRAIGHT_JOIN companies co"
    " ON co.id = a.company_id WHERE a.calcom_uid IN %s"
)


def known_events(
    conn: Connection, keys: Iterable[EventKey], spans: Iterable[Span] = ()
) -> dict[EventKey, Known]:
    """The ``applied`` rows of ``webhook_events`` of these keys (only those are known), one
    query per provider (a batch has one).

    ``spans``: the stretches of partitions the batch's records come from. The rows of their
    records are read first, by one range read of where each row's record sat in Kafka
    (most keys of a replayed batch are there, as are many of the milestones); only the keys
    not found there are looked up one by one in the unique key. The rows are the same
    either way: one ``applied`` row per provider and event id, checked against both."""
    wanted: dict[str, set[str]] = {}
    for provider, event_id in keys:
        wanted.setdefault(provider, set()).add(event_id)
    spans = sorted(spans)
    found: dict[EventKey, Known] = {}
    for provider, ids in sorted(wanted.items()):
        rows: list[list[str]] = []
        if spans:
            where = SPANS_WHERE + " OR ".join([SPAN] * len(spans)) + ")"
            rows = text_rows(conn, EVENT_COLUMNS, where, (provider, *chain(*spans)))
        if rest := ids.difference(row[0] for row in rows):
            rows += text_rows(conn, EVENT_COLUMNS, EVENTS_WHERE, (provider, tuple(sorted(rest))))
        for event_id, sha256, event_type, processed_at in rows:
            if event_id in ids:
                found[(provider, event_id)] = Known(
                    APPLIED, sha256, event_type, processed_at or None
                )
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
