"""What the analyst API knows about companies, cached: their timezones (every read needs
one, and must not wait on MySQL per request) and their names and branches (the companies
list and the names of breakdown groups).

Both caches are bounded and expire: a timezone after 5 minutes (an unknown company after
10 s, so one created a minute ago is not read in UTC for long), the directory of names
after 30 s. When MySQL is down the last known answer is kept; with none, the caller gets
:class:`DatabaseUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from pipeline.errors import DatabaseUnavailable
from pipeline.models import branches, companies

TZ_TTL_S = 300.0
UNKNOWN_TTL_S = 10.0
TZ_CACHE_SIZE = 10_000
DIRECTORY_TTL_S = 30.0


class Timezones:
    """Company id → IANA timezone (None: no such company), an LRU of TZ_CACHE_SIZE entries."""

    def __init__(self, engine: Engine, *, size: int = TZ_CACHE_SIZE) -> None:
        self.engine = engine
        self.size = size
        self.cache: OrderedDict[int, tuple[float, str | None]] = OrderedDict()

    async def get(self, company_id: int) -> str | None:
        hit = self.cache.get(company_id)
        if hit and time.monotonic() - hit[0] < (TZ_TTL_S if hit[1] is not None else UNKNOWN_TTL_S):
            self.cache.move_to_end(company_id)
            return hit[1]

        def load() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(
                    select(companies.c.timezone).where(companies.c.id == company_id)
                ).scalar()

        try:
            tz = await asyncio.to_thread(load)
        except Exception as exc:
            if hit and hit[1] is not None:
                return hit[1]  # MySQL down: the last known timezone is still right
            raise DatabaseUnavailable("company timezone unavailable") from exc
        self.cache[company_id] = (time.monotonic(), tz)
        self.cache.move_to_end(company_id)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return tz


@dataclass(frozen=True, slots=True)
class Branch:
    id: int
    name: str
    agent_id: str | None
    is_active: bool


@dataclass(frozen=True, slots=True)
class Company:
    id: int
    name: str
    timezone: str
    is_active: bool
    branches: tuple[Branch, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "timezone": self.timezone,
            "is_active": self.is_active,
            "branches": [
                {"id": b.id, "name": b.name, "agent_id": b.agent_id, "is_active": b.is_active}
                for b in self.branches
            ],
        }


@dataclass
class Directory:
    """Every company with its branches, reloaded at most every DIRECTORY_TTL_S (two
    queries, whatever the number of companies)."""

    engine: Engine
    loaded_at: float = -1e18
    companies: dict[int, Company] = field(default_factory=dict)

    async def all(self) -> dict[int, Company]:
        if time.monotonic() - self.loaded_at < DIRECTORY_TTL_S:
            return self.companies
        try:
            self.companies = await asyncio.to_thread(self._load)
        except Exception as exc:
            if self.loaded_at > 0:
                return self.companies  # MySQL down: the last known directory
            raise DatabaseUnavailable("company directory unavailable") from exc
        self.loaded_at = time.monotonic()
        return self.companies

    def _load(self) -> dict[int, Company]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(companies).order_by(companies.c.id)).mappings().all()
            branch_rows = (
                conn.execute(select(branches).order_by(branches.c.company_id, branches.c.id))
                .mappings()
                .all()
            )
        per_company: dict[int, list[Branch]] = {}
        for b in branch_rows:
            per_company.setdefault(int(b["company_id"]), []).append(
                Branch(int(b["id"]), b["name"], b["retell_agent_id"], bool(b["is_active"]))
            )
        return {
            int(r["id"]): Company(
                int(r["id"]),
                r["name"],
                r["timezone"] or "UTC",
                bool(r["is_active"]),
                tuple(per_company.get(int(r["id"]), ())),
            )
            for r in rows
        }
