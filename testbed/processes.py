"""Real ``switchboard worker`` processes for integration tests.

``running_worker(settings, ...)`` starts a worker subprocess with the test's own settings
(database, topic prefix, consumer group, port, data dir, tokens) in its environment, waits
until its ``/readyz`` answers 200 (tables recovered, no rebalance in progress),
yields a :class:`WorkerProcess`, and stops it at the end: SIGTERM, then SIGKILL. Its log
goes to a file; when the body of the ``with`` raises, or the worker never gets ready, the
log's tail is printed, so a failing test shows what the worker said.

Faust reads a few ``BROKER_*`` environment variables itself; the tests shorten the
consumer-group session timeout with them so that a worker killed with SIGKILL is noticed
in seconds rather than Faust's default minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.dashboard.analyst_api import default_token
from pipeline.settings import Settings
from testbed.services import SWITCHBOARD, free_port, settings_env

TOKEN_FALLBACK = "test-analyst-token"
# Faust's own settings, read from the environment (faust.types.settings): a dead member is
# dropped from the group after 10 s instead of 60 s.
FAST_GROUP_ENV = {
    "BROKER_SESSION_TIMEOUT": "10",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_REBALANCE_TIMEOUT": "20",
}


def worker_env(settings: Settings, *, port: int, data_dir: Path, group: str) -> dict[str, str]:
    """The environment that makes ``switchboard worker`` load ``settings``."""
    scoped = settings.with_(
        worker_host="127.0.0.1",
        worker_port=port,
        data_dir=data_dir,
        consumer_group=group,
        worker_batch_within_s=0.05,
    )
    env = settings_env(scoped)
    env.update(FAST_GROUP_ENV)
    env["SWITCHBOARD_ANALYST_TOKENS"] = env["SWITCHBOARD_ANALYST_TOKENS"] or TOKEN_FALLBACK
    env["RETELL_API_KEY"] = env["RETELL_API_KEY"] or "test-retell-key"
    env["CALCOM_WEBHOOK_SECRET"] = env["CALCOM_WEBHOOK_SECRET"] or "test-calcom-secret"
    return env


@dataclass
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def http_get(
    url: str, token: str | None = None, timeout: float = 10.0, headers: dict[str, str] | None = None
) -> Answer:
    """GET ``url``; any HTTP status is an Answer (errors included), never an exception."""
    request = urllib.request.Request(url, headers=headers or {})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return Answer(exc.code, body if isinstance(body, dict) else {"raw": body})


class WorkerProcess:
    """One ``switchboard worker`` subprocess."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int,
        data_dir: Path,
        group: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.port = port
        self.data_dir = data_dir
        self.group = group
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})  # e.g. fault injection (tests/faults)
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = default_token(settings) or TOKEN_FALLBACK

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [SWITCHBOARD, "worker"],
                env={
                    **worker_env(
                        self.settings, port=self.port, data_dir=self.data_dir, group=self.group
                    ),
                    **self.extra_env,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def get(self, path: str, *, token: str | None = "default", timeout: float = 10.0) -> Answer:
        chosen = self.token if token == "default" else token
        return http_get(self.url + path, chosen, timeout)

    def summary(self, company_id: int) -> Answer:
        return self.get(f"/api/v1/companies/{company_id}/summary")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until ``/readyz`` answers 200: tables recovered, no rebalance in progress."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = self.get("/readyz", token=None)
            except (OSError, urllib.error.URLError) as exc:
                last = f"{exc.__class__.__name__}: {exc}"
            else:
                if answer.status == 200:
                    return
                last = f"{answer.status} {answer.body.get('status')}"
            time.sleep(0.3)
        raise AssertionError(
            f"worker on port {self.port} not ready after {timeout:.0f}s ({last})\n{self.tail()}"
        )

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"worker on port {self.port} exited with {self.proc.returncode}\n{self.tail()}"
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this worker only (by its pid) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.log_path} (last {lines} lines)\n" + "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_worker(
    settings: Settings,
    tmp_dir: Path,
    *,
    port: int | None = None,
    group: str | None = None,
    data_dir: Path | None = None,
    name: str = "worker",
    ready_timeout: float = 90.0,
) -> Iterator[WorkerProcess]:
    """A started, ready worker; stopped (SIGTERM, then SIGKILL) when the block ends."""
    port = port or free_port()
    worker = WorkerProcess(
        settings,
        port=port,
        data_dir=data_dir or tmp_dir / f"{name}-data",
        group=group or settings.consumer_group,
        log_path=tmp_dir / f"{name}.log",
    )
    worker.start()
    try:
        worker.wait_ready(ready_timeout)
        yield worker
    except BaseException:
        print(worker.tail(), file=sys.stderr)
        raise
    finally:
        worker.stop()


def eventually(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.3, what: str = ""
) -> Any:
    """Call ``check`` until it returns without AssertionError; re-raise the last one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as exc:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{what or 'condition'} not met after {timeout}s: {exc}"
                ) from exc
        time.sleep(interval)
