"""The one Kafka producer of an ingress process, and the ``Publisher`` protocol it fulfils.

docs/architecture.md, invariant 1, "no ack without durability": :meth:`KafkaPublisher.publish` returns only
after Kafka acknowledged the record with ``acks=all`` from an idempotent producer, and raises
:class:`~pipeline.errors.KafkaUnavailable` when that does not happen within
``settings.ack_budget_s``; the hand-off then spools the record. The request path's records
go through :class:`~pipeline.ingress.batches.RecordBatches` (batches built here, one per
partition, handed to the producer whole); the forwarder's through ``send()``.

A broker that is down when the process starts does not stop the process: the producer keeps
trying to connect in the background, ``publish`` fails fast meanwhile, and ``/readyz`` says
503 so a load balancer sends traffic elsewhere. A health probe (a metadata request every
couple of seconds) keeps :meth:`is_connected` honest after the start, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from pipeline.errors import KafkaUnavailable
from pipeline.ingress.batches import RecordBatches
from pipeline.kafka import kafka_options
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
OutRecord = tuple[str, bytes, bytes, Headers]  # topic, key, value, headers

PROBE_INTERVAL_S = 2.0
#: Errors after which this producer id can send nothing more (aiokafka does not reset its
#: idempotent state by itself; seen when a broker restarted and lost the producer's state):
#: the producer is replaced by a new one, with a new producer id.
FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)
CONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
CLOSE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def _ack_outcome(future: asyncio.Future[object]) -> BaseException | None:
    """None once ``future`` holds the broker's ack, otherwise why not. A future still
    pending after the wait is cancelled: the record stays in the spool for the forwarder's
    next try, so nothing waits on this future any more."""
    if not future.done():
        future.cancel()
        return KafkaUnavailable("no acknowledgement in time")
    if future.cancelled():
        return KafkaUnavailable("cancelled")
    return future.exception()


class RecordTooLarge(KafkaUnavailable):
    """The broker refuses the record's size: neither a retry nor the spool can help."""


@dataclass(frozen=True, slots=True)
class Published:
    """Where Kafka put the record: enough to find it again (``switchboard events show``)."""

    topic: str
    partition: int
    offset: int


