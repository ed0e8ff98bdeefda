"""What one backfill run found and did, as numbers and as lines for a terminal or a log."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.backfill.when import iso_ms

Changes = dict[str, dict[int | None, Counter[str]]]


@dataclass
class BackfillReport:
    provider: str
    since: datetime
    until: datetime
    dry_run: bool = False
    listed: int = 0  # calls or bookings the API returned
    owed: int = 0  # webhooks they owe
    present: int = 0  # already applied
    pending: int = 0  # no-show marks parked until their booking is applied
    written: Counter[str] = field(default_factory=Counter)  # by event type
    restored: int = 0  # of the written, already applied but their rows were gone
    unattributable: list[tuple[str, str]] = field(default_factory=list)  # (event id, reason)
    still_unroutable: int = 0  # delivered earlier as unroutable, still unroutable
    refused: list[tuple[str, str]] = field(default_factory=list)  # the apply path refused ours
    not_applied: list[str] = field(default_factory=list)  # written, not applied after the wait
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    throttled: int = 0
    fetched: int = 0
    changes: Changes = field(default_factory=dict)
    watermark: datetime | None = None

    @property
    def total_written(self) -> int:
        return sum(self.written.values())

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON values (``switchboard backfill --json``)."""
        return {
            "provider": self.provider,
            "since": iso_ms(self.since),
            "until": iso_ms(self.until),
            "dry_run": self.dry_run,
            "listed": self.listed,
            "owed": self.owed,
            "present": self.present,
            "pending": self.pending,
            "written": dict(sorted(self.written.items())),
            "written_total": self.total_written,
            "restored": self.restored,
            "unattributable": [{"event_id": e, "reason": r} for e, r in self.unattributable],
            "still_unroutable": self.still_unroutable,
            "refused": [{"event_id": e, "reason": r} for e, r in self.refused],
            "not_applied": list(self.not_applied),
            "notes": list(self.notes),
            "api": {
                "requests": self.requests,
                "throttled": self.throttled,
                "fetched": self.fetched,
            },
            "changes": {
                table: {str(company): dict(counter) for company, counter in per_company.items()}
                for table, per_company in self.changes.items()
            },
            "watermark": iso_ms(self.watermark) if self.watermark and not self.dry_run else None,
        }

    def lines(self) -> list[str]:
        verb = "would write" if self.dry_run else "wrote"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.written.items())) or "nothing"
        out = [
            f"backfill {self.provider} {iso_ms(self.since)} .. {iso_ms(self.until)}"
            + (" [dry run: nothing written]" if self.dry_run else ""),
            f"  listed {self.listed}, owing {self.owed} webhooks: {self.present} present, "
            f"{self.owed - self.present - self.pending} to check, {self.pending} pending "
            "(parked no-shows)",
            f"  {verb} {self.total_written}: {kinds}"
            + (f" ({self.restored} to restore lost rows)" if self.restored else ""),
            f"  unattributable {len(self.unattributable)} (not written), still unroutable "
            f"{self.still_unroutable}, refused {len(self.refused)}",
            f"  API: {self.requests} requests ({self.fetched} per-item reads), "
            f"{self.throttled} answered 429",
        ]
        for event_id, reason in self.unattributable[:50]:
            out.append(f"  unattributable: {event_id}: {reason}")
        if len(self.unattributable) > 50:
            out.append(f"  ... {len(self.unattributable) - 50} more unattributable")
        for event_id, reason in self.refused:
            out.append(f"  refused by the apply path: {event_id}: {reason}")
        # What the apply path's dry run said applying them changes (the workers do it).
        applies = "would apply" if self.dry_run else "applies"
        for table, per_company in sorted(self.changes.items()):
            for company, counter in sorted(per_company.items(), key=lambda kv: str(kv[0])):
                counts = ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))
                out.append(f"  {applies}: {table} company {company}: {counts}")
        if self.not_applied:
            out.append(
                f"  not applied yet: {len(self.not_applied)} (on Kafka; is a worker running?)"
            )
        out += [f"  note: {n}" for n in self.notes]
        if self.watermark is not None and not self.dry_run:
            out.append(f"  watermark now {iso_ms(self.watermark)}")
        return out
