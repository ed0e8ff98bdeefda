"""RoutingCache behaviour with its two database reads replaced: what it keeps, when it says
it is loaded, and how the caller lookup stays inside its budget. The SQL itself runs against
MariaDB in tests/integration/test_ingress_call_inbound.py."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from pipeline.errors import DatabaseUnavailable
from pipeline.ingress import routing as routing_mod
from pipeline.ingress.metrics import IngressMetrics
from pipeline.ingress.routing import CallerContext, RoutingCache
from tests.unit.ingress_fakes import make_settings

NAMES = "id company_id name phone_number retell_agent_id is_active company_name timezone company_active"  # fmt: skip


def row(branch: int, company: int, phone: str, *, active: bool = True, company_active: bool = True, tz: str = "Europe/Berlin") -> Any:  # fmt: skip
    values = (branch, company, f"B{branch}", phone, f"agent_{branch}", active, f"C{company}", tz, company_active)  # fmt: skip
    return SimpleNamespace(**dict(zip(NAMES.split(), values, strict=True)))


class FakeDb:
    """Stands in for ``_load_branches`` / ``_load_caller``; can go down or get slow."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.down = False
        self.caller_delay_s = 0.0
        self.callers: dict[tuple[int, str], CallerContext] = {}
        self.caller_calls: list[tuple[int, str]] = []
        self.release = threading.Event()
        self.release.set()

    def load_branches(self, engine: Any) -> list[Any]:
        if self.down:
            raise OperationalError("SELECT", {}, Exception("(2003) can't connect"))
        return list(self.rows)

    def load_caller(self, engine: Any, company_id: int, phone: str, now: datetime) -> CallerContext | None:  # fmt: skip
        self.caller_calls.append((company_id, phone))
        self.release.wait(5)
        if self.caller_delay_s:
            time.sleep(self.caller_delay_s)
        if self.down:
            raise OperationalError("SELECT", {}, Exception("(2013) lost connection"))
        return self.callers.get((company_id, phone))


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch) -> FakeDb:
    fake = FakeDb(
        [
            row(1, 10, "+14155550101"),
            row(2, 10, "+14155550102", active=False),
            row(3, 20, "+14155550103", company_active=False),
            row(4, 30, " +14155550104 ", tz="Not/AZone"),
        ]
    )
    monkeypatch.setattr(routing_mod, "_load_branches", fake.load_branches)
    monkeypatch.setattr(routing_mod, "_load_caller", fake.load_caller)
    return fake


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def make_cache(registry: CollectorRegistry, **settings: Any) -> RoutingCache:
    return RoutingCache(
        make_settings(**settings),
        engine=object(),  # type: ignore[arg-type]
        metrics=IngressMetrics(registry),
        context_ttl_s=60,
        max_concurrent_lookups=2,
    )


