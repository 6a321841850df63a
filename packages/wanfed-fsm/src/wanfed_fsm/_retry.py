"""The retry loop that long-running leader and server routines share.

A routine over the state (the gateway locator's refresh, federation-state
anti-entropy) runs its body again and again: normally a blocking query that
returns when something changed. Two things keep it from hurting the cluster
when the body fails fast or returns fast: a token bucket (default 0.2 runs/s,
bursts of 5) and an exponential backoff after errors (2, 4, ... 256 s),
reset by the next success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["LEADER_LOOP_BACKOFF_CAP", "RetryPolicy", "TokenBucket", "retry_loop"]

LEADER_LOOP_BACKOFF_CAP: Final = 256.0

log = logging.getLogger("wanfed.retry")


class TokenBucket:
    """A token bucket whose clock is a parameter: ``reserve(now)`` says how long to wait."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (0 when available)."""
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate


class RetryPolicy:
    """Rate limit and error backoff of a :func:`retry_loop`; defaults as Consul's leader loops."""

    def __init__(
        self,
        *,
        rate: float = 0.2,
        burst: int = 5,
        backoff_base: float = 2.0,
        backoff_cap: float = LEADER_LOOP_BACKOFF_CAP,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    def backoff(self, failures: int) -> float:
        """Wait after the ``failures``-th consecutive error: base**failures, capped."""
        return float(min(self.backoff_cap, self.backoff_base**failures))


async def retry_loop(
    name: str,
    body: Callable[[], Awaitable[None]],
    *,
    policy: RetryPolicy | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``body`` until cancelled, rate limited, backing off after errors.

    Cancel the task to stop the loop; an error inside ``body`` never ends it.
    """
    policy = policy or RetryPolicy()
    bucket = TokenBucket(policy.rate, policy.burst, clock())
    failures = 0
    while True:
        delay = bucket.reserve(clock())
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            wait = policy.backoff(failures)
            if on_error is not None:
                on_error(exc)
            else:
                log.warning(
                    "%s failed; retrying in %.0f s: %s",
                    name,
                    wait,
                    exc,
                    extra={"routine": name, "failures": failures, "retry_in": wait},
                )
            await asyncio.sleep(wait)
        else:
            failures = 0
