"""Integration fixtures: the real Kafka broker and the real MariaDB of ``scripts/stack.sh``.

Each test gets its own database (``switchboard_test_<hex>``, migrated to head) and its own
topic prefix, so tests never see each other's rows or records. A service that cannot be
reached fails the test: it never skips.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import Engine

from pipeline import database, topics
from pipeline.kafka import kafka_options
from pipeline.settings import Secret, Settings, load_settings
from testbed.databases import create_scratch_database, drop_scratch_database
from tests.support.tenants import seed_fixture_tenants

TEST_PARTITIONS = 3


def base_settings() -> Settings:
    return load_settings(os.environ)


TEST_DB_PREFIX = "switchboard_test_"


def create_test_database(settings: Settings) -> Settings:
    """A fresh, migrated database; returns settings pointing at it."""
    return create_scratch_database(settings, TEST_DB_PREFIX)


def drop_test_database(settings: Settings) -> None:
    drop_scratch_database(settings, TEST_DB_PREFIX, retry_for_s=30.0)


async def delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        names = [settings.topic(t) for t in topics.ALL_TOPICS]
        present = set(await admin.list_topics())
        doomed = [n for n in present if n in names or n.startswith(settings.topic_prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.fixture
def db_settings() -> Iterator[Settings]:
    """Settings with a fresh migrated database (no Kafka topics)."""
    scoped = create_test_database(base_settings())
    try:
        yield scoped
    finally:
        drop_test_database(scoped)


@pytest.fixture
def stack_settings(db_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a fresh database, this test's own topics (prefix ``t<hex>.``) and its
    own ingress spool directory (a spool left by another test must never be forwarded here)."""
    suffix = uuid.uuid4().hex[:8]
    scoped = db_settings.with_(
        spool_dir=tmp_path / "ingress-spool",
        topic_prefix=f"t{suffix}.",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
        retell_api_keys=(Secret("test-retell-key"),),
        calcom_webhook_secrets=(Secret("test-calcom-secret"),),
        analyst_tokens=(Secret("test-analyst-token"),),
    )
    asyncio.run(topics.ensure_topics(scoped))
    try:
        yield scoped
    finally:
        asyncio.run(delete_topics(scoped))


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    eng = database.create_db_engine(db_settings, pool_size=2)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def fixture_tenants(engine: Engine) -> None:
    """The test database holds the fixture tenants (``tests/support/tenants.py``): a module
    whose every test applies records marks itself ``usefixtures("fixture_tenants")``."""
    seed_fixture_tenants(engine)
