"""The load generator of the ingress benchmark: ``wrk`` (Debian's package, installed by
``scripts/bench-tools.sh``) with ``bench/wrk_bodies.lua`` cycling through pre-signed
requests, pinned to its own core so that it is not what limits the server.

A request file is written per run (Retell's signature carries a timestamp with a 5-minute
window, so bodies are signed just before the run that sends them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import CALCOM_SECRET, RETELL_KEY
from pipeline.providers import calcom, retell

LUA = Path(__file__).resolve().parent / "wrk_bodies.lua"
WRK_TIMEOUT_S = 10  # Retell's webhook timeout; an answer later than this is a client timeout


@dataclass(frozen=True, slots=True)
class WrkResult:
    concurrency: int
    seconds: float
    requests: int  # answered
    non_2xx: int
    timeouts: int
    socket_errors: int  # connect + read + write
    p50_ms: float
    p99_ms: float
    server_cpu_s: float | None = None
    #: upper bound (ms) of the bucket of the server's own request-duration histogram that
    #: holds its 99th percentile over the point (the ingress only; the bare handler has none)
    server_p99_le_ms: float | None = None

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """2xx answers per second (wrk's own Requests/sec counts errors too)."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.non_2xx + self.timeouts + self.socket_errors


def ensure_installed() -> None:
    """wrk comes from Debian: ``scripts/bench-tools.sh`` installs it when it is missing."""
    if shutil.which("wrk") is None:
        script = Path(__file__).resolve().parent.parent / "scripts" / "bench-tools.sh"
        subprocess.run([str(script)], check=True, timeout=900)


def write_requests(bodies: Sequence[tuple[str, bytes]], directory: Path) -> Path:
    """``(provider, body)`` → one signed request per line, as the Lua script reads them."""
    now = time.time_ns() // 1_000_000
    path = Path(tempfile.mkstemp(prefix="wrk-requests-", suffix=".tsv", dir=directory)[1])
    with path.open("w") as out:
        for provider, body in bodies:
            if provider == "retell":
                headers = retell.sign(body, RETELL_KEY, now)
            else:
                headers = calcom.sign(body, CALCOM_SECRET, now)
            text = body.decode()
            assert "\t" not in text and "\n" not in text
            pairs = [f"{k}\t{v}" for k, v in headers.items() if k != "Content-Type"]
            out.write("\t".join([f"/webhooks/{provider}", text, *pairs]) + "\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str, concurrency: int, seconds: float) -> WrkResult:
    def number(pattern: str, default: int = 0) -> int:
        found = re.search(pattern, output)
        return int(found.group(1)) if found else default

    lat = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M))
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    if done is None or set(lat) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = sum(int(errors.group(i)) for i in (1, 2, 3)) if errors else 0
    return WrkResult(
        concurrency=concurrency,
        seconds=_ms(done.group(2) + done.group(3)) / 1000,
        requests=int(done.group(1)),
        non_2xx=number(r"Non-2xx or 3xx responses: (\d+)"),
        timeouts=int(errors.group(4)) if errors else 0,
        socket_errors=socket_errors,
        p50_ms=_ms(lat["50"]),
        p99_ms=_ms(lat["99"]),
    )


def run(
    url: str, requests_file: Path, concurrency: int, seconds: float, *, cpu: int | None = 0
) -> WrkResult:
    """``wrk -t1 -c<concurrency> -d<seconds>s --latency`` against ``url``."""
    cmd = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
        f"--timeout={WRK_TIMEOUT_S}s", "-s", str(LUA), url, "--", str(requests_file),
    ]  # fmt: skip
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    return parse(done.stdout, concurrency, seconds)
