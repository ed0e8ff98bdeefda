"""Topic configs change key by key (IncrementalAlterConfigs), never as a whole set.

``switchboard topics`` runs at every worker start. With the legacy AlterConfigs it replaced
a topic's whole set of overrides, so an operator's ``retention.ms`` reverted to the broker
default at the next worker start. Against the real broker: an operator's overrides survive
``ensure_topics``, our own keys are put back when they drift, and removing a key goes back
to the broker's default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline import topics
from pipeline.providers import calcom
from pipeline.providers import retell as retell_provider
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


async def _configs(settings: Settings, name: str) -> dict[str, topics.ConfigValue]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return (await topics.describe_configs(admin, [settings.topic(name)]))[settings.topic(name)]
    finally:
        await admin.close()


async def _alter(settings: Settings, name: str, keys: dict[str, str | None]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await topics.alter_configs(admin, {settings.topic(name): keys})
    finally:
        await admin.close()


def _settled(
    settings: Settings, name: str, done: Callable[[dict[str, topics.ConfigValue]], bool]
) -> dict[str, topics.ConfigValue]:
    """The topic's configs once ``done`` holds: a broker answers DescribeConfigs from its
    metadata cache, which catches up with a committed change a moment later."""
    deadline = time.monotonic() + 30
    while True:
        found = asyncio.run(_configs(settings, name))
        if done(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_operator_overrides_survive_topics_and_our_keys_are_restored(
    stack_settings: Settings,
) -> None:
    retell = retell_provider.TOPIC
    ours = topics._topic_configs(stack_settings)
    asyncio.run(
        _alter(
            stack_settings,
            retell,
            {"retention.ms": "987654321", "cleanup.policy": "delete", "max.message.bytes": "2000"},
        )
    )
    drifted = _settled(stack_settings, retell, lambda c: c["max.message.bytes"].value == "2000")
    assert drifted["retention.ms"] == topics.ConfigValue("987654321", topics.TOPIC_OVERRIDE)
    assert drifted["max.message.bytes"].value == "2000"

    reports = asyncio.run(topics.ensure_topics(stack_settings))
    assert {r.action for r in reports} == {"ok"}
    after = _settled(stack_settings, retell, lambda c: c["max.message.bytes"].value != "2000")
    assert after["retention.ms"] == topics.ConfigValue("987654321", topics.TOPIC_OVERRIDE)
    assert after["cleanup.policy"].overridden
    assert after["max.message.bytes"].value == ours["max.message.bytes"]
    assert after["min.insync.replicas"].value == ours["min.insync.replicas"]
    # The other topics were not touched by the change to this one.
    calcom_retention = asyncio.run(_configs(stack_settings, calcom.TOPIC))["retention.ms"]
    assert calcom_retention.value == topics.retention_ms(stack_settings)  # as created

    asyncio.run(_alter(stack_settings, retell, {"retention.ms": None}))
    back = _settled(stack_settings, retell, lambda c: not c["retention.ms"].overridden)
    assert not back["retention.ms"].overridden and back["retention.ms"].value != "987654321"
    assert back["cleanup.policy"].overridden  # removing one key leaves the others


def test_a_refused_change_fails_in_one_line(stack_settings: Settings) -> None:
    with pytest.raises(topics.SwitchboardError, match="could not change topic configs: .*retell"):
        asyncio.run(_alter(stack_settings, retell_provider.TOPIC, {"retention.ms": "not-a-number"}))
