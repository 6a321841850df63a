"""Keepalive of one pooled connection: a clock-free decision core.

A path may die silently (a gateway instance gone, a black-holed link): no
reset arrives, and calls in flight would wait out their whole deadline (a
long-poll's is minutes) with nothing reaching the gateway locator. So the
pool watches each connection's received byte count. Silent for
``interval`` seconds, the connection is pinged (``Status.Ping``; any
answer, even an error, is proof of life), again every ``interval`` while
the silence lasts; silent for ``dead_after`` seconds, it is declared dead:
the pool aborts it and every call in flight fails at once with a transport
error. The defaults: a ping after 5 s of silence, dead after 20 s. yamux
pings every 30 s and gives a ping 10 s; a silence bound of 20 s from the
last byte is in that range while keeping what a black-holed path costs the
federation in check: three failed replication rounds send a secondary's
leader to the primary's gateways directly, and the first of them is this
verdict on the long-poll in flight, so a silent WAN fault is left in well
under 45 s (the bound the integration scenario holds it to).

:class:`Keepalive` takes the byte count and ``now`` and returns what to do
and when to look again; the asyncio side only sleeps and carries it out.
"""

from __future__ import annotations

import enum
import math
from typing import Final

import msgspec

__all__ = [
    "DEFAULT_KEEPALIVE",
    "Keepalive",
    "KeepaliveAction",
    "KeepaliveSettings",
]


class KeepaliveSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds of silence before a ping, and before the connection counts as dead."""

    interval: float = 5.0
    dead_after: float = 20.0

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"keepalive interval must be positive, got {self.interval!r}")
        if not self.dead_after > self.interval:
            raise ValueError(
                f"keepalive dead_after ({self.dead_after!r}) must exceed its interval "
                f"({self.interval!r}): a ping needs time to be answered"
            )


DEFAULT_KEEPALIVE: Final = KeepaliveSettings()


class KeepaliveAction(enum.Enum):
    WAIT = "wait"
    """Nothing to do before the returned time."""
    PING = "ping"
    """Send a ping now (its answer is bytes received)."""
    DEAD = "dead"
    """Silent for ``dead_after``: abort the connection, failing its calls."""


class Keepalive:
    """The keepalive decision for one connection; time is a parameter."""

    __slots__ = ("_heard_at", "_pinged_at", "_received", "_settings")

    def __init__(self, settings: KeepaliveSettings, now: float, received: int = 0) -> None:
        self._settings = settings
        self._heard_at = now
        self._received = received
        self._pinged_at: float | None = None

    @property
    def silence_started(self) -> float:
        """When the peer last sent a byte (or the watch began)."""
        return self._heard_at

    def poll(self, received: int, now: float) -> tuple[KeepaliveAction, float]:
        """``received`` is the connection's byte count so far; returns the action
        and when to poll again (``inf`` after :attr:`KeepaliveAction.DEAD`)."""
        settings = self._settings
        if received != self._received:
            self._received = received
            self._heard_at = now
            self._pinged_at = None
        dead_at = self._heard_at + settings.dead_after
        if now >= dead_at:
            return KeepaliveAction.DEAD, math.inf
        ping_at = (
            self._heard_at + settings.interval
            if self._pinged_at is None
            else self._pinged_at + settings.interval
        )
        if now >= ping_at:
            self._pinged_at = now
            return KeepaliveAction.PING, min(now + settings.interval, dead_at)
        return KeepaliveAction.WAIT, min(ping_at, dead_at)
