"""The MySQL schema of docs/data-model.md, as SQLAlchemy Core tables.

Core, not ORM: the worker writes in multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``
batches, and every persistence function takes the connection as its first argument.
The naming convention makes constraint and index names stable, so Alembic migrations and
``information_schema`` checks can name them. Times are UTC ``DATETIME(3)``; enum-like
provider values are plain strings, because providers add values over time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME, MEDIUMTEXT

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

DT = DATETIME(fsp=3)
NOW = text("CURRENT_TIMESTAMP(3)")

COUNTERS: tuple[str, ...] = (
    "calls_total",
    "calls_inbound",
    "calls_outbound",
    "calls_connected",
    "calls_not_connected",
    "calls_voicemail",
    "calls_transferred",
    "calls_successful",
    "duration_ms_total",
    "cost_cents_total",
    "sentiment_positive",
    "sentiment_neutral",
    "sentiment_negative",
    "appointments_booked",
    "appointments_cancelled",
    "appointments_rescheduled",
    "appointments_no_show",
    # booking_conversion = calls_booked / calls_inbound_connected (docs/analyst.md): connected
    # inbound calls, those of them at least one booking names (in the call's bucket), and
    # bookings that name no call (in the booking's bucket).
    "calls_inbound_connected",
    "calls_booked",
    "appointments_without_call",
)

# Counters that are sums of fractional cents; every other counter is an integer count.
DECIMAL_COUNTERS: frozenset[str] = frozenset({"cost_cents_total"})


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DT, nullable=False, server_default=NOW),
        Column("updated_at", DT, nullable=False, server_default=NOW),
    ]


companies = Table(
    "companies",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("is_active", Boolean, nullable=False, server_default=text("1")),
    *_timestamps(),
)

branches = Table(
    "branches",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("phone_number", String(32), nullable=False),
    Column("retell_agent_id", String(128), nullable=True),
    Column("calcom_event_type_id", BigInteger, nullable=True),
    Column("is_active", Boolean, nullable=False, server_default=text("1")),
    *_timestamps(),
    UniqueConstraint("phone_number"),
    UniqueConstraint("calcom_event_type_id"),
    Index(None, "company_id", "is_active"),
    Index(None, "retell_agent_id"),
)

customers = Table(
    "customers",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("phone", String(32), nullable=True),
    Column("email", String(320), nullable=True),
    Column("name", String(255), nullable=True),
    Column("first_seen_at", DT, nullable=True),
    Column("last_seen_at", DT, nullable=True),
    *_timestamps(),
    UniqueConstraint("company_id", "phone"),
    Index(None, "company_id", "email"),
)

calls = Table(
    "calls",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("retell_call_id", String(128), nullable=False),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("branch_id", BigInteger, ForeignKey("branches.id"), nullable=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=True),
    Column("agent_id", String(128), nullable=True),
    Column("call_type", String(32), nullable=True),
    Column("direction", String(16), nullable=True),
    Column("from_number", String(32), nullable=True),
    Column("to_number", String(32), nullable=True),
    Column("status", String(32), nullable=True),
    Column("started_at", DT, nullable=True),
    Column("ended_at", DT, nullable=True),
    Column("duration_ms", BigInteger, nullable=True),
    Column("disconnection_reason", String(64), nullable=True),
    Column("in_voicemail", Boolean, nullable=True),
    Column("successful", Boolean, nullable=True),
    Column("sentiment", String(16), nullable=True),
    Column("summary", Text, nullable=True),
    Column("transcript", MEDIUMTEXT, nullable=True),
    Column("recording_url", String(2048), nullable=True),
    # Beyond docs/data-model.md: kept so that `reconcile` can recount calls_transferred from rows.
    Column("transfer_destination", String(255), nullable=True),
    # Retell's combined_cost is in cents with fractions (21.4): keep them, never round.
    Column("cost_cents", Numeric(14, 4), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("last_event_type", String(64), nullable=True),
    Column("last_event_at", DT, nullable=True),
    *_timestamps(),
    UniqueConstraint("retell_call_id"),
    Index(None, "company_id", "created_at"),
    Index(None, "customer_id", "started_at"),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("calcom_uid", String(128), nullable=False),
    Column("calcom_booking_id", BigInteger, nullable=True),
    Column("company_id", BigInteger, ForeignKey("companies.id"), nullable=False),
    Column("branch_id", BigInteger, ForeignKey("branches.id"), nullable=True),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=True),
    Column("call_id", BigInteger, ForeignKey("calls.id"), nullable=True),
    # Beyond docs/data-model.md: metadata.retell_call_id as sent, so call_id links whatever the order.
    Column("retell_call_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("starts_at", DT, nullable=True),
    Column("ends_at", DT, nullable=True),
    Column("title", String(512), nullable=True),
    Column("rescheduled_from_uid", String(128), nullable=True),
    Column("cancellation_reason", Text, nullable=True),
    Column("booked_at", DT, nullable=True),
    Column("cancelled_at", DT, nullable=True),
    Column("rescheduled_at", DT, nullable=True),
    Column("no_show_at", DT, nullable=True),
    *_timestamps(),
    UniqueConstraint("calcom_uid"),
    Index(None, "company_id", "status", "starts_at"),
    Index(None, "customer_id", "starts_at"),
    Index(None, "retell_call_id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("provider", String(16), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("correlation_id", String(64), nullable=True),
    Column("company_id", BigInteger, nullable=True),
    Column("kafka_topic", String(255), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("received_at", DT, nullable=True),
    Column("processed_at", DT, nullable=True),
    Column("created_at", DT, nullable=False, server_default=NOW),
    UniqueConstraint("provider", "event_id"),
    Index(None, "provider", "event_id", "created_at"),
    Index(None, "status", "created_at"),
    # Support asks by the X-Correlation-ID the ingress answered (`events find`); a
    # company's events by time (`events find --company`); retention deletes by age.
    Index(None, "correlation_id"),
    Index(None, "company_id", "created_at"),
    Index(None, "created_at"),
    # Where each row's record sits: the recogniser reads a batch's stretch of a partition
    # with one range read (pipeline/apply/lookup.py).
    Index(None, "kafka_topic", "kafka_partition", "kafka_offset"),
)

# People who asked to be erased (`switchboard customers erase`): the kind of identifier
# and the SHA-256 of its normalised value (pipeline/erasures.py), never the value itself.
# The apply path consults it, so that no replay or late webhook stores their data again.
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("value_sha256", String(64), nullable=False),
    *_timestamps(),
    UniqueConstraint("kind", "value_sha256"),
)

dashboard_buckets = Table(
    "dashboard_buckets",
    metadata,
    Column("company_id", BigInteger, primary_key=True, autoincrement=False),
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", DT, primary_key=True),
    *[
        Column(
            name,
            Numeric(18, 4) if name in DECIMAL_COUNTERS else BigInteger,
            nullable=False,
            server_default=text("0"),
        )
        for name in COUNTERS
    ],
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DT, nullable=False, server_default=NOW),
)


# Beyond docs/data-model.md: how far `switchboard backfill` has compared each provider's API
# with what arrived (docs/backfill.md). One row per provider.
backfill_watermarks = Table(
    "backfill_watermarks",
    metadata,
    Column("provider", String(16), primary_key=True),
    # Everything the provider reported before this instant has been compared (and healed).
    Column("covered_until", DT, nullable=True),
    Column("last_window_start", DT, nullable=True),
    Column("last_window_end", DT, nullable=True),
    Column("last_run_at", DT, nullable=True),
    Column("last_success_at", DT, nullable=True),
    Column("last_written", BigInteger, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("updated_at", DT, nullable=False, server_default=NOW),
)


# Beyond docs/data-model.md's schema: the same counters per branch and per Retell agent,
# maintained in the same transaction as dashboard_buckets (docs/analyst.md, "Breakdowns").
# group_key is the branch id (decimal) or the agent id; "" holds what has neither.
dashboard_group_buckets = Table(
    "dashboard_group_buckets",
    metadata,
    Column("company_id", BigInteger, primary_key=True, autoincrement=False),
    Column("dimension", String(8), primary_key=True),
    Column("group_key", String(128), primary_key=True),
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", DT, primary_key=True),
    *[
        Column(
            name,
            Numeric(18, 4) if name in DECIMAL_COUNTERS else BigInteger,
            nullable=False,
            server_default=text("0"),
        )
        for name in COUNTERS
    ],
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DT, nullable=False, server_default=NOW),
)
