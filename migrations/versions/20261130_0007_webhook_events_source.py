"""An index on where each ``webhook_events`` row's record sits in Kafka: topic, partition
and offset.

The recogniser of already-applied records (``pipeline/apply/recognise.py``) reads the rows
of a batch's stretch of each partition with one range read of this index, instead of
looking up hundreds of event ids one by one in the unique key (docs/benchmarks.md, 1b).

Additive: MariaDB and MySQL build a secondary index in place without blocking writes
(online DDL), so the workers and ingress keep running while it is built; on a table of
millions of rows that takes minutes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAME = "ix_webhook_events_kafka_topic_kafka_partition_kafka_offset"


def upgrade() -> None:
    op.create_index(NAME, "webhook_events", ["kafka_topic", "kafka_partition", "kafka_offset"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="webhook_events")
