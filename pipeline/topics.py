"""Kafka topics of SPEC §4: their names, and an idempotent create-or-validate.

External topics are created before any worker starts (Faust raises ``PartitionsMismatch``
if a source topic and the table it feeds disagree). Internal topics are ``switchboard-*``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import KafkaUnavailable
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


def _topic_configs(settings: Settings) -> dict[str, str]:
    configs = {"min.insync.replicas": str(min(2, settings.topic_replication))}
    if settings.topic_replication == 1:
        configs["min.insync.replicas"] = "1"
    return configs


async def ensure_topics(settings: Settings, names: tuple[str, ...] = ALL_TOPICS) -> list[TopicReport]:
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
            try:
                await admin.create_topics(new, timeout_ms=30_000)
            except TopicAlreadyExistsError:
                pass  # a concurrent `switchboard topics` won the race; validate below
            existing.update(await _describe(admin, missing))
            reports += [TopicReport(t, "created", existing.get(t, 0)) for t in missing]
        for topic in full:
            if topic in missing:
                continue
            count = existing[topic]
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
    finally:
        await admin.close()


async def _describe(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition counts of the topics that exist among ``topics``."""
    present = set(await admin.list_topics())
    wanted = [t for t in topics if t in present]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
