"""The request path's counts are held and flushed in bulk (pipeline/ingress/metrics.py):
whatever reads the registry sees exactly what prometheus-client's own ``inc`` and
``observe`` would have recorded."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.ingress.metrics import IngressMetrics

# on, just below and just above bucket bounds (0.0005, 0.001, 0.0025, ... 10.0), and past all
VALUES = (0.0, 0.0005, 0.00050001, 0.001, 0.0024, 0.0025, 0.3, 2.0, 2.0000001, 10.0, 11.0)


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {
        (s.name, *sorted(s.labels.values())): s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_held_observations_land_in_the_buckets_prometheus_would_choose() -> None:
    held, direct = CollectorRegistry(), CollectorRegistry()
    ours, theirs = IngressMetrics(held), IngressMetrics(direct)
    for value in VALUES:
        ours.child(ours.latency, "retell").observe(value)
        theirs.latency.labels("retell").observe(value)
    name = "switchboard_ingress_request_duration_seconds"
    assert samples(held, name) == samples(direct, name)
    assert samples(held, name)[(f"{name}_count", "retell")] == len(VALUES)


def test_held_counts_are_flushed_by_every_read_and_only_once() -> None:
    registry = CollectorRegistry()
    metrics = IngressMetrics(registry)
    counter = metrics.child(metrics.requests, "retell", "call_ended", "202")
    labels = {"provider": "retell", "event_type": "call_ended", "status": "202"}
    counter.inc()
    counter.inc(2)
    assert registry.get_sample_value("switchboard_ingress_requests_total", labels) == 3.0
    assert b'status="202"} 3.0' in generate_latest(registry)  # a second read adds nothing
    counter.inc()
    metrics.flush()
    metrics.flush()
    assert registry.get_sample_value("switchboard_ingress_requests_total", labels) == 4.0
    with pytest.raises(ValueError):
        counter.inc(-1)
