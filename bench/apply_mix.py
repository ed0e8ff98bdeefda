"""Benchmark 1b: the apply engine on the simulator's realistic mix, first apply and replay
of already-applied events, this revision against a baseline revision in the same run.

The mix is the traffic simulator's (``testbed.simulator``): seeded tenants and a busy
stretch of calls with their ``call_inbound``, transcript snapshots, transfers, ``call_ended``
and ``call_analyzed``, bookings with their lifecycle, provider retries and reordering; the
bodies are the providers' shapes, word-level transcripts included. The records go through
``pipeline.apply.batch.apply_batch`` in batches of 500 per provider (what each of the
worker's agents handed the engine until its default became 1000; kept so that the runs
compare across revisions), in delivery order; Kafka is not in the loop, so the numbers
are the engine's (the worker also reads Kafka and publishes, in the other process).

Each variant runs in its own processes (same interpreter and packages; the baseline's code
is a ``git archive`` of its revision), against its own fresh database: one process for the
first apply, one for the replay passes, each sampled by py-spy (``--idle``: waiting for
MySQL counts) so the report can say where the wall time goes. This file is also the
driver those processes run (``--worker``): it uses only what both revisions have.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BATCH = 500
PROCESSES = 2  # the parallel replay's processes (one per core here)
TENANTS = 20
SEED = 7

#: Where wall time goes, by the first match from a sample's leaf up (py-spy raw stacks).
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for MySQL (socket)", ("recv_into", "sendall", "_read_bytes", "socket.py")),
    ("MySQL driver (pymysql: escaping, rows)", ("pymysql",)),
    ("SQLAlchemy (statements, rows)", ("sqlalchemy",)),
    (
        "recognising known records",
        (
            "apply/recognise.py",
            "apply/lookup.py",
            "apply/published.py",
            "openssl_sha256",
            "hashlib",
        ),
    ),
    ("JSON decode (orjson)", ("orjson",)),
    ("parse + facts (providers)", ("pipeline/providers/",)),
    (
        "fold (merges, customers, counters)",
        (
            "apply/fold.py",
            "apply/merge.py",
            "apply/customers.py",
            "apply/plan.py",
            "apply/tenancy.py",
            "dashboard/aggregates.py",
            "dashboard/counters.py",
            "dataclasses.py",
        ),
    ),
    ("apply engine, other", ("pipeline/",)),
)


# --- the driver (runs inside the variant's process) ----------------------------------------


def seeded_records(engine: Any, calls: int) -> list[Any]:
    """Import the simulator's tenants into ``engine``'s (fresh) database and return the
    records of ``calls`` seeded calls for them, timed from now: the input of the benchmarks
    that run the real commands (``replay_command``, ``worker_apply``)."""
    from pipeline.tenants import import_tenants
    from testbed.simulator import tenants as sim_tenants

    with engine.begin() as conn:
        import_tenants(conn, sim_tenants.generate(TENANTS, SEED))
    return _records(engine, calls, time.time_ns() // 1_000_000)


def _records(engine: Any, calls: int, now_ms: int) -> list[Any]:
    from pipeline.tenants import load_tenants
    from testbed.records import record
    from testbed.simulator.scenario import ScenarioConfig, generate

    with engine.connect() as conn:
        companies = load_tenants(conn)
    scenario = generate(companies, ScenarioConfig(seed=SEED, calls=calls, now_ms=now_ms))
    out = []
    offsets: Counter[tuple[str, int]] = Counter()
    for i, delivery in enumerate(scenario.deliveries):
        step = scenario.steps[delivery.step]
        if step.event_id is None or step.expect_status >= 300:
            continue  # refused at the ingress: never on Kafka
        partition = zlib.crc32(step.key.encode()) % 12
        at = (step.provider, partition)
        out.append(
            record(
                step.provider,
                step.body,
                received_at_ms=now_ms - 3_600_000 + i,
                partition=partition,
                offset=offsets[at],
            )
        )
        offsets[at] += 1
    return out


def _batches(records: Sequence[Any]) -> Iterator[list[Any]]:
    """Batches of up to 500 per provider, in delivery order (each agent its own topic)."""
    pending: dict[str, list[Any]] = {}
    for r in records:
        batch = pending.setdefault(r.provider, [])
        batch.append(r)
        if len(batch) == BATCH:
            yield pending.pop(r.provider)
    yield from (b for b in pending.values() if b)


def _worker(args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine

    from pipeline.apply.batch import apply_batch

    engine = create_engine(args.database_url, isolation_level="READ COMMITTED")
    records = _records(engine, args.calls, args.now_ms)
    if args.share:  # K/N: this process's share of the partitions, as `replay --jobs N` splits
        k, n = (int(x) for x in args.share.split("/"))
        records = [r for r in records if r.partition % n == k]
    if args.event_type:  # one kind of record, e.g. call_ended: a backfill's stretch of new calls
        records = [r for r in records if r.headers["event_type"] in args.event_type]
    batches = list(_batches(records))
    outcomes: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    # What the worker and `replay` keep across batches: the buckets they published lately
    # (pipeline/apply/published.py; a baseline revision before it has none).
    try:
        from pipeline.apply.published import PublishedBuckets

        published: Any = PublishedBuckets()
    except ImportError:
        published = None
    options = {} if published is None else {"published": published}
    cpu, wall, started_at = time.process_time(), time.perf_counter(), time.time()
    for _ in range(args.passes):
        for batch in batches:
            result = apply_batch(engine, batch, **options)
            if published is not None:
                published.remember((s.key for s in result.snapshots), published.epoch)
            outcomes.update(result.counts())
            for table, per_company in result.changes.items():
                changed[table] += sum(sum(c.values()) for c in per_company.values())
    out = {
        "events": len(records) * args.passes,
        "seconds": time.perf_counter() - wall,
        "started_at": started_at,
        "ended_at": time.time(),
        "cpu_seconds": time.process_time() - cpu,
        "outcomes": dict(outcomes),
        "changed": dict(changed),
        "mix": dict(Counter(r.headers["event_type"] for r in records)),
        "bytes": sum(len(r.value) for r in records),
    }
    Path(args.out).write_text(json.dumps(out))


# --- the runner ----------------------------------------------------------------------------


@dataclass
class Phase:
    events: int
    seconds: float
    cpu_seconds: float
    outcomes: dict[str, int]
    changed: dict[str, int]
    profile: list[tuple[str, float]] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0


@dataclass
class Variant:
    name: str
    revision: str
    first: Phase
    replay: Phase
    #: The replay again in PROCESSES processes at once, each over its share of the
    #: partitions (what `switchboard replay --jobs` does); this revision only.
    parallel: Phase | None = None


@dataclass
class MixResult:
    calls: int
    passes: int
    records: int
    mix: dict[str, int]
    body_bytes: int
    variants: list[Variant]

    def ratio(self, phase: str) -> float:
        current, baseline = self.variants[-1], self.variants[0]
        base = getattr(baseline, phase).events_per_s
        return getattr(current, phase).events_per_s / base if base else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _categorise(raw: str) -> list[tuple[str, float]]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit() or "apply_batch" not in stack:
            continue  # setup (imports, the scenario) is not the engine's time
        frames = stack.split(";")
        name = "other"
        for frame in reversed(frames):
            hit = next((c for c, needles in CATEGORIES if any(n in frame for n in needles)), None)
            if hit is not None:
                name = hit
                break
        counts[name] += int(number)
    total = sum(counts.values())
    return [(name, n / total) for name, n in counts.most_common()] if total else []


def _driver(
    tmp: Path, database_url: str, calls: int, passes: int, now_ms: int, out: Path, *extra: str
) -> list[str]:
    """The command that runs this file as the driver of one variant's process."""
    # A copy outside bench/: run as a script, its folder is first on sys.path, and bench/
    # holds modules (profile.py, ...) that would shadow the standard library's.
    driver = tmp / "apply_mix_driver.py"
    shutil.copy(Path(__file__), driver)
    return [
        sys.executable,
        str(driver),
        "--worker",
        f"--database-url={database_url}",
        f"--calls={calls}",
        f"--passes={passes}",
        f"--now-ms={now_ms}",
        f"--out={out}",
        *extra,
    ]


