"""The apply path's many-row statements (pipeline/apply/statements.py, the bucket upsert,
pipeline.database.insert_many): multi-row INSERTs with every column, the bytes pymysql's
executemany would have sent, and values as SQLAlchemy would have bound them (times as the
text pymysql would have sent);
bucket keys with their groups are cached without mixing up values of different types."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pymysql
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql import converters
from pymysql.constants import SERVER_STATUS
from pymysql.cursors import RE_INSERT_VALUES
from sqlalchemy.dialects.mysql import pymysql as mysql_pymysql

from pipeline import database
from pipeline.apply import rows, statements, write
from pipeline.dashboard import aggregates, buckets
from pipeline.dashboard.aggregates import BucketKey
from pipeline.dashboard.counters import Counters
from pipeline.database import sql_datetime
from pipeline.models import (
    COUNTERS,
    calls,
    dashboard_buckets,
    dashboard_group_buckets,
    webhook_events,
)

#: A pymysql connection never connected: it renders values as the driver does.
_DRIVER = pymysql.connect(defer_connect=True)


class _Sent:
    """A SQLAlchemy connection as :func:`database.insert_many` uses it: a pymysql
    connection to render values (never connected) and the statements it was given."""

    def __init__(self, server_status: int = 0) -> None:
        _DRIVER.server_status = server_status  # set by the server's first answer
        self.connection = SimpleNamespace(dbapi_connection=_DRIVER)
        self.statements: list[tuple[str, dict[str, Any]]] = []

    def exec_driver_sql(self, statement: str, execution_options: dict[str, Any]) -> None:
        self.statements.append((statement, execution_options))


def _executemany(sql: str, rows: list[tuple[Any, ...]]) -> str:
    """What pymysql's ``executemany`` sends for a multi-row INSERT (all rows, one part)."""
    match = RE_INSERT_VALUES.match(sql)
    assert match
    _DRIVER.server_status = 0
    cursor = _DRIVER.cursor()
    values = match.group(2).rstrip()
    rendered = ",".join(cursor._mogrify(values, row) for row in rows)
    return match.group(1) + rendered + (match.group(3) or "")


VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(),
    st.text(alphabet="\\\0\n\r\x1a\"'%_ab"),
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(VALUES, VALUES, VALUES), min_size=1, max_size=5))
def test_insert_many_sends_what_pymysqls_executemany_sent(rows: list[tuple[Any, ...]]) -> None:
    """The same bytes on the wire as the statement with placeholders had, whatever the
    values: texts with every character MySQL escapes (and "%", which must stay as it is:
    the statement goes without parameters), numbers, NULL, bytes."""
    conn = _Sent()
    updates = ("b = VALUES(b)",)
    database.insert_many(conn, "t", ("a", "b", "c"), rows, updates)  # type: ignore[arg-type]
    placeholders = (
        "INSERT INTO t (a, b, c) VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE b = VALUES(b)"
    )
    assert conn.statements == [(_executemany(placeholders, rows), {"no_parameters": True})]


@given(st.text())
def test_a_text_is_quoted_as_pymysql_quotes_it(value: str) -> None:
    assert database.quoted(value) == "'" + converters.escape_string(value) + "'"


def test_a_session_without_backslash_escapes_gets_pymysqls_quoting() -> None:
    conn = _Sent(server_status=SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES)
    database.insert_many(conn, "t", ("a",), [("it's a \\ b",)])  # type: ignore[arg-type]
    assert conn.statements[0][0] == "INSERT INTO t (a) VALUES ('it''s a \\ b')"


def test_rows_past_the_statement_bound_go_in_several_statements(monkeypatch: Any) -> None:
    monkeypatch.setattr(database, "MAX_STATEMENT", 80)
    conn = _Sent()
    rows = [(i, "x" * 10) for i in range(12)]
    database.insert_many(conn, "t", ("a", "b"), rows)  # type: ignore[arg-type]
    sent = [statement for statement, _ in conn.statements]
    assert len(sent) > 1
    assert all(len(statement) <= 80 for statement in sent)
    head = "INSERT INTO t (a, b) VALUES "
    assert all(statement.startswith(head) for statement in sent)
    again = ",".join(statement[len(head) :] for statement in sent)
    assert again == ",".join(f"({i}, 'xxxxxxxxxx')" for i in range(12))


def test_upsert_names_every_column_of_its_table_once_and_adds_every_counter() -> None:
    for grouped, table in ((False, dashboard_buckets), (True, dashboard_group_buckets)):
        columns = buckets._upsert_columns(grouped)
        assert sorted(columns) == sorted(c.name for c in table.columns)
        key = BucketKey(1, "hour", datetime(2026, 1, 1), "branch" if grouped else "", "7")
        row = (*buckets._identity_values(key), *[0] * len(COUNTERS), 1, datetime(2026, 1, 2))
        assert len(row) == len(columns)
    updates = buckets._upsert_updates()
    for name in COUNTERS:
        assert f"{name} = {name} + VALUES({name})" in updates
    assert "version = version + 1" in updates


