"""The routing cache behind ``call_inbound``: which branch answers a called number.

Retell waits for the answer while the caller hears ringing, so the answer comes from memory:
every active branch of every active company, keyed by its phone number, loaded at start and
refreshed every ``routing_refresh_s`` in the background (pymysql runs in a thread). When MySQL
is down the last good copy keeps answering: a branch list a few minutes old routes calls far
better than no list. Only ``loaded`` (at least one successful load) gates readiness.

Tenant isolation (docs/architecture.md, invariant 6): a number maps to exactly one branch (``phone_number``
is unique), and caller context is looked up only inside that branch's company.

:meth:`RoutingCache.caller_context` is the one database read on the answer path. It is two
index lookups (customers ``(company_id, phone)``, appointments ``(customer_id, starts_at)``)
under a hard budget; when MySQL is slow the call is routed without the caller's name rather
than late. Results are kept briefly, so Retell's retries of the same call cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.database import create_db_engine
from pipeline.errors import DatabaseUnavailable
from pipeline.ingress.metrics import IngressMetrics
from pipeline.logs import mask_phone
from pipeline.models import appointments, branches, companies, customers
from pipeline.settings import Settings

log = logging.getLogger(__name__)

UPCOMING_STATUSES = ("scheduled", "pending")


@dataclass(frozen=True, slots=True)
class Route:
    """An active branch of an active company, as ``call_inbound`` needs it."""

    company_id: int
    company_name: str
    branch_id: int
    branch_name: str
    retell_agent_id: str | None
    timezone: tzinfo


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What the agent may know about a caller who is a customer of the routed company."""

    customer_name: str | None
    next_appointment: datetime | None  # timezone-aware, UTC


