"""dashboard_group_buckets: the dashboard counters per branch and per agent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
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

    # The group key is an agent id or a branch id: compared byte for byte like the other
    # identifier columns (migration 0004), so agent ids differing only by case or trailing
    # spaces stay different groups.
    version = str(op.get_bind().execute(sa.text("SELECT VERSION()")).scalar())
    collation = "utf8mb4_nopad_bin" if "mariadb" in version.lower() else "utf8mb4_0900_bin"
    op.execute(
        "ALTER TABLE `dashboard_group_buckets` MODIFY `group_key` VARCHAR(128)"
        f" CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("dashboard_group_buckets")