class Publisher(Protocol):
    """What the ingress needs from Kafka. Tests pass a fake; production a KafkaPublisher."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def is_connected(self) -> bool: ...

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> Published:
        """Return once the record is durable; raise KafkaUnavailable otherwise, at the
        latest after the ack budget."""
        ...

    async def publish_many(
        self, records: Sequence[OutRecord], *, timeout_s: float
    ) -> list[BaseException | None]:
        """Send ``records`` in order; per record, None once acknowledged or why not."""
        ...


FailureHook = Callable[[str, str], None]  # (topic, reason)
LatencyHook = Callable[[str, float], None]  # (topic, seconds)


class KafkaPublisher:
    """An idempotent ``acks=all`` AIOKafkaProducer with a bounded wait for every ack.

    ``linger_ms`` lets concurrent requests share a produce request, and ``max_batch_size``
    bounds how many bytes of one partition one request carries: with one hot key every
    record goes to one partition, and the idempotent producer keeps few requests per
    partition in flight, so small batches cap that key's throughput. Both, and the
    compression, come from settings; their defaults are measured (docs/ingress.md,
    "Producer").
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "switchboard-ingress",
        topics: Sequence[str] = (),
        on_latency: LatencyHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self._settings = settings
        self._topics = tuple(topics)
        self._client_id = client_id
        self._linger_ms = settings.kafka_linger_ms
        codec = settings.kafka_compression
        self._compression = None if codec == "none" else codec
        self._on_latency = on_latency
        self._on_failure = on_failure
        self._producer: AIOKafkaProducer | None = None
        self._batches: RecordBatches | None = None
        self._healthy = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self.replaced = 0  # producers replaced after a fatal error (tests read it)

    def is_connected(self) -> bool:
        """True once connected and while the last probe or publish reached the broker."""
        return self._producer is not None and self._healthy and not self._closing

    async def start(self) -> None:
        """Connect now if Kafka answers; otherwise keep trying in the background."""
        await self._try_connect()
        self._task = asyncio.create_task(self._maintain(), name="kafka-producer-maintain")

    async def close(self) -> None:
        """Flush what is buffered (bounded), then close the connections."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        producer, self._producer = self._producer, None
        batches, self._batches = self._batches, None
        if batches is not None:  # open batches go to the producer before it flushes
            await batches.flush(CLOSE_TIMEOUT_S / 2)
            batches.fail_all(KafkaUnavailable("the producer is closing"))
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
            except (TimeoutError, KafkaError) as exc:
                log.warning("kafka producer did not flush cleanly: %s", type(exc).__name__)

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers) -> Published:
        """The request path: the record joins its partition's batch and this returns once
        that batch is acknowledged. The ack budget is the batch's deadline (one timer per
        batch, none per request)."""
        batches = self._batches
        if batches is None or self._closing:
            self._fail(topic, "not_connected")
            raise KafkaUnavailable("Kafka producer is not connected")
        started = time.perf_counter()
        try:
            partition, offset = await batches.add(topic, key, value, headers)
        except TimeoutError as exc:
            # A late ack under a saturating load is not a lost broker: the health probe
            # decides that. Marking the producer down here sent every request to the spool
            # for up to a probe interval whenever one batch was late.
            self._fail(topic, "timeout")
            raise KafkaUnavailable(
                f"Kafka did not acknowledge within {self._settings.ack_budget_s:g}s"
            ) from exc
        except MessageSizeTooLargeError as exc:
            # Our limits disagree with the broker's (message.max.bytes): not the sender's
            # fault, and not durable, so still a 503; the reason tells the operator.
            self._fail(topic, "record_too_large")
            raise RecordTooLarge("Kafka refused the record as too large") from exc
        except KafkaError as exc:
            self._healthy = False
            self._fail(topic, type(exc).__name__)
            if isinstance(exc, FATAL_PRODUCER_ERRORS):
                self.replace_producer(type(exc).__name__)
            raise KafkaUnavailable(f"Kafka refused the record: {type(exc).__name__}") from exc
        self._healthy = True
        if self._on_latency is not None:
            self._on_latency(topic, time.perf_counter() - started)
        return Published(topic, partition, offset)

    async def publish_many(
        self, records: Sequence[OutRecord], *, timeout_s: float
    ) -> list[BaseException | None]:
        """The forwarder's path: enqueue every record in order (one ``send`` after the other
        keeps a key's records in order on its partition), then wait for all the acks."""
        producer = self._producer
        if producer is None or self._closing:
            return [KafkaUnavailable("Kafka producer is not connected")] * len(records)
        outcomes: list[BaseException | None] = [None] * len(records)
        futures = await self._enqueue_in_order(producer, records, outcomes, timeout_s)
        pending = [f for f in futures if f is not None]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        for i, future in enumerate(futures):
            if future is not None:
                outcomes[i] = _ack_outcome(future)
        self._learn_from(outcomes)
        return outcomes

    async def _enqueue_in_order(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[OutRecord],
        outcomes: list[BaseException | None],
        timeout_s: float,
    ) -> list[asyncio.Future[object] | None]:
        """Hand ``records`` to the producer one after the other, all within ``timeout_s``,
        and return their futures. ``send`` can wait (the producer's buffer full, metadata
        unknown), so the budget covers the enqueueing too. Once a ``send`` fails or the
        budget is spent, the records not yet handed over get their reason in ``outcomes``
        (the ones before them may still be acknowledged), and the broker counts as lost
        until an ack says otherwise."""
        futures: list[asyncio.Future[object] | None] = []
        try:
            async with asyncio.timeout(timeout_s):
                for topic, key, value, headers in records:
                    futures.append(
                        await producer.send(topic, value=value, key=key, headers=list(headers))
                    )
        except (TimeoutError, KafkaError) as exc:
            self._healthy = False
            for i in range(len(futures), len(records)):
                outcomes[i] = KafkaUnavailable(f"not enqueued: {type(exc).__name__}")
        return futures

    def _learn_from(self, outcomes: list[BaseException | None]) -> None:
        """One acknowledged record proves the broker is reachable; one fatal error means
        this producer id can send nothing more, so it is replaced (as in :meth:`publish`)."""
        if any(o is None for o in outcomes):
            self._healthy = True
        fatal = next((o for o in outcomes if isinstance(o, FATAL_PRODUCER_ERRORS)), None)
        if fatal is not None:
            self.replace_producer(type(fatal).__name__)

    def replace_producer(self, reason: str) -> None:
        """Drop a producer whose idempotent state the broker no longer accepts; the
        maintenance task connects a new one (new producer id) within a second or so."""
        producer, self._producer = self._producer, None
        batches, self._batches = self._batches, None
        if batches is not None:  # records not yet handed over go to the spool
            batches.fail_all(KafkaUnavailable(f"producer replaced after {reason}"))
        if producer is None or self._closing:
            return
        self._healthy = False
        self.replaced += 1
        log.warning("kafka producer replaced after %s", reason)
        task = asyncio.create_task(self._stop_quietly(producer))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    @staticmethod
    async def _stop_quietly(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), CONNECT_TIMEOUT_S)

    def _fail(self, topic: str, reason: str) -> None:
        if self._on_failure is not None:
            self._on_failure(topic, reason)

    def _max_request(self) -> int:
        return max(1024 * 1024, self._settings.max_body_bytes + 64 * 1024)

    def _new_batches(self, producer: AIOKafkaProducer) -> RecordBatches:
        return RecordBatches(
            producer,
            linger_s=self._linger_ms / 1000,
            deadline_s=self._settings.ack_budget_s,
            max_record_bytes=self._max_request() - 16 * 1024,  # headers and framing
        )

    def _new_producer(self) -> AIOKafkaProducer:
        max_request = self._max_request()
        return AIOKafkaProducer(
            **kafka_options(self._settings),
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_batch_size=min(self._settings.kafka_max_batch_bytes, max_request),
            compression_type=self._compression,
            max_request_size=max_request,
            request_timeout_ms=30_000,
            retry_backoff_ms=100,
        )

    async def _try_connect(self) -> bool:
        producer = self._new_producer()
        try:
            # Bounded: a blackholed address would otherwise hold the start for request_timeout.
            await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT_S)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning(
                "kafka unreachable at %s: %s", self._settings.kafka_bootstrap, type(exc).__name__
            )
            with contextlib.suppress(Exception):
                await producer.stop()
            return False
        await self._narrow_metadata(producer)
        self._producer = producer
        self._batches = self._new_batches(producer)
        self._healthy = True
        log.info("kafka producer connected to %s", self._settings.kafka_bootstrap)
        return True

    async def _narrow_metadata(self, producer: AIOKafkaProducer) -> None:
        """Ask the broker for the metadata of our topics only, from now on.

        aiokafka's client requests every topic of the cluster while its own topic list is
        empty, and it stays empty when the first metadata already knew our topics: then each
        health probe decoded the whole cluster's metadata on the event loop (on a broker with
        ~730 topics, about 20 ms of CPU every probe, with no request answered meanwhile). A
        topic published to later that is not in the list (the forwarder's) is added by
        aiokafka when it is first sent to."""
        if not self._topics:
            return
        with contextlib.suppress(TimeoutError, KafkaError, OSError):
            await asyncio.wait_for(producer.client.set_topics(self._topics), CONNECT_TIMEOUT_S)

    async def _maintain(self) -> None:
        """Connect if not yet connected (with backoff); then probe the broker periodically."""
        attempt = 0
        while True:
            if self._producer is None:  # not connected yet, or replaced after a fatal error
                await asyncio.sleep(CONNECT_BACKOFF_S[min(attempt, len(CONNECT_BACKOFF_S) - 1)])
                attempt += 1
                await self._try_connect()
                continue
            attempt = 0
            await asyncio.sleep(PROBE_INTERVAL_S)
            await self._probe()

    async def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            ok = await asyncio.wait_for(
                producer.client.force_metadata_update(), max(self._settings.ack_budget_s, 1.0)
            )
        except (TimeoutError, KafkaError, OSError):
            ok = False
        if ok != self._healthy:
            log.warning("kafka producer %s", "reconnected" if ok else "lost the broker")
        self._healthy = bool(ok)
        if ok and self._batches is not None:
            self._batches.refresh_partitions()
