"""What the operations commands share: argument errors, ``--json``, safe printing, progress.

* Results go to stdout, progress to stderr, so ``--json`` output pipes into ``jq`` while
  the progress lines stay on the terminal.
* Everything printed goes through :func:`pipeline.ops.present.neutralise`: bodies, rows and
  headers are written by strangers, and a terminal must not obey their escape sequences.
* :class:`Progress` prints at most one line every two seconds with the count done, the
  total when it is known, the rate and the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from pipeline.ops import BadArguments, present

UNMASKED_HELP = "Show phone numbers in full (authorized operators only)."


@contextmanager
def usage() -> Iterator[None]:
    """Bad arguments fail like click's own: exit 2 and one ``Error:`` line."""
    try:
        yield
    except BadArguments as exc:
        raise click.UsageError(str(exc)) from exc


def emit(text: str = "") -> None:
    """One result line (or block) on stdout, control characters neutralised."""
    click.echo(present.neutralise(text))


def emit_json(value: Any) -> None:
    click.echo(present.json_text(value))


def json_option(func: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as one JSON document."
    )(func)


def unmasked_option(func: Any) -> Any:
    return click.option("--unmasked", is_flag=True, help=UNMASKED_HELP)(func)


def duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``2h05m``: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``label: 12,000/500,000 (2.4%), 1,830/s, about 4m27s left, <detail>`` on stderr.

    ``plan(total)`` gives the size of the work when it is known (a replay knows the
    offsets of its stretch, a redrive the dead letters it took, reconcile its companies);
    ``update(done, detail)`` prints at most once every ``every_s``. The total of a replay
    counts offsets, which can exceed the records (transaction markers), so it is an upper
    bound and the time left an estimate.
    """

    def __init__(
        self,
        label: str,
        *,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.label = label
        self.every_s = every_s
        self.clock = clock
        self.echo = echo or (lambda line: click.echo(line, err=True))
        self.started = clock()
        self.last = self.started
        self.total: int | None = None

    def plan(self, total: int) -> None:
        self.total = total
        self.started = self.last = self.clock()

    def line(self, done: int, detail: str = "") -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        parts = [f"{done:,}"]
        if self.total:
            parts = [f"{done:,}/{self.total:,} ({min(100.0, 100.0 * done / self.total):.1f}%)"]
        parts.append(f"{rate:,.0f}/s")
        if self.total and rate > 0 and done < self.total:
            parts.append(f"about {duration((self.total - done) / rate)} left")
        text = f"{self.label}: " + ", ".join(parts)
        return f"{text}; {detail}" if detail else text

    def update(self, done: int, detail: str = "") -> None:
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        self.echo(present.neutralise(self.line(done, detail)))
