"""The dashboard end to end, with real ``switchboard worker`` processes, the real broker and
MariaDB: the analyst API against the rows, routing between two workers, a worker killed
with SIGKILL, replays, local days across midnight and DST, API errors, the ``dashboard``
command, and ``reconcile --fix`` after corruption and after the table's state is lost.

One story (tests/support/dashboard_story.py) is applied once for the module through
``pipeline.apply.batch.apply_batch`` and its snapshots published to the module's snapshot
topic, exactly as a worker would after each commit; the workers are shared across tests
because each start costs seconds. Tests run in file order: the last one stops the pair.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from sqlalchemy import Engine, select, text, update

from pipeline import database, topics
from pipeline.apply.batch import apply_batch
from pipeline.dashboard import drift, reconcile
from pipeline.dashboard.aggregates import BucketKey
from pipeline.dashboard.analyst_api import AnalystClient
from pipeline.models import COUNTERS, dashboard_buckets
from pipeline.settings import Secret, Settings
from testbed.processes import (
    SWITCHBOARD,
    WorkerProcess,
    eventually,
    free_port,
    http_get,
    running_worker,
)
from tests.integration.conftest import (
    TEST_PARTITIONS,
    base_settings,
    create_test_database,
    delete_topics,
    drop_test_database,
)
from tests.support.dashboard_story import (
    LA,
    TENANTS,
    Story,
    build_story,
    last_dst_change_day,
    local_midnight,
    publish_snapshots,
    seed_tenants,
)

pytestmark = pytest.mark.integration
TOKEN = "test-analyst-token"
SCOPED = "scoped-token-for-companies-1-and-3"
SCOPED_ENTRY = f"scoped=sha256:{hashlib.sha256(SCOPED.encode()).hexdigest()}@1+3"


@dataclass
class World:
    settings: Settings
    engine: Engine
    story: Story
    tmp: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    suffix = uuid.uuid4().hex[:8]
    settings = create_test_database(base_settings()).with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
        analyst_tokens=(Secret(TOKEN), Secret(SCOPED_ENTRY)),
        retell_api_keys=(Secret("test-retell-key"),),
        calcom_webhook_secrets=(Secret("test-calcom-secret"),),
    )
    engine = database.create_db_engine(settings, pool_size=2)
    try:
        asyncio.run(topics.ensure_topics(settings))
        seed_tenants(engine)
        story = build_story(datetime.now(UTC).replace(tzinfo=None))
        snapshots = []
        for batch in story.batches():
            result = apply_batch(engine, batch)
            assert {o.status for o in result.outcomes} == {"applied"}
            snapshots += result.snapshots
        asyncio.run(
            publish_snapshots(settings.kafka_bootstrap, settings.topic(topics.SNAPSHOTS), snapshots)
        )
        yield World(settings, engine, story, tmp_path_factory.mktemp("dashboard"))
    finally:
        engine.dispose()
        asyncio.run(delete_topics(settings))
        drop_test_database(settings)


@dataclass
class Pair:
    first: WorkerProcess
    second: WorkerProcess


@pytest.fixture(scope="module")
def pair(world: World) -> Iterator[Pair]:
    """Two workers of one consumer group, on their own ports and data dirs."""
    with (
        running_worker(world.settings, world.tmp, name="w1") as first,
        running_worker(world.settings, world.tmp, name="w2") as second,
    ):
        # Both are up; wait until the group has settled and both answer for everyone.
        for worker in (first, second):
            worker.wait_ready()
            eventually(
                lambda worker=worker: _assert_all_answer(worker),
                timeout=60,
                what=f"worker {worker.port} answering for every company",
            )
        yield Pair(first, second)


def _assert_all_answer(worker: WorkerProcess) -> None:
    for tenant in TENANTS:
        answer = worker.summary(tenant.company_id)
        assert answer.status == 200, (tenant.company_id, answer)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scope(now: datetime | None = None) -> drift.Scope:
    now = now or _now()
    return drift.Scope(("hour", "day"), None, now + timedelta(days=1), now)


def _expected(story: Story, company_id: int, timezone: str, scope: drift.Scope) -> dict:
    mine = {BucketKey(*k): v for k, v in story.expected().items() if k[0] == company_id}
    return drift.in_scope(mine, scope, timezone)


def _api(worker: WorkerProcess, company_id: int, timezone: str, scope: drift.Scope) -> dict:
    """The company's buckets in the table (the story knows no breakdowns)."""
    found = reconcile.read_api(AnalystClient(worker.url, TOKEN), company_id, timezone, scope)
    return {k: v for k, v in found.items() if not k.grouped}


