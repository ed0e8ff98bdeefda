"""Kafka topics of docs/architecture.md: their names, and an idempotent create-or-validate.

External topics are created before any worker starts (Faust raises ``PartitionsMismatch``
if a source topic and the table it feeds disagree). Internal topics are ``switchboard-*``.

Topic configs are read with DescribeConfigs and changed only with **IncrementalAlterConfigs**
(KIP-339), key by key (:func:`describe_configs`, :func:`alter_configs`): the legacy
AlterConfigs, the only one aiokafka 0.14.0 offers, replaces a topic's whole set of
overrides, so an operator's ``retention.ms`` (or any other override) would silently revert
to the broker default every time a worker starts. Every command that touches topic configs
(``topics``, ``retention apply``) goes through these two functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

from pipeline.errors import KafkaUnavailable, SwitchboardError
from pipeline.kafka import kafka_options
from pipeline.providers import PROVIDERS, calcom, retell
from pipeline.settings import Settings

# The providers' topics are named by their modules (pipeline/providers); these two names
# are kept for the code that addresses one of them on purpose.
RETELL = retell.TOPIC
CALCOM = calcom.TOPIC
DLQ = "webhooks.dlq"
# Bucket snapshots published after each apply transaction, keyed by company id; they feed
# the dashboard table, so they must have the table changelog's partition count.
SNAPSHOTS = "switchboard-bucket-snapshots"

WEBHOOK_TOPICS = tuple(provider.TOPIC for provider in PROVIDERS.values())
ALL_TOPICS = (*WEBHOOK_TOPICS, DLQ, SNAPSHOTS)


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


#: Topics holding raw webhook bodies (personal data): their retention is ours to set.
RETAINED = (RETELL, CALCOM, DLQ)
DAY_MS = 86_400_000


def retention_ms(settings: Settings) -> str:
    return str(settings.topic_retention_days * DAY_MS)


def _retention(settings: Settings, name: str) -> dict[str, str]:
    """``retention.ms`` for a new topic that holds raw bodies. Only at creation: on an
    existing topic it is ``switchboard retention apply``'s, which never overrides an
    operator's value."""
    return {"retention.ms": retention_ms(settings)} if name in RETAINED else {}


# The worker's Faust tables (tables/). The worker's preflight creates their changelogs
# (named by Faust after the app id, which is the consumer group) before Faust starts: left
# to Faust, a changelog created during the first start can be missing from the metadata at
# the first assignment (three brokers: the others learn of it a moment later), the table
# then gets no changelog partitions, and the agent that fills it crashes with
# PartitionsMismatch ("... has 0 partitions") until the worker is restarted.
TABLES = ("dashboard",)


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{settings.consumer_group}-{table}-changelog"


