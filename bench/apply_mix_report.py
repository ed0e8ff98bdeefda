"""The markdown of benchmark 1b (bench/apply_mix.py): first apply and replay on the
simulator's mix, this revision against the baseline revision, and where the time goes."""

from __future__ import annotations

from bench.apply_mix import PROCESSES, MixResult, Phase

FIRST_TARGET = 5_000  # events/s per worker, first apply (issue 16)
REPLAY_TARGET = 20_000  # events/s, replay of already-applied events (issue 16)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def section(r: MixResult) -> list[str]:
    mix = ", ".join(f"{k} {n}" for k, n in sorted(r.mix.items(), key=lambda kv: -kv[1]))
    base, current = r.variants[0], r.variants[-1]
    compared = len(r.variants) > 1
    out = [
        "## 1b. Apply on the simulator's mix: first apply and replay of applied events",
        "",
        f"{r.records} records from the traffic simulator ({r.calls} calls, seeded; mix: {mix}; "
        f"{r.body_bytes / r.records / 1024:.1f} KiB per body on average, word-level "
        "transcripts included) through `pipeline.apply.batch.apply_batch` in batches of 500 "
        "per provider, in delivery order, each variant in its own processes against its own "
        "fresh database. *First apply*: every record once. *Replay*: the same records "
        "again and again, all already applied (the events column says how many: "
        f"{r.passes} passes for this revision; the changes column must be empty; the same "
        "rows are read again, so this is a replay whose rows fit in MariaDB's buffer pool). "
        "Kafka is not in the loop: these are the engine's "
        "numbers; the worker also reads Kafka and publishes, on the same core."
        + (
            f" Baseline: revision `{base.revision}` (the apply path before the throughput "
            "work), run from a `git archive` of it with the same interpreter and packages."
            if compared
            else ""
        ),
        "",
        "| variant | phase | events | seconds | events/s | CPU µs per event (engine process) | changed rows | events/s vs baseline |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    labels = {
        "first": "first apply",
        "replay": "replay (already applied)",
        "parallel": f"replay (already applied), {PROCESSES} processes, partitions split",
    }
    for v in r.variants:
        for name in ("first", "replay", "parallel"):
            phase: Phase | None = getattr(v, name)
            if phase is None:
                continue
            against = base.first if name == "first" else base.replay  # the baseline: 1 process
            ratio = (
                f"{phase.events_per_s / against.events_per_s:.2f}×"
                if compared and against.events_per_s
                else "1.00×"
            )
            label = labels[name]
            changed = ", ".join(f"{t} {n}" for t, n in sorted(phase.changed.items())) or "none"
            if name == "first":
                changed = "(the first apply writes)"
            out.append(
                f"| {v.name} (`{v.revision.split()[0]}`) | {label} | {phase.events} | "
                f"{phase.seconds:.1f} | {_n(phase.events_per_s)} | "
                f"{phase.cpu_us_per_event:.0f} | {changed} | {ratio} |"
            )
    out += ["", "Where the wall time of `apply_batch` goes (py-spy, `--idle`, 50 samples/s):", ""]
    names: list[str] = []
    for v in r.variants:
        for phase in (v.first, v.replay):
            names += [n for n, _ in phase.profile if n not in names]
    heads = [f"{v.name} {p}" for v in r.variants for p in ("first", "replay")]
    out.append("| where | " + " | ".join(heads) + " |")
    out.append("|---|" + "---:|" * len(heads))
    for name in names:
        cells = []
        for v in r.variants:
            for phase in (v.first, v.replay):
                share = dict(phase.profile).get(name, 0.0)
                cells.append(f"{share:.0%}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    first, replay = current.first.events_per_s, current.replay.events_per_s
    parallel = (
        f", {_n(current.parallel.events_per_s)} in {PROCESSES} processes over their shares "
        "of the partitions (`switchboard replay --jobs 2`)"
        if current.parallel is not None
        else ""
    )
    out += [
        "",
        f"**Against the targets.** First apply: {_n(first)} events/s here against a design "
        f"target of {_n(FIRST_TARGET)} per worker; replay of already-applied events: "
        f"{_n(replay)} events/s in one process{parallel}, against {_n(REPLAY_TARGET)}. "
        "The CPU column is the engine "
        "process's own time per event (what one worker spends, whatever the machine's other "
        "load); the wall columns also carry MySQL's time and every other process on these "
        "two shared cores.",
        "",
    ]
    return out
