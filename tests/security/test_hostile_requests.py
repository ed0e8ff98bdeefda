"""Issue 13, "Proof": generated hostile requests against the real ingress and the real
analyst API (one ``switchboard ingress`` and one ``switchboard worker`` for all of them).

Wrong, missing, duplicated and non-ASCII headers; stale and future timestamps; truncated,
huge, compressed and deeply nested bodies; invalid UTF-8, NaN, duplicate keys; numbers and
strings beyond column sizes; unknown events and enum values; malformed HTTP. Every answer is
a 4xx with the JSON error body (``{"error", "detail"}``) unless the request carried our valid,
fresh signature over exactly its body; nothing is a 5xx; neither process dies; and every
record that reached the webhook topics meanwhile is one of the validly signed bodies the
ingress accepted. A scoped analyst token never reads another company.

Figures (requests, answers by status) go to ``var/security/`` and docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.security import kafka_check
from tests.security.hostile import Case, analyst_batches, ingress_batches
from tests.security.world import World, exchange

pytestmark = pytest.mark.integration

PER_EXAMPLE = 50  # requests sent concurrently per Hypothesis example
INGRESS_EXAMPLES = 160  # 8,000 requests
API_EXAMPLES = 40  # 2,000 requests
CONCURRENCY = 25
FIGURES = Path(__file__).resolve().parents[2] / "var" / "security"


async def send_all(addr: tuple[str, int], cases: list[Case]) -> list:  # type: ignore[type-arg]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(case: Case):  # type: ignore[no-untyped-def]
        async with gate:
            try:
                return await exchange(addr, case.raw)
            except TimeoutError:
                raise AssertionError(
                    f"no answer within the client's timeout: {case.what}"
                ) from None

    return await asyncio.gather(*(one(c) for c in cases))


def check_error_body(case: Case, reply) -> None:  # type: ignore[no-untyped-def]
    kind = reply.headers.get("content-type", "")
    assert kind.startswith("application/json"), (case.what, reply.status, kind, reply.body[:200])
    body = orjson.loads(reply.body)
    assert isinstance(body, dict), (case.what, reply.body[:200])
    assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), (
        case.what,
        body,
    )


def write_figures(name: str, figures: dict) -> None:  # type: ignore[type-arg]
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


@pytest.mark.timeout(900)
def test_hostile_requests_to_the_ingress(world: World) -> None:
    statuses: Counter[int] = Counter()
    accepted: Counter[str] = Counter()
    start = kafka_check.run(kafka_check.end_offsets(world.settings))
    started = time.monotonic()

    @settings(
        max_examples=INGRESS_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(ingress_batches(world, PER_EXAMPLE))
    def requests(cases: list[Case]) -> None:
        replies = asyncio.run(send_all(world.ingress_addr, cases))
        for case, reply in zip(cases, replies, strict=True):
            assert reply is not None, f"no answer to {case.what}"
            statuses[reply.status] += 1
            assert reply.status < 500, (case.what, reply.status, reply.body[:300])
            if 200 <= reply.status < 300:
                assert case.may_accept, f"accepted without our valid signature: {case.what}"
                accepted[kafka_check.digest(case.body)] += 1
            else:
                assert 400 <= reply.status < 500, (case.what, reply.status)
                check_error_body(case, reply)
        world.assert_alive()

    requests()
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    assert total >= INGRESS_EXAMPLES * PER_EXAMPLE
    # Kafka: exactly the accepted bodies, nothing else (no unsigned record).
    on_topics = kafka_check.run(
        kafka_check.records_since(world.settings, start, sum(accepted.values()), 60.0)
    )
    assert set(on_topics) <= set(accepted), "a record on the webhook topics was never accepted"
    assert on_topics == accepted
    write_figures(
        "ingress-hostile",
        {
            "requests": total,
            "seconds": round(elapsed, 1),
            "by_status": {str(k): v for k, v in sorted(statuses.items())},
            "accepted_signed": sum(accepted.values()),
            "records_on_topics": sum(on_topics.values()),
        },
    )


@pytest.mark.timeout(900)
def test_hostile_requests_to_the_analyst_api(world: World) -> None:
    statuses: Counter[int] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=API_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(analyst_batches(world, PER_EXAMPLE))
    def requests(cases: list[Case]) -> None:
        replies = asyncio.run(send_all(world.worker_addr, cases))
        for case, reply in zip(cases, replies, strict=True):
            assert reply is not None, f"no answer to {case.what}"
            statuses[reply.status] += 1
            assert reply.status < 500, (case.what, reply.status, reply.body[:300])
            if reply.status >= 400:
                check_error_body(case, reply)
            elif "scoped" in case.notes and reply.status == 200:
                check_scope(case, reply)
        world.assert_alive()

    requests()
    total = sum(statuses.values())
    assert total >= API_EXAMPLES * PER_EXAMPLE
    write_figures(
        "analyst-hostile",
        {
            "requests": total,
            "seconds": round(time.monotonic() - started, 1),
            "by_status": {str(k): v for k, v in sorted(statuses.items())},
        },
    )


def check_scope(case: Case, reply) -> None:  # type: ignore[no-untyped-def]
    """A token scoped to company 1 reads company 1 and nothing else."""
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return  # CSV of company 1's own series
    body = orjson.loads(reply.body)
    if "companies" in body:
        assert [str(c["id"]) for c in body["companies"]] in ([], ["1"]), (case.what, body)
    elif "company_id" in body:
        assert str(body["company_id"]) == "1", (case.what, body)
