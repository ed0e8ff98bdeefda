"""``python -m bench [--quick] [--no-write] [--only NAME,...] [--json PATH]``

Runs the benchmarks (apply, ingress, dashboard), each against its baseline in the same
run, prints progress and numbers, and writes ``docs/benchmarks.md``. ``--quick`` runs a
smoke-sized version of each (seconds, not minutes; its numbers mean little) and prints its
report rather than replace ``docs/benchmarks.md``, unless ``--output`` says where to write. Needs the
local stack (``scripts/stack.sh up``): Kafka and MariaDB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    apply_bench,
    apply_mix,
    dashboard_bench,
    harness,
    ingress_bench,
    ingress_report,
    replay_command,
    report,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
NAMES = ("apply", "ingress", "dashboard")

#: The revision whose apply path benchmark 1b compares with (the redesigned engine before
#: the throughput work); --apply-baseline overrides it.
APPLY_BASELINE = "db7e9bd"

FULL = {
    "apply_calls": 400,
    # simulator calls, replay passes (about 1,000,000 events), the baseline's replay passes
    "apply_mix": (3000, 41, 4),
    "replay_command": 3000,  # simulator calls
    "replay_copies": 44,  # the long stretch of 1c: the Retell records 44 times over (~1,000,000)
    "ingress": ingress_bench.Plan(
        seconds=10,
        concurrencies=(64, 512, 1024),
        hot_concurrencies=(64, 512, 1024),
        bodies=20_000,
        inbound_rate=200,
        inbound_seconds=30,
        outage_seconds=45,
        outage_down_s=20,
        profile=True,
        producer_variants=(
            (2, 16 * 1024, "none"),  # aiokafka's default batch
            (5, 16 * 1024, "none"),
            (1, 512 * 1024, "none"),
            (2, 512 * 1024, "none"),  # the default now
            (5, 512 * 1024, "none"),  # the default until 2026-11-30
            (10, 512 * 1024, "none"),
            (2, 512 * 1024, "gzip"),
        ),
    ),
    "dashboard": dashboard_bench.Plan(
        calls=25_000, companies=4, requests=300, in_process_reads=5000
    ),
}
QUICK = {
    "apply_calls": 40,
    "apply_mix": (60, 1, 1),
    "replay_command": 60,
    "replay_copies": 2,
    "ingress": ingress_bench.Plan(
        seconds=2,
        concurrencies=(16, 64),
        hot_concurrencies=(64,),
        bodies=500,
        inbound_rate=50,
        inbound_seconds=2,
        outage_seconds=0,
        outage_down_s=0,
        profile=False,
        producer_variants=((2, 512 * 1024, "none"),),
        producer_concurrency=64,
    ),
    "dashboard": dashboard_bench.Plan(calls=300, companies=2, requests=30, in_process_reads=200),
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs")
    parser.add_argument(
        "--apply-mix",
        default=None,
        metavar="CALLS,PASSES[,BASELINE_PASSES]",
        help="benchmark 1b's size: simulator calls, and replay passes over them (default "
        "3000,41,4: this revision replays about a million applied events, the baseline about "
        "100,000)",
    )
    parser.add_argument(
        "--apply-baseline",
        default=None,
        metavar="REV",
        help=f"git revision benchmark 1b compares the apply path with (default {APPLY_BASELINE}, "
        "none with --quick; empty: no baseline)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not write the report")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report path (default docs/benchmarks.md; a --quick run writes one only when "
        "given this, so it never replaces the full report)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write headline numbers as JSON"
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="REV",
        help="also run the ingress of git revision REV (same run, same interpreter)",
    )
    parser.add_argument(
        "--only", default=",".join(NAMES), help=f"comma list of {', '.join(NAMES)} (default: all)"
    )
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in NAMES]
    if unknown or not chosen:
        parser.error(f"--only: unknown {unknown}; choose from {', '.join(NAMES)}")
    args.chosen = chosen
    return args


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(REPO))
    except ValueError:
        shown = str(python)
    return " ".join([shown, "-m", "bench", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    plan = QUICK if args.quick else FULL
    base = harness.base_settings()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    began = time.perf_counter()
    facts = harness.machine_facts(base)
    print(
        f"bench: {'quick' if args.quick else 'full'} run of {', '.join(args.chosen)}; {facts}",
        flush=True,
    )

    apply = ingress = dashboard = None
    apply_mix_result = replay_result = None
    if "apply" in args.chosen:
        print("bench: 1. apply throughput", flush=True)
        apply = apply_bench.run(base, calls=plan["apply_calls"])  # type: ignore[arg-type]
        calls, passes, baseline_passes = plan["apply_mix"]  # type: ignore[misc]
        if args.apply_mix:
            sizes = [int(n) for n in args.apply_mix.split(",")]
            calls, passes, baseline_passes = (*sizes, *sizes[1:2])[:3]
        baseline = args.apply_baseline
        if baseline is None:
            baseline = "" if args.quick else APPLY_BASELINE
        apply_mix_result = apply_mix.run(
            base,
            calls=calls,
            passes=passes,
            baseline_rev=baseline or None,
            baseline_passes=baseline_passes,
        )
        print("bench: 1c. switchboard replay end to end", flush=True)
        replay_result = replay_command.run(
            base,
            calls=plan["replay_command"],  # type: ignore[arg-type]
            baseline_rev=baseline or None,
            copies=plan["replay_copies"],  # type: ignore[arg-type]
        )
    if "ingress" in args.chosen:
        print("bench: 2. ingress", flush=True)
        ingress = ingress_bench.run(base, plan["ingress"], before_rev=args.before)  # type: ignore[arg-type]
    if "dashboard" in args.chosen:
        print("bench: 3. dashboard read", flush=True)
        dashboard = dashboard_bench.run(base, plan["dashboard"])  # type: ignore[arg-type]

    seconds = time.perf_counter() - began
    facts["load average at end"] = harness.load_average()
    ctx = report.Context(
        started=started_at,
        command=_command(argv),
        quick=args.quick,
        seconds=seconds,
        facts=facts,
        revision=harness.git_revision(REPO),
    )
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    if ingress is not None and output is not None and not args.no_write:
        ctx.plots = ingress_report.plot(ingress, output.parent / "benchmarks")
    text = report.markdown(ctx, apply, ingress, dashboard, apply_mix_result, replay_result)
    if args.json is not None:
        numbers = report.summary(apply, ingress, dashboard)
        if apply_mix_result is not None:
            numbers["apply_mix"] = apply_mix_result.as_dict()
        if replay_result is not None:
            numbers["replay_command"] = [asdict(r) for r in replay_result.runs]
            numbers["replay_long_stretch"] = [asdict(r) for r in replay_result.long_runs]
        numbers["seconds"] = seconds
        args.json.write_text(json.dumps(numbers, indent=2, default=str))
    if args.no_write or output is None:
        print(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"bench: wrote {output} ({seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