def test_reconciles_upsert_takes_the_values_in_place_of_the_stored_ones() -> None:
    updates = buckets._upsert_updates(additive=False)
    for name in COUNTERS:
        assert f"{name} = VALUES({name})" in updates
        assert not any(f"{name} + VALUES" in update for update in updates)
    assert "version = version + 1" in updates


def test_counters_of_values_follow_the_counter_order() -> None:
    values = list(range(len(COUNTERS)))
    assert Counters.of_values(values) == {name: i for i, name in enumerate(COUNTERS)}


@settings(max_examples=300)
@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_sql_datetime_sends_the_bytes_pymysql_sends_for_the_datetime(at: datetime) -> None:
    text = sql_datetime(at)
    assert isinstance(text, str)
    assert "'" + converters.escape_string(text) + "'" == converters.escape_datetime(at)


def test_sql_datetime_leaves_none_and_aware_datetimes_to_the_driver() -> None:
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert sql_datetime(None) is None
    assert sql_datetime(aware) is aware


@given(
    st.integers(1, 5),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    st.sampled_from([None, "UTC", "America/New_York", "Asia/Kolkata"]),
    st.sampled_from([None, 1, True, 2, "1"]),
    st.sampled_from([None, "agent_a", ""]),
)
def test_grouped_keys_are_the_bucket_keys_with_their_groups(
    company: int, at: datetime, zone: str | None, branch: object, agent: object
) -> None:
    # Cached by value and type: a branch True must not answer for a branch 1 ("True" vs "1").
    expected = aggregates.with_groups(aggregates.bucket_keys(company, at, zone), branch, agent)
    assert list(aggregates.grouped_keys(company, at, zone, branch, agent)) == expected


def test_grouped_keys_of_branch_1_and_branch_true_differ() -> None:
    at = datetime(2026, 3, 1, 10, 30)
    one = aggregates.grouped_keys(9, at, None, 1, None)
    true = aggregates.grouped_keys(9, at, None, True, None)
    assert {k.group for k in one if k.dimension == "branch"} == {"1"}
    assert {k.group for k in true if k.dimension == "branch"} == {"True"}


def test_many_row_writes_name_every_column() -> None:
    for kind, table in rows.TABLES.items():
        stamps = tuple(c for c in ("created_at", "updated_at") if c in table.c)
        every = statements._ALL[kind]
        assert sorted([*every, *stamps]) == sorted(c.name for c in table.columns)
        assert "id" not in statements._NO_ID[kind]
    assert statements.updates(("id", "status", "metadata")) == (
        "status = VALUES(status)",
        "metadata = VALUES(metadata)",
    )
    events = (*write.NEW_EVENT_FIELDS, "created_at")
    assert sorted(events) == sorted(c.name for c in webhook_events.columns if c.name != "id")


def test_tuples_get_what_sqlalchemy_would_have_bound() -> None:
    dialect = mysql_pymysql.dialect()
    columns = ("metadata", "successful", "started_at", "transcript", "cost_cents")
    converters = dict(statements._converters(calls, columns, dialect))
    row = ({"a": [1, "é"]}, True, datetime(2026, 1, 2, 3, 4, 5, 6000), "hi", Decimal("1.5"))
    converted = statements._converted(row, list(converters.items()))
    for i, name in enumerate(columns):
        processor = calls.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        expected = processor(row[i]) if processor else row[i]
        if isinstance(expected, datetime):
            assert converters[i](expected) == "2026-01-02 03:04:05.006000"
            continue
        assert converted[i] == expected
    assert set(converters) == {0, 1, 2}  # JSON, Boolean, the time; the rest as they are


def test_no_name_written_unquoted_needs_quoting() -> None:
    preparer = mysql_pymysql.dialect().identifier_preparer
    for table in (*rows.TABLES.values(), dashboard_buckets, dashboard_group_buckets):
        assert preparer.quote(table.name) == table.name
        for column in table.columns:
            assert preparer.quote(column.name) == column.name, column


def test_bucket_tables_have_no_sqlalchemy_conversions() -> None:
    # The bucket upsert hands values to pymysql as they are: that is only what SQLAlchemy
    # would have sent if no column type converts its values (JSON, Boolean do).
    dialect = mysql_pymysql.dialect()
    for table in (dashboard_buckets, dashboard_group_buckets):
        for column in table.columns:
            assert column.type.dialect_impl(dialect).bind_processor(dialect) is None, column
