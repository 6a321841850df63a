"""What a server says about itself and its peers: ``/v1/agent/self`` and ``/v1/agent/members``.

The shapes are Consul's (a member's tags ``role``, ``dc``, ``port``,
``build``, ``expect``; ``Config`` and ``Stats`` of the agent), filled from
what this server knows: its directory, the leader routines' view of who is
alive, and its Raft members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from wanfed_agent.config import AgentConfig
from wanfed_proto import parse_address
from wanfed_server.interfaces import Member, MemberStatus

from ._messages import ServerInfo

__all__ = ["lan_members", "member", "self_info"]


def member(server: ServerInfo, name: str, *, alive: bool, expect: int) -> Member:
    """``server`` as a gossip member named ``name``."""
    host, port = parse_address(server.rpc_address)
    return Member(
        name=name,
        addr=host,
        port=port,
        tags={
            "role": "consul",
            "dc": server.datacenter,
            "port": str(port),
            "build": "wanfed",
            "expect": str(expect),
        },
        status=MemberStatus.ALIVE if alive else MemberStatus.FAILED,
    )


def lan_members(
    servers: Sequence[ServerInfo], alive: Callable[[ServerInfo], bool], expect: int
) -> list[Member]:
    """The datacenter's servers, alive as the leader routines last saw them."""
    return [member(s, s.node, alive=alive(s), expect=expect) for s in servers]


def self_info(
    config: AgentConfig,
    me: ServerInfo,
    *,
    is_leader: bool,
    leader_rpc_address: str | None,
    known_datacenters: int,
    raft_members: Sequence[str],
) -> dict[str, object]:
    """``/v1/agent/self`` of a server."""
    return {
        "Config": {
            "Datacenter": config.datacenter,
            "PrimaryDatacenter": config.primary_datacenter or config.datacenter,
            "NodeName": config.node_name,
            "Server": True,
            "Domain": config.domain,
            "Revision": "",
            "Version": "wanfed",
        },
        "Member": msgspec.to_builtins(
            member(me, me.node, alive=True, expect=config.bootstrap_expect)
        ),
        "Stats": {
            "consul": {
                "server": "true",
                "leader": str(is_leader).lower(),
                "leader_addr": leader_rpc_address or "",
                "known_datacenters": str(known_datacenters),
            },
            "raft": {
                "state": "Leader" if is_leader else "Follower",
                "num_peers": str(max(len(raft_members) - 1, 0)),
                "members": ",".join(raft_members),
            },
        },
    }
