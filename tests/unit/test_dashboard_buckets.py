"""The bucket tables' upsert is one constant statement that pymysql sends as one multi-row
INSERT; its rows and read-back keep the column order of ``COUNTERS``."""

from __future__ import annotations

from datetime import datetime

from pymysql.cursors import RE_INSERT_VALUES

from pipeline.dashboard import buckets
from pipeline.dashboard.aggregates import BucketKey
from pipeline.dashboard.counters import Counters
from pipeline.models import COUNTERS, dashboard_buckets, dashboard_group_buckets


def test_upsert_is_rewritten_into_one_multi_row_insert_by_pymysql() -> None:
    # Anything but placeholders in VALUES (...), or a parameter after it, and pymysql's
    # executemany sends one statement per row instead.
    for grouped in (False, True):
        assert RE_INSERT_VALUES.match(buckets._upsert_sql(grouped))


def test_upsert_names_every_column_of_its_table_once_and_adds_every_counter() -> None:
    for grouped, table in ((False, dashboard_buckets), (True, dashboard_group_buckets)):
        sql = buckets._upsert_sql(grouped)
        head, _, tail = sql.partition(" VALUES ")
        columns = head.split("(", 1)[1].rstrip(")").split(", ")
        assert sorted(columns) == sorted(c.name for c in table.columns)
        key = BucketKey(1, "hour", datetime(2026, 1, 1), "branch" if grouped else "", "7")
        row = (*buckets._identity_values(key), *[0] * len(COUNTERS), 1, datetime(2026, 1, 2))
        assert len(row) == len(columns) == tail.split(")")[0].count("%s")
        for name in COUNTERS:
            assert f"{name} = {name} + VALUES({name})" in tail
        assert "version = version + 1" in tail


def test_counters_of_values_follow_the_counter_order() -> None:
    values = list(range(len(COUNTERS)))
    assert Counters.of_values(values) == {name: i for i, name in enumerate(COUNTERS)}
