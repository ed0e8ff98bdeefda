"""Parsing and checking the operator's arguments: pure, so unit tests cover every case.

Each function raises :class:`~pipeline.ops.BadArguments` with one line that names the
option, which the command line prints as ``switchboard: <line>`` with a non-zero exit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline import topics
from pipeline.kafka_reader import Stretch
from pipeline.ops import BadArguments
from pipeline.providers import PROVIDERS
from pipeline.settings import Settings

#: What ``--topic`` accepts, besides the full (prefixed) topic name.
TOPIC_ALIASES = {
    **{name: provider.TOPIC for name, provider in PROVIDERS.items()},
    **{topic: topic for topic in topics.WEBHOOK_TOPICS},
}


def parse_time(value: str, option: str) -> int:
    """An ISO-8601 instant → epoch milliseconds. Without an offset it is taken as UTC.

    ``2026-01-05``, ``2026-01-05T17:00``, ``2026-01-05T17:00:00Z`` and
    ``2026-01-05T09:00:00-08:00`` are all accepted.
    """
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadArguments(
            f"{option}: {value!r} is not an ISO-8601 time (e.g. 2026-01-05T17:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_ms(millis: int | None) -> str:
    """Epoch milliseconds → ``2026-01-05T17:02:11.482Z`` (UTC), ``-`` for none."""
    if millis is None:
        return "-"
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_stretch(
    *,
    from_offset: int | None,
    from_time: str | None,
    to_offset: int | None,
    to_time: str | None,
) -> Stretch:
    """Exactly one start (offset or time), at most one end; ends are inclusive."""
    if (from_offset is None) == (from_time is None):
        raise BadArguments("give exactly one of --from-offset and --from-time")
    if to_offset is not None and to_time is not None:
        raise BadArguments("give at most one of --to-offset and --to-time")
    for name, number in (("--from-offset", from_offset), ("--to-offset", to_offset)):
        if number is not None and number < 0:
            raise BadArguments(f"{name} must be 0 or more, got {number}")
    from_ms = parse_time(from_time, "--from-time") if from_time is not None else None
    to_ms = parse_time(to_time, "--to-time") if to_time is not None else None
    if from_offset is not None and to_offset is not None and to_offset < from_offset:
        raise BadArguments(f"--to-offset {to_offset} is before --from-offset {from_offset}")
    if from_ms is not None and to_ms is not None and to_ms < from_ms:
        raise BadArguments("--to-time is before --from-time")
    return Stretch(
        from_offset=from_offset, to_offset=to_offset, from_time_ms=from_ms, to_time_ms=to_ms
    )


def resolve_topic(settings: Settings, name: str) -> str:
    """``webhooks.retell`` / ``webhooks.calcom`` (or ``retell`` / ``calcom``, or the full
    prefixed name) → the full topic name with the settings' prefix. Only the webhook topics
    can be replayed: the DLQ has ``dlq redrive``, the snapshot topic has nothing to apply."""
    text = name.strip()
    if settings.topic_prefix and text.startswith(settings.topic_prefix):
        text = text[len(settings.topic_prefix) :]
    base = TOPIC_ALIASES.get(text)
    if base is None:
        known = " or ".join(topics.WEBHOOK_TOPICS)
        raise BadArguments(f"--topic must be {known}, got {name!r}")
    return settings.topic(base)


def parse_partitions(values: tuple[int, ...] | list[int] | None) -> list[int] | None:
    """``--partition`` (repeatable) → the chosen partitions, or ``None`` for all."""
    if not values:
        return None
    for value in values:
        if value < 0:
            raise BadArguments(f"--partition must be 0 or more, got {value}")
    return sorted(set(values))


def parse_position(text: str) -> tuple[int | None, int]:
    """A dead letter's position: ``PARTITION:OFFSET``, or a bare ``OFFSET`` (partition
    ``None``: that offset on whichever partitions hold it).

    ``dlq list`` prints positions as ``PARTITION:OFFSET``, ready to paste. Each partition
    numbers its records from 0, so a bare offset can name a dead letter on several."""
    raw = text.strip()
    partition_text, sep, offset_text = raw.rpartition(":")
    if not (offset_text.isdigit() and (not sep or partition_text.isdigit())):
        raise BadArguments(f"{text!r} is not PARTITION:OFFSET (e.g. 3:1042) or OFFSET")
    return (int(partition_text) if sep else None), int(offset_text)
