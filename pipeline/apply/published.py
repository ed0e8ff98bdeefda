"""The buckets whose snapshots this consumer has published lately, so that a replay of an
applied stretch republishes each bucket once instead of once per batch.

An already-applied event changes nothing, but the engine still reads back and republishes
the buckets it counts in: a batch redelivered after a crash between its commit and its
publish is how the dashboard table heals (docs/architecture.md). A replay of a busy
stretch touches the same few hundred buckets in every batch, and reading them back was
the largest part of its cost. Once this consumer has published a bucket, republishing it
again for an event that changes nothing adds nothing, because:

* a change to the bucket made after that publish was made by a batch that publishes the
  bucket itself, after its commit;
* if that batch's worker died between its commit and its publish, its records are
  delivered again after a rebalance, and every worker forgets what it published when its
  partitions are revoked or assigned (:meth:`PublishedBuckets.forget`, called by the
  worker); a command (``replay``, ``dlq redrive``) starts with an empty memory.

Only what a publisher has actually sent is remembered (:func:`pipeline.apply.loop.apply_all`
calls :meth:`PublishedBuckets.remember` after the publish returned), and only if no
rebalance came between the batch's start and then (its snapshots may have been read
before a commit that a dead worker never published: the ``epoch`` tells). The memory is
bounded: past ``limit`` keys it starts again from empty, which costs republishes, never a
snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pipeline.dashboard.aggregates import BucketKey

LIMIT = 200_000


class News(NamedTuple):
    """What a copy of a memory (the apply process's, :mod:`pipeline.apply.process`) needs to
    catch up: the memory's generation (it changes whenever the memory is emptied) and the
    keys remembered since the copy's last news."""

    generation: tuple[int, int]
    keys: frozenset[BucketKey]


class PublishedBuckets:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.epoch = 0  # counts the rebalances (forget) seen
        self._keys: set[BucketKey] = set()
        self._cleared = 0  # counts the times the memory emptied at its limit
        # per reader (the apply process's pool): what it has not been told yet
        self._unsent: dict[object, set[BucketKey]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def unpublished(self, keys: Iterable[BucketKey]) -> set[BucketKey]:
        """Those of ``keys`` whose snapshot this consumer has not published lately."""
        return {k for k in keys if k not in self._keys}

    def remember(self, keys: Iterable[BucketKey], epoch: int) -> None:
        """``keys`` were published (their snapshots are with the publisher) by a batch that
        started at ``epoch``; nothing is remembered if a rebalance came since."""
        if epoch != self.epoch:
            return
        keys = set(keys)
        self._keys.update(keys)
        for unsent in self._unsent.values():
            unsent.update(keys)
        if len(self._keys) > self.limit:
            self._empty()
            self._cleared += 1

    def forget(self) -> None:
        """Partitions moved (a rebalance): records another worker committed but did not
        publish may come next, and their buckets must be republished."""
        self.epoch += 1
        self._empty()

    def _empty(self) -> None:
        self._keys.clear()
        for unsent in self._unsent.values():
            unsent.clear()

    @property
    def generation(self) -> tuple[int, int]:
        return self.epoch, self._cleared

    def news(self, reader: object) -> News:
        """What ``reader``'s copy lacks; a reader not seen before gets the whole memory
        (and only the latest reader is tracked: a replaced one is told nothing more)."""
        if reader not in self._unsent:
            self._unsent = {reader: set()}
            return News(self.generation, frozenset(self._keys))
        keys, self._unsent[reader] = self._unsent[reader], set()
        return News(self.generation, frozenset(keys))

    def receive(self, news: News) -> None:
        """Bring this copy up to date with its original's :meth:`news`."""
        if news.generation != self.generation:
            self._keys.clear()
            self.epoch, self._cleared = news.generation
        self._keys.update(news.keys)
