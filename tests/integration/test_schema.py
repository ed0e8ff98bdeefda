"""The migrated schema against docs/data-model.md, read back from ``information_schema`` of a real
MariaDB; migrations that go down and up again; models and migrations that agree."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine, make_url

from pipeline import database, models
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

SPEC_COLUMNS: dict[str, set[str]] = {
    "companies": {"id", "name", "timezone", "is_active", "created_at", "updated_at"},
    "branches": {
        "id", "company_id", "name", "phone_number", "retell_agent_id", "calcom_event_type_id",
        "is_active", "created_at", "updated_at",
    },
    "customers": {
        "id", "company_id", "phone", "email", "name", "first_seen_at", "last_seen_at",
        "created_at", "updated_at",
    },
    "calls": {
        "id", "retell_call_id", "company_id", "branch_id", "customer_id", "agent_id",
        "call_type", "direction", "from_number", "to_number", "status", "started_at",
        "ended_at", "duration_ms", "disconnection_reason", "in_voicemail", "successful",
        "sentiment", "summary", "transcript", "recording_url", "cost_cents", "metadata",
        "last_event_type", "last_event_at", "created_at", "updated_at",
    },
    "appointments": {
        "id", "calcom_uid", "calcom_booking_id", "company_id", "branch_id", "customer_id",
        "call_id", "status", "starts_at", "ends_at", "title", "rescheduled_from_uid",
        "cancellation_reason", "booked_at", "cancelled_at", "rescheduled_at", "no_show_at",
        "created_at", "updated_at",
    },
    "webhook_events": {
        "id", "provider", "event_id", "event_type", "correlation_id", "company_id",
        "kafka_topic", "kafka_partition", "kafka_offset", "payload_sha256", "status", "error",
        "received_at", "processed_at", "created_at",
    },
    "dashboard_buckets": {
        "company_id", "granularity", "bucket_start", *models.COUNTERS, "version", "updated_at",
    },
}  # fmt: skip

SPEC_UNIQUE: dict[str, set[tuple[str, ...]]] = {
    "webhook_events": {("provider", "event_id")},
    "branches": {("phone_number",), ("calcom_event_type_id",)},
    "customers": {("company_id", "phone")},
    "calls": {("retell_call_id",)},
    "appointments": {("calcom_uid",)},
}

SPEC_INDEXES: dict[str, set[tuple[str, ...]]] = {
    "appointments": {("company_id", "status", "starts_at"), ("customer_id", "starts_at")},
    "customers": {("company_id", "email")},
    "calls": {("company_id", "created_at"), ("customer_id", "started_at")},
    "branches": {("company_id", "is_active")},
    "webhook_events": {
        ("provider", "event_id", "created_at"),
        ("status", "created_at"),
        ("correlation_id",),  # `events find --correlation-id`
    },
}

# Nullability the contract states outright.
SPEC_NULLABLE = {
    ("branches", "calcom_event_type_id"),
    ("customers", "phone"),
    ("customers", "email"),
    ("appointments", "call_id"),
}


def schema_name(settings: Settings) -> str:
    name = make_url(settings.database_url.reveal()).database
    assert name and name.startswith("switchboard_test_")
    return name


def rows(conn: Connection, sql: str, schema: str) -> list[Any]:
    return list(conn.execute(text(sql), {"schema": schema}).mappings())


def columns(conn: Connection, schema: str) -> dict[tuple[str, str], Any]:
    return {
        (r["TABLE_NAME"], r["COLUMN_NAME"]): r
        for r in rows(
            conn,
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, DATETIME_PRECISION,"
            " IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :schema",
            schema,
        )
    }


def indexes(conn: Connection, schema: str) -> dict[tuple[str, str], tuple[bool, tuple[str, ...]]]:
    """(table, index name) -> (unique, columns in index order)."""
    parts: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    unique: dict[tuple[str, str], bool] = {}
    for r in rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME"
        " FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :schema",
        schema,
    ):
        key = (r["TABLE_NAME"], r["INDEX_NAME"])
        parts[key].append((r["SEQ_IN_INDEX"], r["COLUMN_NAME"]))
        unique[key] = not r["NON_UNIQUE"]
    return {k: (unique[k], tuple(c for _, c in sorted(v))) for k, v in parts.items()}


def table_names(conn: Connection, schema: str) -> set[str]:
    return {
        r["TABLE_NAME"]
        for r in rows(
            conn,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :schema",
            schema,
        )
    }


def snapshot(engine: Engine, schema: str) -> tuple[Any, ...]:
    """Everything information_schema says about the tables, comparable across runs."""
    with engine.connect() as conn:
        cols = {k: dict(v) for k, v in columns(conn, schema).items()}
        return (sorted(table_names(conn, schema)), sorted(cols.items()), sorted(indexes(conn, schema).items()))  # fmt: skip


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(database.alembic_config(settings)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# ------------------------------------------------------------------ tables and columns


def test_every_spec_table_and_column_exists(db_settings: Settings, engine: Engine) -> None:
    schema = schema_name(db_settings)
    with engine.connect() as conn:
        present = columns(conn, schema)
        tables = table_names(conn, schema)
    assert set(SPEC_COLUMNS) | {"alembic_version"} <= tables
    missing = [
        f"{table}.{column}"
        for table, wanted in SPEC_COLUMNS.items()
        for column in sorted(wanted)
        if (table, column) not in present
    ]
    assert not missing, missing


def test_tables_are_innodb_utf8mb4(db_settings: Settings, engine: Engine) -> None:
    """Transactions and foreign keys need InnoDB; E.164 numbers and names need utf8mb4."""
    with engine.connect() as conn:
        found = rows(
            conn,
            "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = :schema",
            schema_name(db_settings),
        )
    for r in found:
        assert r["ENGINE"] == "InnoDB", r
        assert r["TABLE_COLLATION"].startswith("utf8mb4"), r


def test_time_columns_are_datetime_3(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        present = columns(conn, schema_name(db_settings))
    time_columns = {k: v for k, v in present.items() if v["DATA_TYPE"] in {"datetime", "timestamp"}}
    # Every *_at column of the contract, plus bucket_start, is a time column...
    expected = {(t, c) for t, cs in SPEC_COLUMNS.items() for c in cs if c.endswith("_at")} | {
        ("dashboard_buckets", "bucket_start")
    }
    assert expected <= set(time_columns), sorted(expected - set(time_columns))
    # ...and every time column is DATETIME(3): UTC, no TIMESTAMP (2038, session time zone).
    wrong = {
        f"{t}.{c}": v["COLUMN_TYPE"]
        for (t, c), v in time_columns.items()
        if v["DATA_TYPE"] != "datetime" or v["DATETIME_PRECISION"] != 3
    }
    assert not wrong, wrong


def test_enum_like_values_are_strings(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        present = columns(conn, schema_name(db_settings))
    assert not [k for k, v in present.items() if v["DATA_TYPE"] in {"enum", "set"}]
    for key in [
        ("webhook_events", "provider"), ("webhook_events", "status"), ("appointments", "status"),
        ("calls", "status"), ("calls", "direction"), ("dashboard_buckets", "granularity"),
    ]:  # fmt: skip
        assert present[key]["DATA_TYPE"] == "varchar", key


def test_spec_nullable_columns(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        present = columns(conn, schema_name(db_settings))
    for key in SPEC_NULLABLE:
        assert present[key]["IS_NULLABLE"] == "YES", key
    for table in SPEC_UNIQUE:  # identifiers we dedupe on can never be NULL
        for cols in SPEC_UNIQUE[table]:
            for column in cols:
                if (table, column) not in SPEC_NULLABLE:
                    assert present[(table, column)]["IS_NULLABLE"] == "NO", (table, column)


# ------------------------------------------------------------------ keys and indexes


def test_unique_keys(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        found = indexes(conn, schema_name(db_settings))
    unique: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for (table, name), (is_unique, cols) in found.items():
        if is_unique and name != "PRIMARY":
            unique[table].add(cols)
    for table, wanted in SPEC_UNIQUE.items():
        assert wanted <= unique[table], (table, unique[table])


def test_indexes(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        found = indexes(conn, schema_name(db_settings))
    by_table: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for (table, _name), (_unique, cols) in found.items():
        by_table[table].add(cols)
    for table, wanted in SPEC_INDEXES.items():
        assert wanted <= by_table[table], (table, sorted(wanted - by_table[table]))


def test_index_names_follow_the_naming_convention(db_settings: Settings, engine: Engine) -> None:
    """Stable names (a naming convention), so later migrations can drop/alter them by name."""
    with engine.connect() as conn:
        found = indexes(conn, schema_name(db_settings))
    for (table, name), (is_unique, cols) in found.items():
        if name == "PRIMARY" or table == "alembic_version":
            continue
        if is_unique:
            assert name == f"uq_{table}_{'_'.join(cols)}", (table, name)
        elif not name.startswith("fk_"):  # InnoDB's implicit index for a foreign key
            assert name == f"ix_{table}_{'_'.join(cols)}", (table, name)


def test_dashboard_buckets_primary_key(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        found = indexes(conn, schema_name(db_settings))
    assert found[("dashboard_buckets", "PRIMARY")] == (
        True,
        ("company_id", "granularity", "bucket_start"),
    )
    for table in set(SPEC_COLUMNS) - {"dashboard_buckets"}:
        assert found[(table, "PRIMARY")] == (True, ("id",)), table


def test_unique_webhook_event_is_enforced(db_settings: Settings, engine: Engine) -> None:
    """The dedup key is a real constraint, not just an index with a unique-sounding name."""
    from sqlalchemy.exc import IntegrityError

    row = {
        "provider": "retell", "event_id": "call_ended:abc", "event_type": "call_ended",
        "kafka_topic": "webhooks.retell", "kafka_partition": 0, "kafka_offset": 1,
        "payload_sha256": "0" * 64, "status": "applied",
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(models.webhook_events.insert(), row)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(models.webhook_events.insert(), {**row, "kafka_offset": 2})
    with engine.begin() as conn:  # same event id from the other provider is a different event
        conn.execute(models.webhook_events.insert(), {**row, "provider": "calcom"})


# ------------------------------------------------------------------ migrations


def test_migrate_again_is_a_no_op(db_settings: Settings, engine: Engine) -> None:
    schema = schema_name(db_settings)
    head = head_revision(db_settings)
    assert head is not None
    assert current_revision(engine) == head
    before = snapshot(engine, schema)
    database.migrate(db_settings)
    database.migrate(db_settings)
    assert current_revision(engine) == head
    assert snapshot(engine, schema) == before


def test_downgrade_to_base_and_up_again(db_settings: Settings, engine: Engine) -> None:
    schema = schema_name(db_settings)
    before = snapshot(engine, schema)
    database.downgrade(db_settings, "base")
    with engine.connect() as conn:
        assert table_names(conn, schema) == {"alembic_version"}
        assert conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 0
    assert current_revision(engine) is None
    database.migrate(db_settings)
    assert current_revision(engine) == head_revision(db_settings)
    assert snapshot(engine, schema) == before


def _default_text(clause: Any) -> str | None:
    if clause is None:
        return None
    arg = clause.arg
    return str(getattr(arg, "text", arg))


def _same_number(db_default: str | None, model_default: str | None) -> bool:
    def number(raw: str | None) -> Decimal | None:
        try:
            return None if raw is None else Decimal(raw.strip().strip("'"))
        except InvalidOperation:
            return None

    a, b = number(db_default), number(model_default)
    return a is not None and a == b


def _is_noise(diff: Any) -> bool:
    """MariaDB reports the default of a DECIMAL(18,4) column declared ``DEFAULT 0`` as
    ``0.0000``, and Alembic compares default texts: same value, different spelling. That is
    the only difference ignored; any other default change, and any other kind of difference
    (tables, columns, types, nullability, indexes, unique and foreign keys), fails the test.

    Alembic reports column changes as a list of tuples, everything else as one tuple.
    """
    if not isinstance(diff, list) or len(diff) != 1 or diff[0][0] != "modify_default":
        return False
    _op, _schema, _table, _column, _existing, db_default, model_default = diff[0]
    return _same_number(_default_text(db_default), _default_text(model_default))


def test_models_and_migrations_agree(db_settings: Settings, engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diffs = compare_metadata(context, models.metadata)
    real = [d for d in diffs if not _is_noise(d)]
    assert not real, real
    # The ignored ones are exactly the DECIMAL counters' defaults, nothing that slipped in.
    ignored = {(d[0][2], d[0][3]) for d in diffs if _is_noise(d)}
    assert ignored <= {
        (table, c)
        for table in ("dashboard_buckets", "dashboard_group_buckets")
        for c in models.DECIMAL_COUNTERS
    }, ignored


def test_noise_filter_keeps_real_differences() -> None:
    class Clause:
        def __init__(self, value: str) -> None:
            self.arg = value

    def modify_default(db: str, model: str) -> list[Any]:
        return [("modify_default", None, "t", "c", {}, Clause(db), Clause(model))]

    assert _is_noise(modify_default("0.0000", "0"))
    assert not _is_noise(modify_default("1.0000", "0"))
    assert not _is_noise(modify_default("'UTC'", "'utc'"))
    assert not _is_noise([("modify_nullable", None, "t", "c", {}, True, False)])
    assert not _is_noise(("add_column", None, "t", object()))
    assert not _is_noise(("remove_index", object()))


def test_comparison_would_see_a_drift(db_settings: Settings, engine: Engine) -> None:
    """Guard against a comparison that looks at nothing (wrong schema, no reflection)."""
    from sqlalchemy import Column, MetaData, String

    drifted = MetaData(naming_convention=models.NAMING_CONVENTION)
    for table in models.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["calls"].append_column(Column("not_in_migrations", String(8)))
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), drifted)
    assert [d[0] for d in diffs if isinstance(d, tuple)] == ["add_column"], diffs
