"""One simulation run: tenants from MySQL → scenario → HTTP delivery → expected state.

``run_simulation(settings, config)`` is what ``switchboard simulate`` does, callable from
tests and benchmarks. The expected state counts only steps the ingress accepted (2xx), so
it stays exact when the ingress refuses or loses something: then ``verify`` shows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from pipeline.database import check_database, create_db_engine
from pipeline.errors import SwitchboardError
from pipeline.settings import Settings
from testbed.simulator import expected, healing, rest_view
from testbed.simulator.model import Scenario, iso_ms
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.sender import Outcome, Progress, SendConfig, Sender
from testbed.simulator.tenants import load_tenants
from testbed.simulator.verify import read_buckets

SECRET_VARIABLES = {"retell": "RETELL_API_KEY", "calcom": "CALCOM_WEBHOOK_SECRET"}


class SimulationError(SwitchboardError):
    """The run cannot start (no secret, no tenants, ingress unreachable)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    scenario: ScenarioConfig
    send: SendConfig = SendConfig()
    expected_path: Path | None = None
    ready_wait_s: float = 30.0  # how long to wait for the ingress's /readyz before sending
    outage: OutageFiles | None = None  # with ScenarioConfig.drop_share: what a backfill needs


@dataclass(frozen=True, slots=True)
class OutageFiles:
    """What a run that lost webhooks on purpose writes for ``switchboard backfill``.

    ``provider_state``: the story as the providers' REST APIs show it (for
    ``switchboard fake-providers``); ``after_backfill``: the expected state once a backfill
    healed the outage (docs/backfill.md, its residuals included); ``complete``: the expected
    state as if every webhook had arrived (differs from ``after_backfill`` only by the
    documented residuals).
    """

    provider_state: Path
    after_backfill: Path
    complete: Path | None = None