class Router(Protocol):
    """What the ingress needs from routing; unit tests pass a fake."""

    @property
    def loaded(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def lookup(self, phone: str) -> Route | None: ...

    def unrouted_reason(self, phone: str) -> str: ...

    async def caller_context(self, company_id: int, phone: str) -> CallerContext | None:
        """The caller's context, or None (not a customer, or no answer within budget)."""
        ...


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("company timezone %r is not an IANA zone; using UTC", name)
        return UTC


class RoutingCache:
    """Active branches by phone number, refreshed in the background; see the module doc."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        metrics: IngressMetrics | None = None,
        context_ttl_s: float = 30.0,
        context_max_entries: int = 10_000,
        max_concurrent_lookups: int = 6,
    ) -> None:
        self._settings = settings
        self._owns_engine = engine is None
        # Public on purpose: integration tests repoint it to simulate MySQL going away.
        self.engine: Engine | None = engine
        self._metrics = metrics
        self._routes: dict[str, Route] = {}
        self._inactive: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._ttl = context_ttl_s
        self._max_entries = context_max_entries
        self._contexts: dict[tuple[int, str], tuple[float, CallerContext | None]] = {}
        self._max_lookups = max_concurrent_lookups
        self._in_flight = 0
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent_lookups, thread_name_prefix="caller-lookup"
        )

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    @property
    def size(self) -> int:
        return len(self._routes)

    @property
    def loaded_at(self) -> float | None:
        """``time.monotonic()`` of the last successful load."""
        return self._loaded_at

    def age_s(self) -> float | None:
        return None if self._loaded_at is None else time.monotonic() - self._loaded_at

    async def start(self) -> None:
        """Load once (a failure is logged, not raised), then refresh in the background."""
        if self.engine is None:
            # Lookups run concurrently with refreshes; the pool covers both without waits.
            self.engine = create_db_engine(self._settings, pool_size=4)
        with contextlib.suppress(DatabaseUnavailable):
            await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="routing-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_engine and self.engine is not None:
            self.engine.dispose()

    def lookup(self, phone: str) -> Route | None:
        return self._routes.get(phone.strip())

    def unrouted_reason(self, phone: str) -> str:
        return "inactive_number" if phone.strip() in self._inactive else "unknown_number"

    async def refresh(self) -> None:
        """Reload every branch; on failure keep the last good copy and raise."""
        engine = self.engine
        assert engine is not None, "start() creates the engine"
        try:
            rows = await asyncio.to_thread(_load_branches, engine)
        except SQLAlchemyError as exc:
            if self._metrics is not None:
                self._metrics.routing_refresh_failures.inc()
            age = self.age_s()
            log.warning(
                "routing refresh failed (%s); %s",
                type(exc).__name__,
                "no routes loaded yet" if age is None else f"serving the copy from {age:.0f}s ago",
            )
            raise DatabaseUnavailable("routing refresh failed") from exc
        routes: dict[str, Route] = {}
        inactive: set[str] = set()
        for row in rows:
            phone = row.phone_number.strip()
            if not (row.is_active and row.company_active):
                inactive.add(phone)
                continue
            routes[phone] = Route(
                company_id=int(row.company_id),
                company_name=row.company_name,
                branch_id=int(row.id),
                branch_name=row.name,
                retell_agent_id=row.retell_agent_id,
                timezone=_zone(row.timezone or "UTC"),
            )
        self._routes, self._inactive = routes, frozenset(inactive)
        self._loaded_at = time.monotonic()
        self._observe()
        log.debug("routing cache loaded: %d active numbers", len(routes))

    async def caller_context(self, company_id: int, phone: str) -> CallerContext | None:
        key = (company_id, phone.strip())
        now = time.monotonic()
        cached = self._contexts.get(key)
        if cached is not None and cached[0] > now:
            self._count("cached")
            return cached[1]
        if self._in_flight >= self._max_lookups or self.engine is None:
            self._count("shed")  # MySQL is already slow; queueing would only make it worse
            return None
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        at = datetime.now(UTC).replace(tzinfo=None)
        future = loop.run_in_executor(
            self._executor, _load_caller, self.engine, company_id, key[1], at
        )
        # Done even after a timeout: a late answer still serves the provider's retry.
        future.add_done_callback(functools.partial(self._lookup_done, key))
        try:
            async with asyncio.timeout(self._settings.caller_lookup_budget_s):
                context = await asyncio.shield(future)
        except TimeoutError:
            self._count("timeout")
            return None
        except Exception as exc:  # noqa: BLE001 - any failure: route without the context
            self._count("error")
            log.warning("caller lookup failed for %s: %s", mask_phone(key[1]), type(exc).__name__)
            return None
        self._count("miss" if context is None else "hit")
        return context

    def _lookup_done(
        self, key: tuple[int, str], future: asyncio.Future[CallerContext | None]
    ) -> None:
        self._in_flight -= 1
        if future.cancelled() or future.exception() is not None:
            return
        if len(self._contexts) >= self._max_entries:
            self._contexts.pop(next(iter(self._contexts)))
        self._contexts[key] = (time.monotonic() + self._ttl, future.result())

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.caller_lookups.labels(result).inc()

    def _observe(self) -> None:
        if self._metrics is not None:
            self._metrics.observe_routing(len(self._routes), self._loaded_at)

    async def _refresh_loop(self) -> None:
        while True:
            # Until the first load succeeds, retry quickly: the process is not ready without it.
            interval = self._settings.routing_refresh_s
            await asyncio.sleep(interval if self.loaded else min(interval, 1.0))
            try:
                await self.refresh()
            except DatabaseUnavailable:
                pass  # logged and counted by refresh(); the last good copy stays
            except Exception:  # noqa: BLE001 - the loop must outlive any single bad refresh
                log.exception("routing refresh crashed")
            self._observe()


def _load_branches(engine: Engine) -> list:  # type: ignore[type-arg]
    stmt = select(
        branches.c.id,
        branches.c.company_id,
        branches.c.name,
        branches.c.phone_number,
        branches.c.retell_agent_id,
        branches.c.is_active,
        companies.c.name.label("company_name"),
        companies.c.timezone,
        companies.c.is_active.label("company_active"),
    ).select_from(branches.join(companies, companies.c.id == branches.c.company_id))
    with engine.connect() as conn:
        return list(conn.execute(stmt))


def _load_caller(
    engine: Engine, company_id: int, phone: str, now: datetime
) -> CallerContext | None:
    """One round trip: the customer's name and their next upcoming appointment, if any."""
    upcoming = (
        select(func.min(appointments.c.starts_at))
        .where(
            appointments.c.customer_id == customers.c.id,
            appointments.c.company_id == customers.c.company_id,
            appointments.c.starts_at > now,
            appointments.c.status.in_(UPCOMING_STATUSES),
        )
        .scalar_subquery()
    )
    stmt = select(customers.c.name, upcoming.label("next_at")).where(
        customers.c.company_id == company_id, customers.c.phone == phone
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    next_at = row.next_at.replace(tzinfo=UTC) if row.next_at is not None else None
    return CallerContext(customer_name=row.name or None, next_appointment=next_at)
