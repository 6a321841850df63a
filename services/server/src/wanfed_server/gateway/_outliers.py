"""Passive outlier detection: upstreams that fail slowly are set aside for a while.

A connect that is refused costs nothing, so such an upstream is simply tried
again by the next client. A connect that *times out* (or ends in "no route to
host" after the kernel's ARP retries) costs every client the whole connect
timeout, and usually means the address is gone: a gateway replaced with new
addresses while a datacenter's replicated states still name the old ones.
Each client would then pay that price once per candidate, and a secondary's
replication — the thing that learns the new addresses — spends three rounds
of it before its leader goes to the primary's gateways directly.

So an upstream whose connect timed out, or failed after at least
:data:`SLOW_FAILURE` seconds, or was still pending that long when the client
gave up, is *ejected* for the configured time: new connections skip it, and
when every candidate of a route is ejected the client is closed at once, as
a refused connect would be. A successful connect to an upstream clears it.
Sans-I/O: the caller passes the time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from ._routes import Upstream

__all__ = ["SLOW_FAILURE", "UpstreamHealth"]

SLOW_FAILURE: Final = 1.0
"""Seconds after which a failed connect counts as expensive (a black hole)."""


class UpstreamHealth:
    """Which upstreams recently failed slowly, and the order to try candidates in."""

    def __init__(self, ejection: float) -> None:
        if ejection < 0:
            raise ValueError("upstream ejection must not be negative")
        self.ejection = ejection
        self._ejected_until: dict[Upstream, float] = {}

    def candidates(self, upstreams: Sequence[Upstream], limit: int, now: float) -> list[Upstream]:
        """Up to ``limit`` upstreams to dial in order (random among equals); the
        ejected ones are left out, so an empty list means: refuse now."""
        ejected = self._ejected_until
        if ejected:
            usable = [u for u in upstreams if ejected.get(u, 0.0) <= now]
        else:
            usable = list(upstreams)
        if len(usable) > 1:
            random.shuffle(usable)
        return usable[:limit]

    def connect_failed(self, upstream: Upstream, now: float, *, slow: bool) -> bool:
        """Record a failed connect; True when it ejected ``upstream`` (slow ones only)."""
        if not slow or self.ejection == 0:
            return False
        self._ejected_until[upstream] = now + self.ejection
        return True

    def connected(self, upstream: Upstream) -> None:
        if self._ejected_until:
            self._ejected_until.pop(upstream, None)

    def ejected(self, now: float) -> list[Upstream]:
        """Currently ejected upstreams (expired entries are forgotten)."""
        for upstream, until in list(self._ejected_until.items()):
            if until <= now:
                del self._ejected_until[upstream]
        return sorted(self._ejected_until)
