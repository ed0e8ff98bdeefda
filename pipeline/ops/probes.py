"""What the workers and the ingress say about themselves over HTTP, for ``status``.

A worker is asked ``/readyz`` (``ready`` once its tables are recovered; 503 with its state
before) and ``/metrics`` (``switchboard_worker_tables_recovered``); an ingress ``/readyz``
(its spool in the body) and, when that has none, its ``switchboard_ingress_spool_*``
metrics. Anything that does not answer within a few seconds is ``down``: a status screen
must not hang on the part that is broken.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

HTTP_TIMEOUT_S = 3.0


@dataclass
class Worker:
    url: str
    member: str | None = None  # client id @ host, when the worker is in the group
    partitions: int | None = None  # assigned (active and standby), when in the group
    ready: str = "unknown"  # /readyz: ready | recovering... ; "down" when it does not answer
    recovered: bool | None = None  # switchboard_worker_tables_recovered
    detail: str = ""


@dataclass
class Ingress:
    url: str
    state: str = "unknown"  # ready | not_ready | down | unknown
    spool: dict[str, Any] | None = None
    detail: str = ""


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as response:
        return response.status, await response.read()


def _samples(text: str, prefix: str) -> dict[str, float]:
    """``name{labels}`` → value of the metrics starting with ``prefix`` (labels summed)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix):
                found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    return found


async def workers_state(
    http: aiohttp.ClientSession, members: list[Worker], extra_urls: list[str]
) -> list[Worker]:
    by_url: dict[str, Worker] = {}
    anonymous = []
    for member in members:
        if member.url:
            by_url[member.url] = member
        else:
            anonymous.append(member)
    for url in extra_urls:
        by_url.setdefault(url.rstrip("/"), Worker(url=url.rstrip("/")))
    workers = sorted(by_url.values(), key=lambda w: w.url)
    await asyncio.gather(*[_probe_worker(http, w) for w in workers])
    return workers + anonymous


async def _probe_worker(http: aiohttp.ClientSession, worker: Worker) -> None:
    try:
        code, body = await _get(http, f"{worker.url}/readyz")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        worker.ready, worker.detail = "down", exc.__class__.__name__
        return
    if code in (200, 503):
        try:
            worker.ready = str(orjson.loads(body).get("status", "unknown"))
        except (orjson.JSONDecodeError, AttributeError):
            worker.ready = "ready" if code == 200 else "not_ready"
    try:
        code, body = await _get(http, f"{worker.url}/metrics")
        if code == 200:
            value = _samples(body.decode(), "switchboard_worker_tables_recovered").get(
                "switchboard_worker_tables_recovered"
            )
            worker.recovered = None if value is None else value >= 1
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        pass


async def ingress_state(http: aiohttp.ClientSession, url: str) -> Ingress:
    found = Ingress(url=url.rstrip("/"))
    try:
        code, body = await _get(http, f"{found.url}/readyz")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        found.state, found.detail = "down", exc.__class__.__name__
        return found
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = {}
    found.state = "ready" if code == 200 else "not_ready"
    if isinstance(payload, dict):
        if isinstance(payload.get("spool"), dict):
            found.spool = payload["spool"]
        if code != 200:
            found.detail = str(payload.get("detail", ""))
    if found.spool is None:
        try:
            code, body = await _get(http, f"{found.url}/metrics")
            spool = _samples(body.decode(), "switchboard_ingress_spool_") if code == 200 else {}
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            spool = {}
        if spool:
            found.spool = {
                "records": spool.get("switchboard_ingress_spool_records"),
                "bytes": spool.get("switchboard_ingress_spool_bytes"),
                "limit_bytes": spool.get("switchboard_ingress_spool_limit_bytes"),
                "oldest_age_s": spool.get("switchboard_ingress_spool_oldest_record_age_seconds"),
            }
    return found
