"""``switchboard doctor`` against the real MariaDB and Kafka: a ready deployment passes every
check; each kind of breakage fails its own check, in one line, without a secret."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from sqlalchemy.engine import make_url

from pipeline.settings import Secret, Settings
from testbed import services

SECRET = "analyst-token-7f21c"


def doctor(settings: Settings, **overrides: str) -> tuple[int, dict[str, Any], str]:
    env = services.settings_env(settings)
    env.update(overrides)
    done = subprocess.run(
        [services.SWITCHBOARD, "doctor", "--json"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert SECRET not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    return done.returncode, {c["name"]: c for c in report["checks"]}, done.stdout


def test_a_ready_deployment_passes_every_check(stack_settings: Settings) -> None:
    settings = stack_settings.with_(analyst_tokens=(Secret(SECRET),))
    code, checks, out = doctor(settings)
    assert code == 0, out
    assert {c["status"] for c in checks.values()} == {"pass"}, out
    assert checks["schema"]["detail"].startswith("at head ")
    topics = [name for name in checks if name.startswith("topic ")]
    assert len(topics) == 4
    assert all("3 partitions" in checks[t]["detail"] for t in topics)
    table = subprocess.run(
        [services.SWITCHBOARD, "doctor"], env=services.settings_env(settings),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (
        table.returncode == 0 and table.stdout.splitlines()[-1] == f"{len(checks)} checks, 0 failed"
    )


def test_each_breakage_fails_its_own_check(stack_settings: Settings) -> None:
    settings = stack_settings.with_(analyst_tokens=(Secret(SECRET),))

    code, checks, _ = doctor(settings, SWITCHBOARD_TOPIC_REPLICATION="3")
    assert code == 1
    assert all(
        "replication 1 < 3" in c["detail"] and "min.insync.replicas 1 < 2" in c["detail"]
        for name, c in checks.items()
        if name.startswith("topic ")
    )

    code, checks, _ = doctor(settings, SWITCHBOARD_TOPIC_PREFIX="nobody-made-these.")
    assert code == 1 and checks["topic nobody-made-these.webhooks.retell"]["status"] == "fail"

    code, checks, _ = doctor(
        settings, SWITCHBOARD_KAFKA_BOOTSTRAP=f"127.0.0.1:{services.free_port()}"
    )
    assert (checks["kafka"]["status"], checks["topics"]["status"]) == ("fail", "skip")
    assert checks["mysql"]["status"] == "pass"

    url = make_url(settings.database_url.reveal()).set(port=services.free_port())
    broken_db = url.render_as_string(hide_password=False)
    code, checks, _ = doctor(settings, SWITCHBOARD_DATABASE_URL=broken_db)
    assert (checks["mysql"]["status"], checks["schema"]["status"]) == ("fail", "skip")
    assert checks["kafka"]["status"] == "pass"

    code, checks, _ = doctor(
        settings, SWITCHBOARD_ANALYST_TOKENS="", SWITCHBOARD_WORKER_HOST="0.0.0.0"
    )
    assert checks["secrets"]["status"] == "fail"
    assert "SWITCHBOARD_ANALYST_TOKENS" in checks["secrets"]["detail"]
    assert checks["worker url"]["status"] == "fail"

    code, checks, out = doctor(settings, SWITCHBOARD_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert code == 1 and set(checks) == {"settings"}
    assert "SWITCHBOARD_KAFKA_SASL_MECHANISM" in out and "SWITCHBOARD_KAFKA_SASL_PASSWORD" in out


def test_a_database_behind_head_fails_the_schema_check(db_settings: Settings) -> None:
    from sqlalchemy import text

    from pipeline import database

    engine = database.create_db_engine(db_settings, pool_size=1)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    code, checks, _ = doctor(db_settings.with_(analyst_tokens=(Secret(SECRET),)))
    assert code == 1
    assert checks["schema"]["status"] == "fail"
    assert "run switchboard migrate" in checks["schema"]["detail"]
