"""Lifeguard's two local-health mechanisms: suspicion timers and awareness.

A suspicion starts at a long timeout and shrinks, logarithmically, as other
members independently confirm it: with ``k`` expected confirmations the timeout
goes from ``max`` down to ``min``. One slow prober alone therefore needs the
full ``max`` to kill a member, while a member that everybody finds silent dies
after ``min``.

Awareness is a local health score (0 … max-1): missed nacks and having to
refute rumours about ourselves raise it, successful probes lower it; probe
intervals and timeouts are multiplied by ``score + 1`` so that a member whose
own event loop or network is struggling stops accusing healthy peers.
"""

from __future__ import annotations

import math

__all__ = ["Awareness", "Suspicion", "suspicion_timeout"]


def suspicion_timeout(suspicion_mult: int, members: int, probe_interval: float) -> float:
    """The minimum suspicion time for a pool of ``members``, in seconds."""
    node_scale = max(1.0, math.log10(max(1.0, float(members))))
    return suspicion_mult * node_scale * probe_interval


class Suspicion:
    """One suspected member's timer; time is passed in, never read."""

    __slots__ = ("_confirmations", "deadline", "k", "max", "min", "n", "start")

    def __init__(self, *, accuser: str, k: int, minimum: float, maximum: float, now: float) -> None:
        self.k = k
        self.n = 0
        self.min = minimum
        self.max = maximum
        self.start = now
        self._confirmations = {accuser}
        self.deadline = now + (maximum if k >= 1 else minimum)

    def confirm(self, accuser: str) -> bool:
        """Count an independent accusation; True if it was new (and so worth relaying)."""
        if self.n >= self.k or accuser in self._confirmations:
            return False
        self._confirmations.add(accuser)
        self.n += 1
        frac = math.log(self.n + 1.0) / math.log(self.k + 1.0)
        timeout = max(
            self.min, math.floor(1000.0 * (self.max - frac * (self.max - self.min))) / 1000.0
        )
        # A deadline already behind ``now`` simply fires at the next timer call.
        self.deadline = min(self.deadline, self.start + timeout)
        return True


class Awareness:
    """The local health score that scales our own timeouts."""

    __slots__ = ("max", "score")

    def __init__(self, maximum: int) -> None:
        self.max = maximum
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
