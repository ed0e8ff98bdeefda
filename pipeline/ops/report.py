"""Totals of a ``replay`` or ``redrive`` run, and how they are printed.

``changes`` sums :attr:`pipeline.apply.batch.BatchResult.changes` over the run's batches: per
table and company, the rows inserted/updated (and appointment links, bucket upserts,
customer merges). In a dry run it is what *would* be written. A dry run applies each
batch in its own rolled-back transaction, so a row that two batches would both write is
counted in each: exact when the stretch fits in one batch (``--batch-size``), an upper
bound otherwise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.apply.loop import Published
from pipeline.apply.results import (
    ALREADY_APPLIED,
    APPLIED,
    DEAD_LETTERED,
    UNROUTABLE,
    BatchResult,
    Changes,
    add_changes,
)

STATUSES = (APPLIED, ALREADY_APPLIED, UNROUTABLE, DEAD_LETTERED)
LABELS = {
    APPLIED: "applied",
    ALREADY_APPLIED: "already applied",
    UNROUTABLE: "unroutable",
    DEAD_LETTERED: "dead-lettered",
}


@dataclass
class RunReport:
    dry_run: bool = False
    read: int = 0
    batches: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    # (status, reason) of unroutable and dead-lettered events, to say why
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes: Changes = field(default_factory=dict)
    dead_letters_published: int = 0
    snapshots_published: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # redrive: why entries were left

    def add(
        self, records_read: int, result: BatchResult, published: Published | None = None
    ) -> None:
        self.read += records_read
        self.batches += 1
        if published is not None:
            self.dead_letters_published += published.dead_letters
            self.snapshots_published += published.snapshots
        for outcome in result.outcomes:
            self.counts[outcome.status] += 1
            if outcome.status in (UNROUTABLE, DEAD_LETTERED):
                self.reasons[(outcome.status, outcome.reason or "unknown")] += 1
        add_changes(self.changes, result.changes)

    def merge(self, other: RunReport) -> None:
        """Add the totals of another run over other partitions (``replay --jobs``)."""
        self.dry_run = self.dry_run or other.dry_run
        self.read += other.read
        self.batches += other.batches
        self.counts.update(other.counts)
        self.reasons.update(other.reasons)
        add_changes(self.changes, other.changes)
        self.dead_letters_published += other.dead_letters_published
        self.snapshots_published += other.snapshots_published
        self.skipped.update(other.skipped)

    @property
    def processed(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``read 40, applied 2, already applied 38, unroutable 0, dead-lettered 0``."""
        parts = [f"read {self.read}"] + [f"{LABELS[s]} {self.counts.get(s, 0)}" for s in STATUSES]
        line = ", ".join(parts)
        extra = self.processed - self.read
        if extra > 0:
            # Parked no-show updates fetched back and applied once their booking arrived.
            line += f" (includes {extra} un-parked)"
        return line

    def reason_lines(self) -> list[str]:
        return [
            f"  {LABELS[status]}: {reason} × {n}"
            for (status, reason), n in sorted(self.reasons.items())
        ]

    def change_lines(self) -> list[str]:
        """Per table and company, what was (or would be) written; nothing → one line."""
        verb = "would write" if self.dry_run else "wrote"
        lines = []
        for table in sorted(self.changes):
            for company, counter in sorted(
                self.changes[table].items(), key=lambda kv: (kv[0] is None, kv[0] or 0)
            ):
                if not +counter:
                    continue
                what = ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items()) if n)
                who = f"company {company}" if company is not None else "(no company)"
                lines.append(f"  {table:18} {who:16} {what}")
        if not lines:
            return [
                f"{verb}: nothing (no row would change)" if self.dry_run else f"{verb}: nothing"
            ]
        if self.dry_run and self.batches > 1:
            lines.append(
                f"  (an upper bound over {self.batches} rolled-back batches: a row that several"
                " batches write is counted in each; a --batch-size above the stretch's size"
                " makes it exact)"
            )
        return [f"{verb}:", *lines]

    def totals_by_table(self) -> dict[str, Counter[str]]:
        """Per table, summed over companies (what tests and the summary compare)."""
        out: dict[str, Counter[str]] = {}
        for table, per_company in self.changes.items():
            total: Counter[str] = Counter()
            for counter in per_company.values():
                total.update(counter)
            out[table] = +total
        return out

    def as_dict(self) -> dict[str, object]:
        """The report for ``--json``: every count by its status name, the reasons, and per
        table and company (``null`` for none) what was (or would be) written."""
        return {
            "dry_run": self.dry_run,
            "read": self.read,
            "processed": self.processed,
            "batches": self.batches,
            "counts": {status: self.counts.get(status, 0) for status in STATUSES},
            "reasons": [
                {"status": status, "reason": reason, "count": n}
                for (status, reason), n in sorted(self.reasons.items())
            ],
            "changes": [
                {"table": table, "company_id": company, **dict(sorted(counter.items()))}
                for table in sorted(self.changes)
                for company, counter in sorted(
                    self.changes[table].items(), key=lambda kv: (kv[0] is None, kv[0] or 0)
                )
                if +counter
            ],
            "changes_exact": not (self.dry_run and self.batches > 1),
            "published": {
                "dead_letters": self.dead_letters_published,
                "snapshots": self.snapshots_published,
            },
            "skipped": dict(sorted(self.skipped.items())),
        }
