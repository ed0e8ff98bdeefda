"""Issue 17 through real processes: an ingress and a worker on the real Kafka and MariaDB,
the simulator losing webhooks on purpose, fake Retell and Cal.com APIs serving what really
happened (testbed/fake_providers.py), and ``switchboard backfill`` healing it. Each scenario
ends with ``verify`` finding zero differences against the simulator's expected state.

One stack serves the module (runs follow each other on one database; each expected state
carries the buckets as they were before its run).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select, text

from pipeline import database, providers, topics
from pipeline.models import backfill_watermarks
from pipeline.settings import Secret, Settings
from pipeline.tenants import load_tenants
from testbed import fake_providers as fakes
from testbed import services
from testbed.simulator import expected, healing, rest_view, tenants
from testbed.simulator.bodies import with_metadata
from testbed.simulator.model import HOUR, MINUTE, BookingEvent, SimBooking, iso_ms
from testbed.simulator.run import OutageFiles, SimulationConfig, run_simulation, write_json
from testbed.simulator.scenario import ScenarioConfig, generate
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import Difference, read_buckets, verify
from tests.integration.conftest import (
    TEST_PARTITIONS,
    base_settings,
    create_test_database,
    delete_topics,
    drop_test_database,
)

pytestmark = pytest.mark.integration

TOKEN = "test-analyst-token"
RETELL_KEY, CALCOM_KEY = "test-retell-key", "cal_test_backfill-key"
# What the REST APIs cannot give back (docs/backfill.md, "What cannot be rebuilt exactly").
RESIDUAL_FIELDS = {"no_show_at", "booked_at", "appointments_no_show", "appointments_booked"}
NOT_REBUILT = ("call_started:", "transcript_updated:", "transfer_", "BOOKING_REQUESTED:",
               "BOOKING_NO_SHOW_UPDATED:", "BOOKING_CREATED:")  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("backfill")
    suffix = uuid.uuid4().hex[:8]
    settings = create_test_database(base_settings()).with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
        retell_api_keys=(Secret(RETELL_KEY),),
        calcom_webhook_secrets=(Secret("test-calcom-secret"),),
        calcom_api_key=Secret(CALCOM_KEY),
        analyst_tokens=(Secret(TOKEN),),
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp / "data",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )
    try:
        asyncio.run(topics.ensure_topics(settings))
        engine = database.create_db_engine(settings, pool_size=2)
        with engine.begin() as conn:
            tenants.import_tenants(conn, tenants.generate(3, seed=11))
        engine.dispose()
        with services.running(services.ingress(settings, tmp), services.worker(settings, tmp)):
            yield settings
    finally:
        asyncio.run(delete_topics(settings))
        drop_test_database(settings)


def api_url(settings: Settings) -> str:
    return f"http://{settings.worker_host}:{settings.worker_port}"


def backfill(
    settings: Settings, running: fakes.Running, *args: str
) -> subprocess.CompletedProcess[str]:
    scoped = settings.with_(retell_api_url=running.retell_url, calcom_api_url=running.calcom_url)
    return subprocess.run(
        [services.SWITCHBOARD, "backfill", *args],
        env=services.settings_env(scoped),
        capture_output=True,
        text=True,
        timeout=240,
    )


def written(output: str) -> list[int]:
    """The ``wrote N`` of every provider's report."""
    return [
        int(line.split()[1].rstrip(":"))
        for line in output.splitlines()
        if line.strip().startswith("wrote ")
    ]


