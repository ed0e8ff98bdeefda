"""Publish slots: admission control's counter (docs/ingress.md, "Admission control").

``asyncio.Semaphore`` costs a few coroutine frames and a generator per ``async with``
(``locked()`` scans its waiters, ``acquire`` and ``release`` are coroutines), about 2.5 µs a
record on this machine. Here taking a free slot is a plain decrement, and only a request
that finds none free waits, first come first served, with the slot handed straight from the
request that gives it back to the oldest one waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Slots:
    """At most ``size`` holders at once. Invariant: a request waits only while none is
    free (a slot given back goes to a live waiter before it counts as free)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def try_take(self) -> bool:
        """Take a free slot now, if there is one (no waiting, no coroutine)."""
        if self.free > 0:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot; the caller bounds the wait (``asyncio.timeout``). A wait that is
        cancelled holds no slot, even when one was handed to it at that very moment."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot as the wait ended: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Give a slot back: to the oldest live waiter if any, else to the free count."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
