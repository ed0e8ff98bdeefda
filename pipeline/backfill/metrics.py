"""Prometheus metrics of the backfill, on a registry of its own (no global state).

A periodic backfill serves them on its own small ``/metrics`` port; a one-shot run can
write them to a file for node_exporter's textfile collector (docs/backfill.md). Label
values are bounded: ``provider`` is ``retell`` or ``calcom``, ``kind`` one of the event
types the backfill can write, ``status`` an HTTP status or a transport error class.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    start_http_server,
    write_to_textfile,
)

from pipeline.backfill.when import EPOCH


def _seconds(at: datetime) -> float:
    return (at - EPOCH).total_seconds()


class BackfillMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "switchboard_backfill_events_total",
            "Webhooks the backfill wrote to the webhook topic because they never arrived "
            "(or arrived unusable), by provider and event type. Above zero means webhooks "
            "are being lost upstream.",
            ["provider", "kind"],
            registry=r,
        )
        self.unattributable = Counter(
            "switchboard_backfill_unattributable_total",
            "Missing webhooks the backfill did not write because no branch would take them.",
            ["provider"],
            registry=r,
        )
        self.runs = Counter(
            "switchboard_backfill_runs_total",
            "Backfill runs by outcome (success, failure, dry_run).",
            ["provider", "outcome"],
            registry=r,
        )
        self.api_responses = Counter(
            "switchboard_backfill_api_responses_total",
            "Answers of the provider's REST API by status (429: rate limited).",
            ["provider", "status"],
            registry=r,
        )
        self.last_success = Gauge(
            "switchboard_backfill_last_success_timestamp_seconds",
            "When the last successful backfill run of the provider finished (Unix time).",
            ["provider"],
            registry=r,
        )
        self.watermark = Gauge(
            "switchboard_backfill_watermark_timestamp_seconds",
            "The provider's watermark: everything before it has been compared (Unix time).",
            ["provider"],
            registry=r,
        )
        self.watermark_age = Gauge(
            "switchboard_backfill_watermark_age_seconds",
            "How far the watermark trails the clock, at scrape time.",
            ["provider"],
            registry=r,
        )
        self.last_written = Gauge(
            "switchboard_backfill_last_run_written",
            "Events the provider's last successful run wrote.",
            ["provider"],
            registry=r,
        )
        self._marks: dict[str, float] = {}

    def prepare(self, provider: str, kinds: Iterable[str]) -> None:
        """Start the provider's counters at 0, so the first lost event is an increase.

        A series that appears at 1 has no earlier sample: ``increase()`` (and so the alert
        on lost webhooks) would not see the first event a backfill ever writes.
        """
        for kind in sorted(kinds):
            self.events.labels(provider, kind)
        self.unattributable.labels(provider)
        for outcome in ("success", "failure"):
            self.runs.labels(provider, outcome)

    def on_answer(self, provider: str, status: str) -> None:
        self.api_responses.labels(provider, status).inc()

    def observe_state(
        self,
        provider: str,
        *,
        covered_until: datetime | None,
        last_success_at: datetime | None,
        last_written: int | None = None,
    ) -> None:
        """Publish what the watermark table says (after a run, and at start-up)."""
        if last_success_at is not None:
            self.last_success.labels(provider).set(_seconds(last_success_at))
        if last_written is not None:
            self.last_written.labels(provider).set(last_written)
        if covered_until is None:
            return
        mark = _seconds(covered_until)
        self.watermark.labels(provider).set(mark)
        if provider not in self._marks:
            self.watermark_age.labels(provider).set_function(lambda: self._age(provider))
        self._marks[provider] = mark

    def _age(self, provider: str) -> float:
        mark = self._marks.get(provider)
        return math.nan if mark is None else max(0.0, time.time() - mark)

    def write_textfile(self, path: Path) -> None:
        """Atomically, for node_exporter's textfile collector (``*.prom``)."""
        write_to_textfile(str(path), self.registry)

    def serve(self, host: str, port: int) -> Any:
        """``/metrics`` on ``host:port`` in a daemon thread; returns the server (``shutdown()``)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
