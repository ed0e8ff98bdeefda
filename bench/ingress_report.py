"""The ingress section of ``docs/benchmarks.md`` (and its PNG plots), from one run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.ingress_bench import IngressResult
from bench.wrk import WrkResult

NAMES = {"bare": "bare handler (ceiling)", "ingress": "`switchboard ingress`", "before": "before"}


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _cpu_ms(r: WrkResult) -> str:
    if r.server_cpu_s is None or not r.ok:
        return "n/a"
    return f"{1000 * r.server_cpu_s / r.ok:.3f}"


def _name(r: IngressResult, target: str) -> str:
    if target == "before" and r.before_rev:
        return f"ingress before (`{r.before_rev}`)"
    return NAMES[target]


def section(r: IngressResult, plots: dict[str, str]) -> list[str]:
    p = r.plan
    out = [
        "## 2. Ingress: throughput and latency against a bare handler",
        "",
        "Each server is a real process pinned to core 1 (`taskset`); the load generator is "
        "`wrk` (Debian's package, `scripts/bench-tools.sh`) pinned to core 0, one thread, "
        f"`--timeout {10}s` (Retell's webhook timeout), {p.seconds:g} s per point, with "
        "`bench/wrk_bodies.lua` cycling through "
        f"{p.bodies:,} pre-signed ~1.2 KB webhooks (Retell `call_ended` with distinct call "
        "ids and Cal.com `BOOKING_CREATED` with distinct uids; the one-hot-key case sends "
        "every request with the same call id, so one partition). The Kafka broker and "
        "MariaDB float over both cores. Ceiling: `bench/bare_server.py`, an aiohttp handler "
        "that only reads, verifies and parses (the providers' own code) and answers 202. "
        "`switchboard ingress` answers 202 once Kafka acknowledged the record (acks=all, 12 "
        "partitions) or its spool fsynced it."
        + (
            f' "Before" is the ingress of revision `{r.before_rev}` run from an export of '
            "that revision with the same interpreter, in the same run."
            if r.before_rev
            else ""
        ),
        '"2xx req/s" counts only 2xx answers; "non-2xx" are answers that were not 2xx '
        '(503s); "timeouts" are requests wrk gave up on after 10 s; "CPU ms/req" is the '
        "server process's CPU time over the point divided by its 2xx answers; \"server p99 "
        "≤ ms\" is the bucket bound of the ingress's own request-duration histogram "
        "(`switchboard_ingress_request_duration_seconds`, request start to answer, scraped "
        "before and after the point) that holds its 99th percentile: the time a request "
        "spent inside the server's handler, without the socket buffers and the load "
        "generator around it.",
        "",
    ]
    out += _table(r, "distinct", p.concurrencies, "Distinct keys")
    out += _table(r, "hot", p.hot_concurrencies, "One hot key (every request the same call id)")
    for key in ("throughput", "p99"):
        if key in plots:
            out += [f"![ingress {key} by concurrency]({plots[key]})", ""]
    out += _producer(r)
    out += _inbound(r)
    out += _outage(r)
    out += _profiles(r)
    out += _verdict(r)
    return out


def _table(r: IngressResult, case: str, concurrencies: tuple[int, ...], title: str) -> list[str]:
    targets = [t for t in r.targets if any(x.target == t and x.case == case for x in r.points)]
    if not targets:
        return []
    out = [
        f"**{title}**",
        "",
        "| target | concurrency | 2xx req/s | % of ceiling | p50 ms | p99 ms | server p99 ≤ ms | non-2xx | timeouts | socket errors | CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in concurrencies:
        ceiling = r.find("bare", "distinct", concurrency)
        for target in targets:
            x = r.find(target, case, concurrency)
            if x is None:
                continue
            share = f"{100 * x.rps / ceiling.rps:.0f}%" if ceiling and ceiling.rps else "n/a"
            out.append(
                f"| {_name(r, target)} | {concurrency:,} | {_n(x.rps)} | {share} | "
                f"{_n(x.p50_ms, 1)} | {_n(x.p99_ms, 1)} | {_n(x.server_p99_le_ms, 1)} | "
                f"{x.non_2xx:,} | {x.timeouts:,} | "
                f"{x.socket_errors:,} | {_cpu_ms(x)} |"
            )
    return [*out, ""]


def _producer(r: IngressResult) -> list[str]:
    if not r.producer:
        return []
    out = [
        f"**Producer settings** (`SWITCHBOARD_KAFKA_LINGER_MS`, `_MAX_BATCH_BYTES`, "
        f"`_COMPRESSION`), each a fresh `switchboard ingress` at concurrency "
        f"{r.plan.producer_concurrency}, {r.plan.seconds:g} s with distinct keys and "
        f"{r.plan.seconds:g} s with one hot key, then {r.plan.seconds:g} s with distinct keys "
        f"at concurrency {r.plan.concurrencies[0]}",
        "",
        f"| linger ms | max batch | compression | distinct: 2xx req/s | p99 ms | CPU ms/req | hot key: 2xx req/s | p99 ms | c={r.plan.concurrencies[0]}: 2xx req/s | p50 ms | CPU ms/req | non-2xx + timeouts |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r.producer:
        d, h, low = x.distinct, x.hot, x.low
        bad = sum(p.non_2xx + p.timeouts for p in (d, h, low))
        out.append(
            f"| {x.linger_ms} | {x.max_batch_bytes // 1024} KiB | {x.compression} | "
            f"{_n(d.rps)} | {_n(d.p99_ms)} | {_cpu_ms(d)} | {_n(h.rps)} | {_n(h.p99_ms)} | "
            f"{_n(low.rps)} | {_n(low.p50_ms, 1)} | {_cpu_ms(low)} | {bad} |"
        )
    return [*out, ""]


def _inbound(r: IngressResult) -> list[str]:
    if not r.inbound:
        return []
    out = [
        f"**`call_inbound`, open loop at {r.plan.inbound_rate:g} requests/s** "
        f"({r.plan.inbound_seconds:g} s, `bench/paced.py`: each request is due at a fixed "
        "time and its latency counts from then, so queueing is not hidden; called numbers "
        "of seeded branches, callers looked up in MariaDB)",
        "",
        "| target | requests | p50 ms | p99 ms | max ms | non-200 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target, x in r.inbound.items():
        lat = x.latency
        out.append(
            f"| {_name(r, target)} | {lat.count:,} | {lat.p50:.2f} | {lat.p99:.2f} | "
            f"{lat.max:.1f} | {x.non_200} |"
        )
    return [*out, ""]


def _outage(r: IngressResult) -> list[str]:
    o = r.outage
    if o is None:
        return []
    x = o.result
    drain = "did not drain within 300 s" if o.drain_s is None else f"{o.drain_s:.1f} s"
    return [
        "**Broker outage** (a private single-node Kafka, `scripts/stack.sh kafka-instance`, "
        f"stopped 5 s into a {r.plan.outage_seconds:g} s run at concurrency "
        f"{x.concurrency} with distinct keys, started again {o.down_s:.0f} s later)",
        "",
        "| 2xx | 2xx req/s | p50 ms | p99 ms | non-2xx | timeouts | spool peak (records) | spool drained after the broker was back | records forwarded |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {x.ok:,} | {_n(x.rps)} | {_n(x.p50_ms, 1)} | {_n(x.p99_ms, 1)} | {x.non_2xx:,} | "
        f"{x.timeouts:,} | {o.spool_peak:,} | {drain} | {o.forwarded:,} |",
        "",
    ]


def _profiles(r: IngressResult) -> list[str]:
    if not r.profiles:
        return []
    cats = sorted({c for shares in r.profiles.values() for c, _ in shares})
    targets = list(r.profiles)
    out = [
        f"**Where the CPU goes** (py-spy, 200 samples/s, {r.plan.seconds:g} s at "
        f"concurrency {r.plan.concurrencies[0]}; share of busy samples, each counted under "
        "the first category from the innermost frame out, `bench/profile.py`)",
        "",
        "| category | " + " | ".join(_name(r, t) for t in targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    for cat in cats:
        cells = [f"{100 * dict(r.profiles[t]).get(cat, 0.0):.0f}%" for t in targets]
        out.append(f"| {cat} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _verdict(r: IngressResult) -> list[str]:
    text = []
    low = r.plan.concurrencies[0]
    ing, bare = r.find("ingress", "distinct", low), r.find("bare", "distinct", low)
    if ing and bare and bare.rps:
        text.append(
            f"At concurrency {low} the ingress answered {_n(ing.rps)} 2xx/s, "
            f"{100 * ing.rps / bare.rps:.0f}% of the bare handler's {_n(bare.rps)} (target: "
            "at least 60%)."
        )
    before = r.find("before", "distinct", low)
    if ing and before and ing.server_cpu_s and before.server_cpu_s and ing.ok and before.ok:
        ratio = (before.server_cpu_s / before.ok) / (ing.server_cpu_s / ing.ok)
        text.append(
            f"CPU per accepted request: {_cpu_ms(before)} ms before, {_cpu_ms(ing)} ms now "
            f"({ratio:.1f}× less); req/s {_n(before.rps)} → {_n(ing.rps)}."
        )
    for case in ("distinct", "hot"):
        for concurrency in (r.plan.concurrencies + r.plan.hot_concurrencies)[-1:]:
            x = r.find("ingress", case, concurrency)
            if x is not None:
                text.append(
                    f"At {concurrency:,} concurrent with {case} keys: {x.non_2xx} non-2xx, "
                    f"{x.timeouts} client timeouts, {x.socket_errors} socket errors "
                    "(target: 0 and 0)."
                )
    mid = r.find("ingress", "distinct", 512)
    if mid is not None:
        text.append(f"p99 at 512 concurrent: {_n(mid.p99_ms)} ms (target: under 500 ms)")
        ceiling = r.find("bare", "distinct", 512)
        own = mid.server_p99_le_ms
        text[-1] += (
            ("" if own is None else f"; the server's own histogram puts its p99 at ≤ {own:g} ms")
            + ("" if ceiling is None else f"; the bare handler's p99 {_n(ceiling.p99_ms)} ms")
            + "."
        )
    if r.outage is not None:
        o = r.outage
        text.append(
            f"During the broker outage: {o.result.non_2xx} non-2xx and {o.result.timeouts} "
            f"timeouts out of {o.result.requests:,} answers; the spool peaked at "
            f"{o.spool_peak:,} records and emptied "
            + ("(not within 300 s)" if o.drain_s is None else f"{o.drain_s:.0f} s")
            + " after the broker was back."
        )
    if not text:
        return []
    return ["**Reading.** " + " ".join(text), ""]


def plot(r: IngressResult, directory: Path, prefix: str = "benchmarks") -> dict[str, str]:
    """Two PNGs (2xx req/s and p99 by concurrency, every target, both key cases); paths
    relative to docs/. Empty when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    made = {}
    for key, label, getter in (
        ("throughput", "2xx answers per second", lambda x: x.rps),
        ("p99", "p99 latency (ms, log scale)", lambda x: x.p99_ms),
    ):
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for target in r.targets:
            for case, style in (("distinct", "-o"), ("hot", "--s")):
                pts = sorted(
                    (x.result.concurrency, getter(x.result))
                    for x in r.points
                    if x.target == target and x.case == case
                )
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    suffix = "" if case == "distinct" else ", one hot key"
                    name = _name(r, target).replace("`", "")
                    ax.plot(xs, ys, style, label=f"{name}{suffix}")
        ax.set_xscale("log", base=2)
        ticks = sorted({x.result.concurrency for x in r.points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        if key == "p99":
            ax.set_yscale("log")
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Ingress {label.split(' (')[0]} by concurrency")
        fig.tight_layout()
        path = directory / f"ingress-{key}.png"
        fig.savefig(path)
        plt.close(fig)
        made[key] = f"{prefix}/{path.name}"
    return made


def summary(r: IngressResult) -> dict[str, Any]:
    return {
        "points": [
            {
                "target": x.target,
                "case": x.case,
                "concurrency": x.result.concurrency,
                "ok": x.result.ok,
                "rps": x.result.rps,
                "non_2xx": x.result.non_2xx,
                "timeouts": x.result.timeouts,
                "p50_ms": x.result.p50_ms,
                "p99_ms": x.result.p99_ms,
                "server_cpu_s": x.result.server_cpu_s,
                "server_p99_le_ms": x.result.server_p99_le_ms,
            }
            for x in r.points
        ],
        "inbound": {
            t: {"count": x.latency.count, "p50_ms": x.latency.p50, "p99_ms": x.latency.p99}
            for t, x in r.inbound.items()
        },
        "outage": None
        if r.outage is None
        else {
            "ok": r.outage.result.ok,
            "non_2xx": r.outage.result.non_2xx,
            "timeouts": r.outage.result.timeouts,
            "spool_peak": r.outage.spool_peak,
            "drain_s": r.outage.drain_s,
        },
        "profiles": r.profiles,
        "producer": [
            {
                "linger_ms": x.linger_ms,
                "max_batch_bytes": x.max_batch_bytes,
                "compression": x.compression,
                "distinct_rps": x.distinct.rps,
                "hot_rps": x.hot.rps,
                "low_concurrency_rps": x.low.rps,
            }
            for x in r.producer
        ],
    }
