"""Lookups for `events find` and retention, and the erasure list.

Indexes on ``webhook_events``: ``correlation_id`` (support quotes the ``X-Correlation-ID``
the ingress answered), ``(company_id, created_at)`` (a company's events by time) and
``created_at`` (retention deletes by age). The ``erasures`` table holds the SHA-256 of each
erased phone number or e-mail address (docs/runbook.md, "Personal data").

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DT = mysql.DATETIME(fsp=3)
NOW = sa.text("CURRENT_TIMESTAMP(3)")


def upgrade() -> None:
    op.create_index("ix_webhook_events_correlation_id", "webhook_events", ["correlation_id"])
    op.create_index(
        "ix_webhook_events_company_id_created_at", "webhook_events", ["company_id", "created_at"]
    )
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", DT, nullable=False, server_default=NOW),
        sa.Column("updated_at", DT, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
        sa.UniqueConstraint("kind", "value_sha256", name="uq_erasures_kind_value_sha256"),
    )


def downgrade() -> None:
    op.drop_table("erasures")
    op.drop_index("ix_webhook_events_created_at", table_name="webhook_events")
    op.drop_index("ix_webhook_events_company_id_created_at", table_name="webhook_events")
    op.drop_index("ix_webhook_events_correlation_id", table_name="webhook_events")
