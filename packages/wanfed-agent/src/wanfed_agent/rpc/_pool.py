"""Pooled multiplexed RPC connections to other servers, keyed by route.

One :class:`~wanfed_proto.RpcClient` per :class:`~._route.Route` carries every
concurrent call (the envelope is multiplexed), so forwarding costs one dial
per peer and path, not one per request.

* **Path changes.** Each call resolves its route first. When the epoch of a
  datacenter's path moved, the pool retires that datacenter's connections of
  other epochs: they take no new call, and the calls in flight on them get
  ``retire_grace`` seconds before they are cut (a long-poll sent along a
  broken path would otherwise wait out its minutes); a cut read is asked
  again by the retry policy, along the new path. A dial that finishes after
  the path moved went the old way and is made again.
* **Deadlines.** Every call has one: the caller's, or :func:`call_timeout`.
* **Keepalive.** A pooled connection silent for a while is pinged, and one
  silent for ``dead_after`` is aborted, failing its calls at once
  (:mod:`._keepalive`).
* **Idleness.** Servers close RPC connections that stay silent with nothing in
  flight; so that a call never races that close, a connection with no call
  for ``max_idle`` (half the server's idle timeout) is retired before reuse,
  and closed by its keepalive task (whose pings would otherwise keep it open).

Dial failures are :class:`DialError`: nothing was sent, so a caller may try
elsewhere, unlike a failure after the request left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from wanfed_proto import ProtoError, RpcClient, TransportError, error_text

from ._deadline import call_timeout
from ._dial import DialError, ServerDialer
from ._keepalive import DEFAULT_KEEPALIVE, Keepalive, KeepaliveAction, KeepaliveSettings
from ._route import Route, RouteTable

__all__ = ["RETIRE_GRACE", "RpcPool"]

logger = logging.getLogger("wanfed.rpc.pool")

T = TypeVar("T")

RETIRE_GRACE: Final = 5.0
"""Seconds the calls in flight on a retired connection get to finish."""

_DIALS_ACROSS_PATH_CHANGES: Final = 3
"""Dials of one route made again because the path moved while they ran."""


async def _in_task(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` as its own task.

    The RPC port may run a handler's first step eagerly, outside any task,
    where ``asyncio.timeout`` (used by every dialer) refuses to work. Dials
    are rare, so the extra task costs nothing that matters.
    """
    return await asyncio.ensure_future(coro)


class _Pooled:
    """One pooled connection: its client, route, and use."""

    __slots__ = ("calls", "client", "idle_since", "keepalive", "route")

    def __init__(self, client: RpcClient, route: Route, now: float) -> None:
        self.client = client
        self.route = route
        self.calls = 0
        self.idle_since = now
        self.keepalive: asyncio.Task[None] | None = None


