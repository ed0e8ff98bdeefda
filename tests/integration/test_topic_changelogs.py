"""The worker's preflight creates its tables' changelog topics before Faust starts, with the
partition count of the topics that feed them, compacted. Left to Faust, a changelog created
at a worker's first start on a three-broker cluster was missing from the metadata at the
first assignment and the dashboard agent crashed with PartitionsMismatch ("0 partitions")
until a restart (found by tests/faults/test_cluster_broker_loss.py)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient

from pipeline import topics
from pipeline.settings import Settings
from tables.dashboard import TABLE_NAME
from tests.integration.conftest import base_settings, delete_topics


async def describe(settings: Settings, name: str) -> tuple[int, str | None]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([name])
        configs = await topics.describe_configs(admin, [name])
        policy = configs[name].get("cleanup.policy")
        return len(described["partitions"]), policy.value if policy else None
    finally:
        await admin.close()


async def drop(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


def test_the_worker_preflight_creates_the_table_changelogs() -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = base_settings().with_(
        topic_prefix=f"t{suffix}.", topic_partitions=3, consumer_group=f"switchboard-test-{suffix}"
    )
    changelog = topics.changelog_topic(settings, TABLE_NAME)
    assert changelog == f"switchboard-test-{suffix}-dashboard-changelog"  # Faust's own name
    try:
        reports = asyncio.run(topics.ensure_topics(settings, tables=True))
        assert {r.name: r.action for r in reports}[changelog] == "created"
        assert asyncio.run(describe(settings, changelog)) == (3, "compact")
        again = asyncio.run(topics.ensure_topics(settings, tables=True))
        assert {r.name: r.action for r in again}[changelog] == "ok"
        plain = asyncio.run(topics.ensure_topics(settings))
        assert changelog not in {r.name for r in plain}  # `switchboard topics` leaves it
    finally:
        asyncio.run(delete_topics(settings))
        asyncio.run(drop(settings, changelog))
