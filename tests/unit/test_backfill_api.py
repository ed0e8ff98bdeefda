"""The backfill's API clients against the fake provider APIs (testbed/fake_providers.py):
paging, filters, 429 with Retry-After, a slow page, refused keys, the request budget; and
the fake Retell API against Retell's own SDK, so the fake keeps to the real shapes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, get_args, get_type_hints

import pytest

from pipeline.backfill.calcom_api import CREATED, MEETINGS, UPDATED, CalcomApi
from pipeline.backfill.retell_api import RetellApi, list_body
from pipeline.backfill.run import Options, transport_for
from pipeline.backfill.transport import ProviderApiError, RequestBudget, retry_after_s
from pipeline.backfill.when import from_ms, iso_ms, to_ms
from pipeline.settings import Secret, Settings
from testbed import fake_providers as fakes

RETELL_KEY, CALCOM_KEY = "fake-retell-key-3c1d", "cal_live_fake-9e2a"
T0 = 1_790_000_000_000  # ms


class Sleeps:
    """Records every wait the client asks for; waits for real only briefly."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


def a_call(n: int, *, end: int | None = None, status: str = "ended") -> dict[str, Any]:
    return {
        "call_id": f"call_{n:03d}",
        "agent_id": "agent_1",
        "call_type": "phone_call",
        "call_status": status,
        "start_timestamp": T0 + n * 60_000,
        "end_timestamp": end if end is not None else T0 + n * 60_000 + 30_000,
        "transcript": f"Agent: hello {n}",
        "call_analysis": {"call_successful": True},
    }


def a_booking(n: int, *, created: datetime, updated: datetime, start: datetime) -> dict[str, Any]:
    return {
        "id": n,
        "uid": f"bk{n:03d}",
        "status": "accepted",
        "createdAt": iso_ms(created),
        "updatedAt": iso_ms(updated),
        "start": iso_ms(start),
        "end": iso_ms(start + timedelta(minutes=30)),
        "eventType": {"id": 901, "slug": "s"},
        "attendees": [],
    }


@pytest.fixture
async def served() -> AsyncIterator[tuple[fakes.State, dict[str, Any]]]:
    state = fakes.State()
    holder: dict[str, Any] = {"state": state}
    yield state, holder
    for runner in holder.get("runners", []):
        await runner.cleanup()


async def start(holder: dict[str, Any], **options: Any) -> fakes.Running:
    running, runners = await fakes.start(
        holder["state"], retell_key=RETELL_KEY, calcom_key=CALCOM_KEY, **options
    )
    holder["runners"] = runners
    return running


def settings_for(running: fakes.Running, **overrides: Any) -> Settings:
    return Settings(
        retell_api_keys=(Secret(RETELL_KEY),),
        calcom_api_key=Secret(CALCOM_KEY),
        retell_api_url=running.retell_url,
        calcom_api_url=running.calcom_url,
    ).with_(**overrides)


# --- Retell --------------------------------------------------------------------------------


async def test_retell_pages_through_the_window_through_a_429_and_a_slow_page(served) -> None:
    state, holder = served
    for n in range(10):
        state.calls[f"call_{n:03d}"] = a_call(n)
    state.calls["call_ongoing"] = a_call(99, status="ongoing")
    state.calls["call_late"] = a_call(98, end=T0 + 10 * 3_600_000)
    faults = fakes.Faults(throttle_on=frozenset({2}), retry_after_s=3, slow_on={3: 0.3})
    running = await start(holder, retell_faults=faults)
    sleeps = Sleeps()
    async with transport_for(settings_for(running), "retell", Options(), sleep=sleeps) as t:
        api = RetellApi(t, page_size=3)
        pages = [page async for page in api.ended_calls(T0, T0 + 3_600_000)]
        assert t.throttled == 1
    assert 3 in sleeps.asked  # Retry-After honoured
    ids = [c["call_id"] for page in pages for c in page]
    assert ids == [f"call_{n:03d}" for n in range(10)]  # ascending, once each, nothing else
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert all("transcript" not in c for page in pages for c in page)  # list items omit it
    bodies = [r.body for r in running.retell.requests if r.path == "/v3/list-calls"]
    assert "pagination_key" not in bodies[0] and all("pagination_key" in b for b in bodies[2:])