@dataclass
class Summary:
    seed: int
    run_tag: str
    anchor: str
    calls: int
    bookings: int
    webhooks: int  # distinct bodies (steps)
    deliveries: int
    requests: int = 0  # HTTP requests, retries included
    accepted: int = 0  # deliveries answered 2xx
    rejected: dict[str, int] = field(default_factory=dict)  # "401 invalid_signature" → n
    answers_503: int = 0
    other_retries: int = 0
    undelivered: int = 0
    skipped: int = 0
    dropped: int = 0  # deliveries lost upstream on purpose (drop_share)
    unexpected: list[str] = field(default_factory=list)
    inbound_mismatches: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    expected_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything good was accepted, everything bad refused, every call routed right."""
        return not (self.undelivered or self.unexpected or self.inbound_mismatches)

    def lines(self) -> list[str]:
        rate = self.deliveries / self.elapsed_s if self.elapsed_s > 0 else 0.0
        rejected = ", ".join(f"{k} ×{v}" for k, v in sorted(self.rejected.items())) or "none"
        lat = self.latency_ms
        out = [
            f"simulated {self.calls} calls and {self.bookings} bookings (seed {self.seed}, run {self.run_tag}, "
            f"day ending {self.anchor})",
            f"  sent        {self.deliveries} deliveries of {self.webhooks} webhooks, {self.requests} requests "
            f"in {self.elapsed_s:.1f} s ({rate:.1f} deliveries/s)",
            f"  accepted    {self.accepted} (2xx)",
            f"  rejected    {sum(self.rejected.values())}: {rejected}",
            f"  retried     {self.answers_503} answers 503 (Retry-After honoured), {self.other_retries} other "
            "(429/5xx/timeouts/refused)",
            f"  undelivered {self.undelivered} (gave up at the deadline); skipped {self.skipped} "
            "(dependency never accepted)",
        ]
        if self.dropped:
            out.append(
                f"  dropped     {self.dropped} deliveries lost upstream on purpose (an outage)"
            )
        if lat:
            out.append(
                f"  latency     p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
                f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms"
            )
        out.append(
            f"  unexpected  {len(self.unexpected)} answers, {len(self.inbound_mismatches)} routing answers"
        )
        out += [f"    {line}" for line in (self.unexpected + self.inbound_mismatches)[:20]]
        if len(self.unexpected) + len(self.inbound_mismatches) > 20:
            out.append("    ...")
        out += [f"  note: {n}" for n in self.notes]
        if self.expected_path:
            out.append(f"  expected state written to {self.expected_path}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def run_simulation(
    settings: Settings,
    config: SimulationConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    """Generate, send and (with ``config.expected_path``) write the expected state."""
    return asyncio.run(simulate(settings, config, on_progress=on_progress))


async def simulate(
    settings: Settings,
    config: SimulationConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> Summary:
    secrets: dict[str, str] = {}
    for provider, variable in SECRET_VARIABLES.items():
        configured = settings.secrets_for(provider)
        if not configured:
            raise SimulationError(
                f"{variable} is not set: the simulator signs {provider} webhooks with it"
            )
        secrets[provider] = configured[0]
    scenario_config = config.scenario
    if scenario_config.now_ms is None:
        scenario_config = dataclasses.replace(scenario_config, now_ms=int(time.time() * 1000))
    engine = create_db_engine(settings, pool_size=1)
    try:
        await asyncio.to_thread(check_database, engine)
        companies = await asyncio.to_thread(_load_tenants, engine)
        try:
            scenario = generate(companies, scenario_config)
        except ValueError as exc:
            raise SimulationError(str(exc)) from exc
        windows: dict[int, dict[str, Any]] = {}
        baseline: dict[expected.BucketKey, dict[str, Any]] = {}
        if config.expected_path is not None or config.outage is not None:
            everything = {k for k, s in scenario.steps.items() if s.expect_status < 300}
            projection = expected.compute(
                scenario.companies, scenario.calls, scenario.bookings, everything
            )
            windows = expected.windows_for(projection.buckets)
            baseline = await asyncio.to_thread(_read_baseline, engine, windows)
        notes = await _preflight(config.send.url, config.ready_wait_s)
        began = time.monotonic()
        sender = Sender(scenario, secrets, config.send, on_progress=on_progress)
        outcomes = await sender.run()
        elapsed = time.monotonic() - began
    finally:
        engine.dispose()
    summary = summarize(scenario, outcomes, elapsed)
    summary.notes += notes
    accepted = {
        o.step for o in outcomes if o.accepted and scenario.steps[o.step].expect_status < 300
    }
    run = {
        "seed": scenario.seed,
        "run_tag": scenario.run_tag,
        "anchor": iso_ms(scenario.anchor_ms),
        "url": config.send.url,
        "finished_at": iso_ms(int(time.time() * 1000)),
        "accepted_steps": len(accepted),
        "summary_ok": summary.ok,
    }

    def write(path: Path, calls: Any, bookings: Any, delivered: set[str], **extra: Any) -> None:
        result = expected.compute(scenario.companies, calls, bookings, delivered)
        doc = expected.document(
            result,
            run={**run, **extra},
            windows=windows,
            baseline=baseline,
            id_prefixes={"calls": f"call_{scenario.run_tag}", "appointments": scenario.run_tag},
        )
        write_json(path, doc)

    if config.expected_path is not None:
        write(config.expected_path, scenario.calls, scenario.bookings, accepted)
        summary.expected_path = str(config.expected_path)
    if config.outage is not None:
        metadata = {key.rpartition(":")[2]: value for key, value in sender.inbound_metadata.items()}
        state = rest_view.provider_state(scenario.calls, scenario.bookings, metadata)
        write_json(config.outage.provider_state, state)
        bookings, delivered = healing.heal(
            scenario.calls, scenario.bookings, accepted, int(time.time() * 1000)
        )
        write(config.outage.after_backfill, scenario.calls, bookings, delivered, healed=True)
        if config.outage.complete is not None:
            complete = accepted | set(scenario.dropped)
            write(config.outage.complete, scenario.calls, scenario.bookings, complete)
        summary.notes.append(
            f"{len(scenario.dropped)} webhooks lost upstream; the providers' APIs are in "
            f"{config.outage.provider_state}, the state after a backfill in "
            f"{config.outage.after_backfill}"
        )
    return summary


def _load_tenants(engine: Any) -> Any:
    with engine.connect() as conn:
        return load_tenants(conn)


def _read_baseline(engine: Any, windows: Any) -> Any:
    with engine.connect() as conn:
        return read_buckets(conn, windows)


async def _preflight(url: str, ready_wait_s: float) -> list[str]:
    """Fail fast when nothing listens at ``url``; wait a while for /readyz."""
    base = url.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(f"{base}/healthz") as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SimulationError(f"ingress unreachable at {base}: {type(exc).__name__}") from exc
        deadline = time.monotonic() + ready_wait_s
        while True:
            try:
                async with session.get(f"{base}/readyz") as resp:
                    await resp.read()
                    if resp.status == 200:
                        return []
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.monotonic() >= deadline:
                return [
                    f"{base}/readyz did not answer 200 within {ready_wait_s:.0f} s; sent anyway "
                    "(503s are retried)"
                ]
            await asyncio.sleep(0.5)


def summarize(scenario: Scenario, outcomes: list[Outcome], elapsed: float) -> Summary:
    summary = Summary(
        seed=scenario.seed,
        run_tag=scenario.run_tag,
        anchor=iso_ms(scenario.anchor_ms),
        calls=len(scenario.calls),
        bookings=len(scenario.bookings),
        webhooks=len(scenario.steps),
        deliveries=len(outcomes),
        elapsed_s=elapsed,
    )
    rejected: Counter[str] = Counter()
    latencies = []
    for o in outcomes:
        step = scenario.steps[o.step]
        summary.requests += o.requests
        summary.answers_503 += o.answers_503
        summary.other_retries += o.answers_other_retryable
        if o.error == "skipped":
            summary.skipped += 1
            continue
        if o.error == "dropped":
            summary.dropped += 1
            continue
        if o.status is None:
            summary.undelivered += 1
            continue
        latencies.append(o.latency_ms)
        if o.accepted:
            summary.accepted += 1
        else:
            rejected[f"{o.status} {o.error or '?'}"] += 1
        if o.status != step.expect_status:
            what = step.bad or step.event_type
            summary.unexpected.append(
                f"{o.step} (#{o.attempt}, {what}): expected {step.expect_status}, got {o.status} {o.error or ''}".rstrip()
            )
        if o.mismatch:
            summary.inbound_mismatches.append(f"{o.step}: {o.mismatch}")
    summary.rejected = dict(rejected)
    if latencies:
        ordered = sorted(latencies)
        summary.latency_ms = {
            "p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": ordered[-1],
        }
    return summary


def write_json(path: Path, doc: Any) -> None:
    """Write atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
