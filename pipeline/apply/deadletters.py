"""The dead-letter record, and the only code that writes or reads its shape: the worker,
``replay`` and ``dlq redrive`` publish with :func:`encode`; ``switchboard dlq`` reads with
:func:`parse_dlq_headers` and rebuilds the source record with :func:`source_record`.

A record on ``webhooks.dlq`` is the source record's key and raw body, with the source's own
headers (``provider``, ``event_id``, ``event_type``, ``correlation_id``, ``received_at``)
plus where it came from and why it is here, so a dead letter looks the same whoever
published it.

Format 1 is that header set. A later format will add a ``dlq_format`` header; a reader
that meets a format newer than its own refuses to rebuild the record instead of misreading
it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.apply.results import DeadLetter
from pipeline.records import Headers, WebhookRecord

FORMAT = 1
FORMAT_HEADER = "dlq_format"

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


def encode(letter: DeadLetter, *, now_ms: int | None = None) -> tuple[bytes | None, bytes, Headers]:
    """The dead letter as a Kafka record: the source's key and raw body, and its headers."""
    return letter.record.key, letter.record.value, dlq_headers(letter, now_ms=now_ms)


def dlq_headers(letter: DeadLetter, *, now_ms: int | None = None) -> Headers:
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
    format: int | None = 1  # None: not a number

    @property
    def has_source(self) -> bool:
        return (
            self.source_topic is not None
            and self.source_partition is not None
            and self.source_offset is not None
        )

    @property
    def readable(self) -> bool:
        """Written in a format this code knows."""
        return self.format is not None and self.format <= FORMAT


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
        format=number(FORMAT_HEADER) if FORMAT_HEADER in headers else 1,
    )


def source_record(letter: WebhookRecord, info: DlqHeaders) -> WebhookRecord | None:
    """The record as it was on its source topic: source coordinates, original key, body
    and headers (the dead-letter headers stay, so a failure again can name the previous
    reason). ``None`` when the headers do not say where it came from, or are of a format
    this code does not know."""
    if not (info.has_source and info.readable):
        return None
    assert info.source_topic is not None
    assert info.source_partition is not None and info.source_offset is not None
    return WebhookRecord(
        topic=info.source_topic,
        partition=info.source_partition,
        offset=info.source_offset,
        key=letter.key,
        value=letter.value,
        headers=dict(letter.headers),
        timestamp_ms=letter.timestamp_ms,
    )