async def test_retell_get_call_has_the_transcript_and_a_missing_call_is_none(served) -> None:
    state, holder = served
    state.calls["call_001"] = a_call(1)
    running = await start(holder)
    async with transport_for(settings_for(running), "retell", Options()) as t:
        api = RetellApi(t)
        assert (await api.get_call("call_001"))["transcript"] == "Agent: hello 1"  # type: ignore[index]
        assert await api.get_call("call_nope") is None


async def test_a_refused_key_is_one_line_without_the_key(served) -> None:
    _, holder = served
    running = await start(holder)
    settings = settings_for(running, retell_api_keys=(Secret("wrong-key-77aa"),))
    async with transport_for(settings, "retell", Options()) as t:
        with pytest.raises(ProviderApiError) as caught:
            await RetellApi(t).get_call("call_001")
    assert "401" in caught.value.detail and "refused" in caught.value.detail
    assert "wrong-key-77aa" not in str(caught.value) and RETELL_KEY not in str(caught.value)


async def test_server_errors_are_retried_a_bounded_number_of_times(served) -> None:
    state, holder = served
    state.calls["call_001"] = a_call(1)
    running = await start(
        holder, retell_faults=fakes.Faults(fail_on=frozenset({1, 2, 4, 5, 6, 7, 8}))
    )
    sleeps = Sleeps()
    async with transport_for(settings_for(running), "retell", Options(), sleep=sleeps) as t:
        api = RetellApi(t)
        assert await api.get_call("call_001") is not None  # 503, 503, then 200
        assert len(sleeps.asked) == 2 and sleeps.asked[1] > sleeps.asked[0] / 3  # backing off
        with pytest.raises(ProviderApiError, match="failed 5 times, last with status 503"):
            await api.get_call("call_001")
    assert [r.status for r in running.retell.requests] == [503, 503, 200, 503, 503, 503, 503, 503]


def test_our_list_request_is_what_retells_sdk_accepts() -> None:
    from retell.types import call_list_params as sdk

    body = list_body(T0, T0 + 1, 1000)
    assert set(body) <= set(sdk.CallListParams.__annotations__)  # no key the SDK lacks
    criteria = body["filter_criteria"]
    assert set(criteria) <= set(sdk.FilterCriteria.__annotations__)
    hints = get_type_hints(sdk.FilterCriteriaCallStatus)
    assert set(criteria["call_status"]["value"]) <= set(get_args(get_args(hints["value"])[0]))
    ranged = get_type_hints(sdk.FilterCriteriaEndTimestampRangeFilter)
    assert criteria["end_timestamp"]["op"] in get_args(ranged["op"])
    assert criteria["end_timestamp"]["type"] in get_args(ranged["type"])
    assert body["sort_order"] in get_args(get_type_hints(sdk.CallListParams)["sort_order"])


def test_the_fake_retell_api_answers_retells_own_sdk() -> None:
    """The official client (retell-sdk) lists and retrieves through the fake: its paths,
    body and response models agree with the fake's."""
    from retell import Retell

    state = fakes.State(calls={f"call_{n:03d}": a_call(n) for n in range(5)})
    with fakes.running(state, retell_key=RETELL_KEY, calcom_key=CALCOM_KEY) as running:
        client = Retell(api_key=RETELL_KEY, base_url=running.retell_url, max_retries=0)
        body = list_body(T0, T0 + 3 * 60_000 + 30_000, 2)
        page = client.call.list(
            filter_criteria=body["filter_criteria"], sort_order="ascending", limit=2
        )
        assert [i.call_id for i in page.items] == ["call_000", "call_001"]
        assert page.has_more is True and page.pagination_key
        rest = client.call.list(
            filter_criteria=body["filter_criteria"],
            sort_order="ascending",
            limit=2,
            pagination_key=page.pagination_key,
        )
        assert [i.call_id for i in rest.items] == ["call_002", "call_003"]
        assert rest.has_more is False
        assert client.call.retrieve("call_004").transcript == "Agent: hello 4"


# --- Cal.com -------------------------------------------------------------------------------


