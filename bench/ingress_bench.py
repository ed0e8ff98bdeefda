"""Benchmark 2: the webhook ingress under load, against the ceiling of a bare handler.

Targets, each a real process pinned to core 1 (``taskset``), driven by ``wrk`` pinned to
core 0 with ``bench/wrk_bodies.lua`` cycling through pre-signed ~1.4 KB Retell and Cal.com
webhooks (the broker and MariaDB float):

* ``bare``: :mod:`bench.bare_server`, verify and parse only: the ceiling of a Python
  process on this machine;
* ``ingress``: ``switchboard ingress`` as built (Kafka with acks=all, spool, metrics);
* ``before`` (with ``--before REV``): the ingress of git revision REV, run from an export of
  that revision with the same interpreter, so "before" and "after" share one run.

Per target: distinct keys at each concurrency of the plan; for the ingress targets also the
one-hot-key case (every request the same call id, so one partition), an open-loop
``call_inbound`` run at a fixed rate (latency measured from each request's scheduled send
time, so a slow answer cannot hide the requests queued behind it), and a py-spy profile at
the first concurrency. A broker-outage run (its own private Kafka, stopped mid-run) shows
the spool at work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import harness, paced, servers, workload, wrk
from bench.profile import profile_categories
from pipeline import topics
from pipeline.settings import Settings
from testbed.events import booking, call_events
from testbed.kafka_instance import private_kafka
from testbed.services import free_port

SERVER_CPU = 1
CLIENT_CPU = 0


@dataclass(frozen=True, slots=True)
class Plan:
    seconds: float
    concurrencies: tuple[int, ...]
    hot_concurrencies: tuple[int, ...]
    bodies: int
    inbound_rate: float
    inbound_seconds: float
    outage_seconds: float  # 0: no outage run
    outage_down_s: float
    profile: bool
    # (linger_ms, max_batch_bytes, compression) variants of the producer, each measured at
    # producer_concurrency with distinct keys and with one hot key, and with distinct keys
    # at the first concurrency of the plan (where a linger is time every request waits)
    producer_variants: tuple[tuple[int, int, str], ...] = ()
    producer_concurrency: int = 512


@dataclass
class Point:
    target: str  # bare | ingress | before
    case: str  # distinct | hot
    result: wrk.WrkResult


@dataclass
class Outage:
    result: wrk.WrkResult
    down_s: float
    spool_peak: int
    drain_s: float | None
    forwarded: int


@dataclass
class ProducerPoint:
    linger_ms: int
    max_batch_bytes: int
    compression: str
    distinct: wrk.WrkResult
    hot: wrk.WrkResult
    low: wrk.WrkResult  # distinct keys at the plan's first concurrency


@dataclass
class IngressResult:
    plan: Plan
    before_rev: str | None
    points: list[Point] = field(default_factory=list)
    inbound: dict[str, paced.PacedResult] = field(default_factory=dict)
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    outage: Outage | None = None
    producer: list[ProducerPoint] = field(default_factory=list)

    def find(self, target: str, case: str, concurrency: int) -> wrk.WrkResult | None:
        return next(
            (
                p.result
                for p in self.points
                if p.target == target and p.case == case and p.result.concurrency == concurrency
            ),
            None,
        )

    @property
    def targets(self) -> list[str]:
        return [t for t in ("bare", "before", "ingress") if any(p.target == t for p in self.points)]


def bodies(count: int, *, hot: bool) -> list[tuple[str, bytes]]:
    """Bodies to sign: Retell ``call_ended`` and Cal.com ``BOOKING_CREATED`` (~1.2-1.5 KB),
    distinct call ids and booking uids, or one call id for all (``hot``: one partition)."""
    out: list[tuple[str, bytes]] = []
    start = 1_790_000_000_000
    for n in range(count):
        at = start + n * 1000
        if hot or n % 2 == 0:
            call_id = "call_bench_hot" if hot else f"call_bench_{n:08d}"
            events = call_events(
                call_id, start_ms=at, to_number="+14150010001", from_number="+16280010001",
                connected=True, sentiment="Positive",
            )  # fmt: skip
            out.append(("retell", _padded(events[-2], "call", "transcript")))  # call_ended
        else:
            created = booking(
                "BOOKING_CREATED",
                f"bk_bench_{n:08d}",
                created_ms=at,
                event_type_id=50_101,
                phone="+16280010001",
                email="customer0010001@example.com",
                call_id=None,
            )
            out.append(("calcom", _padded(created, "payload", "description")))
    return out


_WORDS = "Agent: Thanks for calling, how can I help? User: I'd like to book a cleaning. "


def _padded(body: bytes, section: str, name: str, size: int = 1250) -> bytes:
    """``body`` with text in ``section.name`` so that it is about ``size`` bytes, like a
    short real call's transcript or a booking's description."""
    payload = orjson.loads(body)
    room = max(0, size - len(body) - len(name) - 6)
    payload[section][name] = (_WORDS * (room // len(_WORDS) + 1))[:room]
    return orjson.dumps(payload)


def inbound_bodies(items: tuple[workload.BenchCompany, ...], count: int) -> list[bytes]:
    phones = [b.phone for c in items for b in c.branches]
    return [
        orjson.dumps(
            {
                "event": "call_inbound",
                "call_inbound": {
                    "agent_id": "agent_bench",
                    "from_number": f"+1628555{n % 10_000:04d}",
                    "to_number": phones[n % len(phones)],
                    "call_id": f"call_inbound_bench_{n:08d}",
                },
            }
        )
        for n in range(count)
    ]


def run(base: Settings, plan: Plan, *, before_rev: str | None = None) -> IngressResult:
    result = IngressResult(plan=plan, before_rev=before_rev)
    wrk.ensure_installed()
    previous_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})  # this process (paced client) beside wrk
    try:
        with (
            harness.bench_database(base) as (db_settings, engine),
            harness.bench_topics(db_settings, partitions=12) as settings,
        ):
            items = workload.tenants(4)
            workload.seed_tenants(engine, items)
            with tempfile.TemporaryDirectory(prefix="switchboard-bench-ingress-") as tmp:
                _targets(settings, plan, result, Path(tmp), before_rev, items)
                _producer_variants(settings, plan, result, Path(tmp))
        if plan.outage_seconds:
            with tempfile.TemporaryDirectory(prefix="switchboard-bench-outage-") as tmp:
                result.outage = _outage(base, plan, Path(tmp))
    finally:
        os.sched_setaffinity(0, previous_affinity)
    return result


def _targets(
    settings: Settings,
    plan: Plan,
    result: IngressResult,
    tmp: Path,
    before_rev: str | None,
    items: tuple[workload.BenchCompany, ...],
) -> None:
    distinct = bodies(plan.bodies, hot=False)
    hot = bodies(plan.bodies, hot=True)
    inbound = inbound_bodies(items, int(plan.inbound_rate * plan.inbound_seconds) + 10)
    names = ["bare", "ingress"] + (["before"] if before_rev else [])
    for target in names:
        scoped = settings.with_(ingress_port=free_port(), spool_dir=tmp / f"spool-{target}")
        server = _server(target, scoped, tmp, before_rev)
        print(f"bench:   {target}: starting", flush=True)
        with server:
            url = f"http://127.0.0.1:{scoped.ingress_port}"
            _measure(url, distinct, plan.concurrencies[0], min(3.0, plan.seconds), tmp)  # warm-up
            for concurrency in plan.concurrencies:
                point = _point(server, url, distinct, concurrency, plan.seconds, tmp)
                result.points.append(Point(target, "distinct", point))
                _say(target, "distinct", point)
            if target == "bare":
                continue
            if plan.profile and server.pid is not None:
                # Before the hot-key and call_inbound runs: work they leave behind (the old
                # ingress retried failed call_inbound records in memory for 60 s) would be
                # sampled as if it were the webhook path.
                _settle(server)
                result.profiles[target] = _profile(server.pid, url, distinct, plan, tmp)
            for concurrency in plan.hot_concurrencies:
                point = _point(server, url, hot, concurrency, plan.seconds, tmp)
                result.points.append(Point(target, "hot", point))
                _say(target, "hot key", point)
            result.inbound[target] = asyncio.run(
                paced.run(url, inbound, rate=plan.inbound_rate, seconds=plan.inbound_seconds)
            )
            print(f"bench:     call_inbound {result.inbound[target].describe()}", flush=True)


def _producer_variants(settings: Settings, plan: Plan, result: IngressResult, tmp: Path) -> None:
    distinct, hot = bodies(plan.bodies, hot=False), bodies(plan.bodies, hot=True)
    for linger, batch, codec in plan.producer_variants:
        scoped = settings.with_(
            ingress_port=free_port(),
            spool_dir=tmp / f"spool-p{linger}-{batch}-{codec}",
            kafka_linger_ms=linger,
            kafka_max_batch_bytes=batch,
            kafka_compression=codec,
        )
        server = _server("ingress", scoped, tmp, None)
        with server:
            url = f"http://127.0.0.1:{scoped.ingress_port}"
            _measure(url, distinct, 64, min(2.0, plan.seconds), tmp)  # warm-up
            c = plan.producer_concurrency
            point = ProducerPoint(
                linger, batch, codec,
                _point(server, url, distinct, c, plan.seconds, tmp),
                _point(server, url, hot, c, plan.seconds, tmp),
                _point(server, url, distinct, plan.concurrencies[0], plan.seconds, tmp),
            )  # fmt: skip
        result.producer.append(point)
        print(
            f"bench:     producer linger {linger} ms, batch {batch // 1024} KiB, {codec}: "
            f"{point.distinct.rps:,.0f} req/s distinct, {point.hot.rps:,.0f} req/s hot key, "
            f"{point.low.rps:,.0f} req/s distinct at {point.low.concurrency}",
            flush=True,
        )


def _say(target: str, case: str, r: wrk.WrkResult) -> None:
    print(
        f"bench:     {target} {case} c={r.concurrency}: {r.rps:,.0f} req/s 2xx, "
        f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, non-2xx {r.non_2xx}, "
        f"timeouts {r.timeouts}, errors {r.socket_errors}",
        flush=True,
    )


def _server(target: str, settings: Settings, tmp: Path, rev: str | None) -> servers.Pinned:
    log = tmp / f"{target}.log"
    if target == "bare":
        cmd = [sys.executable, "-m", "bench.bare_server", "--port", str(settings.ingress_port)]
        return servers.Pinned(cmd, settings, log, "/healthz", cpu=SERVER_CPU)
    if target == "ingress":
        cmd = [servers.SWITCHBOARD, "ingress", "--port", str(settings.ingress_port)]
        return servers.Pinned(cmd, settings, log, "/readyz", cpu=SERVER_CPU)
    assert rev is not None
    tree = servers.export_revision(rev, tmp / f"rev-{rev}")
    cmd = [
        sys.executable, "-c", "from agents.main import main; main()",
        "ingress", "--port", str(settings.ingress_port),
    ]  # fmt: skip
    return servers.Pinned(cmd, settings, log, "/readyz", cpu=SERVER_CPU, tree=tree)


def _measure(
    url: str, payload: list[tuple[str, bytes]], concurrency: int, seconds: float, tmp: Path
) -> wrk.WrkResult:
    requests = wrk.write_requests(payload, tmp)
    try:
        return wrk.run(url, requests, concurrency, seconds, cpu=CLIENT_CPU)
    finally:
        requests.unlink()


def _point(
    server: servers.Pinned,
    url: str,
    payload: list[tuple[str, bytes]],
    concurrency: int,
    seconds: float,
    tmp: Path,
) -> wrk.WrkResult:
    buckets = _duration_buckets(url)
    before = server.cpu_seconds()
    measured = _measure(url, payload, concurrency, seconds, tmp)
    after = server.cpu_seconds()
    cpu = after - before if before is not None and after is not None else None
    p99 = _p99_le_ms(buckets, _duration_buckets(url))
    time.sleep(1.0)  # let the server settle (acks, spool) before the next point
    return wrk.WrkResult(**{**_fields(measured), "server_cpu_s": cpu, "server_p99_le_ms": p99})


DURATION = "switchboard_ingress_request_duration_seconds_bucket"


def _duration_buckets(url: str) -> dict[float, float] | None:
    """The ingress's own request-duration histogram, cumulative counts by upper bound in
    seconds, all providers summed (None for a server without it: the bare handler)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(DURATION):
            bound = float(line.split('le="', 1)[1].split('"', 1)[0])
            found[bound] = found.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return found or None


