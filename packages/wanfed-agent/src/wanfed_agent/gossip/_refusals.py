"""Counting and logging gossip input we refuse.

Anyone who can reach the gossip port can send bytes that do not decode, are not
sealed with our key, or break a limit. Each refusal is counted, so an operator
(and a test) can see that input arrived and was thrown away rather than
guessing from silence, and logged at most once per :data:`LOG_INTERVAL` per
kind of input with the number of refusals the line stands for: a flood of
forged packets must not become a flood of log lines. Time is a parameter, as
everywhere in the core.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

import msgspec

from ._events import HostPort

__all__ = ["LOG_INTERVAL", "RefusalCounts", "Refusals"]

logger = logging.getLogger("wanfed_agent.gossip")

LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines about refused input of one kind."""

Kind = Literal["packet", "stream"]

_NEXT_STEP: Final = {
    "packet": "dropped; the member keeps running",
    "stream": "answered with an error and closed; the member keeps running",
}


class RefusalCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many packets and incoming streams were refused since the member started."""

    packets: int = 0
    streams: int = 0


class Refusals:
    """The counters plus a rate-limited log line per kind."""

    __slots__ = ("_logged_at", "_suppressed", "counts")

    def __init__(self) -> None:
        self.counts = RefusalCounts()
        self._logged_at: dict[Kind, float] = {}
        self._suppressed: dict[Kind, int] = {"packet": 0, "stream": 0}

    def refuse(self, kind: Kind, source: HostPort, error: Exception, now: float) -> None:
        if kind == "packet":
            self.counts = msgspec.structs.replace(self.counts, packets=self.counts.packets + 1)
        else:
            self.counts = msgspec.structs.replace(self.counts, streams=self.counts.streams + 1)
        last = self._logged_at.get(kind)
        if last is not None and now - last < LOG_INTERVAL:
            self._suppressed[kind] += 1
            return
        suppressed, self._suppressed[kind] = self._suppressed[kind], 0
        self._logged_at[kind] = now
        more = f" refused_since_last_line={suppressed}" if suppressed else ""
        logger.warning(
            "refusing gossip %s from=%s:%d error=%s; %s%s",
            kind,
            source[0],
            source[1],
            error,
            _NEXT_STEP[kind],
            more,
        )
