"""Benchmark 2: the webhook ingress under load, vs doing the work inside the request.

Targets, each a real process on loopback, each hit by :mod:`bench.loadgen` with signed
Retell and Cal.com webhooks:

* ``switchboard ingress`` (one process) and ``switchboard ingress --processes 2``: verify,
  write to Kafka (acks=all), answer 202;
* the baseline (:mod:`bench.baseline_server`): verify, parse, apply the event to MySQL in
  its own transaction, answer 200, all inside the request.

Each target first gets a warm-up (not measured), then a run at normal concurrency, then a
run at high concurrency (above the ~100 concurrent requests the old system fell over at).
The baseline gets fewer requests: at its rate the same count would take minutes; req/s
and latency percentiles do not depend on the count once it is a few hundred.
The baseline applies distinct events (a repeat would be deduplicated and cheaper); the
ingress does not deduplicate, so it may see the same bodies again.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import harness, loadgen, servers, workload
from bench.loadgen import LoadResult, Request
from pipeline.settings import Settings
from testbed.services import Service, free_port, running

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Plan:
    requests: int
    concurrency: int
    high_concurrency: int
    baseline_requests: int
    warmup: int


@dataclass
class Run:
    target: str
    processes: int
    phase: str  # "normal" | "high"
    result: LoadResult


@dataclass
class IngressResult:
    plan: Plan
    runs: list[Run]

    def find(self, target: str, phase: str) -> Run | None:
        return next((r for r in self.runs if r.target == target and r.phase == phase), None)


def run(base: Settings, plan: Plan) -> IngressResult:
    items = workload.tenants(4)
    now_ms = time.time_ns() // 1_000_000
    # Enough distinct events for the baseline's warm-up and both of its phases (~3 per call).
    calls = max(plan.warmup + 2 * plan.baseline_requests, plan.requests) // 3 + 50
    deliveries = workload.events(items, calls, end_ms=now_ms, span_ms=DAY_MS, seed=23)
    bodies = [(e.provider, e.body) for e in deliveries]
    phases = (("normal", plan.concurrency), ("high", plan.high_concurrency))
    runs: list[Run] = []
    with (
        harness.bench_topics(base, partitions=6) as with_topics,
        harness.bench_database(with_topics) as (settings, engine),
        tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp,
    ):
        workload.seed_tenants(engine, items)
        log_dir = Path(tmp)
        for processes in (1, 2):
            scoped = settings.with_(ingress_port=free_port(), data_dir=log_dir / "data")
            url = f"http://127.0.0.1:{scoped.ingress_port}"
            with running(servers.ingress(scoped, log_dir, processes)) as (service,):
                servers.wait_all_ready(url + "/readyz")
                _warm(url, bodies, plan.warmup)
                for phase, concurrency in phases:
                    label = f"ingress {processes}p"
                    result = _load(url, bodies, plan.requests, concurrency, label, service)
                    runs.append(Run("ingress", processes, phase, result))
        baseline = servers.BaselineServer(settings, free_port(), log_dir)
        url = f"http://127.0.0.1:{baseline.port}"
        with running(baseline):
            _warm(url, bodies[: plan.warmup], plan.warmup)
            offset = plan.warmup
            for phase, concurrency in phases:
                chunk = bodies[offset : offset + plan.baseline_requests]
                offset += len(chunk)
                result = _load(url, chunk, len(chunk), concurrency, "baseline", baseline)
                runs.append(Run("baseline", 1, phase, result))
    return IngressResult(plan, runs)


def _requests(bodies: list[tuple[str, bytes]], count: int) -> list[Request]:
    """``count`` signed requests, cycling through ``bodies``."""
    chosen = [bodies[i % len(bodies)] for i in range(count)]
    return loadgen.sign(chosen)


def _warm(base_url: str, bodies: list[tuple[str, bytes]], count: int) -> None:
    result = asyncio.run(loadgen.run(base_url, _requests(bodies, count), 10, deadline_s=120))
    if result.ok == 0:
        raise RuntimeError(f"warm-up got no 2xx from {base_url}: {result.describe_errors()}")


def _load(
    base_url: str,
    bodies: list[tuple[str, bytes]],
    count: int,
    concurrency: int,
    label: str,
    server: Service,
) -> LoadResult:
    requests = _requests(bodies, count)
    pid = server.proc.pid if server.proc is not None else None
    before = servers.group_cpu_seconds(pid) if pid else None
    machine = servers.machine_ticks()
    result = asyncio.run(loadgen.run(base_url, requests, concurrency, deadline_s=150))
    result.machine_busy = servers.busy_percent(machine, servers.machine_ticks())
    after = servers.group_cpu_seconds(pid) if pid else None
    if before is not None and after is not None:
        result.server_cpu_s = after - before
    latency = result.latency
    print(
        f"  {label:<12} c={concurrency:<4} {result.ok}/{count} 2xx in {result.seconds:.2f}s "
        f"= {result.rps:,.0f} req/s  p50 {latency.p50:.1f} ms  p99 {latency.p99:.1f} ms  "
        f"errors: {result.describe_errors()}  CPU: server "
        f"{result.cpu_percent(result.server_cpu_s):.0f}%, load generator "
        f"{result.cpu_percent(result.client_cpu_s):.0f}% of a core; machine "
        f"{result.machine_busy if result.machine_busy is not None else float('nan'):.0f}% busy",
        flush=True,
    )
    return result
