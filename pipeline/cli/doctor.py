"""``switchboard doctor``: is this deployment ready to take webhooks? One table, or ``--json``.

Run it with the same environment as the processes (a Kubernetes Job, ``docker compose run``),
before go-live and after every change of settings or infrastructure (docs/deploy.md). It
checks what the processes would trip over, in the order they would: the settings, the
secrets, MySQL (reachable, TLS when asked for, the schema at Alembic's head), Kafka with the
security settings, and the topics (present, partitions, replication, min ISR). Nothing is
changed. Exit 0 when every check passes, 1 when one fails; secrets are never printed.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import click
from aiokafka.admin import AIOKafkaAdminClient
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pipeline import database, topics
from pipeline.cli import cli, quiet_kafka
from pipeline.errors import ConfigError
from pipeline.kafka import describe, kafka_options
from pipeline.settings import UNROUTABLE_HOSTS, Settings, load_settings

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def settings_checks(settings: Settings) -> list[Check]:
    checks = [Check("settings", PASS, "every variable parses")]
    missing = [
        name
        for name, present in (
            ("RETELL_API_KEY", settings.retell_api_keys),
            ("CALCOM_WEBHOOK_SECRET", settings.calcom_webhook_secrets),
            ("SWITCHBOARD_ANALYST_TOKENS", settings.analyst_tokens),
        )
        if not present
    ]
    checks.append(
        Check("secrets", FAIL, "missing: " + ", ".join(missing))
        if missing
        else Check("secrets", PASS, "Retell key, Cal.com secret and analyst tokens set")
    )
    url = settings.worker_url()
    host = urlsplit(url).hostname or ""
    checks.append(
        Check(
            "worker url",
            FAIL,
            f"{url} cannot be reached by other workers: set SWITCHBOARD_WORKER_ADVERTISED_URL",
        )  # fmt: skip
        if host in UNROUTABLE_HOSTS
        else Check("worker url", PASS, f"workers advertise {url}")
    )
    return checks


def mysql_checks(settings: Settings) -> list[Check]:
    engine = database.create_db_engine(settings, pool_size=1)
    url = make_url(settings.database_url.reveal())
    where = f"{url.host}:{url.port or 3306}/{url.database}"
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT VERSION()")).scalar()
            cipher = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).first()
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - any failure is this check's answer
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        return [
            Check("mysql", FAIL, f"{where}: {reason}"),
            Check("schema", SKIP, "MySQL unreachable"),
        ]
    finally:
        engine.dispose()
    tls = cipher[1] if cipher is not None and cipher[1] else ""
    wants_tls = any(key.startswith("ssl") for key in url.query)
    checks = [
        Check("mysql", PASS, f"{where}, server {version}, " + (f"TLS {tls}" if tls else "no TLS"))
    ]
    if wants_tls and not tls:
        checks.append(Check("mysql tls", FAIL, "ssl_* set in the URL but the session is not TLS"))
    script = ScriptDirectory.from_config(database.alembic_config(settings))
    heads = set(script.get_heads())
    if current in heads:
        checks.append(Check("schema", PASS, f"at head {current}"))
    else:
        checks.append(
            Check(
                "schema",
                FAIL,
                f"at {current or 'no revision'}, head is "
                f"{', '.join(sorted(heads))}: run switchboard migrate",
            )  # fmt: skip
        )
    return checks


async def kafka_checks(settings: Settings) -> list[Check]:
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), 20)
    except Exception as exc:  # noqa: BLE001 - unreachable, TLS or SASL failure alike
        await admin.close()
        return [
            Check("kafka", FAIL, f"{describe(settings)}: {exc.__class__.__name__}"),
            Check("topics", SKIP, "Kafka unreachable"),
        ]
    try:
        cluster = await admin.describe_cluster()
        brokers = len(cluster.get("brokers", []))
        checks = [Check("kafka", PASS, f"{describe(settings)}, {brokers} broker(s)")]
        names = [settings.topic(name) for name in topics.ALL_TOPICS]
        present = set(await admin.list_topics())
        described = {
            d["topic"]: d
            for d in await admin.describe_topics([n for n in names if n in present])
            if not d.get("error_code")
        }
        configs = await topics.describe_configs(admin, list(described))
        want_isr = min(2, settings.topic_replication)
        for name in names:
            if name not in described:
                checks.append(Check(f"topic {name}", FAIL, "missing: run switchboard topics"))
                continue
            partitions = described[name]["partitions"]
            replicas = min(len(p["replicas"]) for p in partitions)
            entry = configs.get(name, {}).get("min.insync.replicas")
            min_isr = int(entry.value) if entry is not None and entry.value else 1
            problems = []
            if len(partitions) != settings.topic_partitions:
                problems.append(
                    f"{len(partitions)} partitions, settings say {settings.topic_partitions}"
                )
            if replicas < settings.topic_replication:
                problems.append(f"replication {replicas} < {settings.topic_replication}")
            if min_isr < want_isr:
                problems.append(f"min.insync.replicas {min_isr} < {want_isr}")
            shape = f"{len(partitions)} partitions, replication {replicas}, min ISR {min_isr}"
            checks.append(
                Check(f"topic {name}", FAIL, "; ".join(problems))
                if problems
                else Check(f"topic {name}", PASS, shape)
            )
        return checks
    finally:
        await admin.close()


def run_checks(settings: Settings) -> list[Check]:
    checks = settings_checks(settings)
    checks += mysql_checks(settings)
    with quiet_kafka():
        checks += asyncio.run(kafka_checks(settings))
    return checks


def render(checks: list[Check]) -> list[str]:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':{width}}  status  detail"]
    lines += [f"{c.name:{width}}  {c.status:6}  {c.detail}" for c in checks]
    failed = sum(c.status == FAIL for c in checks)
    lines.append(f"{len(checks)} checks, {failed} failed")
    return lines


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json: bool) -> None:
    """Check this deployment: settings, secrets, MySQL and schema, Kafka and topics."""
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        checks = [Check("settings", FAIL, problem) for problem in exc.problems]
    else:
        checks = run_checks(settings)
    if as_json:
        click.echo(json.dumps({"ok": not any(c.status == FAIL for c in checks),
                               "checks": [asdict(c) for c in checks]}, indent=2))  # fmt: skip
    else:
        for line in render(checks):
            click.echo(line)
    if any(c.status == FAIL for c in checks):
        raise SystemExit(1)
