"""HTTP to a provider's REST API: authentication, a request budget, and retries that respect
what the provider asks for.

Both providers throttle: Cal.com allows an API key 120 requests per minute, Retell publishes
no number but answers 429 like anyone else (docs/providers.md, "REST APIs for backfill").
So every attempt, retries included, first takes a token from a :class:`RequestBudget`, and a
429 waits the ``Retry-After`` the provider sent (seconds or an HTTP date) before trying
again. Server errors, timeouts and refused connections back off exponentially for a bounded
number of attempts; any other 4xx is final, because repeating it cannot help.

Secrets never leave this module: the key is only ever in the ``Authorization`` header, and
errors and log lines name the provider, the method, the path and the status, never headers,
query strings or bodies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from pipeline.errors import SwitchboardError
from pipeline.settings import Secret

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
#: Called once per HTTP answer (or transport failure): (provider, status or error class).
OnAnswer = Callable[[str, str], None]

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class ProviderApiError(SwitchboardError):
    """The provider's API refused or failed the request for good; ``detail`` is one line."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RequestBudget:
    """A token bucket: at most ``burst + per_minute`` requests in any 60 seconds.

    Cal.com counts requests per minute and key; a bucket of 10 refilled at 110/min can
    therefore never exceed its 120 in any window, while a short run still starts at once.
    """

    def __init__(
        self,
        per_minute: float,
        burst: int = 10,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.sleep = sleep
        self.stamp = clock()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            self._refill()
            if self.tokens < 1.0:
                await self.sleep((1.0 - self.tokens) / self.rate)
                self._refill()
                # The wait was exactly one token long; float rounding must not make it loop.
                self.tokens = max(self.tokens, 1.0)
            self.tokens -= 1.0

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Transport:
    """One provider's API: ``async with Transport(...) as api: await api.get_json(path)``."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        key: Secret,
        budget: RequestBudget,
        *,
        extra_headers: Mapping[str, str] | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        max_throttled: int = 20,
        max_retry_after_s: float = 300.0,
        sleep: Sleep = asyncio.sleep,
        on_answer: OnAnswer | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.budget = budget
        self.extra_headers = dict(extra_headers or {})
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_throttled = max_throttled
        self.max_retry_after_s = max_retry_after_s
        self.sleep = sleep
        self.on_answer = on_answer or (lambda provider, status: None)
        self.requests = 0
        self.throttled = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Transport:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={
                "Authorization": f"Bearer {self._key.reveal()}",
                "Accept": "application/json",
                **self.extra_headers,
            },
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """GET ``path``; None for a 404 when ``missing_ok``."""
        return await self._request("GET", path, params=params, missing_ok=missing_ok)

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self._request("POST", path, body=body)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        if self._session is None:
            raise RuntimeError("Transport used outside its `async with` block")
        where = f"{self.provider} {method} {path}"
        tries = _Tries(where, self.max_attempts, self.max_throttled, self.max_retry_after_s)
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        while True:
            await self.budget.take()
            self.requests += 1
            try:
                async with self._session.request(
                    method, self.base_url + path, params=params, data=data, headers=headers
                ) as resp:
                    raw = await resp.read()
                    self.on_answer(self.provider, str(resp.status))
                    if resp.status == 429:
                        self.throttled += 1
                        wait = tries.throttled(resp.headers.get("Retry-After"))
                    elif resp.status in RETRYABLE_STATUS:
                        wait = tries.failed(f"status {resp.status}")
                    else:
                        return _final(resp.status, raw, where, missing_ok)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.on_answer(self.provider, type(exc).__name__)
                wait = tries.failed(type(exc).__name__)
            await self.sleep(wait)


class _Tries:
    """How one request has gone so far, and how long to wait before the next try: what a
    429's Retry-After asks (within bounds), or a jittered exponential backoff after a
    failure. Raises :class:`ProviderApiError` once the bounds are passed."""

    def __init__(
        self, where: str, max_attempts: int, max_throttled: int, max_retry_after_s: float
    ) -> None:
        self.where = where
        self.max_attempts = max_attempts
        self.max_throttled = max_throttled
        self.max_retry_after_s = max_retry_after_s
        self.failures = self.throttles = 0
        self.backoff = 0.5

    def throttled(self, retry_after: str | None) -> float:
        self.throttles += 1
        wait = retry_after_s(retry_after)
        if wait is None:
            wait = min(60.0, 2.0**self.throttles)
        if wait > self.max_retry_after_s or self.throttles > self.max_throttled:
            raise ProviderApiError(
                f"{self.where}: still rate limited after {self.throttles} tries "
                f"(Retry-After {wait:.0f} s); try again later"
            )
        log.warning("%s answered 429; waiting %.1f s as Retry-After asks", self.where, wait)
        return wait

    def failed(self, problem: str) -> float:
        self.failures += 1
        if self.failures >= self.max_attempts:
            raise ProviderApiError(
                f"{self.where}: failed {self.failures} times, last with {problem}"
            )
        wait = self.backoff * (0.5 + random.random())
        self.backoff = min(self.backoff * 2, 30.0)
        log.warning("%s failed (%s); retrying in %.1f s", self.where, problem, wait)
        return wait


def _final(status: int, raw: bytes, where: str, missing_ok: bool) -> Any:
    """The answer to a request that is not retried: its JSON, None for a 404 when
    ``missing_ok``, or the error it is."""
    if 200 <= status < 300:
        return _decode(raw, where)
    if status == 404 and missing_ok:
        return None
    if status in (401, 403):
        raise ProviderApiError(
            f"{where}: {status}: the API key was refused (check the key and its permissions)"
        )
    raise ProviderApiError(f"{where}: {status}: {_reason(raw)}")


def _decode(raw: bytes, where: str) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise ProviderApiError(f"{where}: the answer is not JSON") from exc


def _reason(raw: bytes) -> str:
    """A one-line reason from an error body (the providers send a JSON message)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "error"
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return " ".join(value.split())[:200]
    return "error"
