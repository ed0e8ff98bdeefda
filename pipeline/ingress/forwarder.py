"""The forwarder: moves spooled records to Kafka, in spool order, and forgets them only once
the broker acknowledged them.

It runs in every ingress process next to the request path and shares its producer. A record
is deleted from the spool only after its ``acks=all`` acknowledgement, so a crash between the
ack and the delete publishes it twice; the workers deduplicate on ``(provider, event_id)``,
which makes that harmless. Records are handed to the producer one after the other, so the
records of one key keep their order on their partition while the broker acknowledges; after
a partial failure the failed ones are retried after the ones that succeeded (the workers are
order-independent, docs/data-model.md).

It also adopts orphans: a spool file whose slot lock is free belongs to a process that died
and did not come back (``--processes`` lowered, a crash loop). The forwarder takes the lock,
drains the file to Kafka, deletes it and releases the lock (docs/ingress.md, "Spool").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from pipeline.ingress.producer import Publisher
from pipeline.ingress.spool import Spool, SpooledRecord, orphan_slots, remove_spool_files

log = logging.getLogger(__name__)

BATCH = 500
FORWARD_TIMEOUT_S = 30.0
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
ADOPT_INTERVAL_S = 10.0
RATE_WINDOW_S = 10.0

ForwardHook = Callable[[int], None]  # records forwarded


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        publisher: Publisher,
        *,
        on_forwarded: ForwardHook | None = None,
        adopt_interval_s: float = ADOPT_INTERVAL_S,
    ) -> None:
        self.spool = spool
        self.publisher = publisher
        self._on_forwarded = on_forwarded
        self._adopt_interval_s = adopt_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self.forwarded = 0
        self.adopted = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._forward_loop(), name="spool-forwarder"),
            asyncio.create_task(self._adopt_loop(), name="spool-adopter"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def rate_per_s(self) -> float:
        """Records forwarded per second over the last ~10 s (for /readyz's detail)."""
        now = time.monotonic()
        samples = [(t, n) for t, n in self._samples if now - t <= RATE_WINDOW_S]
        if not samples:
            return 0.0
        oldest_t, oldest_n = samples[0]
        span = max(now - oldest_t, 1.0)
        return (self.forwarded - oldest_n) / span

    async def drain_once(self, spool: Spool) -> tuple[int, bool]:
        """Forward one batch from ``spool``: (records forwarded, whether any failed)."""
        batch = await spool.head(BATCH)
        if not batch:
            return 0, False
        outcomes = await self.publisher.publish_many(
            [(r.topic, r.key, r.value, r.headers) for r in batch], timeout_s=FORWARD_TIMEOUT_S
        )
        acked: list[SpooledRecord] = [
            r for r, err in zip(batch, outcomes, strict=True) if err is None
        ]
        failed = [err for err in outcomes if err is not None]
        await spool.delete(acked)
        if acked:
            self._count(len(acked))
        if failed:
            log.warning(
                "%d of %d spooled records not forwarded yet: %s",
                len(failed), len(batch), type(failed[0]).__name__,
            )  # fmt: skip
        return len(acked), bool(failed)

    def _count(self, n: int) -> None:
        self.forwarded += n
        self._samples.append((time.monotonic(), self.forwarded))
        if self._on_forwarded is not None:
            self._on_forwarded(n)

    async def _forward_loop(self) -> None:
        failures = 0
        while True:
            await self.spool.wait_nonempty()
            if not self.publisher.is_connected():
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
                continue
            try:
                sent, failed = await self.drain_once(self.spool)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad batch
                log.exception("spool forwarding failed")
                sent, failed = 0, True
            if failed:
                await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                failures += 1
            else:
                failures = 0
                if not sent:
                    await asyncio.sleep(0.005)  # appends queued but not yet committed

    async def _adopt_loop(self) -> None:
        directory = self.spool.lock.directory
        while True:
            try:
                await self.adopt_orphans(directory)
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("adopting orphaned spools failed")
            await asyncio.sleep(self._adopt_interval_s)

    async def adopt_orphans(self, directory: Path) -> int:
        """Drain every spool file no live process holds; returns how many were emptied."""
        emptied = 0
        locks = await asyncio.to_thread(orphan_slots, directory, self.spool.slot)
        for lock in locks:
            orphan = Spool(lock, max_bytes=self.spool.max_bytes, max_age_s=self.spool.max_age_s)
            try:
                await orphan.start()
                while orphan.count and self.publisher.is_connected():
                    sent, failed = await self.drain_once(orphan)
                    if failed or not sent:
                        break
                done = orphan.count == 0
            except Exception:
                await orphan.close()
                raise
            await orphan.close(keep_lock=True)
            if done:
                await asyncio.to_thread(remove_spool_files, lock.path)
                emptied += 1
                self.adopted += 1
                log.info("adopted spool slot %d and forwarded it", lock.slot)
            lock.release()
        return emptied
