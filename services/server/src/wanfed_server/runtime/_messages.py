"""RPC payloads the runtime adds on top of ``wanfed_fsm``'s request types.

``Health.NodeChecks`` needs a node-scoped query, and cluster formation needs
servers to describe themselves to each other; both cross the RPC port and the
seam to the HTTP API, so they are frozen Structs with Consul-style names.
"""

from __future__ import annotations

import msgspec

from wanfed_fsm import HealthCheck, QueryMeta, QueryOptions

__all__ = [
    "ClusterInfo",
    "IndexedHealthChecks",
    "NodeSpecificRequest",
    "ServerInfo",
]


class NodeSpecificRequest(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """A query about one node (``Health.NodeChecks``)."""

    datacenter: str = ""
    node: str = ""


class IndexedHealthChecks(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    health_checks: list[HealthCheck] = msgspec.field(default_factory=list)


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """How one server is reached: what cluster formation and forwarding need to know.

    ``RaftAddress`` is empty for a dev server, which has no Raft peers.
    """

    node: str
    datacenter: str
    rpc_address: str
    """``host:port`` of the RPC port as the other servers dial it."""
    raft_address: str = ""
    wan_address: str = ""
    """Host the other datacenters reach this server at (``advertise_addr_wan``)."""
    wan_gossip_address: str = ""
    """``host:port`` of its WAN gossip listener; servers of one DC join each other there."""


class ClusterInfo(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A server's answer to ``Status.Hello``: itself, who it knows, and its Raft state."""

    server: ServerInfo
    known: list[ServerInfo] = msgspec.field(default_factory=list)
    raft_started: bool = False
    raft_members: list[str] = msgspec.field(default_factory=list)
    """Raft addresses this server started Raft with (itself included)."""
    leader_raft_address: str = ""
