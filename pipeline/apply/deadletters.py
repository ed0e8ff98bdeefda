"""The dead-letter record, and the only code that writes or reads its shape: the worker,
``replay`` and ``dlq redrive`` publish with :func:`encode`; ``switchboard dlq`` reads with
:func:`parse_dlq_headers` and rebuilds the source record with :func:`source_record`.

A record on ``webhooks.dlq`` is the source record's key and raw body, with the source's own
headers (``provider``, ``event_id``, ``event_type``, ``correlation_id``, ``received_at``)
plus where it came from and why it is here, so a dead letter looks the same whoever
published it.

Format 1 is that header set. Format 2 (header ``dlq_format: 2``) is a dead letter whose
body is too large to travel inline (the worker's producer refuses records over 1,000,000
bytes; the ingress accepts 1 MiB bodies): its value is empty and ``dlq_body: reference``,
``dlq_body_sha256`` and ``dlq_body_bytes`` say which body the source coordinates hold;
``switchboard dlq`` fetches it from there (docs/integrity.md). A reader that meets a
format newer than its own refuses to rebuild the record instead of misreading it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.apply.results import DeadLetter
from pipeline.providers.base import sha256_hex
from pipeline.records import Headers, WebhookRecord

FORMAT = 2
FORMAT_HEADER = "dlq_format"
REFERENCE_FORMAT = 2
BODY_HEADER, REFERENCE = "dlq_body", "reference"
BODY_SHA256_HEADER, BODY_BYTES_HEADER = "dlq_body_sha256", "dlq_body_bytes"

#: The largest dead letter (key, body and headers) sent inline. Faust's producer refuses
#: records over 1,000,000 bytes (``producer_max_request_size``) and would be retried for
#: ever; what is larger goes as a reference to its source record.
INLINE_LIMIT = 900_000

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


def encode(
    letter: DeadLetter, *, now_ms: int | None = None, limit: int = INLINE_LIMIT
) -> tuple[bytes | None, bytes, Headers]:
    """The dead letter as a Kafka record: the source's key and raw body, and its headers;
    over ``limit`` bytes, the key and a reference to the body instead (format 2)."""
    record = letter.record
    headers = dlq_headers(letter, now_ms=now_ms)
    size = len(record.key or b"") + len(record.value) + sum(len(k) + len(v) for k, v in headers)
    if size <= limit:
        return record.key, record.value, headers
    headers += [
        (FORMAT_HEADER, str(REFERENCE_FORMAT).encode()),
        (BODY_HEADER, REFERENCE.encode()),
        (BODY_SHA256_HEADER, sha256_hex(record.value).encode()),
        (BODY_BYTES_HEADER, str(len(record.value)).encode()),
    ]
    return record.key, b"", headers


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
    body_reference: bool = False  # the body is not here: fetch it from the source
    body_sha256: str | None = None
    body_bytes: int | None = None

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
        body_reference=headers.get(BODY_HEADER) == REFERENCE,
        body_sha256=headers.get(BODY_SHA256_HEADER) or None,
        body_bytes=number(BODY_BYTES_HEADER),
    )


def source_record(
    letter: WebhookRecord, info: DlqHeaders, body: bytes | None = None
) -> WebhookRecord | None:
    """The record as it was on its source topic: source coordinates, original key, body
    and headers (the dead-letter headers stay, so a failure again can name the previous
    reason). ``None`` when the headers do not say where it came from, or are of a format
    this code does not know, or the body is a reference and ``body`` (read from the
    source) is not given or is not the body the reference names."""
    if not (info.has_source and info.readable):
        return None
    if info.body_reference:
        if body is None or sha256_hex(body) != info.body_sha256:
            return None
    else:
        body = letter.value
    assert info.source_topic is not None
    assert info.source_partition is not None and info.source_offset is not None
    return WebhookRecord(
        topic=info.source_topic,
        partition=info.source_partition,
        offset=info.source_offset,
        key=letter.key,
        value=body,
        headers={k: v for k, v in letter.headers.items() if not k.startswith("dlq_")},
        timestamp_ms=letter.timestamp_ms,
    )
