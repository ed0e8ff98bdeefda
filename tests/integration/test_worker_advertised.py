"""Two workers bound to 0.0.0.0, as in a container, answer for each other's companies.

Each binds ``SWITCHBOARD_WORKER_HOST=0.0.0.0`` and advertises its own
``SWITCHBOARD_WORKER_ADVERTISED_URL``. Faust's router then names the right owner for every
company, and a request to either worker is forwarded to that owner: the answers of the two
workers are equal and equal to what the rows say. (Before the split, both advertised
``http://0.0.0.0:port``, every worker believed it owned every company, and the companies of
the other worker came back as 404 without an error.)
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import database, topics
from pipeline.apply.batch import apply_batch
from pipeline.settings import Secret, Settings
from testbed.processes import (
    SWITCHBOARD,
    WorkerProcess,
    eventually,
    free_port,
    http_get,
    worker_env,
)
from tests.integration.conftest import (
    TEST_PARTITIONS,
    base_settings,
    create_test_database,
    delete_topics,
    drop_test_database,
)
from tests.support.dashboard_story import TENANTS, build_story, publish_snapshots, seed_tenants

pytestmark = pytest.mark.integration
TOKEN = "test-analyst-token"


class BoundEverywhere(WorkerProcess):
    """A worker bound to 0.0.0.0 that advertises http://127.0.0.1:<port>."""

    def start(self) -> BoundEverywhere:
        env = worker_env(self.settings, port=self.port, data_dir=self.data_dir, group=self.group)
        env["SWITCHBOARD_WORKER_HOST"] = "0.0.0.0"
        env["SWITCHBOARD_WORKER_ADVERTISED_URL"] = self.url
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [SWITCHBOARD, "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:8]
    scoped = create_test_database(base_settings()).with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=TEST_PARTITIONS,
        consumer_group=f"switchboard-test-{suffix}",
        analyst_tokens=(Secret(TOKEN),),
    )
    engine = database.create_db_engine(scoped, pool_size=2)
    try:
        asyncio.run(topics.ensure_topics(scoped))
        seed_tenants(engine)
        story = build_story(datetime.now(UTC).replace(tzinfo=None), calls_per_company=6)
        snapshots = []
        for batch in story.batches():
            snapshots += apply_batch(engine, batch).snapshots
        asyncio.run(
            publish_snapshots(scoped.kafka_bootstrap, scoped.topic(topics.SNAPSHOTS), snapshots)
        )
        yield scoped
    finally:
        engine.dispose()
        asyncio.run(delete_topics(scoped))
        drop_test_database(scoped)


def owner(worker: WorkerProcess, company_id: int) -> str:
    """The URL Faust's router names as the owner of the company's table partition."""
    answer = http_get(f"{worker.url}/router/dashboard/{company_id}/", timeout=5)
    assert answer.status == 200, answer
    assert isinstance(answer.body, str), answer  # a JSON string: the owner's URL
    return answer.body


def test_two_workers_bound_to_0_0_0_0_answer_each_others_companies(
    settings: Settings, tmp_path: Path
) -> None:
    workers = [
        BoundEverywhere(
            settings,
            port=free_port(),
            data_dir=tmp_path / f"w{n}",
            group=settings.consumer_group,
            log_path=tmp_path / f"w{n}.log",
        )
        for n in (1, 2)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()

        def routes_settled() -> dict[int, str]:
            seen = {t.company_id: owner(workers[0], t.company_id) for t in TENANTS}
            again = {t.company_id: owner(workers[1], t.company_id) for t in TENANTS}
            assert seen == again, (seen, again)
            assert set(seen.values()) == {w.url for w in workers}, seen
            return seen

        # Both workers agree on the owners, the owners are the advertised URLs (never
        # 0.0.0.0), and each worker owns some companies: requests really cross over.
        owners = eventually(routes_settled, timeout=90, what="both workers owning companies")

        def both_answer_alike() -> None:
            for tenant in TENANTS:
                one, two = (w.summary(tenant.company_id) for w in workers)
                assert one.status == two.status == 200, (tenant.company_id, one, two)
                assert one.body["windows"] == two.body["windows"]
                assert one.body["windows"]["last_30_days"]["calls_total"] > 0

        eventually(both_answer_alike, timeout=60, what="every company answered by both")
        assert "0.0.0.0" not in "".join(owners.values())
    except BaseException:
        for worker in workers:
            print(worker.tail())
        raise
    finally:
        for worker in workers:
            worker.stop()


def test_a_worker_bound_to_0_0_0_0_without_an_advertised_url_exits_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    env = worker_env(settings, port=free_port(), data_dir=tmp_path / "w", group="nobody")
    env["SWITCHBOARD_WORKER_HOST"] = "0.0.0.0"
    env.pop("SWITCHBOARD_WORKER_ADVERTISED_URL", None)
    done = subprocess.run(
        [SWITCHBOARD, "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "SWITCHBOARD_WORKER_ADVERTISED_URL" in done.stderr
    assert done.stderr.count("\n") == 1
