"""Connection caps and rate-limited refusal logs, shared by every listener.

A listening port that admits any number of connections is one idle client
away from running out of file descriptors, after which it cannot even accept
the connection that would have fixed things. So every listener (the RPC port,
the HTTP API, the mesh gateway) counts open connections per client address
and in total, and refuses one more than either cap allows: the accepted
socket is closed at once, before any byte is read.

Both pieces are plain objects without I/O or clocks: :class:`ConnectionLimiter`
is told about admissions and releases, :class:`RateLimitedLog` is given the
current time. A refusal can repeat thousands of times a second under attack,
so it is logged at most once per interval, with the number folded in since
the previous line, instead of once per connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

__all__ = ["REFUSAL_LOG_INTERVAL", "ConnectionLimiter", "RateLimitedLog", "Refusal"]

REFUSAL_LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines about refused connections of one kind."""


class Refusal(StrEnum):
    """Which cap a refused connection hit."""

    PER_CLIENT = "per_client_limit"
    TOTAL = "total_limit"


class ConnectionLimiter:
    """Open connections per client address and in total, each under a cap.

    ``admit`` either counts the connection (the caller must ``release`` it
    exactly once when it closes) or returns why it was refused and counts the
    refusal. A cap of 0 means "no cap" for that dimension.
    """

    __slots__ = ("_open", "_per_client", "_total", "open_total", "refused")

    def __init__(self, *, per_client: int, total: int) -> None:
        if per_client < 0 or total < 0:
            raise ValueError("connection caps must not be negative (0 means no cap)")
        self._per_client = per_client
        self._total = total
        self._open: dict[str, int] = {}
        self.open_total = 0
        self.refused: dict[Refusal, int] = dict.fromkeys(Refusal, 0)

    @property
    def per_client(self) -> int:
        return self._per_client

    @property
    def total(self) -> int:
        return self._total

    def open_from(self, client: str) -> int:
        """Connections open now from ``client``."""
        return self._open.get(client, 0)

    def admit(self, client: str) -> Refusal | None:
        """Count a new connection from ``client``, or say which cap refuses it."""
        if self._total and self.open_total >= self._total:
            self.refused[Refusal.TOTAL] += 1
            return Refusal.TOTAL
        current = self._open.get(client, 0)
        if self._per_client and current >= self._per_client:
            self.refused[Refusal.PER_CLIENT] += 1
            return Refusal.PER_CLIENT
        self._open[client] = current + 1
        self.open_total += 1
        return None

    def release(self, client: str) -> None:
        """An admitted connection from ``client`` has closed."""
        current = self._open.get(client, 0)
        if current <= 0:
            raise RuntimeError(f"release of a connection from {client} that was never admitted")
        if current == 1:
            del self._open[client]
        else:
            self._open[client] = current - 1
        self.open_total -= 1

    def limit_of(self, refusal: Refusal) -> int:
        """The cap that ``refusal`` names."""
        return self._per_client if refusal is Refusal.PER_CLIENT else self._total

    def refusal_fields(self, refusal: Refusal, client: str) -> dict[str, object]:
        """The structured fields of a refusal's log line, the same on every port."""
        return {
            "client": client,
            "limit": str(refusal),
            "max": self.limit_of(refusal),
            "refused_so_far": self.refused[refusal],
        }


class RateLimitedLog:
    """Logs one kind of repeated event at most once per ``interval`` seconds per key.

    The first event of a key is logged at once; events within the interval
    after a logged one are only counted, and the next logged line carries
    that count as ``suppressed=N``. ``now`` is any monotonic clock in seconds
    (the event loop's time, in practice).
    """

    __slots__ = ("_interval", "_last", "_logger", "_suppressed")

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        now: float,
        level: int,
        message: str,
        *,
        key: str = "",
        extra: Mapping[str, object] | None = None,
    ) -> bool:
        """Log ``message`` unless ``key`` was logged less than an interval ago.

        Returns whether a line was written. ``message`` must make sense for a
        whole burst: it is the only line the operator sees for it.
        """
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        fields = dict(extra or {})
        fields["suppressed"] = suppressed
        fields["log_interval"] = self._interval
        self._logger.log(level, message, extra=fields)
        return True
