"""What the federation routines see of the server they run in.

:class:`WanFederation` (the locator, discovery, replication, anti-entropy,
pruning) asks its host for the store, the consensus, leadership, RPC as the
server's own code, RPC to *any* server of a datacenter through the current
gateway path, and what the WAN pool knows of other datacenters. This
adapter answers from the server's parts, so the server class keeps only its
own wiring and the federation depends on one small interface
(:class:`~._wanfed.FederationHost`, :class:`~._wanfed.DatacenterRegistry`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from wanfed_agent.rpc import RpcPool
from wanfed_fsm import Consensus, StateStore

from ._leadership import Leadership
from ._router import Router
from ._wan import WanPool

__all__ = ["ServerFederationHost"]

T = TypeVar("T")


class ServerFederationHost:
    """:class:`~._wanfed.FederationHost` and :class:`~._wanfed.DatacenterRegistry` of a server."""

    def __init__(
        self,
        *,
        datacenter: str,
        store: StateStore,
        leadership: Leadership,
        rpc: Callable[[str, msgspec.Struct, Any], Awaitable[Any]],
        pool: Callable[[], RpcPool],
        router: Callable[[], Router],
        wan_pool: Callable[[], WanPool | None],
        router_injected: bool,
    ) -> None:
        self._datacenter = datacenter
        self._store = store
        self._leadership = leadership
        self._rpc = rpc
        self._pool = pool
        self._router = router
        self._wan_pool = wan_pool
        self._router_injected = router_injected

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def consensus(self) -> Consensus:
        return self._leadership.consensus

    def is_leader(self) -> bool:
        return self._leadership.is_leader()

    def leader_rpc_address(self) -> str | None:
        return self._leadership.leader_rpc_address()

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        reply: T = await self._rpc(method, args, reply_type)
        return reply

    async def rpc_any_server(
        self,
        datacenter: str,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        timeout: float,  # noqa: ASYNC109 (the call's deadline)
    ) -> T:
        """Through the gateways with SNI ``server.<dc>.<domain>``: no WAN-pool lookup."""
        return await self._pool().call(
            "", datacenter, "", method, args, reply_type, timeout=timeout
        )

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        if datacenter.lower() == self._datacenter.lower():
            return True
        wan = self._wan_pool()
        if wan is None:
            return datacenter.lower() in self._router().datacenters()
        return await wan.agent.wait_until(lambda: wan.has_seen_datacenter(datacenter), within)

    def lists_live_server(self, datacenter: str) -> bool:
        return bool(self._router().servers(datacenter))

    def known_datacenters(self) -> list[str]:
        """The datacenters whose federation states pruning keeps: those of the WAN
        pool, failed (partitioned) ones included; only a leave or a reap forgets one."""
        wan = self._wan_pool()
        if wan is not None and not self._router_injected:
            return wan.known_datacenters()
        return self._router().datacenters()