def _phase(
    code: Path, database_url: str, calls: int, passes: int, now_ms: int, tmp: Path, tag: str
) -> tuple[Phase, dict[str, Any]]:
    out, raw = tmp / f"{tag}.json", tmp / f"{tag}.raw"
    command = _driver(tmp, database_url, calls, passes, now_ms, out)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profiled = Path(spy).exists()
    if profiled:
        command = [
            spy,
            "record",
            "--idle",
            "-r",
            "50",
            "--format",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
            "--",
            *command,
        ]
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run(command, cwd=code, env=env, check=True, capture_output=True)
    data = json.loads(out.read_text())
    profile = _categorise(raw.read_text()) if profiled and raw.exists() else []
    phase = Phase(
        data["events"],
        data["seconds"],
        data["cpu_seconds"],
        data["outcomes"],
        data["changed"],
        profile,
    )
    return phase, data


def _parallel_phase(
    code: Path, database_url: str, calls: int, passes: int, now_ms: int, tmp: Path
) -> Phase:
    """The replay passes in PROCESSES processes at once, each over its share of the
    partitions: events summed, wall time from the first start to the last end."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    outs = [tmp / f"parallel-{k}.json" for k in range(PROCESSES)]
    children = []
    for k, out in enumerate(outs):
        share = f"--share={k}/{PROCESSES}"
        with out.with_suffix(".err").open("wb") as err:
            children.append(
                subprocess.Popen(
                    _driver(tmp, database_url, calls, passes, now_ms, out, share),
                    cwd=code,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    for child, out in zip(children, outs, strict=True):
        if child.wait() != 0:
            err_text = out.with_suffix(".err").read_text()[-2000:]
            raise RuntimeError(f"parallel replay process failed: {err_text}")
    parts = [json.loads(out.read_text()) for out in outs]
    outcomes: Counter[str] = Counter()
    changed: Counter[str] = Counter()
    for part in parts:
        outcomes.update(part["outcomes"])
        changed.update(part["changed"])
    return Phase(
        sum(p["events"] for p in parts),
        max(p["ended_at"] for p in parts) - min(p["started_at"] for p in parts),
        sum(p["cpu_seconds"] for p in parts),
        dict(outcomes),
        dict(changed),
    )


def run(
    base: Any,
    *,
    calls: int,
    passes: int,
    baseline_rev: str | None,
    baseline_passes: int | None = None,
) -> MixResult:
    """Each variant: a fresh database, the first apply, then ``passes`` replays of it
    (``baseline_passes`` for the baseline: its replay is slow, and its rate does not
    change from one pass to the next)."""
    from bench import harness, servers
    from pipeline.tenants import import_tenants
    from testbed.simulator import tenants as sim_tenants

    now_ms = time.time_ns() // 1_000_000
    variants = []
    result: MixResult | None = None
    with tempfile.TemporaryDirectory(prefix="switchboard-apply-bench-") as tmp_name:
        tmp = Path(tmp_name)
        codes = [("this revision", REPO, harness.git_revision(REPO))]
        if baseline_rev:
            exported = servers.export_revision(baseline_rev, tmp / "baseline")
            codes.insert(0, ("baseline", exported, baseline_rev))
        for name, code, revision in codes:
            with harness.bench_database(base) as (settings, engine):
                with engine.begin() as conn:
                    import_tenants(conn, sim_tenants.generate(TENANTS, SEED))
                url = settings.database_url.reveal()
                tag = name.replace(" ", "-")
                first, data = _phase(code, url, calls, 1, now_ms, tmp, f"{tag}-first")
                rounds = passes if code is REPO else (baseline_passes or passes)
                replay, _ = _phase(code, url, calls, rounds, now_ms, tmp, f"{tag}-replay")
                parallel = None
                if code is REPO:
                    parallel = _parallel_phase(code, url, calls, passes, now_ms, tmp)
            variants.append(Variant(name, revision, first, replay, parallel))
            print(
                f"  apply mix [{name}] first {first.events} in {first.seconds:.1f}s = "
                f"{first.events_per_s:,.0f}/s ({first.cpu_us_per_event:.0f} us CPU/event); replay "
                f"{replay.events} in {replay.seconds:.1f}s = {replay.events_per_s:,.0f}/s "
                f"({replay.cpu_us_per_event:.0f} us CPU/event), changed {replay.changed}"
                + (
                    f"; replay in {PROCESSES} processes {parallel.events} in "
                    f"{parallel.seconds:.1f}s = {parallel.events_per_s:,.0f}/s, changed "
                    f"{parallel.changed}"
                    if parallel is not None
                    else ""
                ),
                flush=True,
            )
            result = MixResult(calls, passes, first.events, data["mix"], data["bytes"], variants)
    assert result is not None
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--now-ms", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--share", help="K/N: only the records of partitions p with p %% N == K")
    parser.add_argument(
        "--event-type", action="append", help="only the records of this event type (repeatable)"
    )
    args = parser.parse_args(argv)
    if not args.worker:
        parser.error("run through `python -m bench --only apply`")
    _worker(args)


if __name__ == "__main__":
    main()