async def test_only_active_branches_of_active_companies_route(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    cache = make_cache(registry)
    assert not cache.loaded and cache.lookup("+14155550101") is None
    await cache.refresh()
    assert cache.loaded and cache.size == 2
    route = cache.lookup("+14155550101")
    assert route is not None
    assert (route.company_id, route.branch_id, route.branch_name, route.company_name) == (10, 1, "B1", "C10")  # fmt: skip
    assert route.retell_agent_id == "agent_1"
    assert str(route.timezone) == "Europe/Berlin"
    assert cache.lookup("+14155550102") is None
    assert cache.unrouted_reason("+14155550102") == "inactive_number"
    assert cache.lookup("+14155550103") is None
    assert cache.unrouted_reason("+14155550103") == "inactive_number"
    assert cache.unrouted_reason("+19999999999") == "unknown_number"
    assert registry.get_sample_value("switchboard_ingress_routing_cache_entries") == 2
    await cache.close()


async def test_bad_timezone_falls_back_to_utc_and_numbers_are_trimmed(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    cache = make_cache(registry)
    await cache.refresh()
    route = cache.lookup("+14155550104")
    assert route is not None and route.timezone is UTC
    await cache.close()


async def test_keeps_the_last_good_copy_when_mysql_is_down(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    cache = make_cache(registry)
    await cache.refresh()
    db.down = True
    db.rows = []
    with pytest.raises(DatabaseUnavailable):
        await cache.refresh()
    assert cache.loaded
    assert cache.lookup("+14155550101") is not None
    assert registry.get_sample_value("switchboard_ingress_routing_refresh_failures_total") == 1
    db.down = False
    await cache.refresh()
    assert cache.lookup("+14155550101") is None  # an emptied table does empty the cache
    await cache.close()


async def test_start_survives_mysql_down_and_loads_when_it_returns(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    db.down = True
    cache = make_cache(registry, routing_refresh_s=0.1)
    await cache.start()
    assert not cache.loaded
    assert registry.get_sample_value("switchboard_ingress_routing_cache_loaded") == 0
    assert registry.get_sample_value("switchboard_ingress_routing_cache_last_success_timestamp_seconds") == 0  # fmt: skip
    db.down = False
    for _ in range(50):
        if cache.loaded:
            break
        await asyncio.sleep(0.05)
    assert cache.loaded and cache.lookup("+14155550101") is not None
    assert registry.get_sample_value("switchboard_ingress_routing_cache_loaded") == 1
    stamp = registry.get_sample_value("switchboard_ingress_routing_cache_last_success_timestamp_seconds")  # fmt: skip
    assert stamp is not None and abs(time.time() - stamp) < 60
    await cache.close()


async def test_background_refresh_picks_up_new_branches(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    cache = make_cache(registry, routing_refresh_s=0.1)
    await cache.start()
    assert cache.lookup("+14155550199") is None
    db.rows.append(row(9, 10, "+14155550199"))
    await asyncio.sleep(0.3)
    assert cache.lookup("+14155550199") is not None
    await cache.close()


def lookups(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("switchboard_ingress_caller_lookups_total", {"result": result})  # fmt: skip
    return value or 0.0


async def test_caller_context_hit_miss_and_cache(db: FakeDb, registry: CollectorRegistry) -> None:
    at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    db.callers[(10, "+14155550142")] = CallerContext("Dana", at)
    cache = make_cache(registry)
    assert await cache.caller_context(10, "+14155550142") == CallerContext("Dana", at)
    assert await cache.caller_context(10, "+14155550142") == CallerContext("Dana", at)
    assert await cache.caller_context(20, "+14155550142") is None  # another company: unknown
    assert await cache.caller_context(20, "+14155550142") is None
    assert db.caller_calls == [(10, "+14155550142"), (20, "+14155550142")]
    assert (lookups(registry, "hit"), lookups(registry, "miss"), lookups(registry, "cached")) == (1, 1, 2)  # fmt: skip
    await cache.close()


async def test_caller_lookup_timeout_and_late_result_is_kept(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    db.callers[(10, "+14155550142")] = CallerContext("Dana", None)
    db.caller_delay_s = 0.2
    cache = make_cache(registry, caller_lookup_budget_s=0.05)
    # None although the lookup finds Dana: the answer did not wait for it.
    assert await cache.caller_context(10, "+14155550142") is None
    assert lookups(registry, "timeout") == 1
    await asyncio.sleep(0.3)  # the thread finishes; a provider retry now gets the answer
    assert await cache.caller_context(10, "+14155550142") == CallerContext("Dana", None)
    assert lookups(registry, "cached") == 1
    await cache.close()


async def test_caller_lookup_error_is_not_cached(db: FakeDb, registry: CollectorRegistry) -> None:
    db.down = True
    cache = make_cache(registry)
    assert await cache.caller_context(10, "+14155550142") is None
    assert lookups(registry, "error") == 1
    db.down = False
    db.callers[(10, "+14155550142")] = CallerContext("Dana", None)
    assert await cache.caller_context(10, "+14155550142") == CallerContext("Dana", None)
    await cache.close()


async def test_lookups_beyond_the_limit_are_shed_not_queued(db: FakeDb, registry: CollectorRegistry) -> None:  # fmt: skip
    db.release.clear()  # MySQL hangs: every lookup thread blocks
    cache = make_cache(registry, caller_lookup_budget_s=0.02)
    results = await asyncio.gather(
        *(cache.caller_context(10, f"+1415555{i:04d}") for i in range(5))
    )
    assert results == [None] * 5
    assert lookups(registry, "timeout") == 2  # max_concurrent_lookups=2 threads busy
    assert lookups(registry, "shed") == 3
    db.release.set()
    await asyncio.sleep(0.1)
    assert await cache.caller_context(10, "+14155559999") is None
    assert lookups(registry, "miss") == 1  # threads freed: lookups run again
    await cache.close()
