"""What every analyst API view works with: one small object built once per worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy import Engine

from agents.api.directory import Directory, Timezones
from agents.metrics import WorkerMetrics
from pipeline.dashboard.aggregates import BucketKey
from pipeline.dashboard.tokens import TokenBook
from tables.dashboard import Lookup
from tables.fallback import read_buckets

ROUTE_TIMEOUT_S = 10.0  # a request forwarded to the owning worker

SELF = "self"


@dataclass
class ApiContext:
    app: faust.App
    table: Any  # the dashboard faust.Table
    engine: Engine
    metrics: WorkerMetrics
    tokens: TokenBook
    timezones: Timezones
    directory: Directory

    def state(self) -> str:
        """``ready``, ``recovering`` (table recovery not finished) or ``rebalancing``."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        if not recovery.completed.is_set():
            return "recovering"
        if self.app.rebalancing:
            return "rebalancing"
        return "ready"

    def refresh_gauge(self) -> str:
        state = self.state()
        self.metrics.recovered.set(1 if state == "ready" else 0)
        return state

    def owner(self, company_id: int) -> str | None:
        """Where the company's buckets live: ``SELF``, another worker's base URL, or None
        when no worker holds the partition right now."""
        try:
            url = self.app.router.key_store(self.table.name, str(company_id))
        except KeyError:
            return None
        mine = self.app.conf.canonical_url
        if (url.host, url.port) == (mine.host, mine.port):
            return SELF
        return str(url).rstrip("/")

    async def table_lookup(self, keys: Iterable[BucketKey], dimension: str | None = None) -> Lookup:
        table = self.table

        def lookup(key: str) -> dict[str, Any] | None:
            value: dict[str, Any] | None = table.get(key)
            return value

        return lookup

    async def mysql_lookup(self, keys: Iterable[BucketKey], dimension: str | None = None) -> Lookup:
        rows = await asyncio.to_thread(read_buckets, self.engine, list(keys), dimension)
        return rows.get
