"""One fault scenario's world: a database, topics, tenants, an ingress and workers as real
processes, a simulated busy day sent through the ingress in the background (provider
retries, duplicates and reordering), a few deliberately bad events, and at the end the
checks every fault must pass: ``verify-run`` (MySQL and the analyst API) finds zero
differences, and the dead-letter topic holds exactly the deliberately bad events.

The figures of each scenario (what was done, how often, events sent, applied, lost,
doubled, dead-lettered, time to recover) are measured here and written to
``var/faults/<fault>.json``; ``python -m tests.faults.report`` puts them into
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from pipeline import database, topics
from pipeline.models import webhook_events
from pipeline.ops.dlq import read_dead_letters
from pipeline.providers import retell
from pipeline.settings import Secret, Settings
from testbed.databases import create_scratch_database, drop_scratch_database
from testbed.processes import FAST_GROUP_ENV, WorkerProcess, free_port
from testbed.services import Service
from testbed.simulator import tenants
from testbed.simulator.run import SimulationConfig, Summary, run_simulation
from testbed.simulator.scenario import ScenarioConfig
from testbed.simulator.sender import SendConfig
from testbed.simulator.verify import Difference, verify
from tests.faults.diagnosis import as_json, diagnose

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "var" / "faults"
INJECT = Path(__file__).resolve().parent / "inject"
TOKEN = "fault-analyst-token"
DB_PREFIX = "switchboard_fault_"
PARTITIONS = 3


@dataclass
class Figures:
    """What docs/reliability.md reports for one fault scenario."""

    fault: str
    title: str
    what: str
    times: int = 0
    deliveries: int = 0  # HTTP deliveries the simulated providers made (duplicates included)
    accepted: int = 0  # deliveries answered 2xx
    webhooks: int = 0  # distinct webhooks in the scenario
    rows: dict[str, int] = field(default_factory=dict)  # webhook_events by status
    poison_sent: int = 0
    lost: int = 0
    doubled: int = 0
    differences: int = 0
    dead_lettered: int = 0  # records on the DLQ topic
    dead_lettered_events: int = 0  # distinct events among them (a redelivery may repeat one)
    dlq_unexpected: int = 0  # DLQ records that are not the deliberately bad events
    recover_s: list[float] = field(default_factory=list)  # per fault, seconds
    settle_s: float = 0.0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    command: str = ""
    measured_at: str = ""  # UTC, when the scenario started
    load_average: float = 0.0  # 1-minute load average when it started (the machine is shared)
    cpus: int = 0

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.fault}.json"
        path.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        return path


class Simulation(threading.Thread):
    """``run_simulation`` in a thread, so the test can break things while it sends."""

    def __init__(self, settings: Settings, config: SimulationConfig) -> None:
        super().__init__(daemon=True, name="simulation")
        self.settings = settings
        self.config = config
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.finished_at = 0.0

    def run(self) -> None:
        try:
            self.summary = run_simulation(self.settings, self.config)
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self, timeout_s: float = 600.0) -> Summary:
        self.join(timeout_s)
        if self.is_alive():
            raise AssertionError(f"the simulation did not finish within {timeout_s:.0f}s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


class World:
    """A scenario's own database (on ``base``'s server), topics, tenants and processes."""

    def __init__(
        self,
        base: Settings,
        tmp: Path,
        fault: str,
        *,
        replication: int = 1,
        worker_batch_size: int | None = None,
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.fault = fault
        self.replication = replication
        self.worker_batch_size = worker_batch_size
        scoped = create_scratch_database(base, DB_PREFIX)
        self.settings = scoped.with_(
            topic_prefix=f"f{suffix}.",
            topic_partitions=PARTITIONS,
            topic_replication=replication,
            consumer_group=f"switchboard-fault-{suffix}",
            retell_api_keys=(Secret("fault-retell-key"),),
            calcom_webhook_secrets=(Secret("fault-calcom-secret"),),
            analyst_tokens=(Secret(TOKEN),),
            ingress_port=free_port(),
            data_dir=tmp / "data",
            spool_dir=tmp / "ingress-spool",
            routing_refresh_s=1.0,
            worker_batch_within_s=0.05,
        )
        asyncio.run(topics.ensure_topics(self.settings))
        self.engine = database.create_db_engine(self.settings, pool_size=2)
        with self.engine.begin() as conn:
            tenants.import_tenants(conn, tenants.generate(3, seed=41))
        self.workers: list[WorkerProcess] = []
        self.ingresses: list[Service] = []
        self.poison_ids: list[str] = []
        self.started = time.monotonic()
        self.started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.load_average = os.getloadavg()[0]

    # ---- processes --------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        env = {"SWITCHBOARD_TOPIC_REPLICATION": str(self.replication)}
        if self.worker_batch_size:
            env["SWITCHBOARD_WORKER_BATCH_SIZE"] = str(self.worker_batch_size)
        return env

    def ingress(self, name: str = "ingress", *, ready: bool = True) -> Service:
        """An ingress process, started; ``ready=False`` waits for /healthz only (without a
        broker /readyz says no, yet the ingress answers, into its spool)."""
        path = "readyz" if ready else "healthz"
        url = f"http://{self.settings.ingress_host}:{self.settings.ingress_port}/{path}"
        service = Service(
            name, ["ingress"], self.settings, url, self.tmp, extra_env=self.child_env()
        )
        self.ingresses.append(service)
        return service.start(timeout_s=120)

    def worker(
        self,
        name: str = "worker",
        *,
        port: int | None = None,
        kill_at: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        # Every worker loads tests/faults/inject: its log names any record a flow-control
        # resume throws away (FAULT_TRACE), and it kills itself at ``kill_at`` if given.
        env = {**self.child_env(), **FAST_GROUP_ENV, "FAULT_TRACE": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p
        )
        if kill_at:
            env["FAULT_KILL_AT"] = kill_at
        env.update(extra_env or {})
        worker = WorkerProcess(
            self.settings,
            port=port or free_port(),
            data_dir=self.tmp / f"{name}-data",
            group=self.settings.consumer_group,
            log_path=self.tmp / f"{name}.log",
            extra_env=env,
        )
        self.workers.append(worker)
        return worker.start()

    def survivor_and_victim(self, seek_pause_s: float) -> tuple[WorkerProcess, WorkerProcess]:
        """An ingress and two workers of one group, both ready: ``worker-a`` (the survivor)
        seeks to the committed offsets ``seek_pause_s`` slower (a slow broker), which holds
        open the window in which a takeover fetched records and Faust dropped them
        (agents/recovery.py, agents/consumer.py); ``worker-b`` is the one to kill."""
        self.ingress()
        survivor = self.worker("worker-a", extra_env={"FAULT_SEEK_PAUSE": str(seek_pause_s)})
        victim = self.worker("worker-b")
        survivor.wait_ready(120)
        victim.wait_ready(120)
        return survivor, victim

    @property
    def ingress_url(self) -> str:
        return f"http://{self.settings.ingress_host}:{self.settings.ingress_port}"

    # ---- traffic ----------------------------------------------------------------------

    def simulate(
        self, scenario: ScenarioConfig, *, rate: float, concurrency: int = 8
    ) -> Simulation:
        config = SimulationConfig(
            scenario=scenario,
            send=SendConfig(
                url=self.ingress_url,
                rate=rate,
                concurrency=concurrency,
                deadline_s=240.0,
                progress_every_s=600,
            ),
            expected_path=self.tmp / f"expected-{scenario.seed}.json",
            ready_wait_s=60.0,
        )
        simulation = Simulation(self.settings, config)
        simulation.start()
        return simulation

    def send_poison(self, count: int = 1) -> list[str]:
        """Signed Retell ``call_ended`` events the ingress accepts (the envelope is fine)
        and the worker must dead-letter (``start_timestamp`` is not a time)."""
        ids = []
        for _ in range(count):
            call_id = f"call_poison_{uuid.uuid4().hex[:12]}"
            body = orjson.dumps(
                {
                    "event": "call_ended",
                    "call": {
                        "call_id": call_id,
                        "start_timestamp": "yesterday",
                        "to_number": "+14155550199",
                        "direction": "inbound",
                    },
                }
            )
            asyncio.run(self._post_until_accepted("retell", body))
            ids.append(f"call_ended:{call_id}")
        self.poison_ids += ids
        return ids

    async def _post_until_accepted(self, provider: str, body: bytes, within_s: float = 180) -> None:
        deadline = time.monotonic() + within_s
        secret = self.settings.secrets_for(provider)[0]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            while True:
                headers = {
                    "Content-Type": "application/json",
                    **retell.sign(body, secret, int(time.time() * 1000)),
                }
                try:
                    async with session.post(
                        f"{self.ingress_url}/webhooks/{provider}", data=body, headers=headers
                    ) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            return
                        last = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = type(exc).__name__
                if time.monotonic() > deadline:
                    raise AssertionError(f"a poison event was never accepted ({last})")
                await asyncio.sleep(1.0)

    # ---- observing --------------------------------------------------------------------

    def rows(self) -> Counter[str]:
        with self.engine.connect() as conn:
            found = conn.execute(
                select(webhook_events.c.status, func.count()).group_by(webhook_events.c.status)
            )
            return Counter({status: n for status, n in found})

    def processed(self) -> int:
        """webhook_events rows, or -1 while MySQL does not answer."""
        try:
            return sum(self.rows().values())
        except Exception:
            return -1

    def time_to_resume(
        self,
        since: float,
        before: int,
        timeout_s: float = 180.0,
        alive: Callable[[], Any] | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> float | None:
        """Seconds from ``since`` (monotonic) until webhook_events grows past ``before``;
        None if ``give_up()`` says to stop watching first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            if self.processed() > before:
                return round(time.monotonic() - since, 1)
            if give_up is not None and give_up():
                return None
            time.sleep(0.2)
        raise AssertionError(f"nothing was applied within {timeout_s:.0f}s of the recovery")

    def resumed(self, since: float, before: int, timeout_s: float = 180.0) -> float:
        """:meth:`time_to_resume`, which must happen."""
        seconds = self.time_to_resume(since, before, timeout_s)
        assert seconds is not None
        return seconds

    def dead_letters(self) -> Counter[tuple[str, str]]:
        entries = asyncio.run(read_dead_letters(self.settings))
        return Counter((e.identity[1], e.info.reason or "?") for e in entries)

    # ---- the end ----------------------------------------------------------------------

    def finish(self, figures: Figures, summary: Summary, *, api_url: str) -> Figures:
        """Verify, count, write the figures; assert what every fault must end with."""
        last = time.monotonic()
        diffs = verify(
            self.settings,
            self.tmp / f"expected-{summary.seed}.json",
            api_url=api_url,
            token=TOKEN,
            timeout=240,
            poll_s=1.0,
        )
        figures.settle_s = round(time.monotonic() - last, 1)
        figures.deliveries = summary.deliveries
        figures.accepted = summary.accepted
        figures.webhooks = summary.webhooks
        figures.rows = dict(self.rows())
        figures.poison_sent = len(self.poison_ids)
        figures.differences = len(diffs)
        figures.lost, figures.doubled = lost_and_doubled(diffs)
        letters = self.dead_letters()
        figures.dead_lettered = sum(letters.values())
        figures.dead_lettered_events = len({event_id for event_id, _ in letters})
        figures.dlq_unexpected = sum(
            n for (event_id, _), n in letters.items() if event_id not in self.poison_ids
        )
        figures.duration_s = round(time.monotonic() - self.started, 1)
        figures.measured_at = self.started_at
        figures.load_average = round(self.load_average, 1)
        figures.cpus = os.cpu_count() or 0
        thrown_away = self.thrown_away()
        if thrown_away:
            figures.notes.append(f"{len(thrown_away)} flow-control resume(s) threw records away")
        figures.write()
        assert summary.ok, summary.lines()
        if diffs:
            lines = [*(d.line() for d in diffs[:40]), *self.post_mortem(), *thrown_away[:10]]
            raise AssertionError("\n".join(lines))
        assert thrown_away == [], "\n".join(thrown_away[:10])
        assert {event_id for event_id, _ in letters} == set(self.poison_ids), letters
        assert {reason for _, reason in letters} == {"schema_violation"}, letters
        assert figures.rows.get("dead_lettered", 0) == len(self.poison_ids), figures.rows
        return figures

    def thrown_away(self) -> list[str]:
        """The workers' FAULT_TRACE lines: webhook records a flow-control resume threw out of
        an agent's queue after the consumer had counted them as read (never applied)."""
        lines = []
        for worker in self.workers:
            if worker.log_path.exists():
                text = worker.log_path.read_text(errors="replace")
                lines += [line for line in text.splitlines() if "FAULT_TRACE: resume drops" in line]
        return sorted(set(lines))

    def post_mortem(self) -> list[str]:
        """Where the records of the events never applied sit on Kafka, against the group's
        committed offsets (``var/faults/<fault>-logs/post-mortem.json``); before the topics go."""
        try:
            states = asyncio.run(diagnose(self.settings, self.engine))
        except Exception as exc:  # noqa: BLE001 - the differences are the failure
            return [f"post-mortem failed: {exc!r}"]
        (self.tmp / "post-mortem.json").write_bytes(as_json(states))  # kept by close()
        return [s.line() for s in states]

    def close(self) -> None:
        for process in [*self.workers, *self.ingresses]:
            try:
                process.stop()
            except Exception:  # noqa: BLE001 - the teardown goes on
                pass
        # The processes' logs outlive pytest's temporary directories (it keeps three).
        logs = RESULTS / f"{self.fault}-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        for log in [*self.tmp.glob("*.log"), *self.tmp.glob("post-mortem.json")]:
            shutil.copy(log, logs / log.name)
        try:
            asyncio.run(delete_topics(self.settings))
        except Exception:  # noqa: BLE001 - a private broker may be gone already
            pass
        self.engine.dispose()
        try:
            drop_scratch_database(self.settings, DB_PREFIX, retry_for_s=30.0)
        except Exception:  # noqa: BLE001 - a private server may be gone already
            pass


async def delete_topics(settings: Settings) -> None:
    """The scenario's topics, and Faust's internal ones of its consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        ours = (settings.topic_prefix, f"{settings.consumer_group}-")
        doomed = [t for t in await admin.list_topics() if t.startswith(ours)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def lost_and_doubled(diffs: list[Difference]) -> tuple[int, int]:
    """Differences that are something missing or short (lost) or over (doubled)."""
    lost = doubled = 0
    for diff in diffs:
        try:
            expected, actual = float(diff.expected), float(diff.actual)
        except (TypeError, ValueError):
            if diff.actual in (None, "absent") and diff.expected not in (None, "absent"):
                lost += 1
            elif diff.expected in (None, "absent") and diff.actual not in (None, "absent"):
                doubled += 1
            continue
        if actual < expected:
            lost += 1
        elif actual > expected:
            doubled += 1
    return lost, doubled
