"""Which datacenters pruning keeps: failed (partitioned) ones stay; left or reaped ones go.

The pruner deletes the federation state of every datacenter the WAN pool no
longer knows. A datacenter cut off by a partition has servers that *failed*;
deleting its record would leave it with no path back when the partition
heals. Only a graceful leave, or reaping after ``reconnect_timeout``, forgets it.
"""

from __future__ import annotations

from wanfed_agent.gossip import Member, MemberState, encode_tags
from wanfed_server.runtime._wan import datacenters_kept, server_tags


def server(node: str, datacenter: str, state: MemberState) -> Member:
    tags = server_tags(datacenter=datacenter, rpc_port=8300, expect=1, wan_join_port=8302)
    return Member(
        name=f"{node}.{datacenter}",
        host="127.0.0.1",
        port=8302,
        meta=encode_tags(tags),
        state=state,
        incarnation=1,
        protocol=(1, 5, 2),
        delegate=(2, 5, 4),
    )


def test_a_datacenter_whose_servers_failed_is_kept() -> None:
    members = [
        server("s1", "dc1", MemberState.ALIVE),
        server("s1", "dc2", MemberState.DEAD),
        server("s2", "dc2", MemberState.DEAD),
    ]
    assert datacenters_kept(members, [], "dc1") == ["dc1", "dc2"]


def test_a_datacenter_still_being_reconnected_to_is_kept() -> None:
    """Gossip forgets a dead member after ``gossip_to_the_dead_time``, long before
    it is reaped; while it is being reconnected to, its datacenter stays."""
    members = [server("s1", "dc1", MemberState.ALIVE)]
    assert datacenters_kept(members, ["s1.dc3"], "dc1") == ["dc1", "dc3"]


def test_a_datacenter_whose_servers_left_or_were_reaped_is_pruned() -> None:
    members = [
        server("s1", "dc1", MemberState.ALIVE),
        server("s1", "dc2", MemberState.LEFT),
        server("s2", "dc2", MemberState.LEFT),
    ]
    # dc3's servers failed and were reaped: neither members nor being reconnected to
    assert datacenters_kept(members, [], "dc1") == ["dc1"]


def test_one_server_that_has_not_left_keeps_its_datacenter() -> None:
    members = [server("s1", "dc2", MemberState.LEFT), server("s2", "dc2", MemberState.SUSPECT)]
    assert datacenters_kept(members, [], "DC1") == ["dc1", "dc2"]


def test_clients_and_other_members_do_not_keep_a_datacenter() -> None:
    client = Member(
        name="c1.dc4",
        host="127.0.0.1",
        port=8302,
        meta=encode_tags({"role": "node", "dc": "dc4"}),
        state=MemberState.ALIVE,
        incarnation=1,
        protocol=(1, 5, 2),
        delegate=(2, 5, 4),
    )
    assert datacenters_kept([client], [], "dc1") == ["dc1"]
