"""docs/observability.md names exactly the switchboard_* metrics the code exports."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine

from agents.metrics import WorkerMetrics
from pipeline.backfill.metrics import BackfillMetrics
from pipeline.dashboard import drift_metrics
from pipeline.dashboard.drift import Scope
from pipeline.dashboard.reconcile import Report
from pipeline.ingress.metrics import IngressMetrics
from pipeline.pool_collector import PoolCollector

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def exported() -> set[str]:
    ingress = CollectorRegistry()
    IngressMetrics(ingress)
    worker = WorkerMetrics()
    worker.registry.register(PoolCollector(create_engine("sqlite://"), "worker"))
    names = set()
    now = datetime(2026, 1, 1)
    reconcile = drift_metrics.registry_of(Report(Scope((), None, now, now), []))
    for registry in (ingress, worker.registry, BackfillMetrics().registry, reconcile):
        for family in registry.collect():
            if family.name.startswith("switchboard_"):
                names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def documented() -> set[str]:
    text = DOC.read_text()
    names = set(re.findall(r"`(switchboard_[a-z_]+)`", text))
    return {n for n in names if not n.endswith("_")}


def test_the_catalogue_is_the_code() -> None:
    code, doc = exported(), documented()
    assert not code - doc, f"exported but not in docs/observability.md: {sorted(code - doc)}"
    assert not doc - code, f"in docs/observability.md but not exported: {sorted(doc - code)}"
