"""The decisions of the gateway's blocking-query watchers, without I/O.

Three small objects, each a pure function of what happened:

* :class:`Backoff` — how long a failing watch waits before its next try
  (1 s, 2 s, 4 s, ... capped at 30 s; reset by a success), so a dead server
  is not hammered and a recovered one is found within half a minute.
* :class:`ServerPool` — which of the ``-http-addr`` servers every watch talks
  to. One pool is shared by all watches: when one watch loses the
  connection, the others move along with it instead of each rediscovering
  the loss on its own.
* :class:`BlockingIndex` — the ``?index=`` of the next query, following the
  client-side rules of blocking queries: never block on 0 (an answer of 0 is
  treated as 1), and start over from 0 when the server's index goes
  backwards (a restore or another server's view), which forces a full,
  non-blocking read.
* :class:`ContentHash` — the ``?hash=`` of the next query of an endpoint that
  blocks on its content instead of a Raft index (the server directory, as
  Consul's agent endpoints do): block while the answer still hashes the same.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Backoff", "BlockingIndex", "ContentHash", "ServerPool"]


class Backoff:
    """Doubling delays between retries of one watch."""

    def __init__(self, initial: float = 1.0, cap: float = 30.0) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("backoff needs 0 < initial <= cap")
        self._initial = initial
        self._cap = cap
        self._failures = 0

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def failed(self) -> float:
        """Record a failure; returns the seconds to wait before trying again."""
        delay = min(self._cap, self._initial * float(2 ** min(self._failures, 32)))
        self._failures += 1
        return delay

    def succeeded(self) -> None:
        self._failures = 0


class ServerPool:
    """The HTTP API base URLs of the local servers, the current one first."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one server HTTP address is required")
        self._urls = tuple(urls)
        self._current = 0

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    @property
    def current(self) -> str:
        return self._urls[self._current]

    def failed(self, url: str) -> str:
        """``url`` could not be reached: move past it (unless another watch already
        did) and return the server to use next."""
        if url == self.current:
            self._current = (self._current + 1) % len(self._urls)
        return self.current


class BlockingIndex:
    """The index to send with the next blocking query of one watch."""

    def __init__(self) -> None:
        self._index = 0

    @property
    def value(self) -> int:
        return self._index

    def query(self, wait: str) -> dict[str, str]:
        """The blocking parameters of the next query (none for a full read)."""
        return {"index": str(self._index), "wait": wait} if self._index else {}

    def observe_answer(self, index: int, content_hash: str) -> bool:
        """:meth:`observe` for the watch loop, which hands both headers to every cursor."""
        del content_hash
        return self.observe(index)

    def observe(self, index: int) -> bool:
        """Take the ``X-Consul-Index`` of an answer.

        Returns ``False`` when the index went backwards: the answer is still
        the server's current state, but the next query starts over from 0.
        """
        if index < self._index:
            self._index = 0
            return False
        self._index = max(index, 1)
        return True

    def reset(self) -> None:
        """Start over (e.g. after switching servers, whose indexes may lag)."""
        self._index = 0


class ContentHash:
    """The ``X-Consul-ContentHash`` to send back with the next query of one watch."""

    def __init__(self) -> None:
        self._hash = ""

    @property
    def value(self) -> str:
        return self._hash

    def query(self, wait: str) -> dict[str, str]:
        """Block on the last hash; without one (first read, after a reset) read at once."""
        return {"hash": self._hash, "wait": wait} if self._hash else {}

    def observe_answer(self, index: int, content_hash: str) -> bool:
        """Take an answer's hash; an answer without one makes the next read a full one."""
        del index
        self._hash = content_hash
        return True

    def reset(self) -> None:
        self._hash = ""
