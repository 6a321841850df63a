"""The one retry policy of calls to other servers, as a clock-free core.

What may be tried again, and why:

* **A failed dial** sent nothing, so trying elsewhere is always safe, for
  writes too. Within one dial the dialer already tries up to three gateway
  candidates, each with its own connect timeout; a call then moves on to the
  next server it was given, once per server, without waiting.
* **A read whose connection failed after it was sent** (a reset, a keepalive
  that went unanswered, a connection retired because the path changed) is
  asked again, on the next server in turn and along the path in use then,
  up to ``max_sends`` sends in all, after a doubling backoff.
* **A write whose connection failed after it was sent** is never silently
  sent again: it may have been applied. The caller sees the transport error.
* An answer, even an error, ends the call; so does a call's own timeout (the
  server was reached and is working; asking again would double the load).

Each send gets the call's full timeout; the budget is the count of sends.
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
    """The connection failed after the request was sent: the outcome is unknown."""


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_sends: int = 3
    """Sends of one read at most (a write is sent once)."""
    backoff: float = 0.05
    """Seconds before the first resend of a read; doubles with each one."""
    backoff_cap: float = 1.0

    def __post_init__(self) -> None:
        if self.max_sends < 1:
            raise ValueError(f"max_sends must be at least 1, got {self.max_sends}")
        if self.backoff < 0 or self.backoff_cap < self.backoff:
            raise ValueError("backoff must be >= 0 and backoff_cap >= backoff")


DEFAULT_RETRY: Final = RetryPolicy()


class CallAttempts:
    """One logical call over a list of servers: which to try, and whether to go on."""

    __slots__ = ("_dial_failures", "_next", "_policy", "_read", "_sends", "_targets")

    def __init__(self, policy: RetryPolicy, *, read: bool, targets: int) -> None:
        if targets < 1:
            raise ValueError("a call needs at least one server to try")
        self._policy = policy
        self._read = read
        self._targets = targets
        self._next = 0
        self._dial_failures = 0
        self._sends = 0

    @property
    def target(self) -> int:
        """Index of the server the next attempt goes to."""
        return self._next % self._targets

    def failed(self, failure: Failure) -> float | None:
        """The attempt at :attr:`target` failed: seconds to wait before the next
        attempt (at the new :attr:`target`), or ``None`` to give up."""
        self._next += 1
        if failure is Failure.DIAL:
            self._dial_failures += 1
            return 0.0 if self._dial_failures < self._targets else None
        self._sends += 1
        if not self._read or self._sends >= self._policy.max_sends:
            return None
        # The servers all answered the dial once; a failed resend dial counts again.
        self._dial_failures = 0
        policy = self._policy
        delay: float = policy.backoff * 2.0 ** (self._sends - 1)
        return min(policy.backoff_cap, delay)
