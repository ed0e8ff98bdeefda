"""Counters for a booking conversion that cannot exceed 1: calls_inbound_connected,
calls_booked and appointments_without_call, in dashboard_buckets and
dashboard_group_buckets.

Existing rows start at 0; ``switchboard reconcile --fix`` once after the upgrade fills them
from the rows (docs/analyst.md, "The counters").

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("dashboard_buckets", "dashboard_group_buckets")
COUNTERS = ("calls_inbound_connected", "calls_booked", "appointments_without_call")


def upgrade() -> None:
    for table in TABLES:
        for name in COUNTERS:
            op.add_column(
                table,
                sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")),
            )


def downgrade() -> None:
    for table in TABLES:
        for name in COUNTERS:
            op.drop_column(table, name)