def _assert_api_matches_story(worker: WorkerProcess, story: Story) -> None:
    scope = _scope()
    for tenant in TENANTS:
        expected = _expected(story, tenant.company_id, tenant.timezone, scope)
        found = _api(worker, tenant.company_id, tenant.timezone, scope)
        drifts = drift.diff("api", expected, found)
        assert not drifts, "\n".join(drift.drift_lines(drifts))


def _assert_summary_matches_story(worker: WorkerProcess, story: Story, company_id: int) -> None:
    answer = worker.summary(company_id)
    assert answer.status == 200, answer
    as_of = datetime.fromisoformat(answer.body["as_of"].replace("Z", ""))
    expected = story.expected_summary(company_id, as_of)
    for window, counters in expected.items():
        got = answer.body["windows"][window]
        for name in COUNTERS:
            assert drift.normalize(name, _plain(got[name])) == drift.normalize(
                name, counters[name]
            ), (company_id, window, name)
        connected = counters["calls_connected"]
        if connected:
            assert got["avg_duration_s"] == pytest.approx(
                counters["duration_ms_total"] / connected / 1000, abs=0.001
            )
        else:
            assert got["avg_duration_s"] is None
        inbound = counters["calls_inbound_connected"]
        if inbound:
            assert got["booking_conversion"] == pytest.approx(
                counters["calls_booked"] / inbound, abs=0.0001
            )
            assert 0 <= got["booking_conversion"] <= 1
        else:
            assert got["booking_conversion"] is None


def _plain(value: object) -> object:
    return Decimal(repr(value)) if isinstance(value, float) else value


