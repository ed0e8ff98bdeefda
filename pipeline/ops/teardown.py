"""``switchboard topics delete``: remove this environment's Kafka topics, without Kafka's
Java scripts.

When it is needed (docs/runbook.md): after a cutover to more partitions, the old topic set
(its webhook topics, dead letters, snapshots and the old consumer group's Faust topics)
once its history is no longer wanted; or to recreate the topics with another partition
count while the ingress is stopped.

What it deletes: the topics of the current ``SWITCHBOARD_TOPIC_PREFIX`` (``webhooks.retell``,
``webhooks.calcom``, ``webhooks.dlq``, ``switchboard-bucket-snapshots``) and the Faust
topics of ``SWITCHBOARD_CONSUMER_GROUP`` (each table's changelog, the assignor's leader
topic), named one by one: never "everything that starts with", which would catch another
environment's topics (``switchboard-v2-...`` starts with ``switchboard-``).

What it refuses, because the records would be lost for good (a 202 was answered for every
one of them):

* workers still in the consumer group (they would recreate topics and crash on the rest);
* records on a webhook topic that the group has not committed past (received, never
  applied); ``discard_unapplied`` accepts that loss explicitly.

Kafka removes a deleted topic's committed offsets from the group, so topics recreated under
the same names start from their beginning.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code

from pipeline import topics
from pipeline.errors import KafkaUnavailable, SwitchboardError
from pipeline.kafka import kafka_options
from pipeline.ops.status import partition_lag
from pipeline.settings import Settings

#: How long to wait for the controller to report the topics gone.
GONE_TIMEOUT_S = 30.0


@dataclass
class Teardown:
    group: str
    topics: list[str]  # this environment's topics that exist
    members: int = 0  # consumer group members (running workers)
    unapplied: dict[str, int] = field(default_factory=dict)  # webhook topic -> records
    dead_letters: int = 0  # records on webhooks.dlq (a warning: settle them first)
    dry_run: bool = False
    discard_unapplied: bool = False
    deleted: list[str] = field(default_factory=list)

    def blockers(self) -> list[str]:
        """Why nothing may be deleted; empty when it may."""
        found = []
        if self.members:
            found.append(
                f"{self.members} member(s) in consumer group {self.group}: stop the workers "
                "first (switchboard status shows them)"
            )
        waiting = {t: n for t, n in self.unapplied.items() if n}
        if waiting and not self.discard_unapplied:
            found += [
                f"{topic}: {count:,} record(s) the group has not applied yet (let the "
                "workers drain, or --discard-unapplied to lose them)"
                for topic, count in sorted(waiting.items())
            ]
        return found

    @property
    def ok(self) -> bool:
        return not self.blockers()

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "blockers": self.blockers(), "ok": self.ok}

    def lines(self) -> list[str]:
        verb = "deleted" if self.deleted else "would delete" if self.ok else "not deleted"
        shown = self.deleted or self.topics
        lines = [f"{verb}: {name}" for name in shown] or ["no topics of this environment exist"]
        lines += [f"refused: {why}" for why in self.blockers()]
        if self.dead_letters and not self.deleted:
            lines.append(
                f"note: webhooks.dlq holds {self.dead_letters:,} dead letter record(s); settle "
                "the pending ones first (switchboard dlq list --pending, dlq redrive)"
            )
        return lines


def owned_topics(settings: Settings) -> list[str]:
    """Every topic this environment (prefix and consumer group) creates, by name."""
    group = settings.consumer_group
    return [
        *(settings.topic(name) for name in topics.ALL_TOPICS),
        *(topics.changelog_topic(settings, table) for table in topics.TABLES),
        f"{group}-__assignor-__leader",
    ]


async def delete_topics(
    settings: Settings, *, dry_run: bool = False, discard_unapplied: bool = False
) -> Teardown:
    """Delete :func:`owned_topics` unless a :meth:`Teardown.blockers` says no; a dry run
    only reports."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise KafkaUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        present = set(await admin.list_topics())
        report = Teardown(
            group=settings.consumer_group,
            topics=[name for name in owned_topics(settings) if name in present],
            dry_run=dry_run,
            discard_unapplied=discard_unapplied,
        )
        report.members = await _members(admin, settings.consumer_group)
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
        webhook = [settings.topic(t) for t in topics.WEBHOOK_TOPICS if settings.topic(t) in present]
        for row in await partition_lag(settings, webhook, committed):
            report.unapplied[row.topic] = report.unapplied.get(row.topic, 0) + row.lag
        dlq = settings.topic(topics.DLQ)
        if dlq in present:  # nobody commits on the DLQ: its lag is what it holds
            report.dead_letters = sum(r.lag for r in await partition_lag(settings, [dlq], {}))
        if dry_run or not report.ok or not report.topics:
            return report
        response = await admin.delete_topics(report.topics)
        _check_deleted(response)
        await _await_gone(admin, report.topics)
        report.deleted = list(report.topics)
        return report
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka failed at {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        await admin.close()


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    described = await admin.describe_consumer_groups([group])
    if not described:
        return 0
    found = described[0].to_object()["groups"][0]
    return 0 if found["error_code"] else len(found["members"])


def _check_deleted(response: Any) -> None:
    """aiokafka returns per-topic errors in the response instead of raising them."""
    for name, code, *_ in response.topic_error_codes:
        if code and code != 3:  # 3: unknown topic (deleted meanwhile): fine
            error = for_code(code)
            raise SwitchboardError(f"Kafka refused to delete {name}: {error.__name__}")


async def _await_gone(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Deletion is asynchronous on the brokers: wait until the metadata no longer lists the
    topics, so that a ``switchboard topics`` right after creates them afresh."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GONE_TIMEOUT_S
    while set(names) & set(await admin.list_topics()):
        if loop.time() > deadline:
            raise SwitchboardError(
                f"Kafka accepted the deletion but still lists the topics after "
                f"{GONE_TIMEOUT_S:.0f} s; run switchboard topics delete again"
            )
        await asyncio.sleep(0.5)
