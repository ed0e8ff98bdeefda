"""An open-loop (fixed-rate) client for ``call_inbound``: request *i* is due at
``t0 + i / rate`` whatever happened to the others, and its latency is measured from that
due time, so a slow answer cannot hide the requests that queued behind it (the coordinated
omission a closed-loop client such as wrk has). A ringing phone does not wait for the
previous caller's answer either.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.harness import RETELL_KEY, Latency
from pipeline.providers import retell


@dataclass
class PacedResult:
    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds from due time to answer
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    late_starts: int = 0  # requests the client itself could not start within 5 ms of due

    @property
    def latency(self) -> Latency:
        return Latency.of_seconds(self.latencies)

    @property
    def non_200(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.errors.values())

    def describe(self) -> str:
        lat = self.latency
        return (
            f"{lat.count} at {self.rate:g}/s: p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms, "
            f"max {lat.max:.1f} ms, non-200 {self.non_200}"
        )


async def run(
    base_url: str, bodies: Sequence[bytes], *, rate: float, seconds: float
) -> PacedResult:
    result = PacedResult(rate=rate, seconds=seconds)
    count = min(len(bodies), int(rate * seconds))
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = loop.time() + 0.5

        async def one(i: int) -> None:
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > 0.005:
                result.late_starts += 1
            body = bodies[i]
            headers = retell.sign(body, RETELL_KEY, time.time_ns() // 1_000_000)
            try:
                async with session.post(
                    f"{base_url}/webhooks/retell", data=body, headers=headers
                ) as resp:
                    await resp.read()
                    result.statuses[resp.status] += 1
                    result.latencies.append(loop.time() - due)
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    return result