def end_offsets(settings: Settings) -> dict[Any, int]:
    async def read() -> dict[Any, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
        await consumer.start()
        try:
            parts = [
                TopicPartition(settings.topic(t), p)
                for t in topics.WEBHOOK_TOPICS
                for p in range(settings.topic_partitions)
            ]
            return dict(await consumer.end_offsets(parts))
        finally:
            await consumer.stop()

    return asyncio.run(read())


def simulate(settings: Settings, tmp: Path, scenario: ScenarioConfig, name: str) -> dict[str, Path]:
    files = {k: tmp / f"{name}-{k}.json" for k in ("delivered", "state", "healed", "complete")}
    summary = run_simulation(
        settings,
        SimulationConfig(
            scenario=scenario,
            send=SendConfig(
                url=f"http://{settings.ingress_host}:{settings.ingress_port}",
                rate=0,
                concurrency=16,
                progress_every_s=60,
            ),
            expected_path=files["delivered"],
            outage=OutageFiles(files["state"], files["healed"], files["complete"]),
        ),
    )
    assert summary.ok, summary.lines()
    assert summary.dropped > 0
    return files


def serve(files: dict[str, Path], **faults: Any) -> Any:
    state = fakes.State.from_document(orjson.loads(files["state"].read_bytes()))
    return fakes.running(state, retell_key=RETELL_KEY, calcom_key=CALCOM_KEY, **faults)


def since_for(anchor_ms: int, span_hours: float) -> str:
    return iso_ms(anchor_ms - int((span_hours + 1) * HOUR))


def _companies(settings: Settings) -> Any:
    engine = database.create_db_engine(settings, pool_size=1)
    with engine.connect() as conn:
        companies = load_tenants(conn)
    engine.dispose()
    return companies


def beyond_residuals(diffs: list[Difference]) -> list[str]:
    """Differences from "every webhook arrived" that docs/backfill.md does not list."""
    out = []
    for d in diffs:
        if d.entity.startswith("event "):
            event_id = d.entity.split(":", 1)[1]
            # not rebuilt (no row or counter effect), or lost and unattributable (reported)
            if event_id.startswith(NOT_REBUILT) or d.expected == "unroutable":
                continue
        elif d.field in RESIDUAL_FIELDS:
            continue
        out.append(d.line())
    return out


# --- the outage, healed --------------------------------------------------------------------


def test_an_outage_is_healed_by_one_backfill_and_a_second_writes_nothing(
    stack: Settings, tmp_path: Path
) -> None:
    anchor = int(time.time() * 1000)
    scenario = ScenarioConfig(seed=31, calls=45, bad_share=0.12, drop_share=0.25, now_ms=anchor)
    files = simulate(stack, tmp_path, scenario, "outage")
    api = api_url(stack)
    # Before: the pipeline holds exactly what was delivered, and the outage shows.
    assert verify(stack, files["delivered"], api_url=api, token=TOKEN, timeout=120) == []
    assert verify(stack, files["healed"], timeout=0) != []
    faults = {
        "retell_faults": fakes.Faults(
            throttle_on=frozenset({2}), retry_after_s=1, slow_on={3: 1.5}
        ),
        "calcom_faults": fakes.Faults(throttle_on=frozenset({3}), retry_after_s=1),
    }
    with serve(files, **faults) as running:
        since = since_for(anchor, 6)
        args = [
            "--provider",
            "retell",
            "--provider",
            "calcom",
            "--since",
            since,
            "--page-size",
            "7",
        ]
        first = backfill(stack, running, *args)
        assert first.returncode == 0, first.stderr + first.stdout
        assert CALCOM_KEY not in first.stdout + first.stderr
        assert RETELL_KEY not in first.stdout + first.stderr
        counts = written(first.stdout)
        assert len(counts) == 2 and all(n > 0 for n in counts), first.stdout
        assert "not applied yet" not in first.stdout
        # After: exactly the expected healed state, in MySQL and in the analyst API ...
        assert verify(stack, files["healed"], api_url=api, token=TOKEN, timeout=120) == []
        # ... which differs from "every webhook arrived" only where docs/backfill.md says.
        complete = verify(stack, files["complete"], timeout=0)
        assert beyond_residuals(complete) == []
        # The fakes saw the client back off and stay in budget.
        assert [r.status for r in running.retell.requests][:2] == [200, 429]
        assert 429 in [r.status for r in running.calcom.requests]
        assert running.calcom.most_in_any_minute() <= 120
        # A second backfill over the same window: nothing written, not one record.
        before = end_offsets(stack)
        second = backfill(stack, running, *args, "--json")
        assert second.returncode == 0, second.stderr
        reports = orjson.loads(second.stdout)["reports"]
        assert [(r["provider"], r["written_total"], r["owed"] > 0) for r in reports] == [
            ("retell", 0, True),
            ("calcom", 0, True),
        ]
        assert end_offsets(stack) == before
    # Lost events of calls no branch takes were reported, never written.
    story = generate(_companies(stack), scenario)
    lost = sum(
        1
        for c in story.calls
        if not c.routable
        for e in c.events
        if e.event in ("call_ended", "call_analyzed") and e.key in story.dropped
    )
    assert lost > 0
    assert f"unattributable {lost} (not written)" in first.stdout, first.stdout
    assert first.stdout.count("  unattributable: call_") == lost
    assert verify(stack, files["healed"], timeout=0) == []
    engine = database.create_db_engine(stack, pool_size=1)
    with engine.connect() as conn:
        marks = {r.provider: r for r in conn.execute(select(backfill_watermarks))}
    engine.dispose()
    assert set(marks) == {"retell", "calcom"}
    assert all(m.last_success_at is not None and m.last_error is None for m in marks.values())


# --- the race ------------------------------------------------------------------------------


def _late_deliveries(
    settings: Settings, files: dict[str, Path], scenario: ScenarioConfig
) -> list[tuple[str, bytes]]:
    """The lost webhooks a provider delivers late after all: every dropped one except the
    no-show marks and the bookings that needed confirmation, whose rebuilt time may differ
    from the real one (docs/backfill.md), so which arrives first would matter."""
    story = generate(_companies(settings), scenario)
    state = orjson.loads(files["state"].read_bytes())
    metadata = {c["call_id"]: c.get("metadata") for c in state["retell"]["calls"]}
    confirmed = {b.uid for b in story.bookings if b.requires_confirmation}
    late = []
    for key in sorted(story.dropped):
        step = story.steps[key]
        if step.event_type == "BOOKING_NO_SHOW_UPDATED" or any(u in key for u in confirmed):
            continue
        body = step.body
        if step.metadata_from is not None:
            body = with_metadata(body, metadata.get(key.rsplit(":", 1)[1].split("#")[0]))
        late.append((step.provider, body))
    return late


async def _deliver(settings: Settings, late: list[tuple[str, bytes]]) -> list[int]:
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/"
    secrets = {"retell": RETELL_KEY, "calcom": "test-calcom-secret"}
    statuses = []
    async with aiohttp.ClientSession() as session:
        for provider, body in late:
            headers = providers.get(provider).sign(body, secrets[provider], int(time.time() * 1000))
            async with session.post(url + provider, data=body, headers=headers) as resp:
                statuses.append(resp.status)
    return statuses


def _sources(settings: Settings) -> dict[str, set[str]]:
    """event id → the ``source`` headers of its records on the webhook topics."""

    async def read() -> dict[str, set[str]]:
        consumer = AIOKafkaConsumer(
            *[settings.topic(t) for t in topics.WEBHOOK_TOPICS],
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        found: dict[str, set[str]] = {}
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=2000)
                if not batch:
                    return found
                for records in batch.values():
                    for r in records:
                        headers = {k: v.decode() for k, v in r.headers}
                        found.setdefault(headers["event_id"], set()).add(
                            headers.get("source", "ingress")
                        )
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_a_backfill_racing_late_webhooks_counts_each_event_once(
    stack: Settings, tmp_path: Path
) -> None:
    """Half of the lost webhooks arrive late while the backfill lists (its API answers
    slowly), the other half after it wrote them too: rows and counters count each once."""
    anchor = int(time.time() * 1000)
    scenario = ScenarioConfig(seed=32, calls=35, drop_share=0.35, now_ms=anchor)
    files = simulate(stack, tmp_path, scenario, "race")
    assert verify(stack, files["delivered"], timeout=120) == []
    late = _late_deliveries(stack, files, scenario)
    assert len(late) > 20
    during, after = late[::2], late[1::2]
    slow = fakes.Faults(slow_on={1: 2.0, 2: 2.0})
    with serve(files, retell_faults=slow, calcom_faults=slow) as running:
        scoped = stack.with_(retell_api_url=running.retell_url, calcom_api_url=running.calcom_url)
        args = ["backfill", "--provider", "calcom", "--provider", "retell",
                "--since", since_for(anchor, 6), "--page-size", "5"]  # fmt: skip
        proc = subprocess.Popen(
            [services.SWITCHBOARD, *args],
            env=services.settings_env(scoped),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not running.calcom.requests and not running.retell.requests:
            assert time.monotonic() < deadline and proc.poll() is None, "the backfill never asked"
            time.sleep(0.05)
        statuses = asyncio.run(_deliver(stack, during))  # while it lists, slowly
        out, err = proc.communicate(timeout=240)
        statuses += asyncio.run(_deliver(stack, after))  # after it wrote them as well
    assert proc.returncode == 0, err + out
    assert set(statuses) == {202}
    assert sum(written(out)) > 0, out
    sources = _sources(stack)
    both = [e for e, s in sources.items() if s == {"ingress", "backfill"}]
    assert len(both) > 5, out  # the same event, written by the backfill and delivered late
    # Every event once: rows and counters exactly as the healed state, in MySQL and the API.
    assert verify(stack, files["healed"], api_url=api_url(stack), token=TOKEN, timeout=120) == []


# --- a reschedule chain and a no-show, all lost -----------------------------------------------


def _chain_and_no_show(company: Any, branch: Any, now_ms: int) -> list[SimBooking]:
    tag = uuid.uuid4().hex[:6]
    day = now_ms - 5 * HOUR
    common = dict(
        company_id=company.id, branch_id=branch.id, event_type_id=branch.calcom_event_type_id,
        timezone=company.timezone, title="Checkup", service="Checkup",
        organizer_name=branch.name, attendee_name="Ana Lima", attendee_email="ana@example.org",
        attendee_phone="+14155550177",
    )  # fmt: skip
    slot = now_ms + 3 * 24 * HOUR
    slot -= slot % (15 * MINUTE)
    a = SimBooking(uid=f"{tag}chainA", booking_id=1, start_ms=slot, end_ms=slot + 30 * MINUTE,
                   retell_call_id=None, **common)  # fmt: skip
    b = SimBooking(uid=f"{tag}chainB", booking_id=2, start_ms=slot + 24 * HOUR,
                   end_ms=slot + 24 * HOUR + 30 * MINUTE, rescheduled_from=a.uid, **common)  # fmt: skip
    c = SimBooking(uid=f"{tag}chainC", booking_id=3, start_ms=slot + 48 * HOUR,
                   end_ms=slot + 48 * HOUR + 30 * MINUTE, rescheduled_from=b.uid, **common)  # fmt: skip
    meeting = day + 2 * HOUR - (day % (15 * MINUTE))
    n = SimBooking(uid=f"{tag}noshow", booking_id=4, start_ms=meeting,
                   end_ms=meeting + 30 * MINUTE, **common)  # fmt: skip
    a.events = [BookingEvent(f"calcom:BOOKING_CREATED:{a.uid}", "BOOKING_CREATED", day)]
    b.events = [
        BookingEvent(
            f"calcom:BOOKING_RESCHEDULED:{b.uid}", "BOOKING_RESCHEDULED", day + 40 * MINUTE
        )
    ]
    c.events = [
        BookingEvent(
            f"calcom:BOOKING_RESCHEDULED:{c.uid}", "BOOKING_RESCHEDULED", day + 90 * MINUTE
        )
    ]
    n.events = [
        BookingEvent(f"calcom:BOOKING_CREATED:{n.uid}", "BOOKING_CREATED", day + 10 * MINUTE),
        BookingEvent(f"calcom:BOOKING_NO_SHOW_UPDATED:{n.uid}:1", "BOOKING_NO_SHOW_UPDATED", meeting + 12 * MINUTE, True),
        BookingEvent(f"calcom:BOOKING_NO_SHOW_UPDATED:{n.uid}:2", "BOOKING_NO_SHOW_UPDATED", meeting + 20 * MINUTE, False),
        BookingEvent(f"calcom:BOOKING_NO_SHOW_UPDATED:{n.uid}:3", "BOOKING_NO_SHOW_UPDATED", meeting + 25 * MINUTE, True),
        BookingEvent(f"calcom:MEETING_ENDED:{n.uid}", "MEETING_ENDED", meeting + 30 * MINUTE),
    ]  # fmt: skip
    return [a, b, c, n]


def _metric(url: str, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read().decode()
    for line in body.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _await_runs(url: str, count: int, failure: str, within_s: float = 60) -> None:
    """Until the periodic Cal.com backfill has counted ``count`` successful runs."""
    deadline = time.monotonic() + within_s
    while (
        _metric(url, "switchboard_backfill_runs_total", provider="calcom", outcome="success") or 0
    ) < count:
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def test_a_reschedule_chain_and_a_no_show_whose_webhooks_were_all_lost(
    stack: Settings, tmp_path: Path
) -> None:
    """Nothing of this story was delivered: the periodic backfill rebuilds a booking
    rescheduled twice (A → B → C) and a no-show (marked, unmarked, marked again), and a
    one-shot Retell backfill rebuilds calls none of whose webhooks arrived."""
    now = int(time.time() * 1000)
    engine = database.create_db_engine(stack, pool_size=1)
    with engine.connect() as conn:
        companies = load_tenants(conn)
    company, branch = next(
        (c, b) for c in companies for b in c.routable_branches() if b.calcom_event_type_id
    )
    bookings = _chain_and_no_show(company, branch, now)
    calls = generate(companies, ScenarioConfig(seed=33, calls=4, booking_share=0, web_booking_share=0, now_ms=now)).calls  # fmt: skip
    every = {e.key for c in calls for e in c.events} | {e.key for b in bookings for e in b.events}
    windows = expected.windows_for(expected.compute(companies, calls, bookings, every).buckets)
    with engine.connect() as conn:
        baseline = read_buckets(conn, windows)
    healed_bookings, delivered = healing.heal(calls, bookings, set(), now)
    doc = expected.document(
        expected.compute(companies, calls, healed_bookings, delivered),
        run={"story": "chain and no-show, all lost"},
        windows=windows,
        baseline=baseline,
    )
    path = tmp_path / "healed.json"
    write_json(path, doc)
    n = bookings[3]
    assert doc["appointments"][n.uid]["no_show_at"] == iso_ms(n.start_ms)  # the documented residual
    assert [doc["appointments"][b.uid]["status"] for b in bookings[:3]] == [
        "rescheduled",
        "rescheduled",
        "scheduled",
    ]
    state = fakes.State.from_document(rest_view.provider_state(calls, bookings, {}))
    metrics_port = services.free_port()
    with fakes.running(state, retell_key=RETELL_KEY, calcom_key=CALCOM_KEY) as running:
        scoped = stack.with_(retell_api_url=running.retell_url, calcom_api_url=running.calcom_url)
        periodic = subprocess.Popen(
            [
                services.SWITCHBOARD,
                "backfill",
                "--provider",
                "calcom",
                "--every",
                "2s",
                "--since",
                iso_ms(now - 8 * HOUR),
                "--settle",
                "0s",
                "--margin",
                "1m",
                "--metrics-port",
                str(metrics_port),
            ],  # fmt: skip
            env=services.settings_env(scoped),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            once = backfill(
                stack, running, "--provider", "retell", "--since", iso_ms(now - 8 * HOUR)
            )
            assert once.returncode == 0, once.stderr
            assert verify(stack, path, api_url=api_url(stack), token=TOKEN, timeout=120) == []
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            # The worker may apply what a run wrote (and verify pass) before the run itself
            # ends: it waits for the writes to be applied, then moves its watermark, and
            # counts last. So wait for the first run to be counted.
            _await_runs(url, 1, "the first periodic run never finished")
            rescheduled = _metric(
                url,
                "switchboard_backfill_events_total",
                provider="calcom",
                kind="BOOKING_RESCHEDULED",
            )
            assert rescheduled == 2
            assert (
                _metric(
                    url,
                    "switchboard_backfill_events_total",
                    provider="calcom",
                    kind="BOOKING_NO_SHOW_UPDATED",
                )
                == 1
            )
            last = _metric(
                url, "switchboard_backfill_last_success_timestamp_seconds", provider="calcom"
            )
            assert last is not None and abs(last - time.time()) < 120
            age = _metric(url, "switchboard_backfill_watermark_age_seconds", provider="calcom")
            assert age is not None and age < 120
            _await_runs(url, 3, "the periodic backfill stopped ticking")
        except AssertionError as exc:
            periodic.send_signal(signal.SIGTERM)
            raise AssertionError(
                f"{exc}\nperiodic backfill log:\n{periodic.communicate(timeout=60)[0]}"
            ) from exc
        periodic.send_signal(signal.SIGTERM)
        log, _ = periodic.communicate(timeout=60)
        assert periodic.returncode == 0, log
        # Later ticks over the same window wrote nothing more.
        assert _ticks_after_the_first_wrote_nothing(log), log
    with engine.connect() as conn:
        mark = conn.execute(
            select(backfill_watermarks.c.covered_until).where(
                backfill_watermarks.c.provider == "calcom"
            )
        ).scalar()
        extra = conn.execute(
            text("SELECT COUNT(*) FROM webhook_events WHERE correlation_id LIKE 'backfill-%'")
        ).scalar()
    engine.dispose()
    assert mark is not None and mark > datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    assert extra and extra > 0


def _ticks_after_the_first_wrote_nothing(log: str) -> bool:
    wrote = [
        line for line in log.splitlines() if '"msg": "wrote ' in line or '"msg":"wrote ' in line
    ]
    return len(wrote) >= 2 and all('"wrote 0' in w for w in wrote[1:])


def test_a_missing_key_disables_a_provider_in_one_line(stack: Settings) -> None:
    env = services.settings_env(stack)
    env.pop("CALCOM_API_KEY", None)
    done = subprocess.run(
        [
            services.SWITCHBOARD,
            "backfill",
            "--provider",
            "calcom",
            "--since",
            "2026-01-01T00:00:00Z",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "switchboard: calcom backfill is disabled: CALCOM_API_KEY is not set"
    )
