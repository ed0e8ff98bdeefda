"""The alert rules and the Grafana dashboard against a real Prometheus scraping a real
ingress, worker and periodic backfill (and a scheduled reconcile's textfile): every metric they name exists, and every rule
evaluates without error.

Prometheus comes from Debian's package (scripts/observability.sh, run by `make test`). It
scrapes the three processes every second with docker/prometheus/alerts.yml loaded; after a few
signed webhooks went through, each rule's health must be "ok" and each metric name in each
rule and dashboard query must be known to Prometheus, as a series or as scraped metadata
(a labelled counter that never counted still announces itself). A rule naming a metric
that no process exports fails here, whatever other engineers add or rename.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import Engine, func, select

from pipeline import database
from pipeline.dashboard import drift_metrics, reconcile
from pipeline.dashboard.aggregates import DAY, HOUR
from pipeline.dashboard.drift import Scope
from pipeline.models import webhook_events
from pipeline.settings import Settings
from testbed import services
from testbed.events import call_events
from tests.integration.ingress_helpers import signed
from tests.support.tenants import seed_fixture_tenants

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "docker" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "switchboard.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "atan2", "inf", "nan", "le"}  # fmt: skip
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)  # offset durations
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        word = match.group(0)
        if following.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'sum by (provider) (rate(switchboard_a_total{status="503"}[5m])) / '
        "histogram_quantile(0.9, sum by (le) (rate(b_seconds_bucket[5m]))) > 0 "
        "and on () (hour() >= 14 < 23) or max(c) - time() unless d offset 5m"
    )
    assert metric_names(expr) == {"switchboard_a_total", "b_seconds_bucket", "c", "d"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("#")
    }
    for rule in rules():
        link = rule["annotations"]["runbook_url"]
        assert link.startswith("docs/runbook.md#"), rule["alert"]
        assert link.split("#", 1)[1] in anchors, f"{rule['alert']}: no section {link}"
        assert rule["annotations"]["summary"] and rule["labels"]["severity"] in {"page", "ticket"}


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules())} rules found" in done.stdout


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def known(self, name: str) -> bool:
        if self.get("/api/v1/series", **{"match[]": name}):
            return True
        base = re.sub(r"_(bucket|sum|count|created)$", "", name)
        return bool(self.get("/api/v1/targets/metadata", metric=base)) or bool(
            self.get("/api/v1/targets/metadata", metric=name)
        )


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(ingress: str, worker: str, backfill: str, reconcile: str) -> Prometheus:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "switchboard-ingress", "static_configs": [{"targets": [ingress]}]},
                {"job_name": "switchboard-worker", "static_configs": [{"targets": [worker]}]},
                {"job_name": "switchboard-backfill", "static_configs": [{"targets": [backfill]}]},
                {"job_name": "reconcile", "static_configs": [{"targets": [reconcile]}]},
            ],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = services.free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        )
        return Prometheus(f"http://127.0.0.1:{port}")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(30)


def wait(check: Any, what: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, AssertionError, KeyError):
            pass
        assert time.monotonic() < deadline, f"{what} not seen within {timeout_s}s"
        time.sleep(1)


async def traffic(settings: Settings) -> None:
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/retell"
    bodies = call_events("call_prom_0001", start_ms=int(time.time() * 1000) - 600_000)
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(url, data=body, headers=signed("retell", body)) as r:
                assert r.status == 202
        async with session.post(url, data=bodies[0], headers={"x-retell-signature": "v=1,d=00"}):
            pass  # a rejection, so the 4xx series exist too


def reconcile_options() -> reconcile.Options:
    now = datetime.now(UTC).replace(tzinfo=None)
    scope = Scope((HOUR, DAY), None, now + timedelta(days=1), now)
    return reconcile.Options(company_ids=None, scope=scope, fix=False)


def textfile_server(path: Path) -> http.server.ThreadingHTTPServer:
    """Serves ``path`` at any URL, as node_exporter's textfile collector would pass it on."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_events)).scalar_one())


def test_rules_and_dashboard_evaluate_against_real_processes(
    stack_settings: Settings, tmp_path: Path, prometheus_for: Any
) -> None:
    settings = stack_settings.with_(
        ingress_port=services.free_port(),
        worker_port=services.free_port(),
        data_dir=tmp_path / "data",
        routing_refresh_s=0.5,
        worker_batch_within_s=0.05,
    )
    engine = database.create_db_engine(settings, pool_size=1)
    seed_fixture_tenants(engine)
    ingress, worker = services.ingress(settings, tmp_path), services.worker(settings, tmp_path)
    # A real periodic backfill; its provider API is unreachable, so its runs fail (and it
    # says so in its metrics) while it serves every backfill series the rules name.
    metrics_port = services.free_port()
    backfill = services.Service(
        "backfill",
        ["backfill", "--provider", "retell", "--every", "10m", "--metrics-port", str(metrics_port)],
        settings,
        f"http://127.0.0.1:{metrics_port}/metrics",
        tmp_path,
        extra_env={"RETELL_API_KEY": "key_prometheus_test", "RETELL_API_URL": "http://127.0.0.1:1"},
    )
    # What a scheduled reconcile leaves for node_exporter's textfile collector, served as-is.
    textfile = tmp_path / "reconcile.prom"
    drift_metrics.write_textfile(reconcile.run(settings, engine, reconcile_options()), textfile)
    collector = textfile_server(textfile)
    try:
        with services.running(ingress, worker, backfill):
            asyncio.run(traffic(settings))
            wait(lambda: count(engine) >= 4, "the calls in MySQL")
            prom = prometheus_for(
                f"127.0.0.1:{settings.ingress_port}",
                f"127.0.0.1:{settings.worker_port}",
                f"127.0.0.1:{metrics_port}",
                f"127.0.0.1:{collector.server_port}",
            )
            wait(
                lambda: (
                    {t["health"] for t in prom.get("/api/v1/targets")["activeTargets"]} == {"up"}
                ),
                "both targets up",
            )
            wait(
                lambda: prom.known("switchboard_worker_event_freshness_seconds_bucket"),
                "a scrape after the commit",
            )

            def all_evaluated() -> list[dict[str, Any]]:
                found = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
                assert len(found) == len(rules())
                assert all(r["lastEvaluation"] > "2000" for r in found)
                return found

            evaluated = wait(all_evaluated, "every rule evaluated")
            errors = {r["name"]: r.get("lastError") for r in evaluated if r["health"] != "ok"}
            assert not errors, errors

            missing = {}
            for rule in rules():
                absent = sorted(
                    n for n in metric_names(rule["expr"]) - SYNTHETIC if not prom.known(n)
                )
                if absent:
                    missing[rule["alert"]] = absent
            for title, expr in dashboard_queries():
                prom.get("/api/v1/query", query=expr)  # evaluates, or the status check fails
                absent = sorted(n for n in metric_names(expr) - SYNTHETIC if not prom.known(n))
                if absent:
                    missing[f"dashboard: {title}"] = absent
            assert not missing, f"metrics that no process exports: {missing}"
    finally:
        collector.shutdown()
        engine.dispose()
