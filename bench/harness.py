"""What every benchmark needs around it: its own database and topics, timing, machine facts.

A run works in databases named ``switchboard_bench_<hex>`` (the DB user may create
``switchboard_%``) and topics under its own prefix, and drops both at the end, whatever
happened. Nothing here touches the developer's ``switchboard`` database or topics.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from pipeline import database, topics
from pipeline.kafka import kafka_options
from pipeline.settings import Secret, Settings, load_settings
from testbed.databases import create_scratch_database, drop_scratch_database, server_url

PREFIX = "switchboard_bench_"
RETELL_KEY = "bench-retell-key"
CALCOM_SECRET = "bench-calcom-secret"
ANALYST_TOKEN = "bench-analyst-token"
MEASURED_CODE = ("pipeline", "agents", "tables", "migrations", "bench", "tests/support")


def base_settings() -> Settings:
    """The environment's settings (Kafka, MariaDB server) with the bench's own secrets."""
    return load_settings(os.environ).with_(
        retell_api_keys=(Secret(RETELL_KEY),),
        calcom_webhook_secrets=(Secret(CALCOM_SECRET),),
        analyst_tokens=(Secret(ANALYST_TOKEN),),
    )


def create_database(settings: Settings) -> Settings:
    """A fresh, migrated ``switchboard_bench_<hex>`` database; settings pointing at it."""
    return create_scratch_database(settings, PREFIX)


def drop_database(settings: Settings, *, retry_for_s: float = 60.0) -> None:
    """Drop a bench database; retried for a while, because other suites on this machine
    restart MariaDB in their fault tests, and a bench database must not be left behind."""
    try:
        drop_scratch_database(settings, PREFIX, retry_for_s=retry_for_s)
    except DBAPIError:
        name = make_url(settings.database_url.reveal()).database
        print(f"bench: could not drop database {name}; drop it by hand", flush=True)
        raise


@contextmanager
def bench_database(settings: Settings) -> Iterator[tuple[Settings, Engine]]:
    """A fresh migrated database and an engine on it; both gone afterwards."""
    scoped = create_database(settings)
    engine = database.create_db_engine(scoped, pool_size=2)
    try:
        yield scoped, engine
    finally:
        engine.dispose()
        drop_database(scoped)


def with_topics(settings: Settings, partitions: int = 3) -> Settings:
    """Settings with this run's own topic prefix and consumer group (topics created)."""
    suffix = uuid.uuid4().hex[:8]
    scoped = settings.with_(
        topic_prefix=f"bench{suffix}.",
        topic_partitions=partitions,
        consumer_group=f"switchboard-bench-{suffix}",
    )
    asyncio.run(topics.ensure_topics(scoped))
    return scoped


async def _delete_topics(settings: Settings) -> None:
    """The prefixed topics, and the Faust internal topics named after the consumer group."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        present = await admin.list_topics()
        doomed = [
            n
            for n in present
            if n.startswith(settings.topic_prefix) or n.startswith(settings.consumer_group + "-")
        ]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def delete_topics(settings: Settings) -> None:
    if settings.topic_prefix.startswith("bench"):
        asyncio.run(_delete_topics(settings))


@contextmanager
def bench_topics(settings: Settings, partitions: int = 3) -> Iterator[Settings]:
    scoped = with_topics(settings, partitions)
    try:
        yield scoped
    finally:
        delete_topics(scoped)


# ---- numbers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds."""

    count: int
    p50: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of_seconds(cls, seconds: Sequence[float]) -> Latency:
        ms = [s * 1000 for s in seconds]
        return cls(
            count=len(ms),
            p50=percentile(ms, 50),
            p99=percentile(ms, 99),
            mean=statistics.fmean(ms) if ms else float("nan"),
            max=max(ms) if ms else float("nan"),
        )


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def machine_facts(settings: Settings) -> dict[str, str]:
    """What a reader needs to weigh the numbers: cores, CPU, Python, MariaDB, Kafka."""
    facts = {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    engine = create_engine(server_url(settings))
    try:
        with engine.connect() as conn:
            facts["mariadb"] = str(conn.execute(text("SELECT VERSION()")).scalar())
            facts["innodb_flush_log_at_trx_commit"] = str(
                conn.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
            )
    except Exception as exc:  # noqa: BLE001 - a fact we could not read is reported as such
        facts["mariadb"] = f"unknown ({exc.__class__.__name__})"
    finally:
        engine.dispose()
    facts["kafka"] = f"{settings.kafka_bootstrap} (local, single broker)"
    facts["uvloop"] = _has("uvloop")
    facts["load average at start"] = load_average()
    return facts


def load_average() -> str:
    """1/5/15-minute load: other work on the machine during a run shows up here."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _has(module: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return "no"
    return "yes"


def git_revision(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=5,
        )
        # Changes (tracked or not) to the code that is measured, or that measures.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", *MEASURED_CODE],
            cwd=repo, capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    rev = out.stdout.strip() or "unknown"
    changed = len(dirty.stdout.splitlines())
    where = ", ".join(MEASURED_CODE)
    return f"{rev} + {changed} uncommitted file(s) under {where}" if changed else rev
