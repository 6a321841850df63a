"""The topology as data: address plan changes and ownership, without root."""

from __future__ import annotations

import os

import pytest
from wanfed_topology import (
    NOBODY_MAC,
    DatacenterSpec,
    NetnsError,
    SilentNeighbor,
    Topology,
    black_hole_ruleset,
    default_prefix,
    nft_ruleset,
    owner_pid,
    silent_neighbors,
)


def three() -> Topology:
    return Topology(
        datacenters=[
            DatacenterSpec(name="dc1", servers=1, gateways=2),
            DatacenterSpec(name="dc2"),
            DatacenterSpec(name="dc3"),
        ],
        prefix="wf42",
    )


def test_replaced_gateways_get_new_names_and_addresses() -> None:
    before = three()
    after = before.replace_gateways("dc1")
    assert [(h.name, h.lan_ip, h.wan_ip) for h in after.gateways("dc1")] == [
        ("gw3", "198.18.1.23", "198.19.0.13"),
        ("gw4", "198.18.1.24", "198.19.0.14"),
    ]
    assert {h.netns for h in after.gateways("dc1")}.isdisjoint(
        h.netns for h in before.gateways("dc1")
    )
    assert after.gateways("dc2") == before.gateways("dc2")
    # The bootstrap path in the firewall follows the primary's new addresses.
    assert "ip daddr { 198.19.0.13, 198.19.0.14 } accept" in nft_ruleset(after)
    accepted = [line for line in nft_ruleset(after).splitlines() if line.endswith(" accept")]
    assert not [line for line in accepted if "198.19.0.11" in line], accepted
    assert [h.name for h in after.vanished] == ["gw1", "gw2"]


def test_vanished_addresses_are_dropped_before_replies_are_accepted() -> None:
    ruleset = nft_ruleset(three().replace_gateways("dc1"))
    gone = "ip daddr { 198.18.1.21, 198.18.1.22, 198.19.0.11, 198.19.0.12 } drop"
    assert gone in ruleset
    # An open connection to a vanished host goes as silent as a new one: the
    # drop comes before the rule that lets replies of open connections through.
    assert ruleset.index(gone) < ruleset.index("ct state established,related accept")
    assert "drop\n" not in nft_ruleset(three()).split("policy drop;", 1)[1]


def test_every_host_of_a_segment_black_holes_the_vanished_addresses() -> None:
    after = three().replace_gateways("dc1")
    entries = silent_neighbors(after)
    # dc1's LAN: its server and the new gateways no longer resolve the old LAN addresses.
    for netns in ("wf42-1s1", "wf42-1g3", "wf42-1g4"):
        for address in ("198.18.1.21", "198.18.1.22"):
            assert SilentNeighbor(netns=netns, device="eth0", address=address) in entries
    # The WAN: every remaining gateway, of every datacenter, for the old WAN addresses.
    for netns in ("wf42-1g3", "wf42-1g4", "wf42-2g1", "wf42-3g1"):
        for address in ("198.19.0.11", "198.19.0.12"):
            assert SilentNeighbor(netns=netns, device="eth1", address=address) in entries
    # Nobody else: other LANs never reach dc1's LAN without the router.
    assert {e.netns for e in entries} == {
        "wf42-1s1",
        "wf42-1g3",
        "wf42-1g4",
        "wf42-2g1",
        "wf42-3g1",
    }
    assert silent_neighbors(three()) == []
    assert NOBODY_MAC.startswith("02:")  # locally administered: no real card has it


def test_a_removed_datacenters_hosts_vanish() -> None:
    smaller = three().without("dc3")
    assert {h.datacenter for h in smaller.vanished} == {"dc3"}
    entries = silent_neighbors(smaller)
    assert SilentNeighbor(netns="wf42-2g1", device="eth1", address="198.19.0.31") in entries
    assert "198.18.3.11" in nft_ruleset(smaller)  # dropped, not refused


