"""Pooled multiplexed RPC connections to other servers.

One :class:`RpcClient` per destination carries every concurrent call (the
envelope is multiplexed), so forwarding costs one dial per peer, not one per
request. A connection that died is noticed at the next call and redialled.

Servers close RPC connections that stay silent with nothing in flight
(``limits.rpc_idle_timeout``). A connection the server closed while idle is
seen as closed by the next call and dialled again; and so that a call never
races the server's close (sent just as the server hangs up, it would fail
though the server never saw it), the pool itself retires a connection idle
for ``max_idle`` (half the server's idle timeout) before reusing it.
Dial failures are reported as :class:`DialError`: nothing was sent, so a
caller may safely try elsewhere, unlike a failure after the request left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Coroutine
from typing import Any, Final, Protocol, TypeVar

from wanfed_proto import (
    Alpn,
    Connection,
    ProtoError,
    RpcClient,
    RpcType,
    TransportError,
    dial_alpn,
    dial_plain,
    error_text,
    server_sni,
)

__all__ = [
    "RETIRE_GRACE",
    "AlpnDialer",
    "DialError",
    "PathChangedError",
    "PlainDialer",
    "RpcDialer",
    "RpcPool",
]

logger = logging.getLogger("wanfed_server.runtime.pool")

T = TypeVar("T")


RETIRE_GRACE: Final = 5.0
"""Seconds the calls in flight on a retired connection get to finish. Longer
ones (blocking queries wait minutes) are cut: the path they were sent along
may be the broken one, and a gateway's route watch would otherwise keep
following it for the whole wait."""


class DialError(TransportError):
    """The connection could not be opened; the request was never sent."""


class PathChangedError(TransportError):
    """The call was cut because the path to its datacenter changed under it.

    A read may simply be asked again (it goes the new way); a write may or may
    not have been applied, as with any connection lost mid-call.
    """


class RpcDialer(Protocol):
    """Opens a multiplexed RPC connection to server ``node`` of ``datacenter``."""

    async def dial(self, node: str, datacenter: str, address: str) -> Connection: ...


class AlpnDialer:
    """Native TLS with ALPN ``wanfed/rpc-multi`` and SNI ``<node>.server.<dc>.<domain>``."""

    def __init__(self, context: ssl.SSLContext, domain: str, timeout: float = 10.0) -> None:
        self._context = context
        self._domain = domain
        self._timeout = timeout

    async def dial(self, node: str, datacenter: str, address: str) -> Connection:
        sni = server_sni(datacenter, self._domain, node)
        return await dial_alpn(address, sni, Alpn.RPC_MULTI, self._context, self._timeout)


class PlainDialer:
    """The type byte ``MULTIPLEX_V2`` on plain TCP: dev mode and TLS-less clusters."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout

    async def dial(self, node: str, datacenter: str, address: str) -> Connection:
        del node, datacenter
        return await dial_plain(address, RpcType.MULTIPLEX_V2, self._timeout)


