"""Pooled packet connections: one TLS connection carries many gossip packets.

Dialling TLS through a gateway for every gossip packet would cost a handshake
per probe. Packets to a member therefore reuse an idle connection to it (the
most recently used first, so the others age out), concurrent senders each
hold their own, a connection that failed a write is closed instead of
returned, and a reaper closes connections idle for two minutes — the same
limit after which the receiving side stops waiting for a next packet.

Because busy members keep their connections forever (gossip reuses them every
second or so), a connection keeps the gateway it was dialled through until
it is *retired*: :meth:`PacketConnectionPool.retire` closes the idle ones and
marks those in use to be closed on release, so the next packets dial the
current path. A dial still in flight at the retirement was started along the
old path: its connection carries its one packet and is closed on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["POOL_CLOSED_MESSAGE", "PacketConnection", "PacketConnectionPool", "PoolClosedError"]

log = logging.getLogger("wanfed.gossip.gateway")

POOL_CLOSED_MESSAGE: Final = "wanfed: connection pool is closed"


class PoolClosedError(Exception):
    def __init__(self) -> None:
        super().__init__(POOL_CLOSED_MESSAGE)


class PacketConnection:
    """One pooled connection: a stream writer plus its bookkeeping."""

    __slots__ = ("failed", "key", "last_used", "retired", "writer")

    def __init__(self, key: str, writer: asyncio.StreamWriter, now: float) -> None:
        self.key = key
        self.writer = writer
        self.last_used = now
        self.failed = False
        self.retired = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


Dialer = Callable[[str], Awaitable[asyncio.StreamWriter]]


class _PendingDial:
    """A dial in flight; ``stale`` once a retirement covered its key."""

    __slots__ = ("key", "stale")

    def __init__(self, key: str) -> None:
        self.key = key
        self.stale = False


class PacketConnectionPool:
    """Idle connections per member name, reused last-in-first-out."""

    def __init__(
        self,
        dial: Dialer,
        *,
        idle_limit: float = 120.0,
        reap_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dial = dial
        self._idle_limit = idle_limit
        self._reap_interval = reap_interval
        self._clock = clock
        self._idle: dict[str, list[PacketConnection]] = {}
        self._in_use: set[PacketConnection] = set()
        self._dialling: set[_PendingDial] = set()
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self.dials = 0

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="gossip-pool-reaper")

    @property
    def closed(self) -> bool:
        return self._closed

    def idle_count(self, key: str | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, []))
        return sum(len(conns) for conns in self._idle.values())

    async def acquire(self, key: str) -> PacketConnection:
        if self._closed:
            raise PoolClosedError
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.writer.is_closing():
                conn.last_used = self._clock()
                conn.failed = False
                self._in_use.add(conn)
                return conn
            conn.close()
        self.dials += 1
        pending = _PendingDial(key)
        self._dialling.add(pending)
        try:
            writer = await self._dial(key)
        finally:
            self._dialling.discard(pending)
        if self.closed:  # closed while we were dialling
            writer.close()
            raise PoolClosedError
        conn = PacketConnection(key, writer, self._clock())
        conn.retired = pending.stale
        self._in_use.add(conn)
        return conn

    def release(self, conn: PacketConnection) -> None:
        self._in_use.discard(conn)
        if conn.failed or conn.retired or self._closed or conn.writer.is_closing():
            conn.close()
            return
        conn.last_used = self._clock()
        self._idle.setdefault(conn.key, []).append(conn)

    def retire(self, matches: Callable[[str], bool]) -> int:
        """Stop reusing the connections of the keys ``matches`` accepts; return how many.

        Idle ones close now; those in use, and those still being dialled
        (along the old path), close when released, after their packet was
        written. Dials from now on follow the current path.
        """
        retired = 0
        for key in [key for key in self._idle if matches(key)]:
            for conn in self._idle.pop(key):
                conn.close()
                retired += 1
        for conn in self._in_use:
            if matches(conn.key) and not conn.retired:
                conn.retired = True
                retired += 1
        for pending in self._dialling:
            if matches(pending.key) and not pending.stale:
                pending.stale = True
                retired += 1
        return retired

    def reap(self) -> int:
        """Close connections idle for the limit or longer; return how many."""
        now = self._clock()
        reaped = 0
        for key in list(self._idle):
            keep: list[PacketConnection] = []
            for conn in self._idle[key]:
                if now - conn.last_used >= self._idle_limit:
                    conn.close()
                    reaped += 1
                else:
                    keep.append(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if reaped:
            log.debug("closed %d idle gossip packet connections", reaped)
        return reaped

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            self.reap()

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