def test_a_black_hole_drops_a_datacenters_gateways_and_refuses_nothing() -> None:
    topology = Topology(
        datacenters=[DatacenterSpec(name="dc1"), DatacenterSpec(name="dc2", gateways=2)],
        prefix="wf42",
    )
    ruleset = black_hole_ruleset(topology, "dc2")
    assert ruleset.startswith("table bridge wanfed-black-hole-dc2 {")
    # Both directions, in the router's WAN bridge: forwarded between gateways,
    # and to or from the router itself.
    assert ruleset.count('iifname { "w2gw1", "w2gw2" } ether type { ip, ip6 } drop') == 2
    assert ruleset.count('oifname { "w2gw1", "w2gw2" } ether type { ip, ip6 } drop') == 2
    for hook in ("forward", "input", "output"):
        assert f"type filter hook {hook} priority filter; policy accept;" in ruleset
    # Silent: no reset, no ICMP error; ARP passes (only IP frames are matched),
    # so the path looks dead, not the host gone; no connection state is consulted,
    # so open connections go silent too.
    assert "reject" not in ruleset
    assert "arp" not in ruleset
    assert "ct " not in ruleset
    assert "w1gw1" not in ruleset
    with pytest.raises(NetnsError, match="dc9 has no gateways"):
        black_hole_ruleset(topology, "dc9")


def test_gateway_numbers_stay_within_the_address_plan() -> None:
    topology = Topology(datacenters=[DatacenterSpec(name="dc1", gateways=5)])
    with pytest.raises(ValueError, match="gateway numbers of dc1 run from 1 to 9"):
        topology.replace_gateways("dc1")
    with pytest.raises(KeyError, match="no datacenter dc9"):
        topology.replace_gateways("dc9")


def test_a_removed_datacenter_keeps_the_others_addresses() -> None:
    smaller = three().without("dc2")
    assert {h.datacenter for h in smaller.hosts()} == {"dc1", "dc3"}
    assert smaller.host("dc3", "s1").lan_ip == "198.18.3.11"
    assert "198.18.2.0/24" not in nft_ruleset(smaller)
    assert "198.18.3.0/24" in nft_ruleset(smaller)
    with pytest.raises(ValueError, match="belong to a vanished and a current host"):
        Topology(
            datacenters=[DatacenterSpec(name="dc1")],
            vanished=Topology(datacenters=[DatacenterSpec(name="dc1")]).hosts(),
        )
    with pytest.raises(ValueError, match="dc1 is the primary datacenter"):
        smaller.without("dc1")
    with pytest.raises(ValueError, match="removed datacenters"):
        Topology(datacenters=[DatacenterSpec(name="dc1")], removed=["dc7"])


def test_the_default_prefix_names_its_owner() -> None:
    assert default_prefix() == f"wf{os.getpid()}"
    assert owner_pid(default_prefix()) == os.getpid()
    assert owner_pid("wft") is None  # a hand-made topology (the CLI's) has no owner
    assert owner_pid("wf12x") is None


def test_an_outsider_sits_on_its_datacenters_lan_and_reaches_what_it_reaches() -> None:
    topology = Topology(
        datacenters=[DatacenterSpec(name="dc1"), DatacenterSpec(name="dc2", outsiders=2)],
        prefix="wf42",
    )
    assert [(h.name, h.netns, h.lan_ip, h.wan_ip) for h in topology.outsiders()] == [
        ("o1", "wf42-2o1", "198.18.2.31", None),
        ("o2", "wf42-2o2", "198.18.2.32", None),
    ]
    assert topology.servers("dc2") == [topology.host("dc2", "s1")]
    assert topology.host("dc2", "o1").role == "outsider"
    # No rule of its own: it crosses only where its LAN may (the primary's gateway WAN).
    assert "ip saddr 198.18.2.0/24 ip daddr { 198.19.0.11 } accept" in nft_ruleset(topology)
    with pytest.raises(ValueError, match="dc2 has 0-9 outsiders, got 10"):
        DatacenterSpec(name="dc2", outsiders=10)
