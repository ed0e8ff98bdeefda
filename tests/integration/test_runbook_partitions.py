"""Runbook, "A topic needing more partitions": the cutover to a new topic set with more
partitions and a new consumer group, performed with real processes, loses nothing, doubles
nothing, and leaves the new workers' dashboard equal to the rows."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from sqlalchemy import func, select

from pipeline import database, topics
from pipeline.models import webhook_events
from pipeline.settings import Settings
from testbed import services
from testbed.events import lifecycle
from tests.integration.test_pipeline_e2e import distinct, post_all, wait_for_events
from tests.support.tenants import seed_fixture_tenants

START_MS = int(time.time() * 1000) - 3 * 3600 * 1000


def reconcile(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [services.SWITCHBOARD, "reconcile", "--all", *args],
        env=services.settings_env(settings),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cutover_to_more_partitions(stack_settings: Settings, tmp_path: Path) -> None:
    old = stack_settings.with_(
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "old",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )
    new = old.with_(
        topic_prefix=f"{old.topic_prefix}v2.",
        topic_partitions=old.topic_partitions + 2,
        consumer_group=f"{old.consumer_group}-v2",
        worker_port=services.free_port(),
        data_dir=tmp_path / "new",
    )
    engine = database.create_db_engine(old, pool_size=2)
    seed_fixture_tenants(engine)
    events = lifecycle(START_MS)
    before, after = events[:8], events[8:]

    old_worker = services.worker(old, tmp_path, "old-worker").start()
    old_ingress = services.ingress(old, tmp_path, "old-ingress").start()
    try:
        assert set(asyncio.run(post_all(old, before))) == {202}
        # 1-2: new topics with more partitions, new workers on them.
        asyncio.run(topics.ensure_topics(new))
        new_worker = services.worker(new, tmp_path, "new-worker").start()
        try:
            # 3: roll the ingress over; provider retries of old events land on the new side.
            old_ingress.stop()
            new_ingress = services.ingress(new, tmp_path, "new-ingress").start()
            try:
                assert set(asyncio.run(post_all(new, after + before[:3]))) == {202}
                wait_for_events(engine, distinct(events))
            finally:
                new_ingress.stop()
            # 4: the old workers drain, then stop.
            time.sleep(3)
            old_worker.stop()
            # 5: fill the new tables from MySQL; then no drift between rows and the new API.
            fixed = reconcile(new, "--fix")
            assert fixed.returncode == 0, fixed.stdout + fixed.stderr
            api = f"http://{new.worker_host}:{new.worker_port}"
            checked = reconcile(new, "--worker-url", api, "--token", "test-analyst-token")
            assert checked.returncode == 0, checked.stdout + checked.stderr
        finally:
            new_worker.stop()
    finally:
        old_ingress.stop()
        old_worker.stop()
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(webhook_events.c.status, func.count()).group_by(webhook_events.c.status)
            ).all()
        )
    engine.dispose()
    assert statuses == {"applied": distinct(events)}
