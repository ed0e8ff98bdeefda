"""dashboard_group_buckets: the dashboard counters per branch and per agent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DT = mysql.DATETIME(fsp=3)
NOW = sa.text("CURRENT_TIMESTAMP(3)")

# The counters as they were when this table was created (a migration never follows the
# model's list: a later counter gets its own migration).
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


def upgrade() -> None:
    op.create_table(
        "dashboard_group_buckets",
        sa.Column("company_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("dimension", sa.String(8), nullable=False),
        sa.Column("group_key", sa.String(128), nullable=False),
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
            "company_id",
            "dimension",
            "group_key",
            "granularity",
            "bucket_start",
            name="pk_dashboard_group_buckets",
        ),
    )


def downgrade() -> None:
    op.drop_table("dashboard_group_buckets")
