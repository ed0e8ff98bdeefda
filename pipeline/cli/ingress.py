"""``switchboard ingress``: serve the webhook ingress, in one process or several.

One process is one event loop, so one core. ``--processes N`` starts N processes that each
bind the same port with ``SO_REUSEPORT``; the kernel spreads connections across them. Each
has its own Kafka producer and routing cache. They are started with ``spawn`` (a fresh
interpreter: no inherited event loop, sockets or threads), and their Prometheus metrics are
kept in a shared directory so ``/metrics`` on any of them reports the whole ingress.

Shutdown on SIGTERM or SIGINT: stop accepting, let in-flight requests finish (bounded by
``--shutdown-timeout``), flush background ``call_inbound`` records, then flush and close the
producer. The supervisor forwards the signal to its processes and waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import click

from pipeline.cli import cli, settings_from
from pipeline.errors import SwitchboardError
from pipeline.logs import configure_logging
from pipeline.settings import Settings

log = logging.getLogger("pipeline.ingress.app.main")

#: A process that dies this soon after its start failed to start (bad port, bad config):
#: restarting it would only loop, so the whole ingress stops with an error instead.
STARTUP_GRACE_S = 5.0


@cli.command()
@click.option("--host", default=None, help="Bind address (default SWITCHBOARD_INGRESS_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Bind port (default SWITCHBOARD_INGRESS_PORT).")  # fmt: skip
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True, help="Processes sharing the port (SO_REUSEPORT).")  # fmt: skip
@click.option("--shutdown-timeout", type=click.FloatRange(0, 600), default=15.0, show_default=True, help="Seconds to let in-flight requests finish on SIGTERM.")  # fmt: skip
@click.option("--loglevel", default="info", show_default=True)
@click.pass_context
def ingress(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    processes: int,
    shutdown_timeout: float,
    loglevel: str,
) -> None:
    """Run the webhook ingress (aiohttp): verify, write to Kafka, answer."""
    settings = settings_from(ctx)
    host = host or settings.ingress_host
    port = settings.ingress_port if port is None else port
    if processes > 1 and port == 0:
        raise click.BadParameter("--processes > 1 needs a fixed port", param_hint="--port")
    try:
        configure_logging(loglevel)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--loglevel") from exc
    if processes == 1:
        serve(settings, host, port, reuse_port=False, shutdown_timeout=shutdown_timeout)
        return
    code = supervise(settings, host, port, processes, shutdown_timeout, loglevel)
    if code:
        raise SwitchboardError("an ingress process failed to start; see the log")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    reuse_port: bool,
    shutdown_timeout: float,
    watch_parent: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (or the supervisor dies), then shut down gracefully."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, host, port, reuse_port, shutdown_timeout, watch_parent))


async def _serve(
    settings: Settings,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout: float,
    watch_parent: bool,
) -> None:
    from aiohttp import web

    from pipeline import protocol
    from pipeline.ingress import heap
    from pipeline.ingress.app import METRICS, cap_connections, create_app, drain, runner_options

    # Our own handlers (not aiohttp's), installed first: a SIGTERM while the app is still
    # starting (the producer connecting, the spool opening) is a graceful stop too, and a
    # second signal must not abort a graceful shutdown.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, **runner_options(settings)
    )
    await runner.setup()
    assert runner.server is not None
    cap_connections(runner.server, settings.ingress_max_connections, app[METRICS])
    metrics = app[METRICS]
    protocol.answer_in_json(
        runner.server, lambda code: metrics.child(metrics.rejections, "none", code).inc()
    )
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=1024)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SwitchboardError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    heap.settle()  # after the start-up: its objects are never walked again (heap.py)
    watcher = asyncio.create_task(_watch_parent(stop)) if watch_parent else None
    log.info(
        "ingress listening on %s:%d", host, port,
        extra={"pid": os.getpid(), "loop": type(loop).__module__},
    )  # fmt: skip
    await stop.wait()
    log.info("ingress shutting down", extra={"pid": os.getpid()})
    if watcher is not None:
        watcher.cancel()
    started = time.monotonic()
    await drain(runner, shutdown_timeout)  # stop accepting; in-flight requests finish
    await runner.cleanup()  # close connections; cleanup_ctx: background records, producer
    log.info("ingress stopped", extra={"pid": os.getpid(), "shutdown_s": round(time.monotonic() - started, 3)})  # fmt: skip


async def _watch_parent(stop: asyncio.Event) -> None:
    """Shut down if the supervisor disappears (e.g. SIGKILL), rather than linger orphaned."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - no event fires when a parent dies
        await asyncio.sleep(1.0)
    log.warning("ingress supervisor is gone; shutting down")
    stop.set()


