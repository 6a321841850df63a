"""The topology as data: address plan changes and ownership, without root."""

from __future__ import annotations

import os

import pytest
from wanfed_topology import DatacenterSpec, Topology, default_prefix, nft_ruleset, owner_pid


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
    assert "198.19.0.13, 198.19.0.14" in nft_ruleset(after)
    assert "198.19.0.11" not in nft_ruleset(after)


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
