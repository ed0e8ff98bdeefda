"""Benchmark 1: apply throughput, batched transactions vs one transaction per event.

The same synthetic events (calls started/ended/analyzed across several companies and
branches, plus bookings and cancellations) are applied with ``apply_batch`` in batches of
the worker's default size (``SWITCHBOARD_WORKER_BATCH_SIZE``), of 50, and of 1 (the baseline: one transaction per event, the
N+1 pattern the old system died of). Each variant gets a fresh, migrated database with the
same tenants, so no variant benefits from rows another left behind. Only the
``apply_batch`` calls are timed; building the records is not.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, event

from bench import harness, workload
from pipeline.apply.batch import apply_batch
from pipeline.settings import Settings

DAY_MS = 86_400_000
BASELINE_BATCH = 1


@dataclass
class Variant:
    batch_size: int
    events: int
    transactions: int
    seconds: float
    statements: int
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def statements_per_event(self) -> float:
        return self.statements / self.events if self.events else 0.0

    @property
    def ms_per_transaction(self) -> float:
        return self.seconds / self.transactions * 1000 if self.transactions else 0.0


@dataclass
class ApplyResult:
    calls: int
    companies: int
    branches: int
    event_mix: Counter[str]
    variants: list[Variant]

    @property
    def baseline(self) -> Variant:
        return next(v for v in self.variants if v.batch_size == BASELINE_BATCH)

    def ratio(self, variant: Variant) -> float:
        return variant.events_per_s / self.baseline.events_per_s


WORKER_BATCH = Settings().worker_batch_size


def run(
    base: Settings, *, calls: int, batch_sizes: tuple[int, ...] = (WORKER_BATCH, 50, 1)
) -> ApplyResult:
    items = workload.tenants(4)
    now_ms = time.time_ns() // 1_000_000
    deliveries = workload.events(items, calls, end_ms=now_ms, span_ms=2 * DAY_MS, seed=11)
    records = workload.records(deliveries)
    mix = Counter(r.headers["event_type"] for r in records)
    variants = []
    for size in batch_sizes:
        with harness.bench_database(base) as (_settings, engine):
            workload.seed_tenants(engine, items)
            outcomes: Counter[str] = Counter()
            transactions = 0
            with _statements(engine) as statements:
                started = time.perf_counter()
                for i in range(0, len(records), size):
                    outcomes.update(apply_batch(engine, records[i : i + size]).counts())
                    transactions += 1
                seconds = time.perf_counter() - started
        variants.append(Variant(size, len(records), transactions, seconds, statements[0], outcomes))
        print(
            f"  apply batch={size:<4} {len(records)} events in {seconds:.2f}s "
            f"= {len(records) / seconds:,.0f} events/s, {statements[0]} statements  {dict(outcomes)}",
            flush=True,
        )
    return ApplyResult(
        calls=calls,
        companies=len(items),
        branches=sum(len(c.branches) for c in items),
        event_mix=mix,
        variants=variants,
    )


@contextmanager
def _statements(engine: Engine) -> Iterator[list[int]]:
    """Count the SQL statements sent on ``engine`` (an executemany counts once)."""
    count = [0]

    def seen(*_: object) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield count
    finally:
        event.remove(engine, "before_cursor_execute", seen)
