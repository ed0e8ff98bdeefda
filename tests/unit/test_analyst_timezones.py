"""The analyst API's timezone cache: the read path must not query MySQL per request, must
not keep reading a company created a minute ago in UTC, and survives MySQL outages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.api import directory as api
from pipeline.errors import DatabaseUnavailable


class FakeEngine:
    def __init__(self, answers: dict[int, str | None]) -> None:
        self.answers = answers
        self.queries = 0
        self.down = False
        self.company = 0

    def connect(self) -> FakeEngine:
        if self.down:
            raise OSError("MySQL is down")
        return self

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def execute(self, query: Any) -> FakeEngine:
        self.queries += 1
        self.company = int(query.compile().params["id_1"])
        return self

    def scalar(self) -> str | None:
        return self.answers.get(self.company)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(api.time, "monotonic", lambda: now[0])
    return now


def test_known_timezones_are_cached_for_minutes(clock: list[float]) -> None:
    engine = FakeEngine({1: "America/Los_Angeles"})
    tzs = api.Timezones(engine)  # type: ignore[arg-type]
    assert asyncio.run(tzs.get(1)) == "America/Los_Angeles"
    clock[0] += api.TZ_TTL_S - 1
    assert asyncio.run(tzs.get(1)) == "America/Los_Angeles"
    assert engine.queries == 1
    clock[0] += 2
    asyncio.run(tzs.get(1))
    assert engine.queries == 2


def test_an_unknown_company_is_looked_up_again_soon(clock: list[float]) -> None:
    engine = FakeEngine({})
    tzs = api.Timezones(engine)  # type: ignore[arg-type]
    assert asyncio.run(tzs.get(5)) is None
    assert asyncio.run(tzs.get(5)) is None
    assert engine.queries == 1  # a burst of requests costs one query
    engine.answers[5] = "Asia/Kathmandu"  # the company is created
    clock[0] += api.UNKNOWN_TTL_S + 1
    assert asyncio.run(tzs.get(5)) == "Asia/Kathmandu"


def test_mysql_down_keeps_known_timezones_and_refuses_the_rest(clock: list[float]) -> None:
    engine = FakeEngine({1: "Europe/Berlin"})
    tzs = api.Timezones(engine)  # type: ignore[arg-type]
    asyncio.run(tzs.get(1))
    engine.down = True
    clock[0] += api.TZ_TTL_S + 1
    assert asyncio.run(tzs.get(1)) == "Europe/Berlin"
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(tzs.get(2))


def test_the_cache_is_bounded_least_recently_used_first(clock: list[float]) -> None:
    engine = FakeEngine({n: "UTC" for n in range(1, 6)})
    tzs = api.Timezones(engine, size=3)  # type: ignore[arg-type]
    for company in (1, 2, 3):
        asyncio.run(tzs.get(company))
    asyncio.run(tzs.get(1))  # 1 is used again: 2 is now the oldest
    asyncio.run(tzs.get(4))
    assert list(tzs.cache) == [3, 1, 4]
    for company in range(5, 5000):
        engine.answers[company] = None
        asyncio.run(tzs.get(company))  # unknown ids (a scan of ids) cannot grow it either
    assert len(tzs.cache) == 3
