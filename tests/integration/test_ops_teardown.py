"""``switchboard topics delete`` against the real broker: it deletes exactly this
environment's topics, and refuses while workers are in the group or records were never
applied. The real console script in a subprocess, a topic prefix and a consumer group of
the test's own."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline import topics
from pipeline.ops.teardown import owned_topics
from pipeline.settings import Settings
from tests.integration.conftest import base_settings, delete_topics
from tests.integration.test_cli_services import cli_env, run

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def scoped() -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:8]
    settings = base_settings().with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
    )
    try:
        yield settings
    finally:
        asyncio.run(delete_topics(settings))
        asyncio.run(_delete(settings, owned_topics(settings)))


async def _delete(settings: Settings, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        present = set(await admin.list_topics())
        if doomed := [n for n in names if n in present]:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def _listed(settings: Settings, names: list[str]) -> set[str]:
    """The topics Kafka lists once all of ``names`` are among them (a topic just created
    reaches the metadata a moment after CreateTopics returns)."""
    for _ in range(120):
        found = await _existing(settings)
        if set(names) <= found:
            return found
        await asyncio.sleep(0.25)
    return await _existing(settings)


async def _existing(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _set_up(settings: Settings, neighbour: str) -> None:
    """The environment as a worker leaves it (its topics, a changelog, the assignor's
    topic), two records on the Retell topic, and another environment's topic whose name
    starts like ours."""
    await topics.ensure_topics(settings, tables=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(f"{settings.consumer_group}-__assignor-__leader", 1, 1),
                NewTopic(neighbour, 1, 1),
            ]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(2):
            await producer.send_and_wait(settings.topic(topics.RETELL), b"{}", key=b"k%d" % n)
        await producer.send_and_wait(settings.topic(topics.DLQ), b"{}", key=b"k0")
    finally:
        await producer.stop()


def _worker(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topic(topics.RETELL),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


def test_topics_delete_refuses_then_deletes_exactly_this_environment(scoped: Settings) -> None:
    neighbour = f"{scoped.consumer_group}-v2-dashboard-changelog"
    asyncio.run(_set_up(scoped, neighbour))
    env = cli_env(
        SWITCHBOARD_TOPIC_PREFIX=scoped.topic_prefix,
        SWITCHBOARD_TOPIC_PARTITIONS=str(PARTITIONS),
        SWITCHBOARD_CONSUMER_GROUP=scoped.consumer_group,
    )
    mine = owned_topics(scoped)
    assert len(mine) == 6 and set(mine) <= asyncio.run(_listed(scoped, mine))

    unconfirmed = run(["topics", "delete"], env)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr

    dry = run(["topics", "delete", "--dry-run", "--json"], env)
    assert dry.returncode == 1, dry.stderr  # refused: nothing consumed the two records yet
    report = json.loads(dry.stdout)
    assert sorted(report["topics"]) == sorted(mine) and report["deleted"] == []
    assert report["unapplied"][scoped.topic(topics.RETELL)] == 2
    [blocker] = report["blockers"]
    assert "2 record(s) the group has not applied" in blocker
    assert report["dead_letters"] == 1

    async def consume_and_stay() -> tuple[int, str, str]:
        """A worker of the group applies both records and is still running."""
        worker = _worker(scoped)
        await worker.start()
        try:
            taken = 0
            while taken < 2:
                batch = await worker.getmany(timeout_ms=1000)
                taken += sum(len(records) for records in batch.values())
            await worker.commit()
            busy = await asyncio.to_thread(run, ["topics", "delete", "--yes"], env)
            return busy.returncode, busy.stdout, busy.stderr
        finally:
            await worker.stop()

    code, out, err = asyncio.run(consume_and_stay())
    assert code == 1, err
    assert "refused: 1 member(s) in consumer group" in out and "stop the workers" in out
    assert "has not applied" not in out  # the commit covers both records
    assert "note: webhooks.dlq holds 1 dead letter record(s)" in out
    assert set(mine) <= asyncio.run(_existing(scoped))

    done = run(["topics", "delete", "--yes"], env)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"deleted: {name}" for name in mine)
    left = asyncio.run(_existing(scoped))
    assert not set(mine) & left
    assert neighbour in left, "another environment's topic must stay"

    empty = run(["topics", "delete", "--yes"], env)
    assert empty.returncode == 0 and empty.stdout.strip() == "no topics of this environment exist"
    again = run(["topics"], env)  # recreated afresh under the same names
    assert again.returncode == 0, again.stderr
    assert all(line.split()[1] == "created" for line in again.stdout.splitlines())
    asyncio.run(_delete(scoped, [neighbour]))
