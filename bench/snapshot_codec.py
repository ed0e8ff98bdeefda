"""What the snapshot wire format costs alone, no Kafka: one batch's worth of bucket
snapshots bundled (``snapshots.bundles``) and decoded back (``snapshots.decode``), in a
loop, per bucket.

``.venv/bin/python -m bench.snapshot_codec [--rounds N]``: 185 buckets of 20 companies
(what a batch of the simulator's mix touches, docs/benchmarks.md 1d), hour and day, a
third of them breakdown groups, every counter set. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from decimal import Decimal

from pipeline.dashboard import aggregates, snapshots
from pipeline.dashboard.aggregates import BucketKey, BucketSnapshot
from pipeline.dashboard.counters import Counters

BUCKETS = 185
COMPANIES = 20


def batch() -> list[BucketSnapshot]:
    counters = {
        name: Decimal("12.3400") if isinstance(zero, Decimal) else 5
        for name, zero in aggregates.empty_counters().items()
    }
    out = []
    for i in range(BUCKETS):
        key = BucketKey(
            i % COMPANIES, "hour" if i % 2 else "day", datetime(2026, 11, 2) + timedelta(hours=i)
        )
        out.append(
            BucketSnapshot(key.in_group("branch", i) if i % 3 == 0 else key, Counters(counters), i)
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot_codec", description=__doc__)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args(argv)
    buckets = batch()
    started = time.perf_counter()
    for _ in range(args.rounds):
        messages = list(snapshots.bundles(buckets))
    encoded = time.perf_counter()
    for _ in range(args.rounds):
        decoded = [pair for _, value, _ in messages for pair in snapshots.decode(value)]
    done = time.perf_counter()
    assert sorted((s for s, _ in decoded), key=lambda s: s.version) == buckets  # all, exactly
    per_bucket = 1e6 / (args.rounds * BUCKETS)
    print(
        f"{BUCKETS} buckets in {len(messages)} bundles, {args.rounds} rounds: "
        f"encode {(encoded - started) * per_bucket:.1f} us, "
        f"decode {(done - encoded) * per_bucket:.1f} us per bucket"
    )


if __name__ == "__main__":
    main()