class RpcPool:
    """Cached clients keyed by route; see the module docstring."""

    def __init__(
        self,
        dialer: ServerDialer,
        routes: RouteTable,
        *,
        retire_grace: float = RETIRE_GRACE,
        max_idle: float | None = None,
        keepalive: KeepaliveSettings | None = DEFAULT_KEEPALIVE,
    ) -> None:
        """``keepalive=None`` turns keepalive off (tests of the rest)."""
        if max_idle is not None and max_idle <= 0:
            raise ValueError("max_idle must be positive (or None)")
        if retire_grace < 0:
            raise ValueError("retire_grace must not be negative")
        self._dialer = dialer
        self.routes = routes
        """How calls resolve to routes (read it; the pool keys connections on them)."""
        self._retire_grace = retire_grace
        self._max_idle = max_idle
        self._keepalive = keepalive
        self._pooled: dict[Route, _Pooled] = {}
        self._dialing: dict[Route, asyncio.Lock] = {}
        self._epochs: dict[str, int] = {}
        """Per datacenter, the path epoch of the newest route resolved."""
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        self.idle_retired = 0
        """Connections retired for idleness before reuse (for tests and stats)."""
        self.keepalive_deaths = 0
        """Connections declared dead by keepalive (for tests and stats)."""

    def epoch_seen(self, datacenter: str) -> int | None:
        """The newest path epoch a call to ``datacenter`` resolved (``None``: no call
        yet). When it moves, the connections of older epochs are retired: a call
        on an older route that failed was cut by the path change."""
        return self._epochs.get(datacenter.lower())

    def connections(self) -> list[Route]:
        """Routes with a pooled connection now (for status and tests)."""
        return list(self._pooled)

    async def call(
        self,
        node: str,
        datacenter: str,
        address: str,
        method: str,
        body: object,
        reply_type: type[T],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (forwarded as the RPC deadline)
    ) -> T:
        """``method`` on ``node`` (``""``: any server) of ``datacenter``.

        ``address`` is the server's advertised address (dialled on the direct
        path only). Without ``timeout`` the call gets :func:`call_timeout`.
        """
        route = self.routes.route(datacenter, node or None, address or None)
        return await self.call_on(route, method, body, reply_type, timeout=timeout)

    async def call_on(
        self,
        route: Route,
        method: str,
        body: object,
        reply_type: type[T],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (forwarded as the RPC deadline)
    ) -> T:
        """:meth:`call` along a route resolved by :attr:`routes` (a caller that
        compares it with :meth:`epoch_seen` after a failure)."""
        entry = self._pooled.get(route)
        if (
            entry is None
            or self._closed
            or self._epochs.get(route.datacenter) != route.epoch
            or not self._reusable(entry)
        ):
            entry = await self._connection(route)
        entry.calls += 1
        try:
            return await entry.client.call(
                method,
                body,
                type=reply_type,
                timeout=call_timeout(body) if timeout is None else timeout,
            )
        except TransportError:
            self._drop(entry)
            raise
        finally:
            entry.calls -= 1
            if not entry.calls:
                entry.idle_since = asyncio.get_running_loop().time()

    async def probe(
        self,
        datacenter: str,
        gateway: str,
        method: str,
        *,
        timeout: float,  # noqa: ASYNC109 (the dial's and the call's)
    ) -> None:
        """``method`` on any server of ``datacenter`` through exactly ``gateway``.

        A one-off connection, never pooled: it proves that one path works and
        must not stand in for the path calls use. The dial takes the dialer's
        attempt timeout, the call ``timeout``.
        """
        route = self.routes.pinned(datacenter, gateway)
        connection = await self._dial(route)
        client = RpcClient(connection)
        try:
            await client.call(method, None, timeout=timeout)
        finally:
            # Not a graceful close: on a silent path that waits for the peer.
            client.abort("probe done")

    async def _connection(self, route: Route) -> _Pooled:
        if self._closed:
            raise DialError("rpc pool is closed")
        self._note_epoch(route)
        entry = self._pooled.get(route)
        if entry is not None and self._reusable(entry):
            return entry
        lock = self._dialing.setdefault(route, asyncio.Lock())
        async with lock:
            entry = self._pooled.get(route)
            if entry is not None and self._reusable(entry):
                return entry
            for _ in range(_DIALS_ACROSS_PATH_CHANGES):
                connection = await self._dial(route)
                current = self.routes.route(route.datacenter, route.node, route.address)
                if current.epoch == route.epoch or self._closed:
                    break
                # The path moved while we dialled: this connection went the old way.
                logger.info(
                    "rpc pool: path changed during a dial; dialling again",
                    extra={"route": route.text, "now": current.text},
                )
                connection.abort()
                route = current
                self._note_epoch(route)
            loop = asyncio.get_running_loop()
            entry = _Pooled(RpcClient(connection), route, loop.time())
            self._pooled[route] = entry
            if self._keepalive is not None:
                entry.keepalive = self._spawn(self._keep_alive(entry, self._keepalive))
            logger.debug("rpc pool connected", extra={"route": route.text})
            return entry

    async def _dial(self, route: Route) -> Any:
        try:
            return await _in_task(self._dialer.dial(route))
        except DialError:
            raise
        except (ProtoError, OSError, ValueError) as exc:
            raise DialError(f"dial {route.text} failed: {error_text(exc)}") from exc

    def _reusable(self, entry: _Pooled) -> bool:
        """Open, not closing, and not idle so long that the server may be closing it."""
        client = entry.client
        if client.is_closed or client.connection.transport.is_closing():
            self._drop(entry)
            return False
        if entry.calls or not self._idle_too_long(entry, asyncio.get_running_loop().time()):
            return True
        self.idle_retired += 1
        logger.debug(
            "rpc pool: connection idle too long; dialling a new one",
            extra={"route": entry.route.text},
        )
        self._drop(entry)
        return False

    def _note_epoch(self, route: Route) -> None:
        """A newer path epoch retires the datacenter's connections of other epochs."""
        seen = self._epochs.get(route.datacenter)
        if seen == route.epoch:
            return
        self._epochs[route.datacenter] = route.epoch
        if seen is None:
            return
        stale = [
            entry
            for key, entry in self._pooled.items()
            if key.datacenter == route.datacenter and key.epoch != route.epoch
        ]
        for entry in stale:
            del self._pooled[entry.route]
            self._spawn(entry.client.close_when_idle(self._retire_grace))
        for key in [key for key in self._dialing if key.datacenter == route.datacenter]:
            if key.epoch != route.epoch and not self._dialing[key].locked():
                del self._dialing[key]  # no dial of that route is waited for any more
        if stale:
            logger.info(
                "rpc pool: path changed; retired connection(s) of the old path, new calls "
                "dial the new one, calls in flight get the grace",
                extra={
                    "datacenter": route.datacenter,
                    "path": route.path,
                    "epoch": route.epoch,
                    "retired": len(stale),
                    "grace": self._retire_grace,
                },
            )

    async def _keep_alive(self, entry: _Pooled, settings: KeepaliveSettings) -> None:
        """Carries out the keepalive core's decisions for one connection."""
        loop = asyncio.get_running_loop()
        client = entry.client
        core = Keepalive(settings, loop.time(), client.connection.received_bytes)
        while not client.is_closed:
            now = loop.time()
            if self._idle_too_long(entry, now):
                # Pings would keep it open for ever: let an unused one go.
                self.idle_retired += 1
                self._drop(entry)
                return
            action, next_at = core.poll(client.connection.received_bytes, now)
            if action is KeepaliveAction.DEAD:
                self.keepalive_deaths += 1
                reason = (
                    f"rpc keepalive: no answer from {entry.route.text} for "
                    f"{settings.dead_after:g}s; connection declared dead"
                )
                logger.warning(
                    "rpc connection silent too long; aborting it, its calls fail now",
                    extra={"route": entry.route.text, "calls": client.in_flight},
                )
                self._drop(entry, reason)
                return
            if action is KeepaliveAction.PING:
                self._spawn(self._ping(client, settings.dead_after))
            if self._max_idle is not None and not entry.calls:
                next_at = min(next_at, entry.idle_since + self._max_idle)
            await asyncio.sleep(max(next_at - loop.time(), 0.0))

    def _idle_too_long(self, entry: _Pooled, now: float) -> bool:
        """No call for ``max_idle``: the server may be about to close it as idle."""
        return (
            self._max_idle is not None
            and not entry.calls
            and now - entry.idle_since >= self._max_idle
        )

    @staticmethod
    async def _ping(client: RpcClient, timeout: float) -> None:  # noqa: ASYNC109
        # Any answer, an error included, is bytes received: proof of life.
        with contextlib.suppress(ProtoError, OSError):
            await client.call("Status.Ping", None, timeout=timeout)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _drop(self, entry: _Pooled, reason: str = "") -> None:
        if self._pooled.get(entry.route) is entry:
            del self._pooled[entry.route]
        if reason:
            entry.client.abort(reason)
        else:
            entry.client.connection.abort()
        task = entry.keepalive
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        """Close every connection now; calls in flight fail with a transport error.

        Aborted rather than closed gracefully: a graceful TLS close waits for
        the peer's answer, up to 30 s on a path gone silent, and a stopping
        server must not wait for that.
        """
        self._closed = True
        entries = list(self._pooled.values())
        self._pooled.clear()
        for entry in entries:
            if entry.keepalive is not None:
                entry.keepalive.cancel()
            entry.client.abort("rpc pool closed")
        background = list(self._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
