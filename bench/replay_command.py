"""Benchmark 1c: ``switchboard replay`` end to end, Kafka in the loop, this revision
against a baseline revision in the same run.

Benchmark 1b measures the apply engine alone; ops meet it through the command, which also
starts up, reads the topic partition by partition (aiokafka), publishes snapshots and
prints progress. Here the simulator's records (the same seeded mix as 1b) are produced once
to a fresh pair of 12-partition topics; each variant gets its own fresh database with the
bench tenants and runs, as a child process, ``replay --topic webhooks.retell --from-offset
0`` and the same for ``webhooks.calcom``: once to apply the stretch (first apply), then
again (a replay of an applied stretch, nothing to change). Wall time and the child's CPU
time include its start-up (about 2 to 3 s here: imports, connections).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import apply_mix, harness, servers
from pipeline import database
from pipeline.kafka import DurableProducer
from pipeline.settings import Settings
from testbed.services import settings_env

PROVIDERS = ("retell", "calcom")
PHASES = ("first apply", "replay (already applied)")
JOBS = 2  # `replay --jobs` of the long stretch's parallel runs (one per core here)


@dataclass(frozen=True)
class Run:
    variant: str
    revision: str
    phase: str
    provider: str
    records: int
    seconds: float
    cpu_seconds: float
    summary: str  # the command's "read ..." line

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_seconds / self.records if self.records else 0.0


@dataclass
class CommandResult:
    calls: int
    counts: dict[str, int]
    runs: list[Run]
    #: The long stretch (this revision only): the Retell records ``copies`` times over,
    #: applied, then replayed with one job and with JOBS (variant "jobs N").
    copies: int = 0
    long_runs: list[Run] = field(default_factory=list)

    def baseline(self, run: Run) -> Run | None:
        for other in self.runs:
            if other.variant == "baseline" and (other.phase, other.provider) == (
                run.phase,
                run.provider,
            ):
                return other
        return None


async def produce(settings: Settings, records: list[Any]) -> None:
    """``records`` to their provider topics under ``settings``' prefix, acknowledged."""
    async with DurableProducer(settings, client_id="switchboard-bench") as producer:
        await producer.send_all(
            (
                settings.topic(f"webhooks.{r.provider}"),
                r.key,
                r.value,
                [(k, v.encode()) for k, v in r.headers.items()],
            )
            for r in records
        )


def _command(
    settings: Settings, provider: str, tree: Path | None, jobs: int | None = None
) -> tuple[float, float, str]:
    """Run the command; its wall seconds, CPU seconds (its job processes' included) and
    summary line."""
    env = settings_env(settings)
    env["SWITCHBOARD_TOPIC_PREFIX"] = settings.topic_prefix
    command = [servers.SWITCHBOARD]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        command = [sys.executable, "-c", "from agents.main import main; main()"]
    command += ["replay", "--topic", f"webhooks.{provider}", "--from-offset", "0"]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command, env=env, cwd=tree or apply_mix.REPO, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    summary = next((line for line in done.stdout.splitlines() if line.startswith("read ")), "")
    return seconds, cpu, summary


