"""``switchboard status`` against a real ingress, a real worker, the broker and MariaDB.

With the pipeline running and traffic applied: the worker is found through the consumer
group (the URL it advertises), ready with its tables recovered and owning partitions; the
lag of the webhook topics drains to 0; the ingress answers with its spool; freshness is
the age of the newest applied event; a poison event shows as one pending dead letter by
reason. With the processes stopped, they "do not answer"; with Kafka unreachable the
command still prints what MySQL knows and exits 1.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from pipeline import kafka_reader
from pipeline.settings import Settings
from testbed import services
from testbed.processes import eventually
from tests.integration.ops_helpers import produce, produce_traffic, rows_of
from tests.support.fixtures import fixture_bytes
from tests.support.tenants import seed_fixture_tenants

pytestmark = pytest.mark.integration


def _status(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [services.SWITCHBOARD, "status", *args],
        env=services.settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _json(settings: Settings, *args: str) -> Any:
    done = _status(settings, "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return orjson.loads(done.stdout)


def _poison() -> bytes:
    body = orjson.loads(fixture_bytes("retell", "call_ended.json"))
    body["call"].update(call_id="call_status_poison", start_timestamp="never")
    return orjson.dumps(body)


def test_status_of_a_running_pipeline(
    stack_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    settings = stack_settings.with_(
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "data",
        worker_batch_within_s=0.05,
    )
    seed_fixture_tenants(engine)
    produced = asyncio.run(produce_traffic(settings, 4))
    asyncio.run(produce(settings, "retell", [(_poison(), 1_767_790_800_000)]))
    ingress_url = f"http://{settings.ingress_host}:{settings.ingress_port}"
    worker_url = f"http://{settings.worker_host}:{settings.worker_port}"
    with services.running(
        services.ingress(settings, tmp_path), services.worker(settings, tmp_path)
    ):

        def drained() -> Any:
            found = _json(settings)
            totals = found["lag_by_topic"]
            assert totals[settings.topic("webhooks.retell")] == 0, totals
            assert totals[settings.topic("webhooks.calcom")] == 0, totals
            [worker] = found["workers"]
            assert worker["ready"] == "ready" and worker["recovered"] is True, worker
            assert found["dlq_records"] == 1, (
                found,
                rows_of(
                    engine,
                    "SELECT event_id, status, error FROM webhook_events WHERE status <> 'applied'",
                ),
            )
            return found

        found = eventually(drained, timeout=120, what="lag drained, worker ready")
        assert found["ok"] and found["kafka"] == "ok" and found["database"] == "ok"
        assert found["group_state"] == "Stable"
        [worker] = found["workers"]
        assert worker["url"] == worker_url and worker["member"]
        assert worker["partitions"] >= 3  # the three webhook/snapshot partitions at least
        assert found["dlq_pending"] == {"schema_violation": 1}
        [ingress] = found["ingress"]
        assert ingress["url"] == ingress_url and ingress["state"] == "ready"
        assert ingress["spool"] is not None and ingress["spool"]["records"] == 0
        assert found["freshness_s"] is not None and found["newest_applied"].endswith("Z")
        assert found["schema"] == found["schema_head"]
        retell = [r for r in found["lag"] if r["topic"] == settings.topic("webhooks.retell")]
        assert sum(r["end"] for r in retell) == len(produced["retell"]) + 1
        # Committed to the end; a partition that never had a record has no commit at all.
        assert all(r["committed"] == (r["end"] if r["end"] else None) for r in retell), retell

        text = _status(settings)
        assert text.returncode == 0, text.stderr
        assert f"{worker_url} member " in text.stdout and "ready, tables recovered" in text.stdout
        assert "pending events by reason: schema_violation 1" in text.stdout
        assert f"ingress    {ingress_url} ready; spool 0 record(s)" in text.stdout

    stopped = _json(settings, "--worker-url", worker_url)
    assert stopped["ok"]  # Kafka and MySQL answer; the processes are simply gone
    assert [w["ready"] for w in stopped["workers"]] == ["down"]
    assert stopped["ingress"][0]["state"] == "down"
    assert "does not answer" in _status(settings).stdout


def test_status_without_kafka_still_shows_mysql_and_fails(
    stack_settings: Settings, engine: Engine
) -> None:
    seed_fixture_tenants(engine)
    unreachable = stack_settings.with_(kafka_bootstrap=f"127.0.0.1:{services.free_port()}")
    done = _status(unreachable)
    assert done.returncode == 1
    assert "kafka      Kafka unreachable" in done.stdout, done.stdout
    assert "freshness  newest applied event none yet" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_reader_stopped_right_after_it_started_stops_cleanly(stack_settings: Settings) -> None:
    async def start_stop() -> None:
        for _ in range(5):
            consumer = kafka_reader._consumer(stack_settings)
            await kafka_reader._start(consumer, stack_settings)
            await consumer.stop()

    asyncio.run(start_stop())
