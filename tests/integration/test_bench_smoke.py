"""The benchmarks still run: ``python -m bench --quick --no-write`` completes on the real
stack and every benchmark produces numbers.

Deliberately no thresholds on the numbers: speed is measured by ``make bench`` and
reported in docs/benchmarks.md, never asserted by a timed test. What can be false here is
that a benchmark crashed, measured nothing (no 2xx, no events applied), or compared two
read paths that disagree.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.apply_bench import WORKER_BATCH

REPO = Path(__file__).resolve().parents[2]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_completes_and_produces_numbers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    report = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", "--output", str(report),
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not report.exists()  # --no-write: the report goes to stdout only
    assert "## 1. Apply throughput" in done.stdout
    numbers = json.loads(out.read_text())

    apply = numbers["apply"]
    assert apply["events"] > 0
    assert set(apply["events_per_s"]) == {str(WORKER_BATCH), "50", "1"}
    assert all(_number(v) for v in apply["events_per_s"].values())

    # 1c: the command applied the stretch, then found every record of it applied.
    runs = numbers["replay_command"]
    assert {(r["phase"], r["provider"]) for r in runs} == {
        (phase, provider)
        for phase in ("first apply", "replay (already applied)")
        for provider in ("retell", "calcom")
    }
    for r in runs:
        assert r["records"] > 0 and _number(r["seconds"]), r
        assert r["summary"].startswith(f"read {r['records']}, "), r
        if r["phase"].startswith("replay"):
            assert ", applied 0," in r["summary"], r

    # 1c's long stretch: applied with --jobs 2, then replayed by one job and by two, every
    # record of it found applied.
    long = numbers["replay_long_stretch"]
    assert [(r["phase"], r["variant"]) for r in long] == [
        ("first apply", "jobs 2"),
        *[("replay (already applied)", f"jobs {j}") for j in (1, 2, 1, 2)],
    ]
    for r in long:
        assert r["summary"].startswith(f"read {r['records']}, "), r
        if r["phase"].startswith("replay"):
            assert ", applied 0," in r["summary"], r

    ingress = numbers["ingress"]
    points = ingress["points"]
    assert {(p["target"], p["case"]) for p in points} == {
        ("bare", "distinct"), ("ingress", "distinct"), ("ingress", "hot"),
    }  # fmt: skip
    for p in points:
        assert p["ok"] > 0 and _number(p["rps"]) and _number(p["p99_ms"]), p
    assert ingress["inbound"]["ingress"]["count"] > 0
    [variant] = ingress["producer"]  # the quick plan's one producer variant, each point measured
    assert variant["linger_ms"] == 2, variant
    for name in ("distinct_rps", "hot_rps", "low_concurrency_rps"):
        assert _number(variant[name]), variant

    dashboard = numbers["dashboard"]
    assert set(dashboard["agreement"].values()) == {"same"}, dashboard["agreement"]
    reads = dashboard["reads"]
    assert set(reads) == {"table_http", "sql_http", "sql_direct", "table_direct"}
    assert all(r["count"] > 0 and _number(r["p50_ms"]) for r in reads.values())