async def ensure_topics(
    settings: Settings, names: tuple[str, ...] = ALL_TOPICS, *, tables: bool = False
) -> list[TopicReport]:
    """Create missing topics; report existing ones whose partition count differs. With
    ``tables``, the tables' changelog topics too (compacted), so that a worker's tables
    find theirs at its first start."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaError as exc:
        raise KafkaUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        full = {settings.topic(n): n for n in names}
        changelogs = [changelog_topic(settings, t) for t in TABLES] if tables else []
        full.update({c: c for c in changelogs})
        existing = await _describe(admin, list(full))
        missing = [t for t in full if t not in existing]
        reports: list[TopicReport] = []
        if missing:
            new = [
                NewTopic(
                    name=t,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication,
                    topic_configs=_topic_configs(settings)
                    | _retention(settings, full[t])
                    | ({"cleanup.policy": "compact"} if t in changelogs else {}),
                )
                for t in missing
            ]
            # aiokafka returns per-topic errors in the response instead of raising them.
            raced = _check_created(await admin.create_topics(new, timeout_ms=30_000))
            existing.update(await await_visible(admin, missing))
            # A topic that a concurrent `switchboard topics` created is validated below.
            missing = [t for t in missing if t not in raced]
            reports += [
                TopicReport(t, "created", existing.get(t, settings.topic_partitions))
                for t in missing
            ]
        present = [t for t in full if t not in missing]
        if present:
            # Keep our own keys in line with settings, one key at a time: any other
            # override (retention.ms, cleanup.policy, ...) is the operator's and stays.
            wanted = _topic_configs(settings)
            current = await describe_configs(admin, present)
            await alter_configs(
                admin,
                {
                    t: {k: v for k, v in wanted.items() if _value(current[t], k) != v}
                    for t in present
                },
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


async def await_visible(
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


# --- topic configs, key by key --------------------------------------------------------------

#: ``config_source`` of DescribeConfigs v1+: a value set on the topic itself.
TOPIC_OVERRIDE = 1
_SET, _DELETE = 0, 1


@dataclass(frozen=True, slots=True)
class ConfigValue:
    value: str | None
    source: int  # 1 topic override, 2-4 broker settings, 5 Kafka's default

    @property
    def overridden(self) -> bool:
        return self.source == TOPIC_OVERRIDE


async def describe_configs(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, dict[str, ConfigValue]]:
    """Every config of each topic with its value and where the value comes from."""
    if not topics:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, None) for t in topics]
    )
    found: dict[str, dict[str, ConfigValue]] = {}
    failures = []
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                failures.append(_failure(resource))
                continue
            found[resource["resource_name"]] = {
                entry["config_names"]: ConfigValue(
                    entry["config_value"],
                    entry.get("config_source", 5 if entry.get("is_default") else TOPIC_OVERRIDE),
                )
                for entry in resource["config_entries"]
            }
    if failures:
        raise SwitchboardError("could not read topic configs: " + "; ".join(failures))
    return found


async def alter_configs(
    admin: AIOKafkaAdminClient, changes: Mapping[str, Mapping[str, str | None]]
) -> None:
    """Set (a string) or remove (``None``: back to the broker's default) exactly these
    keys of these topics; every other key of the topic is left as it is."""
    resources = [
        (
            ConfigResourceType.TOPIC.value,
            topic,
            [(key, _DELETE if value is None else _SET, value) for key, value in keys.items()],
        )
        for topic, keys in changes.items()
        if keys
    ]
    if not resources:
        return
    request = IncrementalAlterConfigsRequest(resources)
    response = await admin._send_request(request)
    failures = [_failure(r) for r in response.to_object()["responses"] if r["error_code"]]
    if failures:
        raise SwitchboardError("could not change topic configs: " + "; ".join(failures))


def _value(configs: Mapping[str, ConfigValue], key: str) -> str | None:
    found = configs.get(key)
    return found.value if found is not None else None


def _failure(resource: Mapping[str, Any]) -> str:
    error = for_code(resource["error_code"]).__name__
    message = resource.get("error_message")
    return f"{resource['resource_name']}: {error}" + (f" ({message})" if message else "")


class IncrementalAlterConfigsResponse_v0(Response):
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
            ),
        ),
    )


class IncrementalAlterConfigsRequest_v0(RequestStruct):
    """KIP-339's request, version 0 (Kafka 2.3+); aiokafka 0.14.0 does not define it."""

    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                (
                    "configs",
                    Array(
                        ("name", String("utf-8")),
                        ("config_operation", Int8),
                        ("value", String("utf-8")),
                    ),
                ),
            ),
        ),
        ("validate_only", Boolean),
    )


class IncrementalAlterConfigsRequest(Request[IncrementalAlterConfigsRequest_v0]):
    API_KEY = 44

    def __init__(self, resources: list[Any], validate_only: bool = False) -> None:
        self._resources = resources
        self._validate_only = validate_only

    def build(
        self, request_struct_class: type[IncrementalAlterConfigsRequest_v0]
    ) -> IncrementalAlterConfigsRequest_v0:
        return request_struct_class(self._resources, self._validate_only)
