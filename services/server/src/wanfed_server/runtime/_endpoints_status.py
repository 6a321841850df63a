"""``Status.*`` and ``Raft.Join``: who leads, who is in the cluster, who is here.

``Status.Hello`` and ``Raft.Join`` are the cluster-formation exchange
described in ``_cluster``; ``Status.Ping`` is the cheapest possible call (a
health probe, and the benchmark's baseline).
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from ._endpoint import Endpoint, EndpointKind
from ._messages import ClusterInfo, ServerInfo

__all__ = ["StatusSource", "status_endpoints"]


class StatusSource(Protocol):
    def leader_rpc_address(self) -> str | None: ...

    def peer_rpc_addresses(self) -> list[str]: ...

    def cluster_info(self) -> ClusterInfo: ...

    def learn_server(self, server: ServerInfo) -> None: ...

    async def add_raft_server(self, server: ServerInfo) -> ClusterInfo: ...


def status_endpoints(source: StatusSource) -> list[Endpoint[Any, Any]]:
    async def leader(_: msgspec.Raw) -> str:
        return source.leader_rpc_address() or ""

    async def peers(_: msgspec.Raw) -> list[str]:
        return source.peer_rpc_addresses()

    async def ping(_: msgspec.Raw) -> bool:
        return True

    async def hello(server: ServerInfo) -> ClusterInfo:
        source.learn_server(server)
        return source.cluster_info()

    async def join(server: ServerInfo) -> ClusterInfo:
        return await source.add_raft_server(server)

    local = EndpointKind.LOCAL
    return [
        Endpoint("Status.Leader", msgspec.Raw, str, local, leader),
        Endpoint("Status.Peers", msgspec.Raw, list[str], local, peers),
        Endpoint("Status.Ping", msgspec.Raw, bool, local, ping),
        Endpoint("Status.Hello", ServerInfo, ClusterInfo, local, hello, servers_only=True),
        Endpoint("Raft.Join", ServerInfo, ClusterInfo, EndpointKind.WRITE, join, servers_only=True),
    ]
