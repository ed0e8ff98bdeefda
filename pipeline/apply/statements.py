"""Many-row writes of tuples: the apply path's multi-row ``INSERT`` and ``INSERT ... ON
DUPLICATE KEY UPDATE`` of typed rows (:mod:`pipeline.apply.rows`).

SQLAlchemy would build, cache-key and bind a statement per batch, and bind every row as a
dict: in the first apply's profile that cost more than MySQL took for the statements. Here
the rows go as tuples into one multi-row statement whose values are written as MySQL
literals (:func:`pipeline.database.insert_many`). What SQLAlchemy would have done to a value
still happens: a column type's bind processor (JSON, Boolean) converts it, and a
time goes as the text pymysql would have sent for it (:func:`pipeline.database.sql_datetime`,
formatted in C).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, Table

from pipeline import database
from pipeline.apply.rows import TABLES, AppointmentRow, CallRow, CustomerRow, EventRow
from pipeline.database import sql_datetime

Row = CallRow | AppointmentRow | CustomerRow | EventRow
Converter = Callable[[Any], Any]


def insert_new(conn: Connection, rows: Sequence[Row], **stamps: datetime) -> None:
    """Insert new typed rows of one type (MySQL numbers their ids), with the same
    ``stamps`` (``created_at``, ``updated_at``) on each."""
    names = _NO_ID[type(rows[0])]
    get, extra = attrgetter(*names), tuple(stamps.values())
    insert_rows(conn, TABLES[type(rows[0])], (*names, *stamps), [(*get(r), *extra) for r in rows])


def upsert_rows(conn: Connection, rows: Sequence[Row], **stamps: datetime) -> None:
    """Rewrite stored typed rows of one type, every column, by primary key.

    ``INSERT ... ON DUPLICATE KEY UPDATE`` on the primary key is MySQL's batched UPDATE:
    one statement for all rows, where ``executemany(UPDATE)`` sends one per row."""
    names = _ALL[type(rows[0])]
    get, extra = attrgetter(*names), tuple(stamps.values())
    table, columns = TABLES[type(rows[0])], (*names, *stamps)
    insert_rows(conn, table, columns, [(*get(r), *extra) for r in rows], update=True)


def insert_rows(
    conn: Connection,
    table: Table,
    columns: tuple[str, ...],
    rows: Iterable[Sequence[Any]],
    *,
    update: bool = False,
) -> None:
    """``rows`` (values in the order of ``columns``) in one multi-row ``INSERT``; with
    ``update``, existing rows (by primary or unique key) get every column but ``id``."""
    converters = _converters(table, columns, conn.dialect)
    if converters:
        rows = [_converted(row, converters) for row in rows]
    database.insert_many(conn, table.name, columns, rows, updates(columns) if update else ())


@lru_cache(maxsize=32)
def updates(columns: tuple[str, ...]) -> tuple[str, ...]:
    """``ON DUPLICATE KEY UPDATE`` of every column but ``id`` (names unquoted, as
    SQLAlchemy renders them: none is a reserved word, a unit test asks its MySQL quoting)."""
    return tuple(f"{c} = VALUES({c})" for c in columns if c != "id")


@lru_cache(maxsize=32)
def _converters(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[tuple[int, Converter], ...]:
    """What SQLAlchemy would do to each column's values: its type's bind processor, if
    any; a time as text."""
    out: list[tuple[int, Converter]] = []
    for i, name in enumerate(columns):
        type_ = table.c[name].type
        processor = type_.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            out.append((i, processor))
        elif isinstance(type_, DateTime):
            out.append((i, _time))
    return tuple(out)


def _time(value: Any) -> Any:
    return sql_datetime(value) if isinstance(value, datetime) else value


def _converted(row: Sequence[Any], converters: Sequence[tuple[int, Converter]]) -> tuple[Any, ...]:
    values = list(row)
    for i, convert in converters:
        values[i] = convert(values[i])
    return tuple(values)  # SQLAlchemy takes rows of parameters as tuples (or dicts)


#: Each row type's fields (its table's columns but the timestamps), with and without ``id``.
_ALL: dict[type[Any], tuple[str, ...]] = {k: tuple(f.name for f in fields(k)) for k in TABLES}
_NO_ID = {kind: tuple(n for n in names if n != "id") for kind, names in _ALL.items()}
