"""Initial schema: tenants, customers, calls, appointments, webhook_events, dashboard_buckets.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DT = mysql.DATETIME(fsp=3)
NOW = sa.text("CURRENT_TIMESTAMP(3)")

COUNTERS = (
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
)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", DT, nullable=False, server_default=NOW),
        sa.Column("updated_at", DT, nullable=False, server_default=NOW),
    ]


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("1")),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_companies"),
    )
    op.create_table(
        "branches",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("phone_number", sa.String(32), nullable=False),
        sa.Column("retell_agent_id", sa.String(128), nullable=True),
        sa.Column("calcom_event_type_id", sa.BigInteger(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("1")),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_branches"),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name="fk_branches_company_id_companies"
        ),
        sa.UniqueConstraint("phone_number", name="uq_branches_phone_number"),
        sa.UniqueConstraint("calcom_event_type_id", name="uq_branches_calcom_event_type_id"),
    )
    op.create_index("ix_branches_company_id_is_active", "branches", ["company_id", "is_active"])
    op.create_index("ix_branches_retell_agent_id", "branches", ["retell_agent_id"])

    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("first_seen_at", DT, nullable=True),
        sa.Column("last_seen_at", DT, nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name="fk_customers_company_id_companies"
        ),
        sa.UniqueConstraint("company_id", "phone", name="uq_customers_company_id_phone"),
    )
    op.create_index("ix_customers_company_id_email", "customers", ["company_id", "email"])

    op.create_table(
        "calls",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("retell_call_id", sa.String(128), nullable=False),
        sa.Column("company_id", sa.BigInteger(), nullable=False),
        sa.Column("branch_id", sa.BigInteger(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("agent_id", sa.String(128), nullable=True),
        sa.Column("call_type", sa.String(32), nullable=True),
        sa.Column("direction", sa.String(16), nullable=True),
        sa.Column("from_number", sa.String(32), nullable=True),
        sa.Column("to_number", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("started_at", DT, nullable=True),
        sa.Column("ended_at", DT, nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("disconnection_reason", sa.String(64), nullable=True),
        sa.Column("in_voicemail", sa.Boolean(), nullable=True),
        sa.Column("successful", sa.Boolean(), nullable=True),
        sa.Column("sentiment", sa.String(16), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("transcript", mysql.MEDIUMTEXT(), nullable=True),
        sa.Column("recording_url", sa.String(2048), nullable=True),
        sa.Column("transfer_destination", sa.String(255), nullable=True),
        sa.Column("cost_cents", sa.Numeric(14, 4), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("last_event_type", sa.String(64), nullable=True),
        sa.Column("last_event_at", DT, nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name="fk_calls_company_id_companies"
        ),
        sa.ForeignKeyConstraint(["branch_id"], ["branches.id"], name="fk_calls_branch_id_branches"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_calls_customer_id_customers"
        ),
        sa.UniqueConstraint("retell_call_id", name="uq_calls_retell_call_id"),
    )
    op.create_index("ix_calls_company_id_created_at", "calls", ["company_id", "created_at"])
    op.create_index("ix_calls_customer_id_started_at", "calls", ["customer_id", "started_at"])

    op.create_table(
        "appointments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("calcom_uid", sa.String(128), nullable=False),
        sa.Column("calcom_booking_id", sa.BigInteger(), nullable=True),
        sa.Column("company_id", sa.BigInteger(), nullable=False),
        sa.Column("branch_id", sa.BigInteger(), nullable=True),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("call_id", sa.BigInteger(), nullable=True),
        sa.Column("retell_call_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("starts_at", DT, nullable=True),
        sa.Column("ends_at", DT, nullable=True),
        sa.Column("title", sa.String(512), nullable=True),
        sa.Column("rescheduled_from_uid", sa.String(128), nullable=True),
        sa.Column("cancellation_reason", sa.Text(), nullable=True),
        sa.Column("booked_at", DT, nullable=True),
        sa.Column("cancelled_at", DT, nullable=True),
        sa.Column("rescheduled_at", DT, nullable=True),
        sa.Column("no_show_at", DT, nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_appointments"),
        sa.ForeignKeyConstraint(
            ["company_id"], ["companies.id"], name="fk_appointments_company_id_companies"
        ),
        sa.ForeignKeyConstraint(
            ["branch_id"], ["branches.id"], name="fk_appointments_branch_id_branches"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_appointments_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], name="fk_appointments_call_id_calls"),
        sa.UniqueConstraint("calcom_uid", name="uq_appointments_calcom_uid"),
    )
    op.create_index(
        "ix_appointments_company_id_status_starts_at",
        "appointments",
        ["company_id", "status", "starts_at"],
    )
    op.create_index(
        "ix_appointments_customer_id_starts_at", "appointments", ["customer_id", "starts_at"]
    )
    op.create_index("ix_appointments_retell_call_id", "appointments", ["retell_call_id"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("company_id", sa.BigInteger(), nullable=True),
        sa.Column("kafka_topic", sa.String(255), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", DT, nullable=True),
        sa.Column("processed_at", DT, nullable=True),
        sa.Column("created_at", DT, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event_id"),
    )
    op.create_index(
        "ix_webhook_events_provider_event_id_created_at",
        "webhook_events",
        ["provider", "event_id", "created_at"],
    )
    op.create_index(
        "ix_webhook_events_status_created_at", "webhook_events", ["status", "created_at"]
    )

    op.create_table(
        "dashboard_buckets",
        sa.Column("company_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("granularity", sa.String(8), nullable=False),
        sa.Column("bucket_start", DT, nullable=False),
        *[
            sa.Column(
                name,
                sa.Numeric(18, 4) if name == "cost_cents_total" else sa.BigInteger(),
                nullable=False,
                server_default=sa.text("0"),
            )
            for name in COUNTERS
        ],
        sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", DT, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint(
            "company_id", "granularity", "bucket_start", name="pk_dashboard_buckets"
        ),
    )


def downgrade() -> None:
    op.drop_table("dashboard_buckets")
    op.drop_table("webhook_events")
    op.drop_table("appointments")
    op.drop_table("calls")
    op.drop_table("customers")
    op.drop_table("branches")
    op.drop_table("companies")
