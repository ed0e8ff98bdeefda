"""Put the fault suite's figures (``var/faults/*.json``, written by each fault test) into
docs/reliability.md, between its ``fault-suite`` markers, and print them.

    python -m tests.faults.report            # after `make test-faults` (which runs it)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from tests.faults.harness import RESULTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN = "<!-- fault-suite:begin (written by python -m tests.faults.report) -->"
END = "<!-- fault-suite:end -->"
ORDER = [
    "worker-kills",
    "broker-restart",
    "database-outages",
    "cluster-broker-loss",
    "worker-failover",
    "quiet-takeover",
    "ingress-sigterm",
    "apply-process-kills",
]


def load() -> list[dict[str, Any]]:
    found = {p.stem: orjson.loads(p.read_bytes()) for p in sorted(RESULTS.glob("*.json"))}
    return [found[name] for name in [*ORDER, *sorted(set(found) - set(ORDER))] if name in found]


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values) or "-"


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| # | fault | done | deliveries (webhooks) | accepted | applied | lost | doubled "
        "| dead-lettered (bad events sent) | recovered after (s) | settled (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(results, start=1):
        rows = r["rows"]
        letters = f"{r['dead_lettered']} ({r['poison_sent']})"
        if r["dead_lettered"] != r["dead_lettered_events"]:
            letters = (
                f"{r['dead_lettered']}: {r['dead_lettered_events']} events ({r['poison_sent']})"
            )
        lines.append(
            f"| {number} | {r['title']} | {r['times']}× | {r['deliveries']} ({r['webhooks']}) "
            f"| {r['accepted']} | {rows.get('applied', 0)} | {r['lost']} | {r['doubled']} "
            f"| {letters} | {_seconds(r['recover_s'])} | {r['settle_s']:g} |"
        )
    lines.append("")
    for number, r in enumerate(results, start=1):
        lines.append(f"**{number}. {r['title']}** ({r['fault']}): {r['what']}.")
        lines.append("")
        lines += [f"* {note}" for note in r["notes"]]
        lines.append(
            f"* measured {r['measured_at']} (load average {r['load_average']:.1f} on "
            f"{r['cpus']} CPUs when it started), {r['duration_s']:g} s in all; "
            f"reproduce: `{r['command']}`"
        )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    results = load()
    if not results:
        print(f"no figures in {RESULTS}: run make test-faults first", file=sys.stderr)
        return 1
    table = render(results)
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC} has no fault-suite markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    print(table, end="")
    print(f"written to {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
