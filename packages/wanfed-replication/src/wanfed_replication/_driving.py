"""The one loop every adapter runs: carry out the core's actions, re-arm one timer.

The cores decide and never wait; this is where waiting happens. Each pass
carries out the oldest pending action (an adapter's ``carry_out`` feeds the
answer back to its core, which may queue more), and when nothing is pending
sleeps until the core's next deadline — or until ``wake`` is set by a caller
that fed the core from outside the loop and queued what it returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["Timed", "drive"]

A = TypeVar("A")


class Timed(Protocol[A]):
    """The timer half of a core's seam."""

    def next_deadline(self) -> float | None: ...

    def handle_timer(self, now: float) -> list[A]: ...


async def drive(
    core: Timed[A],
    pending: deque[A],
    carry_out: Callable[[A], Awaitable[None]],
    *,
    clock: Callable[[], float],
    done: Callable[[], bool] = lambda: False,
    wake: asyncio.Event | None = None,
) -> None:
    """Carry out the core's timers until ``done()``, and then whatever is still pending.

    What a core returned is carried out even once ``done()`` holds: the last
    answer of a round may bring its outcome report with it.
    """
    wake = wake if wake is not None else asyncio.Event()
    while pending or not done():
        if pending:
            await carry_out(pending.popleft())
            continue
        deadline = core.next_deadline()
        now = clock()
        if deadline is not None and deadline <= now:
            pending.extend(core.handle_timer(now))
            continue
        wake.clear()  # nothing pending: only the timer or an outside feed wakes us
        timeout = None if deadline is None else deadline - now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()
