"""Build and run a Faust worker: the apply agents, the dashboard table and agent, the
analyst API and ``/metrics``. This is the only module that wires the worker together."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from agents import api, dashboard, webhooks
from agents.metrics import WorkerMetrics
from pipeline import database, topics
from pipeline.apply.process import ApplyProcess
from pipeline.errors import KafkaUnavailable
from pipeline.logs import configure_logging
from pipeline.settings import Settings
from tables.dashboard import define_table

log = logging.getLogger(__name__)


@dataclass
class Worker:
    app: faust.App
    engine: Engine
    metrics: WorkerMetrics
    table: faust.Table[str, Any]
    outputs: webhooks.Outputs
    process: ApplyProcess | None = None  # the engine's child process, if it has one


def build_worker(
    settings: Settings, *, store: str | None = None, engine: Engine | None = None
) -> Worker:
    app = _app(settings, store)
    engine = engine or database.create_db_engine(settings, pool_size=4)
    # The analyst API and housekeeping get a pool of their own: slow reads holding
    # connections must never starve the apply path into pool timeouts.
    read_engine = database.create_db_engine(settings, pool_size=4)
    metrics = WorkerMetrics(company_limit=settings.metrics_company_limit)
    metrics.attach(app, settings, engine)
    table = define_table(app, settings)
    process = None
    if settings.worker_apply_process:
        process = ApplyProcess(settings, on_restart=metrics.apply_process_restarts.inc)

        @app.task
        async def start_apply_process() -> None:
            await process.start()

        @app.on_before_shutdown.connect
        async def stop_apply_process(*args: Any, **kwargs: Any) -> None:
            await asyncio.to_thread(process.close)

    outputs = webhooks.register(app, settings, engine, metrics, process)
    dashboard.register(app, settings, table, outputs.snapshots, read_engine, metrics)
    api.register(app, settings, table, read_engine, metrics)

    @app.page("/metrics")
    async def metrics_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(
            generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    webhook_topics = {settings.topic(name) for name in topics.WEBHOOK_TOPICS}

    @app.timer(interval=5.0)
    async def measure_lag() -> None:
        """Backlog per owned partition, from Faust's monitor (end vs committed offsets)."""
        monitor = app.monitor
        owned = app.consumer.assignment()
        metrics.consumer_lag.clear()
        for tp, end in list(monitor.tp_end_offsets.items()):
            if tp.topic in webhook_topics and tp in owned:
                committed = monitor.tp_committed_offsets.get(tp) or 0
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, end - committed)
                )

    page = (Path(__file__).parent / "static" / "dashboard.html").read_bytes()

    @app.page("/dashboard")
    async def dashboard_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """A page for people: it asks for a token and calls the analyst API from the browser."""
        return web.bytes(page, content_type="text/html")

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok"})

    return Worker(app, engine, metrics, table, outputs, process)


def _app(settings: Settings, store: str | None) -> faust.App:
    from agents.app import create_faust_app

    return create_faust_app(settings, store=store)


def preflight(settings: Settings) -> None:
    """Fail fast, in one line, when MySQL or Kafka is unreachable or topics are missing."""
    engine = database.create_db_engine(settings, pool_size=1)
    try:
        database.check_database(engine)
    finally:
        engine.dispose()
    reports = asyncio.run(topics.ensure_topics(settings, tables=True))
    bad = [r for r in reports if r.action == "mismatch"]
    if bad:
        raise KafkaUnavailable("; ".join(f"{r.name} {r.detail}" for r in bad))


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    configure_logging(loglevel)
    preflight(settings)
    worker = build_worker(settings)
    faust.Worker(
        worker.app, loglevel=loglevel, override_logging=False, redirect_stdouts=False, quiet=True
    ).execute_from_commandline()