def run(base: Settings, *, calls: int, baseline_rev: str | None, copies: int = 0) -> CommandResult:
    from pipeline.tenants import import_tenants
    from testbed.simulator import tenants as sim_tenants

    topics = harness.with_topics(base, partitions=12)
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="switchboard-replay-bench-") as tmp_name:
            tmp = Path(tmp_name)
            codes: list[tuple[str, Path | None, str]] = [
                ("this revision", None, harness.git_revision(apply_mix.REPO))
            ]
            if baseline_rev:
                tree = servers.export_revision(baseline_rev, tmp / "baseline")
                codes.insert(0, ("baseline", tree, baseline_rev))
            counts: Counter[str] = Counter()
            for variant, tree, revision in codes:
                scoped = harness.create_database(topics)
                engine = database.create_db_engine(scoped, pool_size=2)
                try:
                    with engine.begin() as conn:
                        import_tenants(
                            conn, sim_tenants.generate(apply_mix.TENANTS, apply_mix.SEED)
                        )
                    if not counts:  # the records, once, for every variant
                        records = apply_mix._records(engine, calls, time.time_ns() // 1_000_000)
                        asyncio.run(produce(topics, records))
                        counts.update(r.provider for r in records)
                    for phase in PHASES:
                        for provider in PROVIDERS:
                            seconds, cpu, summary = _command(scoped, provider, tree)
                            result = Run(
                                variant, revision, phase, provider, counts[provider], seconds, cpu,
                                summary,
                            )  # fmt: skip
                            runs.append(result)
                            print(
                                f"  replay command [{variant}] {phase} {provider}: "
                                f"{result.records} in {seconds:.1f}s = {result.per_s:,.0f}/s "
                                f"({result.cpu_us:.0f} us CPU/record); {summary}",
                                flush=True,
                            )
                finally:
                    engine.dispose()
                    harness.drop_database(scoped)
    finally:
        harness.delete_topics(topics)
    long_runs = _long_stretch(base, calls, copies) if copies else []
    return CommandResult(calls, dict(counts), runs, copies, long_runs)


def _long_stretch(base: Settings, calls: int, copies: int) -> list[Run]:
    """The Retell records ``copies`` times over on fresh topics (the same bodies again:
    already applied after the first copy), applied with JOBS jobs, then replayed with one
    job and with JOBS, twice each, alternating (this machine's load drifts)."""
    topics = harness.with_topics(base, partitions=12)
    revision = harness.git_revision(apply_mix.REPO)
    runs: list[Run] = []
    scoped = harness.create_database(topics)
    engine = database.create_db_engine(scoped, pool_size=2)
    try:
        records = apply_mix.seeded_records(engine, calls)
        retell = [r for r in records if r.provider == "retell"] * copies
        asyncio.run(produce(topics, retell))
        plan = [("first apply", JOBS)] + [("replay (already applied)", j) for j in (1, JOBS) * 2]
        for phase, jobs in plan:
            seconds, cpu, summary = _command(scoped, "retell", None, jobs)
            result = Run(
                f"jobs {jobs}", revision, phase, "retell", len(retell), seconds, cpu, summary
            )
            runs.append(result)
            print(
                f"  replay command [long stretch, --jobs {jobs}] {phase}: {result.records} in "
                f"{seconds:.1f}s = {result.per_s:,.0f}/s ({result.cpu_us:.0f} us CPU/record); "
                f"{summary}",
                flush=True,
            )
    finally:
        engine.dispose()
        harness.drop_database(scoped)
        harness.delete_topics(topics)
    return runs


def section(r: CommandResult) -> list[str]:
    out = [
        "## 1c. `switchboard replay` end to end (Kafka in the loop)",
        "",
        f"The simulator's records for {r.calls} calls ({r.counts.get('retell', 0)} Retell, "
        f"{r.counts.get('calcom', 0)} Cal.com), produced once to two fresh 12-partition "
        "topics; each variant, with its own fresh database, runs `switchboard replay --topic "
        "webhooks.<provider> --from-offset 0` as a child process: once to apply the stretch, "
        "then again over the applied stretch. Seconds and CPU include the command's start-up "
        "(about 2 to 3 s here). Benchmark 1b is the engine alone; this is what ops wait for.",
        "",
        "| variant | phase | topic | records | seconds | records/s | CPU µs per record "
        "(command) | records/s vs baseline |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for run_ in r.runs:
        base = r.baseline(run_)
        ratio = f"{run_.per_s / base.per_s:.2f}×" if base and base.per_s else "1.00×"
        out.append(
            f"| {run_.variant} (`{run_.revision.split()[0]}`) | {run_.phase} | "
            f"webhooks.{run_.provider} | {run_.records} | {run_.seconds:.1f} | "
            f"{run_.per_s:,.0f} | {run_.cpu_us:.0f} | {ratio} |"
        )
    out.append("")
    if r.long_runs:
        out += _long_section(r)
    return out


def _long_section(r: CommandResult) -> list[str]:
    records = r.long_runs[0].records
    out = [
        f"**A long stretch, one job and {JOBS}.** The Retell records above {r.copies} times "
        f"over ({records:,} records; the copies repeat the first's bodies, so after the first "
        "apply every record is already applied), on fresh topics and a fresh database, "
        f"applied once with `--jobs {JOBS}`, then replayed with `--jobs 1` and `--jobs "
        f"{JOBS}`, alternating, twice each. `--jobs {JOBS}` runs {JOBS} processes, each over "
        "its share of the 12 partitions (docs/runbook.md); their CPU is in the column.",
        "",
        "| phase | jobs | records | seconds | records/s | CPU µs per record | vs one job |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    singles = [x.per_s for x in r.long_runs if x.variant == "jobs 1"]
    one = sum(singles) / len(singles) if singles else 0.0
    for run_ in r.long_runs:
        ratio = f"{run_.per_s / one:.2f}×" if one and run_.phase.startswith("replay") else ""
        out.append(
            f"| {run_.phase} | {run_.variant.split()[-1]} | {run_.records:,} | "
            f"{run_.seconds:.1f} | {run_.per_s:,.0f} | {run_.cpu_us:.0f} | {ratio} |"
        )
    out.append("")
    return out


__all__ = ["CommandResult", "run", "section"]
