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

from pipeline.dashboard.aggregates import BucketKey

LIMIT = 200_000


class PublishedBuckets:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.epoch = 0  # counts the rebalances (forget) seen
        self._keys: set[BucketKey] = set()

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
        self._keys.update(keys)
        if len(self._keys) > self.limit:
            self._keys.clear()

    def forget(self) -> None:
        """Partitions moved (a rebalance): records another worker committed but did not
        publish may come next, and their buckets must be republished."""
        self.epoch += 1
        self._keys.clear()