async def test_calcom_sweeps_find_every_booking_once_even_through_ties(served) -> None:
    """Page size 2 and five bookings updated at one instant: keyset paging re-reads ties."""
    state, holder = served
    base = from_ms(T0)
    same = base + timedelta(minutes=5)
    for n in range(12):
        updated = same if n < 5 else base + timedelta(minutes=10 + n)
        b = a_booking(
            n, created=base - timedelta(days=1), updated=updated, start=base + timedelta(days=2)
        )
        state.bookings[b["uid"]] = b
    outside = a_booking(
        50, created=base - timedelta(days=3), updated=base - timedelta(days=2), start=base
    )
    state.bookings[outside["uid"]] = outside
    running = await start(holder)
    async with transport_for(settings_for(running), "calcom", Options()) as t:
        api = CalcomApi(t, version="2024-08-13", page_size=2)
        found = [
            b["uid"]
            async for page in api.sweep(UPDATED, base, base + timedelta(hours=1))
            for b in page
        ]
        created = [
            b["uid"]
            async for page in api.sweep(CREATED, base, base + timedelta(hours=1))
            for b in page
        ]
        meetings = [b["uid"] async for page in api.sweep(MEETINGS, base - timedelta(hours=1), base + timedelta(hours=1)) for b in page]  # fmt: skip
    assert sorted(set(found)) == [f"bk{n:03d}" for n in range(12)]
    assert created == [] and meetings == ["bk050"]
    queries = [r.query for r in running.calcom.requests]
    assert all(
        q.get("sortUpdatedAt") == "asc" or q.get("sortCreated") or q.get("sortStart")
        for q in queries
    )
    assert all("status" not in q for q in queries)  # every status, cancelled included


async def test_calcom_rate_limit_answers_are_waited_out(served) -> None:
    state, holder = served
    b = a_booking(1, created=from_ms(T0), updated=from_ms(T0), start=from_ms(T0))
    state.bookings[b["uid"]] = b
    running = await start(
        holder, calcom_faults=fakes.Faults(throttle_on=frozenset({1, 2}), retry_after_s=7)
    )
    sleeps = Sleeps()
    async with transport_for(settings_for(running), "calcom", Options(), sleep=sleeps) as t:
        assert (await CalcomApi(t, version="2024-08-13").booking("bk001"))["uid"] == "bk001"  # type: ignore[index]
    assert sleeps.asked == [7, 7]
    assert [r.status for r in running.calcom.requests] == [429, 429, 200]
    assert all(r.query == {} for r in running.calcom.requests)


async def test_calcom_without_the_pinned_version_shape_fails_in_one_line(served) -> None:
    _, holder = served
    running = await start(holder)
    settings = settings_for(running, calcom_api_version="2026-05-01")
    async with transport_for(settings, "calcom", Options()) as t:
        with pytest.raises(ProviderApiError, match="cal-api-version"):
            await CalcomApi(t, version="2026-05-01").booking("bk001")


# --- the request budget ----------------------------------------------------------------------


async def test_the_budget_never_allows_more_than_120_requests_in_any_minute() -> None:
    clock = [0.0]

    async def advance(seconds: float) -> None:
        clock[0] += seconds

    budget = RequestBudget(110, burst=10, clock=lambda: clock[0], sleep=advance)
    stamps = []
    for _ in range(400):
        await budget.take()
        stamps.append(clock[0])
    worst = max(sum(1 for s in stamps if start <= s < start + 60.0) for start in stamps)
    assert worst <= 120
    assert worst >= 110  # and it does not waste the budget either
    assert stamps[9] == 0.0  # the burst starts at once


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0).astimezone()
    assert retry_after_s("12") == 12.0
    assert (
        retry_after_s(
            "Thu, 01 Jan 2026 12:00:30 GMT", now=datetime.fromisoformat("2026-01-01T12:00:00+00:00")
        )
        == 30.0
    )
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    assert now is not None


def test_times_are_exact_milliseconds() -> None:
    assert to_ms(from_ms(T0 + 7)) == T0 + 7
    assert iso_ms(from_ms(1767632531482)) == "2026-01-05T17:02:11.482Z"


def test_the_fakes_can_run_in_a_thread_for_synchronous_tests() -> None:
    with fakes.running(fakes.State(), retell_key=RETELL_KEY, calcom_key=CALCOM_KEY) as running:
        assert running.retell_url.startswith("http://127.0.0.1:")
        assert threading.active_count() >= 2
