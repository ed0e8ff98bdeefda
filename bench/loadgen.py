"""A bounded asyncio HTTP load generator: N signed requests at concurrency C, then stop.

Each request is one pre-signed webhook (signed just before the run, so signing costs the
generator nothing while it measures; Retell's signature window is five minutes, far longer
than a run). ``concurrency`` workers share one connection pool of the same size, so at
most ``concurrency`` requests are in flight. Latency is measured per request, from just
before sending to the end of reading the response. A request that fails at the transport
level (refused, reset, timed out) counts as an error with no status. The whole run has a
deadline; requests not started by then are reported as not sent, never silently dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.harness import CALCOM_SECRET, RETELL_KEY, Latency
from pipeline.providers import calcom, retell


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    not_sent: int = 0
    client_cpu_s: float = 0.0  # CPU time this process (the generator) used during the run
    server_cpu_s: float | None = None  # filled in by the caller when it can measure it
    machine_busy: float | None = None  # % of all cores busy during the run (caller)

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        """Answers that were not 2xx, plus transport errors and requests never sent."""
        return self.completed - self.ok + sum(self.transport_errors.values()) + self.not_sent

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def cpu_percent(self, seconds: float | None) -> float:
        """CPU time as a percentage of one core over the run."""
        return (
            100 * seconds / self.seconds if seconds is not None and self.seconds else float("nan")
        )

    @property
    def latency(self) -> Latency:
        return Latency.of_seconds(self.latencies)

    def describe_errors(self) -> str:
        parts = [f"{n}× HTTP {s}" for s, n in sorted(self.statuses.items()) if not 200 <= s < 300]
        parts += [f"{n}× {name}" for name, n in sorted(self.transport_errors.items())]
        if self.not_sent:
            parts.append(f"{self.not_sent} not sent before the deadline")
        return ", ".join(parts) or "none"


def sign(bodies: Sequence[tuple[str, bytes]]) -> list[Request]:
    """``(provider, body)`` pairs → signed requests, as Retell and Cal.com would send them."""
    now = time.time_ns() // 1_000_000
    out = []
    for provider, body in bodies:
        if provider == "retell":
            headers = retell.sign(body, RETELL_KEY, now)
        else:
            headers = calcom.sign(body, CALCOM_SECRET, now)
        headers["Content-Type"] = "application/json"
        out.append(Request(f"/webhooks/{provider}", body, headers))
    return out


async def run(
    base_url: str,
    requests: Sequence[Request],
    concurrency: int,
    *,
    deadline_s: float = 120.0,
    request_timeout_s: float = 30.0,
) -> LoadResult:
    """Send every request once, ``concurrency`` at a time; stop at the deadline."""
    result = LoadResult(requests=len(requests), concurrency=concurrency, seconds=0.0)
    position = 0
    stop_at = time.monotonic() + deadline_s
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < len(requests) and time.monotonic() < stop_at:
            request = requests[position]
            position += 1
            started = time.perf_counter()
            try:
                async with session.post(
                    base_url + request.path, data=request.body, headers=request.headers
                ) as response:
                    await response.read()
                    result.statuses[response.status] += 1
                    result.latencies.append(time.perf_counter() - started)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                result.transport_errors[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - began
        result.client_cpu_s = time.process_time() - cpu
    result.not_sent = len(requests) - position
    return result


async def get_many(
    url_for: Sequence[str], headers: dict[str, str], *, timeout_s: float = 10.0
) -> tuple[list[float], Counter[int]]:
    """GET each URL in turn (one at a time: read latency, not throughput)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for url in url_for:
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
            latencies.append(time.perf_counter() - started)
    return latencies, statuses
