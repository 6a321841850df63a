"""The one retry policy of calls to other servers, as a clock-free core.

What may be tried again, and why:

* **A failed dial** sent nothing, so trying elsewhere is always safe, for
  writes too. Within one dial the dialer already tries up to three gateway
  candidates, each with its own connect timeout; a call then moves on to the
  next server it was given, at once, once per server, for ``dial_budget``
  seconds after the first failure (through a black-holed path every server's
  dial costs a timeout: the caller must hear of it in bounded time).
* **A read cut because the path changed under it** (the pool retired the
  connection it was sent on: the route's epoch moved) is asked again along
  the new path, up to ``max_sends`` sends in all, after a doubling backoff.
  Its caller never sees the switch.
* **A call whose connection failed on an unchanged path** (a reset, a
  keepalive that went unanswered) is not sent again, read or write: a write
  may have been applied, and for a read the failure is the news — the gateway
  locator and the replicator judge the path by it, and sending again along
  the same broken path would only hide it for another timeout.
* An answer, even an error, ends the call; so does a call's own timeout (the
  server was reached and is working; asking again would double the load).

Each send gets the call's full timeout.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

__all__ = ["DEFAULT_RETRY", "CallAttempts", "Failure", "RetryPolicy"]


class Failure(enum.Enum):
    DIAL = "dial"
    """No connection: the request was never sent."""
    TRANSPORT = "transport"
    """The connection failed after the request was sent, on the path still in use."""
    PATH_CHANGED = "path-changed"
    """The connection failed after the request was sent, and the path has changed
    since (the pool retired the connection of the old path)."""


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_sends: int = 3
    """Sends of one read at most, across path changes (a write is sent once)."""
    backoff: float = 0.05
    """Seconds before the first resend of a read; doubles with each one."""
    backoff_cap: float = 1.0
    dial_budget: float = 10.0
    """Seconds after a call's first failure beyond which a failed dial is not
    tried on another server."""

    def __post_init__(self) -> None:
        if self.max_sends < 1:
            raise ValueError(f"max_sends must be at least 1, got {self.max_sends}")
        if self.backoff < 0 or self.backoff_cap < self.backoff:
            raise ValueError("backoff must be >= 0 and backoff_cap >= backoff")
        if self.dial_budget < 0:
            raise ValueError(f"dial_budget must not be negative, got {self.dial_budget}")


DEFAULT_RETRY: Final = RetryPolicy()


class CallAttempts:
    """One logical call over a list of servers, from its first failure on (``now``
    at construction): which server to try next, and whether to go on."""

    __slots__ = ("_dial_failures", "_next", "_policy", "_read", "_sends", "_started", "_targets")

    def __init__(self, policy: RetryPolicy, *, read: bool, targets: int, now: float) -> None:
        if targets < 1:
            raise ValueError("a call needs at least one server to try")
        self._policy = policy
        self._read = read
        self._targets = targets
        self._started = now
        self._next = 0
        """Attempts made; the first, at server 0, is the one that failed first."""
        self._dial_failures = 0
        self._sends = 0

    @property
    def target(self) -> int:
        """Index of the server the next attempt goes to."""
        return self._next % self._targets

    def failed(self, failure: Failure, now: float) -> float | None:
        """The attempt at :attr:`target` failed at ``now``: seconds to wait before
        the next attempt (at the new :attr:`target`), or ``None`` to give up."""
        policy = self._policy
        if failure is Failure.DIAL:
            self._next += 1
            self._dial_failures += 1
            if self._dial_failures >= self._targets:
                return None
            return 0.0 if now - self._started < policy.dial_budget else None
        self._sends += 1
        if failure is Failure.TRANSPORT or not self._read or self._sends >= policy.max_sends:
            return None
        # Along the new path the same server is asked again, and each server may
        # be dialled once more; the dial budget starts again with the new path.
        self._dial_failures = 0
        self._started = now
        delay: float = policy.backoff * 2.0 ** (self._sends - 1)
        return min(policy.backoff_cap, delay)