def _cli(world: World, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_DATABASE_URL=world.settings.database_url.reveal(),
        SWITCHBOARD_KAFKA_BOOTSTRAP=world.settings.kafka_bootstrap,
        SWITCHBOARD_TOPIC_PREFIX=world.settings.topic_prefix,
        SWITCHBOARD_TOPIC_PARTITIONS=str(world.settings.topic_partitions),
        SWITCHBOARD_ANALYST_TOKENS=TOKEN,
    )
    return subprocess.run(
        [SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _rows(engine: Engine) -> dict[tuple, dict]:
    with engine.connect() as conn:
        return {
            (r["company_id"], r["granularity"], r["bucket_start"]): dict(r)
            for r in conn.execute(select(dashboard_buckets)).mappings()
        }


# --- the numbers ---------------------------------------------------------------------------


def test_api_equals_the_rows_and_reconcile_finds_no_drift(world: World, pair: Pair) -> None:
    eventually(
        lambda: _assert_api_matches_story(pair.first, world.story),
        timeout=30,
        what="API series equal to the story",
    )
    for tenant in TENANTS:
        _assert_summary_matches_story(pair.first, world.story, tenant.company_id)
    # Some numbers at all: the windows are not trivially zero.
    body = pair.first.summary(LA.company_id).body
    assert body["windows"]["last_hour"]["calls_total"] >= 2
    assert body["windows"]["last_30_days"]["appointments_booked"] >= 1

    done = _cli(world, "reconcile", "--all", "--worker-url", pair.first.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drifting buckets: dashboard_buckets 0, analyst API 0" in done.stdout
    assert done.stdout.count("  ok") == len(TENANTS)


def test_both_workers_answer_for_every_company(world: World, pair: Pair) -> None:
    for tenant in TENANTS:
        one, two = pair.first.summary(tenant.company_id), pair.second.summary(tenant.company_id)
        assert one.status == two.status == 200
        assert one.body["windows"] == two.body["windows"]
    _assert_api_matches_story(pair.second, world.story)


def test_replaying_applied_batches_changes_nothing(world: World, pair: Pair) -> None:
    before = _rows(world.engine)
    republished = []
    for batch in world.story.batches():
        result = apply_batch(world.engine, batch)
        assert {o.status for o in result.outcomes} == {"already_applied"}
        republished += result.snapshots
    assert _rows(world.engine) == before  # counters and versions
    # A replay republishes its buckets as they stand (what heals a lost publish): same
    # versions, so the table keeps what it has.
    assert any(s.key.grouped for s in republished)  # the breakdown buckets too
    for snapshot in republished:
        if snapshot.key.grouped:
            continue
        row = before[snapshot.key.as_tuple()]
        assert snapshot.version == row["version"]
        assert snapshot.counters["calls_total"] == row["calls_total"]
    asyncio.run(
        publish_snapshots(
            world.settings.kafka_bootstrap, world.settings.topic(topics.SNAPSHOTS), republished
        )
    )
    _assert_api_matches_story(pair.first, world.story)


def test_worker_killed_with_sigkill_comes_back_with_the_same_numbers(
    world: World, pair: Pair
) -> None:
    pair.first.kill()  # SIGKILL: no commit, no goodbye to the group
    # Until the group notices (session timeout), the survivor still routes some companies
    # to the dead worker: it answers those from MySQL, saying so, never with a 503 or 500.
    # The story's companies cover all three partitions, and each worker owns at least one.
    sources = []
    for tenant in TENANTS:
        answer = pair.second.summary(tenant.company_id)
        assert answer.status == 200, (tenant.company_id, answer)
        sources.append(answer.body["source"])
        _assert_summary_matches_story(pair.second, world.story, tenant.company_id)
    assert "mysql" in sources
    # reconcile's view of the table itself (source=table) still gets the 503 to retry.
    strict = [
        pair.second.get(f"/api/v1/companies/{t.company_id}/series?source=table") for t in TENANTS
    ]
    assert all(a.status in (200, 503) for a in strict)
    assert any(
        a.status == 503 and a.body["error"] in ("owner_unavailable", "recovering") for a in strict
    )
    pair.first.start()
    pair.first.wait_ready()
    for worker in (pair.first, pair.second):
        eventually(lambda worker=worker: _assert_all_answer(worker), timeout=60)
        eventually(lambda worker=worker: _assert_api_matches_story(worker, world.story))
        for tenant in TENANTS:
            _assert_summary_matches_story(worker, world.story, tenant.company_id)


def test_day_buckets_follow_the_company_timezone(world: World, pair: Pair) -> None:
    midnight = local_midnight(world.story.now - timedelta(days=3), LA.timezone)
    before, after = midnight - timedelta(minutes=30), midnight + timedelta(minutes=30)
    assert before.date() == after.date()  # one UTC date (in winter 07:30Z and 08:30Z)
    previous_day = local_midnight(before, LA.timezone)
    assert previous_day < midnight
    scope = _scope()
    api = _api(pair.first, LA.company_id, LA.timezone, scope)
    expected = _expected(world.story, LA.company_id, LA.timezone, scope)
    for start in (previous_day, midnight):
        key = BucketKey(LA.company_id, "day", start)
        assert api[key]["calls_total"] >= 1
        assert api[key] == expected[key]
    # The day starts at the company's midnight, not at 00:00Z: no bucket keyed 00:00Z.
    assert not any(
        k.granularity == "day" and k.bucket_start.hour == 0 and not drift.is_zero(v)
        for k, v in api.items()
    )
    rows = _rows(world.engine)
    assert (LA.company_id, "day", previous_day) in rows and (LA.company_id, "day", midnight) in rows

    change = last_dst_change_day(world.story.now, LA.timezone)
    assert change is not None
    following = local_midnight(change + timedelta(hours=36), LA.timezone)
    assert following - change in (timedelta(hours=23), timedelta(hours=25))
    key = BucketKey(LA.company_id, "day", change)
    # 00:30 and 23:30 local of that day: one bucket, and nothing keyed in between.
    assert expected[key]["calls_total"] >= 2
    assert api[key] == expected[key]
    assert not any(k.granularity == "day" and change < k.bucket_start < following for k in api)


# --- the API's edges ------------------------------------------------------------------------


def test_api_errors(world: World, pair: Pair) -> None:
    worker = pair.first
    company = LA.company_id
    assert worker.get(f"/api/v1/companies/{company}/summary", token=None).status == 401
    assert worker.get(f"/api/v1/companies/{company}/summary", token="wrong").status == 401
    lower = http_get(
        f"{worker.url}/api/v1/companies/{company}/summary",
        None,
        headers={"Authorization": f"bearer {TOKEN}"},
    )
    assert lower.status == 200  # the scheme is case-insensitive
    basic = http_get(
        f"{worker.url}/api/v1/companies/{company}/summary",
        None,
        headers={"Authorization": f"Basic {TOKEN}"},
    )
    assert basic.status == 401
    assert worker.get(f"/api/v1/companies/{company}/series", token=None).status == 401
    unknown = worker.summary(999)
    assert unknown.status == 404 and unknown.body["error"] == "not_found"
    assert worker.get("/api/v1/companies/999/series?granularity=day").status == 404
    assert worker.get(f"/api/v1/companies/{company}/summary").status == 200
    series = f"/api/v1/companies/{company}/series"
    for query in (
        "?granularity=week",
        "?granularity=hour&from=yesterday",
        "?granularity=hour&from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
        "?granularity=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",  # > 336 h
        "?granularity=day&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",  # > 400 d
        "?granularity=day&from=0001-01-01T00:00:00Z&to=0001-01-05T00:00:00Z",
        "?granularity=day&from=9999-12-20T00:00:00Z&to=9999-12-31T23:59:59Z",
    ):
        answer = worker.get(series + query)
        assert answer.status == 400, (query, answer)
        assert answer.body["error"] == "bad_request"
    assert worker.get("/api/v1/companies/abc/summary").status in (400, 404)
    # An offset written with a raw "+", as curl users do, arrives as a space: still accepted.
    start = (world.story.now - timedelta(hours=5)).replace(microsecond=0).isoformat()
    answer = worker.get(f"{series}?granularity=hour&from={start}+00:00")
    assert answer.status == 200, answer
    assert len(answer.body["buckets"]) >= 5
    assert answer.body["buckets"][0]["start"].endswith("Z")


def test_dashboard_command(world: World, pair: Pair) -> None:
    done = _cli(world, "dashboard", str(LA.company_id), "--worker-url", pair.first.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "last_hour" in lines[2] and "last_30_days" in lines[2]
    total = next(line for line in lines if line.startswith("calls_total"))
    body = pair.first.summary(LA.company_id).body
    assert total.split()[1:] == [
        str(body["windows"][w]["calls_total"])
        for w in ("last_hour", "today", "last_7_days", "last_30_days")
    ]
    assert any(line.startswith("booking_conversion") for line in lines)
    scripted = _cli(
        world, "dashboard", str(LA.company_id), "--worker-url", pair.first.url, "--json"
    )
    assert scripted.returncode == 0, scripted.stderr
    assert json.loads(scripted.stdout)["windows"] == body["windows"]

    missing = _cli(world, "dashboard", "999", "--worker-url", pair.first.url)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "404" in missing.stderr
    refused = _cli(world, "dashboard", "1", "--worker-url", pair.first.url, "--token", "nope")
    assert refused.returncode == 1 and "401" in refused.stderr and "nope" not in refused.stderr
    down = _cli(world, "dashboard", "1", "--worker-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "unreachable" in down.stderr
    assert down.stderr.strip().count("\n") == 0


def _raw(worker: WorkerProcess, path: str, token: str | None = TOKEN, **headers: str):
    request = urllib.request.Request(worker.url + path, headers=headers)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_tokens_are_scoped_and_list_their_companies(world: World, pair: Pair) -> None:
    worker = pair.first
    admin = worker.get("/api/v1/companies")
    assert admin.status == 200
    assert [c["id"] for c in admin.body["companies"]] == [t.company_id for t in TENANTS]
    la = admin.body["companies"][0]
    assert la["name"] == LA.name and la["timezone"] == LA.timezone
    assert la["branches"][0]["id"] == LA.branch_id
    scoped = worker.get("/api/v1/companies", token=SCOPED)
    assert [c["id"] for c in scoped.body["companies"]] == [1, 3]
    assert worker.get("/api/v1/companies/3/summary", token=SCOPED).status == 200
    # Outside its scope: the same 404 as a company that does not exist, on every route.
    for path in ("/api/v1/companies/2/summary", "/api/v1/companies/2/series"):
        outside = worker.get(path, token=SCOPED)
        missing = worker.get(path.replace("/2/", "/999/"), token=TOKEN)
        assert outside.status == missing.status == 404
        assert outside.body == missing.body
    assert worker.get("/api/v1/companies", token="wrong").status == 401


def test_hostile_company_ids_and_headers_are_4xx(world: World, pair: Pair) -> None:
    worker = pair.first
    for raw in ("007", "%C2%B2", "1a", "0", "-1", "99999999999999999999", "%201"):
        answer = worker.get(f"/api/v1/companies/{raw}/summary")
        assert answer.status == 400, (raw, answer)
        assert answer.body["error"] == "bad_request"
    status, _, _ = _raw(worker, "/api/v1/companies/1/summary", token="tök-\u00e9")
    assert status == 401
    request = urllib.request.Request(worker.url + "/api/v1/companies/1/summary")
    request.add_header("Authorization", "Bearer ré".encode().decode("latin-1"))
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    metrics = http_text(worker.url + "/metrics")
    assert 'switchboard_analyst_requests_total{route="summary",status="400"}' in metrics
    assert 'switchboard_analyst_requests_total{route="summary",status="401"}' in metrics
    assert "switchboard_analyst_request_duration_seconds_bucket" in metrics
    assert "switchboard_worker_tables_recovered 1.0" in metrics
    ready = http_get(worker.url + "/readyz")
    assert ready.status == 200 and ready.body == {"status": "ready"}


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _sum(buckets: list[dict], name: str) -> float:
    return sum(b[name] for b in buckets)


def test_breakdowns_add_up_to_the_company_and_csv_equals_json(world: World, pair: Pair) -> None:
    worker = pair.first
    base = f"/api/v1/companies/{LA.company_id}"
    summary = worker.get(f"{base}/summary?group_by=branch")
    assert summary.status == 200
    groups = summary.body["groups"]
    assert groups[0]["id"] == str(LA.branch_id) and groups[0]["name"] == f"{LA.name} main"
    for window, total in summary.body["windows"].items():
        for name in ("calls_total", "calls_connected", "appointments_booked"):
            assert sum(g["windows"][window][name] for g in groups) == total[name], (window, name)
    agents = worker.get(f"{base}/summary?group_by=agent").body["groups"]
    assert LA.agent_id in [g["id"] for g in agents]
    last30 = summary.body["windows"]["last_30_days"]
    assert sum(g["windows"]["last_30_days"]["calls_total"] for g in agents) == last30["calls_total"]
    assert worker.get(f"{base}/summary?group_by=clinic").status == 400

    query = f"{base}/series?granularity=day&group_by=branch"
    body = worker.get(query).body
    for index, bucket in enumerate(body["buckets"]):
        assert (
            sum(g["buckets"][index]["calls_total"] for g in body["groups"]) == bucket["calls_total"]
        )
    status, headers, raw = _raw(worker, query + "&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(rows) == len(body["buckets"]) * len(body["groups"])
    by_key = {(r["bucket_start_utc"], r["branch_id"]): r for r in rows}
    for group in body["groups"]:
        for bucket in group["buckets"]:
            row = by_key[(bucket["start"], group["id"])]
            assert int(row["calls_total"]) == bucket["calls_total"]
            assert float(row["cost_cents_total"]) == bucket["cost_cents_total"]
    # Day buckets carry the company's local date: LA's midnight is 07:00Z or 08:00Z.
    first = rows[0]
    assert first["bucket_start_utc"][11:13] in ("07", "08")
    assert first["local_date"] == first["bucket_start_utc"][:10]
    # Accept: text/csv works too, and the company total without group_by is one row a bucket.
    status, headers, raw = _raw(worker, f"{base}/series?granularity=hour", Accept="text/csv")
    plain = list(csv.DictReader(io.StringIO(raw.decode())))
    hours = worker.get(f"{base}/series?granularity=hour").body["buckets"]
    assert [int(r["calls_total"]) for r in plain] == [b["calls_total"] for b in hours]
    assert worker.get(f"{base}/series?format=xml").status == 400


# --- reconcile --fix -------------------------------------------------------------------------


def _corrupt(engine: Engine, key: tuple, **changes: object) -> None:
    table = dashboard_buckets
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(
                table.c.company_id == key[0],
                table.c.granularity == key[1],
                table.c.bucket_start == key[2],
            )
            .values(**changes, version=table.c.version + 1)
        )


def _recent_key(world: World, company_id: int, granularity: str, days: float) -> tuple:
    """A bucket of the story with data, at least ``days`` old and within retention."""
    now = _now()
    keys = sorted(
        k
        for k in world.story.expected()
        if k[0] == company_id
        and k[1] == granularity
        and now - timedelta(days=days) > k[2] > now - timedelta(days=13)
    )
    assert keys
    return keys[-1]


def test_reconcile_fix_after_corruption_and_lost_table_state(world: World, pair: Pair) -> None:
    engine, settings = world.engine, world.settings
    # 1. A corrupted row, published as a buggy worker would: MySQL and the table are wrong.
    bad = _recent_key(world, 2, "day", 1)
    _corrupt(engine, bad, calls_total=dashboard_buckets.c.calls_total + 5)
    bad_row = _rows(engine)[bad]
    asyncio.run(
        publish_snapshots(
            settings.kafka_bootstrap,
            settings.topic(topics.SNAPSHOTS),
            [reconcile_snapshot(bad_row)],
        )
    )
    tz2 = TENANTS[1].timezone

    def shows_corruption() -> None:
        found = _api(pair.first, 2, tz2, _scope())
        assert found[BucketKey(*bad)]["calls_total"] == bad_row["calls_total"]

    eventually(shows_corruption, what="the corrupted snapshot in the table")
    seen = _cli(world, "reconcile", "--company", "2", "--worker-url", pair.first.url)
    assert seen.returncode == 1, seen.stdout + seen.stderr
    assert "DRIFT" in seen.stdout and f"{bad[2].isoformat()}Z" in seen.stdout
    assert "calls_total" in seen.stdout

    fixed = _cli(world, "reconcile", "--company", "2", "--fix", "--worker-url", pair.first.url)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "after the fix: no drift" in fixed.stdout
    row = _rows(engine)[bad]
    assert row["version"] == bad_row["version"] + 1
    assert row["calls_total"] == world.story.expected()[bad]["calls_total"]
    _assert_api_matches_story(pair.first, world.story)

    # 2. Lose the table entirely: workers gone, the snapshot topic's history past retention,
    #    a fresh consumer group (a new changelog) and an empty data dir. Meanwhile MySQL
    #    drifts three ways: a wrong row, a missing row, a row that should not exist.
    pair.first.stop()
    pair.second.stop()
    wrong = _recent_key(world, 1, "hour", 2)
    missing = _recent_key(world, 3, "day", 2)
    ghost = (4, "hour", _recent_key(world, 4, "hour", 1)[2] - timedelta(hours=1))
    while ghost in world.story.expected():
        ghost = (4, "hour", ghost[2] - timedelta(hours=1))
    expired = next(
        k for k in world.story.expected() if k[0] == 1 and k[2] < _now() - timedelta(days=450)
    )
    _corrupt(engine, wrong, sentiment_negative=7, cost_cents_total=Decimal("1.5"))
    _corrupt(engine, expired, calls_total=99)  # past retention: never reported, never fixed
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM dashboard_buckets WHERE company_id = :c AND granularity = :g"
                " AND bucket_start = :s"
            ),
            {"c": missing[0], "g": missing[1], "s": missing[2]},
        )
        conn.execute(
            dashboard_buckets.insert().values(
                company_id=ghost[0],
                granularity=ghost[1],
                bucket_start=ghost[2],
                calls_total=3,
                calls_inbound=3,
                version=4,
            )
        )
    before_fix = _rows(engine)
    asyncio.run(_truncate_snapshot_topic(settings))

    fresh = f"{settings.consumer_group}-fresh"
    with running_worker(settings, world.tmp, name="w3", group=fresh) as lone:
        assert lone.summary(1).status == 404  # the table is empty
        seen = _cli(world, "reconcile", "--all", "--worker-url", lone.url)
        assert seen.returncode == 1
        out = seen.stdout
        for key in (wrong, missing, ghost):
            assert f"mysql {key[1]:4} {key[2].isoformat()}Z" in out, (key, out)
        assert f"{expired[2].isoformat()}Z" not in out
        assert "analyst API 0" not in out

        fixed = _cli(world, "reconcile", "--all", "--fix", "--worker-url", lone.url)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "after the fix: no drift (MySQL and the analyst API agree" in fixed.stdout
        _assert_api_matches_story(lone, world.story)
        for tenant in TENANTS:
            _assert_summary_matches_story(lone, world.story, tenant.company_id)

        rows = _rows(engine)
        assert rows[wrong]["version"] == before_fix[wrong]["version"] + 1
        assert (
            rows[wrong]["sentiment_negative"] == world.story.expected()[wrong]["sentiment_negative"]
        )
        assert rows[missing]["version"] == 1
        assert rows[ghost]["version"] == 5 and rows[ghost]["calls_total"] == 0
        assert rows[expired]["calls_total"] == 99  # untouched
        assert (
            lone.get(
                f"/api/v1/companies/4/series?granularity=hour&from={ghost[2].isoformat()}Z"
                f"&to={(ghost[2] + timedelta(hours=1)).isoformat()}Z"
            ).body["buckets"][0]["version"]
            == 5
        )

        again = _cli(world, "reconcile", "--all", "--worker-url", lone.url)
        assert again.returncode == 0, again.stdout


def reconcile_snapshot(row: dict) -> object:
    from pipeline.dashboard.aggregates import BucketSnapshot

    key = BucketKey(row["company_id"], row["granularity"], row["bucket_start"])
    return BucketSnapshot(key, {n: row[n] for n in COUNTERS}, row["version"])


async def _truncate_snapshot_topic(settings: Settings) -> None:
    """What retention does to old snapshots: the log now starts at its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        topic = settings.topic(topics.SNAPSHOTS)
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(-1) for p in range(TEST_PARTITIONS)}
        )
    finally:
        await admin.close()
