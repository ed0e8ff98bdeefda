"""Fake Retell and Cal.com REST APIs (aiohttp), for the backfill's tests and the demo.

No machine here reaches the providers, so these serve a list of calls and bookings in the
documented request and response shapes (docs/providers.md, "REST APIs for backfill"):

* Retell ``POST /v3/list-calls`` (``filter_criteria`` with typed number/range/enum filters,
  ``sort_order``, ``limit`` up to 1000, an opaque ``pagination_key`` that cannot be combined
  with ``skip``; items without the transcript fields) and ``GET /v2/get-call/{call_id}``;
* Cal.com ``GET /v2/bookings`` (``cal-api-version`` 2024-08-13: the time filters, one sort
  parameter, ``take`` 1-250 and ``skip``, the ``pagination`` object) and
  ``GET /v2/bookings/{uid}``; 120 requests per minute per key, then 429 with
  ``Retry-After``.

They are stricter than the real ones where leniency would hide a client bug: an unknown
parameter or filter is a 400, and a missing ``cal-api-version`` is a 400 (the real API
silently falls back to an older version). Faults can be injected by request number: a
429 (with ``Retry-After``) or a slow answer. ``requests`` records every answer, so tests
can check what the client did (e.g. never more than 120 requests in a minute).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

RETELL_TRANSCRIPT_FIELDS = frozenset(
    {
        "transcript",
        "transcript_object",
        "transcript_with_tool_calls",
        "scrubbed_transcript_with_tool_calls",
    }
)
CALCOM_VERSION = "2024-08-13"


@dataclass
class Faults:
    """Answer these request numbers (1-based, per fake) with a 429, a 503, or late."""

    throttle_on: frozenset[int] = frozenset()
    fail_on: frozenset[int] = frozenset()  # 503 Service Unavailable
    retry_after_s: float = 1.0
    slow_on: Mapping[int, float] = field(default_factory=dict)  # request number → seconds


@dataclass
class Answered:
    number: int
    method: str
    path: str
    status: int
    at: float  # time.monotonic()
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None


class _Fake:
    def __init__(self, api_key: str, faults: Faults | None) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self.requests: list[Answered] = []
        self._count = 0

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    async def _admit(
        self, request: web.Request, body: Any = None
    ) -> tuple[int, web.Response | None]:
        """Count the request, apply injected faults and auth; a response means: answer it."""
        self._count += 1
        number = self._count
        delay = self.faults.slow_on.get(number)
        if delay:
            await asyncio.sleep(delay)
        if number in self.faults.throttle_on:
            return number, self._throttled(self.faults.retry_after_s)
        if number in self.faults.fail_on:
            return number, self._json(503, self._error("Service Unavailable"))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return number, self._json(401, self._error("Unauthorized"))
        return number, None

    def _throttled(self, retry_after: float) -> web.Response:
        return self._json(
            429, self._error("Too Many Requests"), {"Retry-After": f"{retry_after:g}"}
        )

    def _error(self, message: str) -> Any:
        return {"message": message}

    def _note(
        self, number: int, request: web.Request, response: web.StreamResponse, body: Any = None
    ) -> web.StreamResponse:
        self.requests.append(
            Answered(
                number,
                request.method,
                request.path,
                response.status,
                time.monotonic(),
                dict(request.query),
                body,
            )
        )
        return response


# --- Retell ------------------------------------------------------------------------------------


class FakeRetell(_Fake):
    LIST_KEYS = frozenset(
        {"filter_criteria", "sort_order", "limit", "pagination_key", "skip", "include_total"}
    )

    def __init__(
        self, calls: Mapping[str, dict[str, Any]], api_key: str, faults: Faults | None = None
    ) -> None:
        super().__init__(api_key, faults)
        self.calls = calls  # call_id → get-call object; tests may change it while serving

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/list-calls", self.list_calls)
        app.router.add_get("/v2/get-call/{call_id}", self.get_call)
        return app

    async def list_calls(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        number, refused = await self._admit(request, body)
        if refused is not None:
            return self._note(number, request, refused, body)
        return self._note(number, request, self._list(body), body)

    def _list(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or not set(body) <= self.LIST_KEYS:
            return self._json(400, self._error("invalid request body"))
        if "skip" in body and "pagination_key" in body:
            return self._json(400, self._error("skip cannot be combined with pagination_key"))
        limit = body.get("limit", 50)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            return self._json(400, self._error("limit must be 1-1000"))
        criteria = body.get("filter_criteria", {})
        try:
            chosen = [c for c in self.calls.values() if _retell_match(c, criteria)]
        except ValueError as exc:
            return self._json(400, self._error(str(exc)))
        descending = body.get("sort_order", "descending") == "descending"
        chosen.sort(
            key=lambda c: (c.get("start_timestamp") or c.get("end_timestamp") or 0, c["call_id"]),
            reverse=descending,
        )
        digest = hashlib.sha256(
            orjson.dumps([criteria, descending], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()[:16]
        offset = body.get("skip", 0)
        if "pagination_key" in body:
            try:
                token = orjson.loads(base64.urlsafe_b64decode(body["pagination_key"]))
                assert token["digest"] == digest
                offset = int(token["offset"])
            except Exception:  # noqa: BLE001 - any bad key is the client's mistake
                return self._json(400, self._error("invalid pagination_key"))
        page = chosen[offset : offset + limit]
        more = offset + limit < len(chosen)
        key = (
            base64.urlsafe_b64encode(
                orjson.dumps({"offset": offset + limit, "digest": digest})
            ).decode()
            if more
            else None
        )
        items = [{k: v for k, v in c.items() if k not in RETELL_TRANSCRIPT_FIELDS} for c in page]
        out: dict[str, Any] = {"items": items, "has_more": more, "pagination_key": key}
        if body.get("include_total"):
            out["total"] = len(chosen)
        return self._json(200, out)

    async def get_call(self, request: web.Request) -> web.StreamResponse:
        number, refused = await self._admit(request)
        if refused is not None:
            return self._note(number, request, refused)
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return self._note(number, request, self._json(404, self._error("Call not found")))
        return self._note(number, request, self._json(200, call))


def _retell_match(call: Mapping[str, Any], criteria: Any) -> bool:
    if not isinstance(criteria, dict):
        raise ValueError("filter_criteria must be an object")
    for name, spec in criteria.items():
        if name in ("start_timestamp", "end_timestamp", "duration_ms"):
            if not _number_match(call.get(name), spec):
                return False
        elif name in ("call_status", "call_type", "direction", "disconnection_reason"):
            if not isinstance(spec, dict) or spec.get("type") != "enum" or spec.get("op") != "in":
                raise ValueError(f"{name} must be an enum filter with op in")
            if call.get(name) not in spec.get("value", []):
                return False
        elif name == "agent":
            if not isinstance(spec, list):
                raise ValueError("agent must be a list")
            if call.get("agent_id") not in [a.get("agent_id") for a in spec]:
                return False
        else:
            raise ValueError(f"filter {name!r} is not supported by this fake")
    return True


def _number_match(value: Any, spec: Any) -> bool:
    if not isinstance(spec, dict):
        raise ValueError("a number filter must be an object")
    if spec.get("type") == "range":
        bounds = spec.get("value")
        if spec.get("op") != "bt" or not isinstance(bounds, list) or len(bounds) != 2:
            raise ValueError("a range filter is {type: range, op: bt, value: [lower, upper]}")
        return value is not None and bounds[0] <= value <= bounds[1]
    if spec.get("type") == "number":
        limit, op = spec.get("value"), spec.get("op")
        ops = {
            "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b,
            "gt": lambda a, b: a > b,
            "ge": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b,
        }
        if op not in ops or not isinstance(limit, int | float):
            raise ValueError("a number filter is {type: number, op: eq|ne|gt|ge|lt|le, value}")
        return value is not None and bool(ops[op](value, limit))
    raise ValueError("a number filter has type number or range")


# --- Cal.com -----------------------------------------------------------------------------------


BOOKING_PARAMS = {
    # parameter: (booking field, comparison)
    "afterUpdatedAt": ("updatedAt", "ge"),
    "beforeUpdatedAt": ("updatedAt", "le"),
    "afterCreatedAt": ("createdAt", "ge"),
    "beforeCreatedAt": ("createdAt", "le"),
    "afterStart": ("start", "ge"),
    "beforeEnd": ("end", "le"),
}
SORTS = {
    "sortUpdatedAt": "updatedAt",
    "sortCreated": "createdAt",
    "sortStart": "start",
    "sortEnd": "end",
}
OTHER_PARAMS = frozenset({"take", "skip", "status", "bookingUid", "attendeeEmail", "eventTypeId"})


class FakeCalcom(_Fake):
    def __init__(
        self,
        bookings: Mapping[str, dict[str, Any]],
        api_key: str,
        faults: Faults | None = None,
        *,
        per_minute: int = 120,
        window_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, faults)
        self.bookings = bookings  # uid → booking; tests may change it while serving
        self.per_minute = per_minute
        self.window_s = window_s
        self._recent: deque[float] = deque()
        self.max_in_window = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/bookings", self.list_bookings)
        app.router.add_get("/v2/bookings/{uid}", self.get_booking)
        return app

    def _error(self, message: str) -> Any:
        return {"status": "error", "error": {"code": "ERROR", "message": message}}

    async def _admit(
        self, request: web.Request, body: Any = None
    ) -> tuple[int, web.Response | None]:
        number, refused = await super()._admit(request, body)
        if refused is not None:
            return number, refused
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.per_minute:
            wait = self._recent[0] + self.window_s - now
            return number, self._throttled(max(1.0, round(wait + 0.5)))
        self._recent.append(now)
        self.max_in_window = max(self.max_in_window, len(self._recent))
        if request.headers.get("cal-api-version") != CALCOM_VERSION:
            return number, self._json(400, self._error(f"cal-api-version must be {CALCOM_VERSION}"))
        return number, None

    async def list_bookings(self, request: web.Request) -> web.StreamResponse:
        number, refused = await self._admit(request)
        if refused is None:
            refused = self._list(request.query)
        return self._note(number, request, refused)

    def _list(self, query: Mapping[str, str]) -> web.Response:
        unknown = set(query) - set(BOOKING_PARAMS) - set(SORTS) - OTHER_PARAMS
        if unknown:
            return self._json(400, self._error(f"property {sorted(unknown)[0]} should not exist"))
        if "status" in query:
            return self._json(400, self._error("the status filter is not implemented by this fake"))
        try:
            take = int(query.get("take", "100"))
            skip = int(query.get("skip", "0"))
        except ValueError:
            return self._json(400, self._error("take and skip must be integers"))
        if not 1 <= take <= 250 or skip < 0:
            return self._json(400, self._error("take must be 1-250, skip 0 or more"))
        bounds = []
        for param, (name, op) in BOOKING_PARAMS.items():
            if param in query:
                moment = _strict_iso(query[param])
                if moment is None:
                    return self._json(400, self._error(f"{param} must be an ISO 8601 date"))
                bounds.append((name, op, moment))
        chosen = [b for b in self.bookings.values() if _within(b, bounds)]
        sorts = [(p, f) for p, f in SORTS.items() if p in query]
        if len(sorts) > 1:
            return self._json(400, self._error("one sort parameter at a time (in this fake)"))
        chosen.sort(key=lambda b: b["uid"])  # ties: a fixed order, as a database index gives
        if sorts:
            param, name = sorts[0]
            if query[param] not in ("asc", "desc"):
                return self._json(400, self._error(f"{param} must be asc or desc"))
            chosen.sort(
                key=lambda b: _instant(b.get(name)) or datetime.min, reverse=query[param] == "desc"
            )
        page = chosen[skip : skip + take]
        total = len(chosen)
        return self._json(
            200,
            {
                "status": "success",
                "data": page,
                "pagination": {
                    "totalItems": total,
                    "remainingItems": max(0, total - skip - len(page)),
                    "returnedItems": len(page),
                    "itemsPerPage": take,
                    "currentPage": skip // take + 1,
                    "totalPages": max(1, -(-total // take)),
                    "hasNextPage": skip + take < total,
                    "hasPreviousPage": skip > 0,
                },
            },
        )

    async def get_booking(self, request: web.Request) -> web.StreamResponse:
        number, refused = await self._admit(request)
        if refused is not None:
            return self._note(number, request, refused)
        booking = self.bookings.get(request.match_info["uid"])
        if booking is None:
            return self._note(number, request, self._json(404, self._error("Booking not found")))
        return self._note(number, request, self._json(200, {"status": "success", "data": booking}))

    def most_in_any_minute(self) -> int:
        """The most answers (any status) this fake gave within any 60 seconds."""
        stamps = sorted(r.at for r in self.requests)
        best, low = 0, 0
        for high, at in enumerate(stamps):
            while stamps[low] <= at - 60.0:
                low += 1
            best = max(best, high - low + 1)
        return best


def _strict_iso(value: str) -> datetime | None:
    if "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None)


def _instant(value: Any) -> datetime | None:
    return _strict_iso(value) if isinstance(value, str) else None


def _within(booking: Mapping[str, Any], bounds: list[tuple[str, str, datetime]]) -> bool:
    for name, op, moment in bounds:
        value = _instant(booking.get(name))
        if value is None or (value < moment if op == "ge" else value > moment):
            return False
    return True


# --- running them ------------------------------------------------------------------------------


@dataclass
class State:
    """What the fakes serve, mutable while they run."""

    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> State:
        """From ``simulate --provider-state``'s file (``rest_view.provider_state``)."""
        return cls(
            calls={c["call_id"]: c for c in doc.get("retell", {}).get("calls", [])},
            bookings={b["uid"]: b for b in doc.get("calcom", {}).get("bookings", [])},
        )


