"""Delivering a scenario over HTTP, the way the providers do.

Each delivery is signed at send time (Retell's signature is only valid ±5 minutes around
its timestamp), paced to ``rate`` requests per second, at most ``concurrency`` in flight.
A 503 (or 429, another 5xx, a timeout, a refused connection) is not a loss: the same body is
sent again, honouring ``Retry-After``, until it is accepted or ``deadline_s`` has passed.
Any other answer is final. ``call_inbound`` answers are checked against the tenants and
their metadata is copied into the call's later events, as Retell copies it onto the call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from pipeline import providers
from testbed.simulator.bodies import with_metadata
from testbed.simulator.model import Scenario, Step

RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 10.0


@dataclass(frozen=True, slots=True)
class SendConfig:
    url: str = "http://127.0.0.1:8080"
    rate: float = 50.0  # deliveries per second; 0 = as fast as concurrency allows
    concurrency: int = 32
    deadline_s: float = 120.0  # per delivery: how long to keep retrying 503s and errors
    timeout_s: float = 10.0  # per request (Retell's default webhook timeout)
    progress_every_s: float = 2.0


@dataclass(slots=True)
class Outcome:
    step: str
    attempt: int
    status: int | None = None  # final HTTP status; None: never answered, or skipped
    error: str | None = None  # the answer's "error" code, a transport error, or "skipped"
    requests: int = 0
    answers_503: int = 0
    answers_other_retryable: int = 0  # 429/5xx other than 503, timeouts, refused connections
    latency_ms: float = 0.0
    mismatch: str | None = None  # a call_inbound answer that disagrees with the tenants

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(slots=True)
class Progress:
    total: int
    done: int = 0
    accepted: int = 0
    rejected: int = 0
    retries: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"[{elapsed:6.1f}s] {self.done}/{self.total} delivered, {self.accepted} accepted, "
            f"{self.rejected} rejected, {self.retries} retried, {self.in_flight} in flight, "
            f"{rate:.1f}/s"
        )


class Sender:
    def __init__(
        self,
        scenario: Scenario,
        secrets: Mapping[str, str],
        config: SendConfig,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.scenario = scenario
        self.secrets = dict(secrets)
        self.config = config
        self.on_progress = on_progress
        self.clock_ms = clock_ms
        self.progress = Progress(total=len(scenario.deliveries))
        self.first_done: dict[str, asyncio.Event] = {}
        self.accepted_steps: set[str] = set()
        self.inbound_metadata: dict[str, dict[str, Any] | None] = {}  # by step key
        self.bodies: dict[str, bytes] = {}

    async def run(self) -> list[Outcome]:
        cfg = self.config
        self.first_done = {key: asyncio.Event() for key in self.scenario.steps}
        semaphore = asyncio.Semaphore(max(1, cfg.concurrency))
        connector = aiohttp.TCPConnector(limit=max(1, cfg.concurrency))
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        outcomes: list[Outcome] = []
        reporter = asyncio.create_task(self._report()) if self.on_progress else None
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            start = loop.time()
            for delivery in self.scenario.deliveries:
                if cfg.rate > 0:
                    wait = start + delivery.slot / cfg.rate - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                await semaphore.acquire()
                outcome = Outcome(delivery.step, delivery.attempt)
                outcomes.append(outcome)
                tasks.append(asyncio.create_task(self._deliver(session, outcome, semaphore)))
            await asyncio.gather(*tasks)
        if reporter is not None:
            reporter.cancel()
            if self.on_progress:
                self.on_progress(self.progress)
        return outcomes

    async def _report(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(self.config.progress_every_s)
            self.on_progress(self.progress)

    async def _deliver(
        self, session: aiohttp.ClientSession, outcome: Outcome, semaphore: asyncio.Semaphore
    ) -> None:
        step = self.scenario.steps[outcome.step]
        self.progress.in_flight += 1
        try:
            if step.depends_on is not None:
                await self.first_done[step.depends_on].wait()
                lost = step.depends_on in self.scenario.dropped  # the provider sends it anyway
                if step.depends_on not in self.accepted_steps and not lost:
                    outcome.error = "skipped"  # a no-show for a booking that never arrived
                    return
            if step.key in self.scenario.dropped:
                outcome.error = "dropped"  # lost upstream: never reaches the ingress
                return
            body = await self._body(step)
            answer = await self._send(session, step, body, outcome)
            if outcome.accepted:
                self.accepted_steps.add(step.key)
            if step.provider == "retell" and step.event_type == "call_inbound" and step.bad is None:
                metadata = self._routing_metadata(step, outcome, answer)
                if outcome.attempt == 0:
                    self.inbound_metadata[step.key] = metadata
        finally:
            self.progress.in_flight -= 1
            self.progress.done += 1
            if outcome.accepted:
                self.progress.accepted += 1
            elif outcome.error not in ("skipped", "dropped"):
                self.progress.rejected += 1
            if outcome.attempt == 0:
                self.first_done[step.key].set()
            semaphore.release()

    async def _body(self, step: Step) -> bytes:
        """The body to send; the same bytes for every delivery of the step."""
        if step.key in self.bodies:
            return self.bodies[step.key]
        body = step.body
        if step.metadata_from is not None:
            await self.first_done[step.metadata_from].wait()
            body = with_metadata(body, self.inbound_metadata.get(step.metadata_from))
        return self.bodies.setdefault(step.key, body)

    @staticmethod
    def _routing_metadata(step: Step, outcome: Outcome, answer: Any) -> dict[str, Any] | None:
        """The answer's metadata (for the call's later events); flags a wrong routing."""
        if not outcome.accepted:
            return None
        inbound = answer.get("call_inbound") if isinstance(answer, dict) else None
        if not isinstance(inbound, dict):
            outcome.mismatch = "answer has no call_inbound object"
            return None
        metadata = inbound.get("metadata")
        if step.routing is None:
            if inbound.get("override_agent_id") or metadata:
                outcome.mismatch = "an unknown number was routed"
            return None
        company_id, branch_id = step.routing
        got = (metadata or {}).get("company_id"), (metadata or {}).get("branch_id")
        if (str(got[0]), str(got[1])) != (str(company_id), str(branch_id)):
            outcome.mismatch = (
                f"routed to company/branch {got[0]}/{got[1]}, expected {company_id}/{branch_id}"
            )
        agent = orjson.loads(step.body)["call_inbound"]["agent_id"]  # the branch's agent
        if inbound.get("override_agent_id") not in (None, agent):
            outcome.mismatch = (
                f"override_agent_id {inbound.get('override_agent_id')}, expected {agent}"
            )
        return metadata if isinstance(metadata, dict) else None

    def _headers(self, step: Step, body: bytes) -> dict[str, str]:
        provider = providers.get(step.provider)
        secret = self.secrets[step.provider]
        now = self.clock_ms()
        if step.signing == "valid":
            return provider.sign(body, secret, now)
        if step.signing == "wrong_secret":
            return provider.sign(body, f"forged-{secret[::-1]}", now)
        if step.signing == "stale":
            return provider.sign(body, secret, now - 400_000)  # outside Retell's ±5 min
        headers = provider.sign(body, secret, now)
        if step.signing == "missing":
            headers.pop(provider.SIGNATURE_HEADER)
        else:  # garbled: the shape third-party guides get wrong
            value = headers[provider.SIGNATURE_HEADER]
            headers[provider.SIGNATURE_HEADER] = (
                "sha256=" + value if step.provider == "calcom" else value.split(",")[-1]
            )
        return headers

    async def _send(
        self, session: aiohttp.ClientSession, step: Step, body: bytes, outcome: Outcome
    ) -> Any:
        """POST until a final answer or the deadline; returns the answer's JSON (or None)."""
        url = f"{self.config.url.rstrip('/')}/webhooks/{step.provider}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.deadline_s
        backoff = 0.25
        while True:
            outcome.requests += 1
            began = loop.time()
            retry_after: str | None = None
            try:
                async with session.post(url, data=body, headers=self._headers(step, body)) as resp:
                    payload = await resp.read()
                    outcome.status, outcome.error = resp.status, None
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcome.status, outcome.error, payload = None, type(exc).__name__, b""
            outcome.latency_ms = (loop.time() - began) * 1000
            status = outcome.status
            if status is not None and status not in RETRYABLE:
                answer = _json(payload)
                if not 200 <= status < 300 and isinstance(answer, dict) and answer.get("error"):
                    outcome.error = str(answer["error"])
                return answer
            if status == 503:
                outcome.answers_503 += 1
            else:
                outcome.answers_other_retryable += 1
            if status is not None:
                outcome.error = f"http_{status}"
            self.progress.retries += 1
            wait = _retry_after(retry_after) or backoff * (0.5 + random.random())
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            if loop.time() + wait > deadline:
                outcome.error = f"undelivered ({outcome.error})"
                outcome.status = None
                return None
            await asyncio.sleep(wait)


def _json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), 60.0)