async def _in_task(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` as its own task.

    The RPC port may run a handler's first step eagerly, outside any task,
    where ``asyncio.timeout`` (used by every dialer) refuses to work. Dials
    are rare, so the extra task costs nothing that matters.
    """
    return await asyncio.ensure_future(coro)


class RpcPool:
    """Cached clients keyed by ``(datacenter, node, address)``."""

    def __init__(
        self,
        dialer: RpcDialer,
        *,
        retire_grace: float = RETIRE_GRACE,
        max_idle: float | None = None,
    ) -> None:
        if max_idle is not None and max_idle <= 0:
            raise ValueError("max_idle must be positive (or None)")
        self._dialer = dialer
        self._retire_grace = retire_grace
        self._max_idle = max_idle
        self._clients: dict[tuple[str, str, str], RpcClient] = {}
        self._use: weakref.WeakKeyDictionary[RpcClient, list[float]] = weakref.WeakKeyDictionary()
        """Per client: [calls in flight, loop time the last call ended]."""
        self.idle_retired = 0
        """Connections retired for idleness before reuse (for tests and stats)."""
        self._dialing: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._generation: dict[str, int] = {}
        """Per datacenter, bumped by each retirement: a dial that saw it change
        went along the old path."""
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: weakref.WeakSet[RpcClient] = weakref.WeakSet()

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
        client = await self._client(node, datacenter, address)
        use = self._use.setdefault(client, [0, 0.0])
        use[0] += 1
        try:
            return await client.call(method, body, type=reply_type, timeout=timeout)
        except TransportError as exc:
            self._drop((datacenter.lower(), node.lower(), address), client)
            if client in self._retired:
                raise PathChangedError(
                    f"{exc} (retired: the path to dc {datacenter} changed)"
                ) from exc
            raise
        finally:
            use[0] -= 1
            if not use[0]:
                use[1] = asyncio.get_running_loop().time()

    def _usable(self, key: tuple[str, str, str], client: RpcClient | None) -> bool:
        """A cached client may carry a call: open, not closing, not idle too long."""
        if client is None or client.is_closed or client.connection.transport.is_closing():
            return False
        if self._max_idle is None:
            return True
        use = self._use.get(client)
        if use is None or use[0]:
            return True
        idle = asyncio.get_running_loop().time() - use[1]
        if idle < self._max_idle:
            return True
        # The server may be about to close it as idle: retire it and dial afresh.
        self.idle_retired += 1
        logger.debug("rpc pool: connection to %s idle for %.1fs; dialling a new one", key, idle)
        self._drop(key, client)
        return False

    async def _client(self, node: str, datacenter: str, address: str) -> RpcClient:
        if self._closed:
            raise DialError("rpc pool is closed")
        key = (datacenter.lower(), node.lower(), address)
        client = self._clients.get(key)
        if client is not None and self._usable(key, client):
            return client
        lock = self._dialing.setdefault(key, asyncio.Lock())
        async with lock:
            client = self._clients.get(key)
            if client is not None and self._usable(key, client):
                return client
            while True:
                generation = self._generation.get(key[0], 0)
                try:
                    connection = await _in_task(self._dialer.dial(node, datacenter, address))
                except (ProtoError, OSError, ValueError) as exc:
                    raise DialError(
                        f"dial {node}.{datacenter} at {address} failed: {error_text(exc)}"
                    ) from exc
                if self._generation.get(key[0], 0) == generation:
                    break
                # The path changed while we dialled: this connection went the old
                # way, and cached it would keep that way for good.
                logger.info(
                    "rpc pool: path to dc=%s changed during the dial to %s; dialling again",
                    datacenter,
                    node,
                )
                connection.abort()
            client = RpcClient(connection)
            self._clients[key] = client
            logger.debug("rpc pool connected node=%s dc=%s address=%s", node, datacenter, address)
            return client

    def retire_datacenter(self, datacenter: str) -> int:
        """New calls to ``datacenter`` dial again; calls in flight get ``RETIRE_GRACE``.

        A pooled connection keeps the path (the gateway) it was dialled
        through; when the path to a datacenter changes, retiring its
        connections makes the next calls follow the new path. A dial in
        flight meanwhile is thrown away and made again. Calls still running
        after the grace fail with :class:`PathChangedError`.
        """
        wanted = datacenter.lower()
        self._generation[wanted] = self._generation.get(wanted, 0) + 1
        retired = [key for key in self._clients if key[0] == wanted]
        for key in retired:
            client = self._clients.pop(key)
            self._retired.add(client)
            task = asyncio.get_running_loop().create_task(
                client.close_when_idle(self._retire_grace)
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if retired:
            logger.info(
                "rpc pool retired %d connection(s) to dc=%s; new calls dial the current path, "
                "calls in flight get %g s to finish",
                len(retired),
                datacenter,
                self._retire_grace,
            )
        return len(retired)

    def _drop(self, key: tuple[str, str, str], client: RpcClient) -> None:
        if self._clients.get(key) is client:
            del self._clients[key]
        client.connection.abort()

    async def close(self) -> None:
        self._closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            with contextlib.suppress(ProtoError, OSError):
                await client.close()
