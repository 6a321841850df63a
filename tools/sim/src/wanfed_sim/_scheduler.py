"""The seeded scheduler: the simulation's only clock and only source of randomness.

Everything that happens in a simulated world is a callback on one event queue,
ordered by virtual time and then by insertion order, so a run is a pure
function of its seed. Cores that want randomness get their own
``random.Random`` seeded from this one (:meth:`Scheduler.child_rng`), drawn in
a deterministic order. Nothing here reads the machine's clock.

The scheduler also keeps the *trace*: a bounded list of short lines, stamped
with virtual time, that a failing run prints with its seed.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable

__all__ = ["Scheduler"]

TRACE_LINES = 400
"""Lines of trace kept: enough to see the faults and decisions before a violation."""


class Scheduler:
    """A virtual clock, an event queue and one seeded ``random.Random``."""

    def __init__(self, seed: int, *, trace_lines: int | None = TRACE_LINES) -> None:
        """``trace_lines=None`` keeps the whole trace."""
        self.seed = seed
        self.now = 0.0
        self.rng = random.Random(seed)
        self.events_run = 0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = itertools.count()
        self.trace: deque[str] = deque(maxlen=trace_lines)
        self._digest = hashlib.sha256()
        self.notes = 0

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``when`` (never before now)."""
        heapq.heappush(self._queue, (max(when, self.now), next(self._tick), action))

    def after(self, delay: float, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    def child_rng(self) -> random.Random:
        """A generator for one core, seeded from the scheduler's (replays with the seed)."""
        return random.Random(self.rng.getrandbits(64))

    def note(self, text: str) -> None:
        """One line of the trace."""
        line = f"{self.now:9.3f} {text}"
        self.trace.append(line)
        self._digest.update(line.encode())
        self.notes += 1

    def digest(self) -> str:
        """A fingerprint of the whole trace so far: equal runs have equal digests."""
        return self._digest.hexdigest()

    def run_until(self, end: float) -> None:
        """Run every event due up to ``end``; the clock then reads ``end``."""
        queue = self._queue
        while queue and queue[0][0] <= end:
            when, _, action = heapq.heappop(queue)
            self.now = when
            self.events_run += 1
            action()
        self.now = max(self.now, end)
