"""The dead-letter record's headers, shared by the worker, ``replay`` and ``dlq redrive``.

A record on ``webhooks.dlq`` is the source record's key and raw body, with the source's own
headers (``provider``, ``event_id``, ``event_type``, ``correlation_id``, ``received_at``)
plus where it came from and why it is here. One pure function writes those headers, so a
dead letter looks the same whoever published it, and ``switchboard dlq`` reads them back
with :func:`parse_dlq_headers`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.apply.results import DeadLetter

#: Headers that only a dead letter has (besides the source record's own).
DLQ_HEADER_NAMES = (
    "source_topic",
    "source_partition",
    "source_offset",
    "error_class",
    "reason",
    "detail",
    "dead_lettered_at",
    "previous_reason",
)


def dlq_headers(letter: DeadLetter, *, now_ms: int | None = None) -> list[tuple[str, bytes]]:
    """The source record's headers plus where it came from and why it is here.

    A redriven record is rebuilt with the headers of its dead letter, so when it fails
    again its first reason stays visible as ``previous_reason``.
    """
    record = letter.record
    headers = {k: v for k, v in record.headers.items() if not k.startswith("dlq_")}
    headers.update(
        source_topic=record.topic,
        source_partition=str(record.partition),
        source_offset=str(record.offset),
        error_class=letter.error_class,
        reason=letter.reason,
        detail=letter.detail[:500],
        dead_lettered_at=str(int(time.time() * 1000) if now_ms is None else now_ms),
    )
    previous = record.headers.get("reason")
    if previous and record.headers.get("source_topic"):
        # A redriven record that failed again keeps its first reason visible too.
        headers["previous_reason"] = previous
    return [(k, v.encode()) for k, v in headers.items()]


@dataclass(frozen=True, slots=True)
class DlqHeaders:
    """What a dead letter's headers say, typed. ``None`` for what a record lacks."""

    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    reason: str | None
    previous_reason: str | None
    error_class: str | None
    detail: str | None
    dead_lettered_at_ms: int | None

    @property
    def has_source(self) -> bool:
        return (
            self.source_topic is not None
            and self.source_partition is not None
            and self.source_offset is not None
        )


def parse_dlq_headers(headers: Mapping[str, str]) -> DlqHeaders:
    """Read the dead-letter headers back; malformed numbers become ``None``, never raise."""

    def number(name: str) -> int | None:
        raw = headers.get(name)
        return int(raw) if raw is not None and raw.strip().lstrip("-").isdigit() else None

    return DlqHeaders(
        source_topic=headers.get("source_topic") or None,
        source_partition=number("source_partition"),
        source_offset=number("source_offset"),
        reason=headers.get("reason") or None,
        previous_reason=headers.get("previous_reason") or None,
        error_class=headers.get("error_class") or None,
        detail=headers.get("detail") or None,
        dead_lettered_at_ms=number("dead_lettered_at"),
    )
