"""Where the ingress spends its CPU: py-spy's raw (collapsed-stack) samples, each counted
once under the first category found from the leaf up. Idle samples are not recorded by
py-spy, so the shares are of busy time."""

from __future__ import annotations

from collections import Counter

# (category, substrings of a frame's "function (file:line)"), checked in this order per frame.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("logging/", "pipeline/logs.py")),
    ("metrics (prometheus-client)", ("prometheus_client",)),
    ("spool (SQLite)", ("pipeline/ingress/spool.py", "sqlite3")),
    ("Kafka client (aiokafka)", ("aiokafka",)),
    ("verify (HMAC)", ("verify (", "hmac.py", "hashlib")),
    ("parse (orjson + envelope)", ("parse (", "pipeline/providers")),
    ("HTTP (aiohttp)", ("aiohttp",)),
    ("ingress code", ("pipeline/",)),
    ("event loop (asyncio/uvloop)", ("asyncio", "uvloop")),
)


def categorise(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def profile_categories(raw: str) -> list[tuple[str, float]]:
    """``[(category, share of samples)]``, largest first."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        counts[categorise(stack)] += int(number)
    total = sum(counts.values())
    return [(name, n / total) for name, n in counts.most_common()] if total else []