@dataclass
class Running:
    retell: FakeRetell
    calcom: FakeCalcom
    retell_url: str
    calcom_url: str


async def start(
    state: State,
    *,
    retell_key: str,
    calcom_key: str,
    host: str = "127.0.0.1",
    retell_port: int = 0,
    calcom_port: int = 0,
    retell_faults: Faults | None = None,
    calcom_faults: Faults | None = None,
    calcom_per_minute: int = 120,
) -> tuple[Running, list[web.AppRunner]]:
    """Start both fakes on this loop; port 0 picks a free one."""
    retell = FakeRetell(state.calls, retell_key, retell_faults)
    calcom = FakeCalcom(state.bookings, calcom_key, calcom_faults, per_minute=calcom_per_minute)
    runners, urls = [], []
    for fake, port in ((retell, retell_port), (calcom, calcom_port)):
        runner = web.AppRunner(fake.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        runners.append(runner)
        urls.append(f"http://{host}:{bound}")
    return Running(retell, calcom, urls[0], urls[1]), runners


@contextmanager
def running(state: State, **options: Any) -> Iterator[Running]:
    """Both fakes in a background thread (for synchronous tests); stopped at the end."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["value"] = loop.run_until_complete(start(state, **options))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            ready["error"] = exc
        started.set()
        if "value" in ready:
            loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-providers", daemon=True)
    thread.start()
    started.wait(30)
    if "error" in ready:
        raise ready["error"]
    fakes, runners = ready["value"]
    try:
        yield fakes
    finally:

        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
