"""Reconcile's findings as Prometheus metrics, for a scheduled ``switchboard reconcile``.

Drift is found by recounting buckets from MySQL rows, which only the reconcile command
does; a worker cannot afford it continuously. So a scheduled run (a cron job or a
Kubernetes CronJob, ``--all``) writes its result with ``--metrics-textfile`` for
node_exporter's textfile collector, and the alert fires on what the last run found or on
the run itself going stale (docs/observability.md, "Reconcile").
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from pipeline.dashboard.reconcile import Report

SOURCES = ("mysql", "api")


def write_textfile(report: Report, path: Path, *, now: float | None = None) -> None:
    """Write the run's gauges to ``path`` (atomically: a temporary file, then a rename)."""
    write_to_textfile(str(path), registry_of(report, now=now))


def registry_of(report: Report, *, now: float | None = None) -> CollectorRegistry:
    """The run's gauges on a registry of their own."""
    registry = CollectorRegistry()
    drifts = Gauge(
        "switchboard_reconcile_drifts",
        "Bucket counters the last reconcile run found wrong, by where they were stored "
        "(mysql: dashboard_buckets; api: the workers' dashboard table), before any --fix.",
        ["source"],
        registry=registry,
    )
    Gauge(
        "switchboard_reconcile_drifting_companies",
        "Companies with at least one drifting counter in the last run, before any --fix.",
        registry=registry,
    ).set(sum(1 for c in report.companies if c.drifts))
    Gauge(
        "switchboard_reconcile_companies_checked",
        "Companies the last reconcile run recounted.",
        registry=registry,
    ).set(len(report.companies))
    Gauge(
        "switchboard_reconcile_ok",
        "1 when the last run found no drift, or fixed it and the re-check agreed; else 0.",
        registry=registry,
    ).set(1 if report.ok else 0)
    Gauge(
        "switchboard_reconcile_last_run_timestamp_seconds",
        "When the last reconcile run finished (Unix time).",
        registry=registry,
    ).set(time.time() if now is None else now)
    for source in SOURCES:
        drifts.labels(source).set(
            sum(1 for c in report.companies for d in c.drifts if d.source == source)
        )
    return registry
