"""A Prometheus collector for a SQLAlchemy connection pool: in use, idle, limit, waiting.

RDS and Cloud SQL sell connections by the instance size, and a worker whose pool is
exhausted stalls its batches without any error; these series show both. Read at scrape
time from the pool itself, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool


class PoolCollector(Collector):
    """``switchboard_db_pool_*`` for one engine, labelled with the process's role."""

    def __init__(self, engine: Engine, role: str) -> None:
        self.engine = engine
        self.role = role

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.engine.pool
        in_use = idle = limit = waiting = 0
        if isinstance(pool, QueuePool):
            in_use, idle = pool.checkedout(), pool.checkedin()
            limit = pool.size() + max(pool._max_overflow, 0)
            # Threads blocked in the pool's queue for a connection (a private attribute of
            # SQLAlchemy's queue; 0 if a future version moves it).
            condition = getattr(getattr(pool, "_pool", None), "not_empty", None)
            waiting = len(getattr(condition, "_waiters", ()))
        for name, help_text, value in (
            ("in_use", "Connections checked out of the pool right now.", in_use),
            ("idle", "Open connections waiting in the pool.", idle),
            ("max", "Most connections the pool will open (size + overflow).", limit),
            ("waiting", "Threads waiting for a connection because the pool is exhausted.", waiting),
        ):
            family = GaugeMetricFamily(
                f"switchboard_db_pool_connections_{name}"
                if name != "waiting"
                else "switchboard_db_pool_waiting_threads",
                help_text,
                labels=["role"],
            )
            family.add_metric([self.role], value)
            yield family