def _child_main(
    settings: Settings, host: str, port: int, shutdown_timeout: float, loglevel: str
) -> None:
    """Entry point of one spawned ingress process."""
    configure_logging(loglevel)
    try:
        serve(
            settings, host, port, reuse_port=True, shutdown_timeout=shutdown_timeout,
            watch_parent=True,
        )  # fmt: skip
    except SwitchboardError as exc:
        log.error("ingress process failed: %s", exc)
        raise SystemExit(1) from None


def supervise(
    settings: Settings,
    host: str,
    port: int,
    processes: int,
    shutdown_timeout: float,
    loglevel: str,
) -> int:
    """Run ``processes`` ingress processes on one port; restart any that crash later on.

    Returns the exit code: 0 after a signalled shutdown, 1 when a process failed at start.
    """
    from prometheus_client import multiprocess

    metrics_dir, owns_dir = _metrics_dir()
    args = (settings, host, port, shutdown_timeout, loglevel)
    group = _Processes(args, metrics_dir, multiprocess.mark_process_dead)
    signal.signal(signal.SIGTERM, group.stop_all)
    signal.signal(signal.SIGINT, group.stop_all)
    for slot in range(processes):
        group.start(slot)
    log.info("ingress supervisor started %d processes on %s:%d", processes, host, port)
    try:
        group.watch()
        group.join_all(shutdown_timeout + 15.0)
    finally:
        if owns_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if group.failed else 0


def _metrics_dir() -> tuple[str, bool]:
    """The directory the processes share their metrics through, and whether this supervisor
    made it (and so removes it). Set in the environment before any process is spawned, so
    every process inherits it; a given directory is emptied of a previous run's values."""
    from pipeline.ingress.metrics import MULTIPROC_ENV

    metrics_dir = os.environ.get(MULTIPROC_ENV)
    owns_dir = not metrics_dir
    if not metrics_dir:
        metrics_dir = tempfile.mkdtemp(prefix="switchboard-ingress-metrics-")
    else:
        for name in os.listdir(metrics_dir):  # stale values from a previous run
            if name.endswith(".db"):
                os.unlink(os.path.join(metrics_dir, name))
    os.environ[MULTIPROC_ENV] = metrics_dir
    return metrics_dir, owns_dir


class _Processes:
    """The supervisor's ingress processes by slot, each with its start time: a process that
    dies within ``STARTUP_GRACE_S`` failed to start, one that dies later is restarted in its
    slot. ``stop_all`` is the supervisor's SIGTERM/SIGINT handler, so it only sets a flag
    and forwards the signal; ``watch`` returns once that flag is set."""

    def __init__(
        self, args: tuple[Any, ...], metrics_dir: str, mark_dead: Callable[[int | None, str], None]
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._args = args
        self._metrics_dir = metrics_dir
        self._mark_dead = mark_dead
        self._children: dict[int, tuple[BaseProcess, float]] = {}
        self.stopping = False
        self.failed = False

    def start(self, slot: int) -> None:
        proc = self._context.Process(target=_child_main, args=self._args, name=f"ingress-{slot}")
        proc.start()
        self._children[slot] = (proc, time.monotonic())

    def stop_all(self, *_: Any) -> None:
        self.stopping = True
        for proc, _started in self._children.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def watch(self) -> None:
        """Until a signal or a failed start: wake when a process exits (or every second)."""
        while not self.stopping:
            sentinels = [proc.sentinel for proc, _ in self._children.values()]
            multiprocessing.connection.wait(sentinels, timeout=1.0)
            self._reap()

    def _reap(self) -> None:
        """Restart the processes that died after their start; stop them all when one died
        at its start (restarting it would only loop). A dead process's live gauges are
        dropped from the shared metrics directory first, so /metrics stops counting it."""
        for slot, (proc, started) in list(self._children.items()):
            if proc.is_alive() or self.stopping:
                continue
            proc.join()
            self._mark_dead(proc.pid, self._metrics_dir)
            if time.monotonic() - started < STARTUP_GRACE_S:
                log.error("ingress process %d failed at start (exit %s)", slot, proc.exitcode)
                self.failed = True
                self.stop_all()
                return
            log.warning("ingress process %d exited (%s); restarting", slot, proc.exitcode)
            self.start(slot)

    def join_all(self, timeout_s: float) -> None:
        """Wait for every process to finish its graceful shutdown, all within ``timeout_s``;
        kill one that is still running then."""
        deadline = time.monotonic() + timeout_s
        for proc, _started in self._children.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("ingress process %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join()
