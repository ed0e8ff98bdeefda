"""The processes a benchmark runs against: ``switchboard ingress``, ``switchboard worker``
and the baseline server, each with the run's settings in its environment.

The ingress and the worker are started with ``testbed/services.py``, the same harness
the end-to-end tests use; the baseline server is a Python module, so it gets a small
subclass that starts ``python -m bench.baseline_server`` instead of the console script.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.settings import Settings
from testbed import services
from testbed.services import SWITCHBOARD, Service, settings_env

REPO = Path(__file__).resolve().parent.parent
__all__ = ["SWITCHBOARD", "Pinned", "export_revision"]


class Pinned:
    """A server process pinned to one core (``taskset``), with the run's settings in its
    environment, started and stopped by ``with``; ``tree`` runs it from an exported
    revision (PYTHONPATH and working directory) instead of this checkout."""

    def __init__(
        self,
        cmd: list[str],
        settings: Settings,
        log_path: Path,
        ready_path: str,
        *,
        cpu: int,
        tree: Path | None = None,
    ) -> None:
        self.cmd = ["taskset", "-c", str(cpu), *cmd]
        self.settings = settings
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{settings.ingress_port}{ready_path}"
        self.tree = tree
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def __enter__(self) -> Pinned:
        env = settings_env(self.settings)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd, env=env, stdout=log, stderr=log, cwd=self.tree or REPO,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.url} not ready after 60 s: {self.log_path.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def cpu_seconds(self) -> float | None:
        return None if self.proc is None else group_cpu_seconds(self.proc.pid)


def export_revision(rev: str, directory: Path) -> Path:
    """The code of git revision ``rev`` (``git archive``) in ``directory``: "before" runs
    with the same interpreter and packages as "after", only the code differs."""
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def ingress(settings: Settings, log_dir: Path, processes: int = 1) -> Service:
    url = f"http://{settings.ingress_host}:{settings.ingress_port}/readyz"
    args = ["ingress"]  # default log level (info): one JSON line per accepted webhook
    if processes > 1:
        args += ["--processes", str(processes)]
    return Service(f"ingress-{processes}p", args, settings, url, log_dir)


def worker(settings: Settings, log_dir: Path) -> Service:
    return services.worker(settings, log_dir)


class BaselineServer(Service):
    """``python -m bench.baseline_server --port N``, started and stopped like a Service."""

    def __init__(self, settings: Settings, port: int, log_dir: Path) -> None:
        super().__init__("baseline", [], settings, f"http://127.0.0.1:{port}/healthz", log_dir)
        self.port = port

    def start(self, timeout_s: float = 30.0) -> BaselineServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline_server", "--port", str(self.port)],
            env=settings_env(self.settings), stdout=log, stderr=log, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baseline exited with {self.proc.returncode}:\n{self.tail()}")
            if self._answers():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"baseline not ready after {timeout_s}s:\n{self.tail()}")


def wait_all_ready(url: str, *, in_a_row: int = 10, timeout_s: float = 30.0) -> None:
    """``in_a_row`` fresh connections answered 200: with SO_REUSEPORT each new connection
    may reach another process, so this is how to know that all of them are up."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < in_a_row:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not steadily ready after {timeout_s}s")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                streak = streak + 1 if response.status == 200 else 0
        except (urllib.error.URLError, OSError):
            streak = 0
            time.sleep(0.2)


def group_cpu_seconds(leader_pid: int) -> float | None:
    """User+system CPU seconds of every live process in ``leader_pid``'s process group (a
    Service starts its process in a new session, so the group is the server and any
    processes it spawned: both ingress processes of ``--processes 2``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    found = False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == leader_pid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime + stime
            found = True
    return total / ticks if found else None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """How busy all cores were between two ``machine_ticks()`` readings, in %."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return 100 * (after[0] - before[0]) / (after[1] - before[1])
