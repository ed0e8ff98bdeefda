"""backfill_watermarks: how far `switchboard backfill` has compared each provider's API.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DT = mysql.DATETIME(fsp=3)


def upgrade() -> None:
    op.create_table(
        "backfill_watermarks",
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("covered_until", DT, nullable=True),
        sa.Column("last_window_start", DT, nullable=True),
        sa.Column("last_window_end", DT, nullable=True),
        sa.Column("last_run_at", DT, nullable=True),
        sa.Column("last_success_at", DT, nullable=True),
        sa.Column("last_written", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", DT, nullable=False, server_default=sa.text("CURRENT_TIMESTAMP(3)")),
        sa.PrimaryKeyConstraint("provider", name="pk_backfill_watermarks"),
    )


def downgrade() -> None:
    op.drop_table("backfill_watermarks")
