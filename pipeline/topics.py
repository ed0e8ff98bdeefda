"""Kafka topics of docs/architecture.md: their names, and an idempotent create-or-validate.

External topics are created before any worker starts (Faust raises ``PartitionsMismatch``
if a source topic and the table it feeds disagree). Internal topics are ``switchboard-*``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from pipeline.errors import KafkaUnavailable, SwitchboardError
from pipeline.settings import Settings

RETELL = "webhooks.retell"
CALCOM = "webhooks.calcom"
DLQ = "webhooks.dlq"
# Bucket snapshots published after each apply transaction, keyed by company id; they feed
# the dashboard table, so they must have the table changelog's partition count.
SNAPSHOTS = "switchboard-bucket-snapshots"

WEBHOOK_TOPICS = (RETELL, CALCOM)
ALL_TOPICS = (RETELL, CALCOM, DLQ, SNAPSHOTS)


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    action: str  # "created" | "ok" | "mismatch"
    partitions: int
    detail: str = ""


# Room for the largest accepted body plus headers (and DLQ headers) in one record.
RECORD_HEADROOM = 64 * 1024


def _topic_configs(settings: Settings) -> dict[str, str]:
    return {
        "min.insync.replicas": str(min(2, settings.topic_replication)),
        "max.message.bytes": str(settings.max_body_bytes + RECORD_HEADROOM),
    }


async def ensure_topics(
    settings: Settings, names: tuple[str, ...] = ALL_TOPICS
) -> list[TopicReport]:
    """Create missing topics; report existing ones whose partition count differs."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        full = {settings.topic(n): n for n in names}
        existing = await _describe(admin, list(full))
        missing = [t for t in full if t not in existing]
        reports: list[TopicReport] = []
        if missing:
            new = [
                NewTopic(
                    name=t,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication,
                    topic_configs=_topic_configs(settings),
                )
                for t in missing
            ]
            # aiokafka returns per-topic errors in the response instead of raising them.
            raced = _check_created(await admin.create_topics(new, timeout_ms=30_000))
            existing.update(await _await_visible(admin, missing))
            # A topic that a concurrent `switchboard topics` created is validated below.
            missing = [t for t in missing if t not in raced]
            reports += [
                TopicReport(t, "created", existing.get(t, settings.topic_partitions))
                for t in missing
            ]
        present = [t for t in full if t not in missing]
        if present:
            # Keep existing topics' configs in line with settings (idempotent).
            await admin.alter_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, t, _topic_configs(settings))
                    for t in present
                ]
            )
        for topic in full:
            if topic in missing:
                continue
            count = existing.get(topic, 0)
            if count != settings.topic_partitions:
                reports.append(
                    TopicReport(
                        topic,
                        "mismatch",
                        count,
                        f"has {count} partitions, settings say {settings.topic_partitions}",
                    )
                )
            else:
                reports.append(TopicReport(topic, "ok", count))
        return reports
    except KafkaError as exc:  # the broker went away after answering the first request
        raise KafkaUnavailable(f"Kafka failed at {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        await admin.close()


def _check_created(response: Any) -> set[str]:
    """Topics that already existed (a concurrent run won the race); raise on any other error,
    e.g. a replication factor larger than the cluster, which would otherwise pass silently."""
    raced: set[str] = set()
    failures: dict[str, list[str]] = {}  # one reason, the topics it stopped
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code == 0:
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            raced.add(topic)
            continue
        message = " ".join(str(entry[2]).split()) if len(entry) > 2 and entry[2] else ""
        reason = error.__name__ + (f" ({message})" if message else "")
        failures.setdefault(reason, []).append(topic)
    if failures:
        raise SwitchboardError(
            "could not create topics: "
            + "; ".join(f"{', '.join(names)}: {reason}" for reason, names in failures.items())
        )
    return raced


async def _await_visible(
    admin: AIOKafkaAdminClient, topics: list[str], within_s: float = 10.0
) -> dict[str, int]:
    """Partition counts of just-created topics; metadata lags creation by a moment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        found = await _describe(admin, topics)
        if all(found.get(t) for t in topics) or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.1)


async def _describe(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition counts of the topics that exist among ``topics``."""
    present = set(await admin.list_topics())
    wanted = [t for t in topics if t in present]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