def _p99_le_ms(before: dict[float, float] | None, after: dict[float, float] | None) -> float | None:
    """The upper bound (ms) of the first bucket holding 99% of the requests answered
    between two scrapes: the server's own p99, from request start to its answer, so
    without the time a request spent in socket buffers or in the load generator."""
    if before is None or after is None:
        return None
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    return next(1000 * b for b, n in counts.items() if n >= 0.99 * total)


def _fields(r: wrk.WrkResult) -> dict[str, object]:
    return {name: getattr(r, name) for name in r.__dataclass_fields__}


def _settle(server: servers.Pinned, timeout_s: float = 30.0) -> None:
    """Wait until the server is idle (under 5% of a core over half a second), so that a
    profile samples the load it is given and not a backlog of the previous run."""
    deadline = time.monotonic() + timeout_s
    last = server.cpu_seconds()
    while time.monotonic() < deadline and last is not None:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if now is None or now - last < 0.025:
            return
        last = now


def _profile(
    pid: int, url: str, payload: list[tuple[str, bytes]], plan: Plan, tmp: Path
) -> list[tuple[str, float]]:
    """py-spy samples of the server during a run at the plan's first concurrency."""
    out = tmp / f"profile-{pid}.txt"
    spy = subprocess.Popen(
        [
            "taskset", "-c", str(CLIENT_CPU), str(Path(sys.executable).parent / "py-spy"),
            "record", "--pid", str(pid), "--duration", f"{max(2, int(plan.seconds))}",
            "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    _measure(url, payload, plan.concurrencies[0], plan.seconds, tmp)
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.wait(timeout=30)
    if not out.exists():
        return []
    return profile_categories(out.read_text())


def _readyz_spool(url: str) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = orjson.loads(exc.read() or b"{}")
    except OSError:
        return None
    spool = body.get("spool")
    return spool if isinstance(spool, dict) else None


def _outage(base: Settings, plan: Plan, tmp: Path) -> Outage:
    """Distinct-key load at the first concurrency while a private broker is stopped for
    ``outage_down_s`` and started again; then how long the spool takes to drain."""
    print("bench:   broker outage: starting a private Kafka", flush=True)
    with private_kafka("bench-outage", tmp / "kafka") as kafka:
        settings = base.with_(
            kafka_bootstrap=kafka.bootstrap,
            topic_prefix=f"bench{os.urandom(4).hex()}.",
            ingress_port=free_port(),
            spool_dir=tmp / "spool",
        )
        asyncio.run(topics.ensure_topics(settings))
        url = f"http://127.0.0.1:{settings.ingress_port}"
        cmd = [servers.SWITCHBOARD, "ingress", "--port", str(settings.ingress_port)]
        server = servers.Pinned(
            cmd, settings, tmp / "outage-ingress.log", "/healthz", cpu=SERVER_CPU
        )
        peak = 0
        timeline: dict[str, float] = {}
        stop_watch = threading.Event()

        def break_the_broker() -> None:
            time.sleep(5)
            kafka.stop()
            timeline["stopped"] = time.monotonic()
            time.sleep(plan.outage_down_s)
            timeline["starting"] = time.monotonic()
            kafka.start()
            timeline["back"] = time.monotonic()

        def watch() -> None:
            nonlocal peak
            while not stop_watch.is_set():
                spool = _readyz_spool(url)
                if spool:
                    peak = max(peak, int(spool["records"]))
                time.sleep(0.5)

        with server:
            breaker = threading.Thread(target=break_the_broker, daemon=True)
            watcher = threading.Thread(target=watch, daemon=True)
            breaker.start()
            watcher.start()
            measured = _measure(
                url, bodies(plan.bodies, hot=False), plan.concurrencies[0], plan.outage_seconds, tmp
            )
            breaker.join(timeout=300)
            drained_at = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                spool = _readyz_spool(url)
                if spool is not None and spool["records"] == 0 and "back" in timeline:
                    drained_at = time.monotonic()
                    break
                time.sleep(0.5)
            stop_watch.set()
            watcher.join()
            forwarded = _metric(url, "switchboard_ingress_spool_forwarded_total")
        down = timeline.get("starting", 0) - timeline.get("stopped", 0)
        drain = drained_at - timeline["back"] if drained_at and "back" in timeline else None
        print(
            f"bench:     outage: {measured.rps:,.0f} req/s 2xx, non-2xx {measured.non_2xx}, "
            f"timeouts {measured.timeouts}, spool peak {peak}, drained "
            f"{'n/a' if drain is None else f'{drain:.1f} s'} after the broker was back",
            flush=True,
        )
        return Outage(measured, down, peak, drain, int(forwarded))


def _metric(url: str, name: str) -> float:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")
