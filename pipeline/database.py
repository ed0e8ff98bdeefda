"""Database plumbing: engines, migrations, and why a database call failed.

:func:`classify` decides by cause whether a failure is the database's (wait: read-only,
disk full, rights revoked, connection limits, timeouts, a lost connection, an exhausted
pool, deadlocks) or the record's (isolate it and dead-letter it with the reason); key
conflicts are retried a bounded number of times first (docs/reliability.md).

pymysql blocks, so async callers run database work in a thread (``asyncio.to_thread``);
the event loop that serves Kafka heartbeats and HTTP never waits on MySQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from pymysql.constants import SERVER_STATUS
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.errors import DatabaseUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: The collations identifier columns have (migration 0004): binary and NO PAD, so MySQL
#: compares keys exactly as Python does (MariaDB's name, MySQL 8's name).
BINARY_COLLATIONS = frozenset({"utf8mb4_nopad_bin", "utf8mb4_0900_bin"})


class Kind(StrEnum):
    """What a database failure says about the work that hit it, and so what to do."""

    UNAVAILABLE = "unavailable"  # the database cannot do anyone's work now: wait, retry
    BUSY = "busy"  # our transactions collided (deadlock, lock wait): retry soon
    CONFLICT = "conflict"  # a duplicate or missing key: a concurrent writer, usually
    RECORD = "record"  # MySQL refuses this record's data: isolate it, dead-letter it
    UNKNOWN = "unknown"  # none of the above (a bug?): isolate, behind the circuit breaker


# Every errno below names a cause; the name goes into the metric label and the log line
# (``mysql_1290_read_only``), never the server's message (it can quote row data).
_ERRNOS: dict[int, tuple[Kind, str]] = {
    # The server or the connection to it is gone.
    1053: (Kind.UNAVAILABLE, "server_shutdown"),
    1927: (Kind.UNAVAILABLE, "connection_killed"),
    1158: (Kind.UNAVAILABLE, "net_read_error"),
    1159: (Kind.UNAVAILABLE, "net_read_interrupted"),
    1160: (Kind.UNAVAILABLE, "net_write_error"),
    1161: (Kind.UNAVAILABLE, "net_write_interrupted"),
    2002: (Kind.UNAVAILABLE, "no_socket"),
    2003: (Kind.UNAVAILABLE, "connection_refused"),
    2006: (Kind.UNAVAILABLE, "server_gone"),
    2013: (Kind.UNAVAILABLE, "connection_lost"),
    2014: (Kind.UNAVAILABLE, "commands_out_of_sync"),
    2055: (Kind.UNAVAILABLE, "connection_lost"),
    4031: (Kind.UNAVAILABLE, "idle_disconnect"),
    1047: (Kind.UNAVAILABLE, "node_not_ready"),  # Galera/WSREP node not synced yet
    # Writes refused for everyone: failover windows, maintenance.
    1290: (Kind.UNAVAILABLE, "read_only"),  # --read-only / super_read_only
    1792: (Kind.UNAVAILABLE, "read_only_transaction"),
    1836: (Kind.UNAVAILABLE, "read_only_mode"),
    # Out of disk or memory.
    1021: (Kind.UNAVAILABLE, "disk_full"),
    1114: (Kind.UNAVAILABLE, "table_full"),
    1030: (Kind.UNAVAILABLE, "storage_engine_error"),
    1037: (Kind.UNAVAILABLE, "out_of_memory"),
    1038: (Kind.UNAVAILABLE, "out_of_sort_memory"),
    1041: (Kind.UNAVAILABLE, "out_of_memory"),
    1135: (Kind.UNAVAILABLE, "cannot_create_thread"),
    # Our user's rights or limits: a revoked grant or a rotated password is ops' to fix,
    # and every record would fail the same way.
    1044: (Kind.UNAVAILABLE, "database_access_denied"),
    1045: (Kind.UNAVAILABLE, "access_denied"),
    1142: (Kind.UNAVAILABLE, "table_access_denied"),
    1143: (Kind.UNAVAILABLE, "column_access_denied"),
    1227: (Kind.UNAVAILABLE, "privilege_missing"),
    1370: (Kind.UNAVAILABLE, "routine_access_denied"),
    1040: (Kind.UNAVAILABLE, "too_many_connections"),
    1203: (Kind.UNAVAILABLE, "max_user_connections"),
    1226: (Kind.UNAVAILABLE, "user_resource_exceeded"),
    1637: (Kind.UNAVAILABLE, "too_many_transactions"),
    # Statements stopped from outside: KILL QUERY, max_statement_time, shutdown.
    1317: (Kind.UNAVAILABLE, "query_interrupted"),
    3024: (Kind.UNAVAILABLE, "statement_timeout"),  # MySQL max_execution_time
    1969: (Kind.UNAVAILABLE, "statement_timeout"),  # MariaDB max_statement_time
    1028: (Kind.UNAVAILABLE, "sort_aborted"),
    # The schema is not the one this code expects: a deploy ran before `switchboard
    # migrate`. Every record would fail; waiting for the migration loses nothing.
    1146: (Kind.UNAVAILABLE, "no_such_table"),
    1054: (Kind.UNAVAILABLE, "unknown_column"),
    # Our own transactions collided.
    1205: (Kind.BUSY, "lock_wait_timeout"),
    1213: (Kind.BUSY, "deadlock"),
    1615: (Kind.BUSY, "reprepare_needed"),
    # Key conflicts: a concurrent writer won a race (re-read and it is gone), or the key
    # itself collides for good (two values Python tells apart and the collation does not).
    1022: (Kind.CONFLICT, "duplicate_key"),
    1062: (Kind.CONFLICT, "duplicate_key"),
    1586: (Kind.CONFLICT, "duplicate_key"),
    1451: (Kind.CONFLICT, "row_referenced"),  # a concurrent absorb moved the parent
    1452: (Kind.CONFLICT, "parent_missing"),
    # The record's values do not fit the table.
    1048: (Kind.RECORD, "null_value"),
    1264: (Kind.RECORD, "out_of_range"),
    1265: (Kind.RECORD, "data_truncated"),
    1292: (Kind.RECORD, "incorrect_value"),
    1300: (Kind.RECORD, "invalid_characters"),
    1366: (Kind.RECORD, "incorrect_value"),
    1367: (Kind.RECORD, "illegal_value"),
    1406: (Kind.RECORD, "data_too_long"),
    1411: (Kind.RECORD, "incorrect_value"),
    1441: (Kind.RECORD, "datetime_overflow"),
    1690: (Kind.RECORD, "out_of_range"),
    3819: (Kind.RECORD, "check_constraint"),  # MySQL
    4025: (Kind.RECORD, "check_constraint"),  # MariaDB
}


@dataclass(frozen=True, slots=True)
class DbFailure:
    """A classified failure: ``reason`` labels metrics and logs (bounded, no row data)."""

    kind: Kind
    reason: str
    errno: int | None = None

    @property
    def waits(self) -> bool:
        """True when the work is fine and only the moment is wrong: never dead-letter."""
        return self.kind in (Kind.UNAVAILABLE, Kind.BUSY)


def classify(exc: BaseException) -> DbFailure:
    """Why ``exc`` happened, by cause: the database (wait) or the record (isolate).

    Anything that is not a recognised statement about the record's data is either about
    the database (connection, pool, rights, limits, read-only, disk, timeouts) or unknown;
    unknown failures are isolated to one record, and the circuit breaker
    (:mod:`pipeline.retry`) stops them from draining a stream into the dead-letter topic.
    """
    if isinstance(exc, DatabaseUnavailable):
        return DbFailure(Kind.BUSY if exc.busy else Kind.UNAVAILABLE, exc.reason)
    if isinstance(exc, PoolTimeout):
        return DbFailure(Kind.UNAVAILABLE, "pool_timeout")
    if isinstance(exc, DisconnectionError):
        return DbFailure(Kind.UNAVAILABLE, "connection_lost")
    errno = errno_of(exc)
    if errno is not None and errno in _ERRNOS:
        kind, name = _ERRNOS[errno]
        return DbFailure(kind, f"mysql_{errno}_{name}", errno)
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return DbFailure(Kind.UNAVAILABLE, "connection_lost", errno)
        if isinstance(exc, InterfaceError) or (isinstance(exc, OperationalError) and not errno):
            # pymysql: "(0, '')" and friends when the socket closed under a query.
            return DbFailure(Kind.UNAVAILABLE, "connection_lost", errno)
        return DbFailure(Kind.UNKNOWN, f"mysql_{errno}" if errno else type(exc).__name__, errno)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return DbFailure(Kind.UNAVAILABLE, "connection_lost")
    return DbFailure(Kind.UNKNOWN, type(exc).__name__)


def unavailable(exc: BaseException, where: str = "database") -> DatabaseUnavailable | None:
    """The :class:`DatabaseUnavailable` to raise ``from exc``, or None when ``exc`` is
    about the record (or unknown): the caller then isolates the record."""
    failure = classify(exc)
    if not failure.waits:
        return None
    return DatabaseUnavailable(
        f"{where}: {failure.reason}", reason=failure.reason, busy=failure.kind is Kind.BUSY
    )


def create_db_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    """An engine with READ COMMITTED (no gap locks, fewer deadlocks) and pre-ping.

    ``hide_parameters``: SQLAlchemy's exception text would otherwise quote every bound
    value (names, e-mail addresses, phone numbers, summaries) into tracebacks and logs.
    """
    return create_engine(
        settings.database_url.reveal(),
        hide_parameters=True,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30},
    )


def sql_datetime(value: datetime | None) -> str | datetime | None:
    """A naive datetime as the text MySQL reads it (``YYYY-MM-DD HH:MM:SS[.ffffff]``), for
    statements that bind many values: pymysql sends exactly the same bytes for the text as
    for the datetime (a quoted literal), but formats a datetime in Python, field by field,
    where ``isoformat`` is C. Anything else (None, an aware datetime) is left as it is."""
    if value is None or value.tzinfo is not None:
        return value
    return value.isoformat(" ")


#: Past this many characters a many-row INSERT goes as several statements (the number
#: pymysql uses, ``Cursor.max_stmt_length``, though it counts bytes): at most 4 bytes a
#: character, far below the servers' ``max_allowed_packet`` (16 MiB MariaDB, 64 MiB MySQL).
MAX_STATEMENT = 1_024_000

#: What MySQL's string literals escape (pymysql's ``escape_string``), the backslash first.
_ESCAPES = (
    ("\\", "\\\\"),
    ("\0", "\\0"),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\032", "\\Z"),
    ('"', '\\"'),
    ("'", "\\'"),
)


def quoted(text: str) -> str:
    """``text`` as a MySQL string literal, the same characters as pymysql's (tested): one
    ``str.replace`` (C) per escaped character present, where pymysql translates the text
    a character at a time in Python, 10× slower for a transcript of 900 characters.
    Only for a session without ``NO_BACKSLASH_ESCAPES`` (:func:`insert_many` checks)."""
    for char, escaped in _ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return "'" + text + "'"


def _null(_: None) -> str:
    return "NULL"


def insert_many(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    updates: Sequence[str] = (),
) -> None:
    """``rows`` (values in the order of ``columns``) in one multi-row ``INSERT`` (more past
    :data:`MAX_STATEMENT` characters), then ``ON DUPLICATE KEY UPDATE`` with ``updates``
    if any. Names go in unquoted, as SQLAlchemy renders ours: none is a reserved word.

    The values are written into the statement as the literals pymysql's ``executemany``
    would have written (texts by :func:`quoted`, numbers as digits, None as NULL, anything
    else by pymysql's own ``escape``), and the statement goes through SQLAlchemy without
    parameters: the same bytes on the wire, and its errors wrapped as every statement's.
    pymysql renders each value through five calls: in the first apply's profile its
    escaping was a tenth of the engine's time."""
    head, tail = _insert_parts(table, tuple(columns), tuple(updates))
    raw = conn.connection.dbapi_connection
    assert raw is not None
    by_type: dict[type, Callable[[Any], str]] = {int: str, type(None): _null}
    if not raw.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        by_type[str] = quoted
    literal, escape = by_type.get, raw.escape
    chunk: list[str] = []
    size = len(head) + len(tail)
    for row in rows:
        values = "(" + ", ".join([literal(type(v), escape)(v) for v in row]) + ")"
        if chunk and size + len(values) + 1 > MAX_STATEMENT:
            _run(conn, head, chunk, tail)
            chunk, size = [], len(head) + len(tail)
        chunk.append(values)
        size += len(values) + 1
    if chunk:
        _run(conn, head, chunk, tail)


def _run(conn: Connection, head: str, rows: list[str], tail: str) -> None:
    # Without parameters: pymysql then leaves a "%" in a value alone.
    try:
        conn.exec_driver_sql(
            head + ",".join(rows) + tail, execution_options={"no_parameters": True}
        )
    except StatementError as exc:
        # The values are in the statement's text, and an error's message quotes it: names
        # and phone numbers would reach the logs, which the engine's hide_parameters keeps
        # them out of for every other statement (docs/security.md).
        exc.statement = f"{head}({len(rows)} rows, values hidden){tail}"
        raise


@lru_cache(maxsize=64)
def _insert_parts(
    table: str, columns: tuple[str, ...], updates: tuple[str, ...]
) -> tuple[str, str]:
    """What goes before the rows (``INSERT INTO table (columns) VALUES ``) and after them."""
    tail = f" ON DUPLICATE KEY UPDATE {', '.join(updates)}" if updates else ""
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ", tail


FIELD, ROW = "\x1f", "\x1e"  # ASCII's unit and record separators


def text_rows(
    conn: Connection, columns: Sequence[str], tail: str, params: tuple[Any, ...]
) -> list[list[str]]:
    """The rows of ``SELECT columns tail`` as lists of text, fetched as one text: each value
    as MySQL prints it, fields and rows joined by ASCII's unit and record separators
    (``GROUP_CONCAT``). For wide reads of text columns: MariaDB builds a ``JSON_ARRAYAGG``
    in a temporary table, 4.1 against 2.5 ms of server time for a replayed batch's ~330
    ``webhook_events`` rows (docs/benchmarks.md, 1b); splitting costs this process about
    0.6 µs a row more than orjson's decoding. Every column must be text and never NULL (``COALESCE`` it). A text that
    does not split into the rows MySQL counted (a value holding a separator, a text cut
    short at ``group_concat_max_len``) is read again row by row: the same answer."""
    joined = f"CONCAT_WS('{FIELD}', {', '.join(columns)})"
    statement = f"SELECT COUNT(*), GROUP_CONCAT({joined} SEPARATOR '{ROW}') {tail}"
    count, text = conn.exec_driver_sql(statement, params).one()
    if not count:
        return []
    rows = [row.split(FIELD) for row in text.split(ROW)]
    if len(rows) == count and all(len(row) == len(columns) for row in rows):
        return rows
    log.warning(
        "a text aggregate of %d bytes did not split into its %d rows; reading them one by one",
        len(text),
        count,
    )
    select = f"SELECT {', '.join(columns)} {tail}"
    return [list(row) for row in conn.exec_driver_sql(select, params)]


def errno_of(exc: BaseException) -> int | None:
    """The MySQL error number of ``exc`` (or of the driver error it wraps), if any."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None) or getattr(exc, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """True when the database, not the work, is the problem: wait and retry the same work.

    Key conflicts are not transient here: retry them a bounded number of times
    (:func:`pipeline.retry.retry_conflicts`), then treat them as the record's problem.
    """
    return classify(exc).waits


def check_database(engine: Engine) -> None:
    """Raise DatabaseUnavailable with a one-line reason when MySQL cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise DatabaseUnavailable(f"MySQL unreachable: {_one_line(exc)}") from exc


def answers(engine: Engine) -> bool:
    """True when the database takes queries and is not read-only: the circuit breaker's
    probe (:class:`pipeline.retry.Breaker`). Reading the variable needs no privilege."""
    try:
        with engine.connect() as conn:
            return not conn.execute(text("SELECT @@global.read_only")).scalar()
    except Exception:
        return False


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    return " ".join(str(orig).split())[:200]


def alembic_config(settings: Settings) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", settings.database_url.reveal().replace("%", "%%"))
    return config


def migrate(settings: Settings, revision: str = "head") -> None:
    """Alembic ``upgrade`` to ``revision``; running it twice is a no-op."""
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings), revision)
