"""The pipeline on a Kafka that only speaks SASL_SSL, as managed clusters do.

A private broker (scripts/stack.sh, other ports, certificates made by the test) has one
client listener, SASL_SSL, with SCRAM-SHA-512 and PLAIN users. Signed webhooks go through a
real ingress, the broker and a real worker into MySQL, and the analyst API answers from
the worker's table: every client (producer, Faust consumer and producer, admin) logged in
with the SWITCHBOARD_KAFKA_* settings, or nothing would have arrived.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import Engine, func, select

from pipeline import database, topics
from pipeline.models import calls, webhook_events
from pipeline.providers import retell
from pipeline.settings import Secret, Settings
from testbed import services
from testbed.brokers import SecureBroker, sasl_ssl_broker
from testbed.events import call_events
from testbed.processes import http_get
from tests.integration.conftest import delete_topics
from tests.integration.ingress_helpers import signed
from tests.support.tenants import BAYVIEW, seed_fixture_tenants

USERS = {"switchboard": "scram-pw-9c2e71", "confluent-key": "plain-secret-51aa"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with sasl_ssl_broker(tmp_path_factory.mktemp("sasl-broker"), USERS) as started:
        yield started


def secure(settings: Settings, broker: SecureBroker, mechanism: str, user: str) -> Settings:
    return settings.with_(
        kafka_bootstrap=broker.sasl_ssl_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=user,
        kafka_sasl_password=Secret(USERS[user]),
        kafka_ssl_cafile=broker.cafile,
    )


@pytest.fixture
def sasl_settings(
    db_settings: Settings, broker: SecureBroker, tmp_path: Path
) -> Iterator[Settings]:
    suffix = os.urandom(4).hex()
    scoped = secure(db_settings, broker, "SCRAM-SHA-512", "switchboard").with_(
        topic_prefix=f"t{suffix}.",
        topic_partitions=3,
        consumer_group=f"switchboard-test-{suffix}",
        retell_api_keys=(Secret("test-retell-key"),),
        calcom_webhook_secrets=(Secret("test-calcom-secret"),),
        analyst_tokens=(Secret("test-analyst-token"),),
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "data",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )
    asyncio.run(topics.ensure_topics(scoped))
    try:
        yield scoped
    finally:
        asyncio.run(delete_topics(scoped))


async def post(settings: Settings, bodies: list[bytes]) -> list[int]:
    base = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/retell"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for body in bodies:
            async with session.post(base, data=body, headers=signed("retell", body)) as r:
                statuses.append(r.status)
        return statuses


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_webhooks_flow_through_a_sasl_ssl_only_broker_into_mysql(
    sasl_settings: Settings, tmp_path: Path
) -> None:
    engine = database.create_db_engine(sasl_settings, pool_size=2)
    try:
        seed_fixture_tenants(engine)
        start = int(time.time() * 1000) - 3_600_000
        bodies = [
            body
            for n in range(3)
            for body in call_events(f"call_sasl_{n:04d}", start_ms=start + n * 120_000)
        ]
        ingress = services.ingress(sasl_settings, tmp_path)
        worker = services.worker(sasl_settings, tmp_path)
        with services.running(ingress, worker):
            statuses = asyncio.run(post(sasl_settings, bodies))
            assert statuses == [202] * len(bodies)
            expected = len({retell.parse(body).event_id for body in bodies})
            deadline = time.monotonic() + 240
            while count(engine, webhook_events) < expected:
                assert time.monotonic() < deadline, worker.tail()
                time.sleep(0.5)
            with engine.connect() as conn:
                rows = conn.execute(select(calls.c.company_id, calls.c.status)).all()
            assert sorted(rows) == [(BAYVIEW, "ended")] * 3
            # Snapshots went out and came back through the Faust table: the API answers.
            url = f"http://127.0.0.1:{sasl_settings.worker_port}/api/v1/companies/{BAYVIEW}/summary"
            deadline = time.monotonic() + 120
            while True:
                answer = http_get(url, "test-analyst-token")
                if (
                    answer.status == 200
                    and answer.body["windows"]["last_30_days"]["calls_total"] >= 3
                ):
                    break
                assert time.monotonic() < deadline, (answer, worker.tail())
                time.sleep(0.5)
    finally:
        engine.dispose()


def run_topics(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [services.SWITCHBOARD, "topics"],
        env=services.settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_logs_in_and_bad_credentials_or_plaintext_fail_in_one_line(
    db_settings: Settings, broker: SecureBroker
) -> None:
    suffix = os.urandom(4).hex()
    plain = secure(db_settings, broker, "PLAIN", "confluent-key").with_(
        topic_prefix=f"t{suffix}.", topic_partitions=3
    )
    try:
        ok = run_topics(plain)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.count(" created ") == len(topics.ALL_TOPICS)

        wrong = plain.with_(kafka_sasl_password=Secret("not-the-password"))
        refused = run_topics(wrong)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1 and "Kafka" in refused.stderr
        assert "not-the-password" not in refused.stderr + refused.stdout

        # A client that ignored the security settings would talk plaintext to the TLS port.
        naked = plain.with_(
            kafka_security_protocol="PLAINTEXT",
            kafka_sasl_mechanism=None,
            kafka_sasl_username=None,
            kafka_sasl_password=None,
            kafka_ssl_cafile=None,
        )
        assert run_topics(naked).returncode == 1
    finally:
        asyncio.run(delete_topics(plain))
