"""``Status.*`` and ``Raft.Join``: who leads, who is in the cluster, who is here.

``Status.Hello`` and ``Raft.Join`` are the cluster-formation exchange
described in ``_cluster``; ``Status.Ping`` is the cheapest possible call (a
health probe, and the benchmark's baseline).

Hello and Join change the server directory and the Raft membership, so only
a server of this datacenter may make them, and only for itself: the
certificate must name ``<node>.server.<dc>.<domain>`` for the node the
:class:`ServerInfo` claims.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import DCSpecificRequest

from ._acl_rules import acl_open
from ._caller import Caller
from ._endpoint import Endpoint, EndpointKind
from ._messages import ClusterInfo, ServerInfo

__all__ = ["StatusSource", "status_endpoints"]

_DC_REQUEST: Any = DCSpecificRequest | None


class StatusSource(Protocol):
    def leader_rpc_address(self) -> str | None: ...

    def peer_rpc_addresses(self) -> list[str]: ...

    def cluster_info(self) -> ClusterInfo: ...

    def learn_server(self, server: ServerInfo) -> None: ...

    async def add_raft_server(self, server: ServerInfo) -> ClusterInfo: ...


def status_endpoints(
    source: StatusSource, *, datacenter: str, policy: ServerCertificatePolicy
) -> list[Endpoint[Any, Any]]:
    def this_server_itself(method: str) -> Any:
        def authorize(caller: Caller, server: ServerInfo) -> None:
            caller.require_server(policy, what=method, datacenters=(datacenter,), node=server.node)

        return authorize

    async def leader(_: DCSpecificRequest | None) -> str:
        return source.leader_rpc_address() or ""

    async def peers(_: DCSpecificRequest | None) -> list[str]:
        return source.peer_rpc_addresses()

    def target(request: DCSpecificRequest | None) -> str:
        """``?dc=``: the leader and peers of another datacenter are asked there."""
        return "" if request is None else request.datacenter

    async def ping(_: msgspec.Raw) -> bool:
        return True

    async def hello(server: ServerInfo) -> ClusterInfo:
        source.learn_server(server)
        return source.cluster_info()

    async def join(server: ServerInfo) -> ClusterInfo:
        return await source.add_raft_server(server)

    local = EndpointKind.LOCAL
    return [
        Endpoint(
            "Status.Leader",
            _DC_REQUEST,
            str,
            local,
            leader,
            target_datacenter=target,
            acl_check=acl_open,
        ),
        Endpoint(
            "Status.Peers",
            _DC_REQUEST,
            list[str],
            local,
            peers,
            target_datacenter=target,
            acl_check=acl_open,
        ),
        Endpoint("Status.Ping", msgspec.Raw, bool, local, ping, acl_check=acl_open),
        Endpoint(
            "Status.Hello",
            ServerInfo,
            ClusterInfo,
            local,
            hello,
            authorize=this_server_itself("Status.Hello"),
            acl_check=acl_open,
        ),
        Endpoint(
            "Raft.Join",
            ServerInfo,
            ClusterInfo,
            EndpointKind.WRITE,
            join,
            authorize=this_server_itself("Raft.Join"),
            acl_check=acl_open,
        ),
    ]
