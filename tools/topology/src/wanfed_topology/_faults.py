"""Faults injected into a built topology: all of them silent.

A real WAN fault rarely answers: a link that black-holes traffic, a machine
that is switched off. Nothing sends a reset or an ICMP error, so the code
under test learns of the fault only through its own deadlines and keepalives.
The faults here are built that way, and none of them aborts a connection for
the code under test:

* :func:`black_hole_wan` drops every IP frame to and from a datacenter's
  gateways on the WAN bridge, in the router, where neither end's own stack
  sees it (a drop in a host's own ``output`` hook would fail its send at once
  with ``EPERM``). ARP still passes, as it does when a path dies beyond the
  next hop: the neighbours stay resolved and the packets simply vanish.
  Open connections are caught too: a bridge rule knows no connection state.
* :func:`vanish_hosts` deletes hosts as if switched off: their links go first,
  so whatever the dying processes send (FIN, RST) never leaves; then their
  processes and namespaces. Their addresses stay a black hole: the router
  drops packets to them (:func:`nft_ruleset`), and every host that shared a
  segment with them gets a permanent neighbour entry with a hardware address
  nobody owns, so the kernel neither fails the neighbour lookup after three
  seconds (a fast "no route to host") nor answers anything.
* :func:`replace_gateways` and :func:`remove_datacenter` are built on it.

Enforcement tests (``test_enforcement.py``) rely on the router's rejects,
which answer at once; that is checking the firewall, not injecting a fault.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import msgspec

from ._netns import (
    NetnsError,
    _delete_netns,
    _netns_names,
    _run,
    add_hosts,
    apply_firewall,
)
from ._plan import Host, Topology, wan_port

__all__ = [
    "NOBODY_MAC",
    "SilentNeighbor",
    "black_hole_ruleset",
    "black_hole_wan",
    "heal_black_hole",
    "remove_datacenter",
    "replace_gateways",
    "silent_neighbors",
    "vanish_hosts",
]

log = logging.getLogger("wanfed.topology")

NOBODY_MAC: Final = "02:57:46:00:00:00"
"""A locally administered hardware address no host of a topology has: frames sent
to it are flooded by the bridge and dropped by every receiver."""


def _black_hole_table(datacenter: str) -> str:
    return f"wanfed-black-hole-{datacenter}"


def black_hole_ruleset(topology: Topology, datacenter: str) -> str:
    """The router's ``bridge`` table that drops ``datacenter``'s gateways' WAN traffic.

    IP and IPv6 frames in and out of each gateway's WAN port are dropped; ARP is
    not, so the fault looks like a dead path, not like a host that left.
    """
    gateways = topology.gateways(datacenter)
    if not gateways:
        raise NetnsError(f"{datacenter} has no gateways to black-hole on the WAN")
    ports = ", ".join(f'"{wan_port(h)}"' for h in gateways)
    drop_in = f"iifname {{ {ports} }} ether type {{ ip, ip6 }} drop"
    drop_out = f"oifname {{ {ports} }} ether type {{ ip, ip6 }} drop"
    return "\n".join(
        [
            f"table bridge {_black_hole_table(datacenter)} {{",
            "  chain forward {",
            "    type filter hook forward priority filter; policy accept;",
            f"    {drop_in}",
            f"    {drop_out}",
            "  }",
            "  chain input {",
            "    type filter hook input priority filter; policy accept;",
            f"    {drop_in}",
            "  }",
            "  chain output {",
            "    type filter hook output priority filter; policy accept;",
            f"    {drop_out}",
            "  }",
            "}",
            "",
        ]
    )


def black_hole_wan(topology: Topology, datacenter: str) -> None:
    """Silently drop everything between ``datacenter``'s gateways and the WAN.

    Both directions, open connections included; nothing is reset or refused.
    A secondary's servers still reach the primary's gateways through the
    router: that is the fallback path, and it stays open.
    """
    ruleset = black_hole_ruleset(topology, datacenter)
    _run(["ip", "netns", "exec", topology.router_netns, "nft", "-f", "-"], stdin=ruleset)
    log.info(
        "wan black-holed: datacenter=%s gateways=%d; packets vanish until heal_black_hole",
        datacenter,
        len(topology.gateways(datacenter)),
    )


def heal_black_hole(topology: Topology, datacenter: str) -> None:
    """Undo :func:`black_hole_wan`: the same connections may resume."""
    table = _black_hole_table(datacenter)
    _run(["ip", "netns", "exec", topology.router_netns, "nft", "delete", "table", "bridge", table])
    log.info("wan healed: datacenter=%s", datacenter)


class SilentNeighbor(msgspec.Struct, frozen=True, kw_only=True):
    """A permanent neighbour entry: ``address`` on ``device`` of ``netns`` goes nowhere."""

    netns: str
    device: str
    address: str


def silent_neighbors(topology: Topology) -> list[SilentNeighbor]:
    """For every current host, the vanished addresses it would reach without the router."""
    entries: list[SilentNeighbor] = []
    for host in topology.hosts():
        for gone in topology.vanished:
            if gone.dc_index == host.dc_index:
                entries.append(SilentNeighbor(netns=host.netns, device="eth0", address=gone.lan_ip))
            if gone.wan_ip is not None and host.wan_ip is not None:
                entries.append(SilentNeighbor(netns=host.netns, device="eth1", address=gone.wan_ip))
    return entries


def _silence(topology: Topology, hosts: Iterable[Host]) -> None:
    """Install :func:`silent_neighbors` in ``hosts`` (those that exist)."""
    wanted = {h.netns for h in hosts} & _netns_names()
    for entry in silent_neighbors(topology):
        if entry.netns in wanted:
            _run(
                ["ip", "-n", entry.netns, "neigh", "replace", entry.address,
                 "lladdr", NOBODY_MAC, "nud", "permanent", "dev", entry.device],
            )  # fmt: skip


def vanish_hosts(topology: Topology, hosts: Iterable[Host]) -> None:
    """Switch ``hosts`` off without a word; ``topology`` lists them as vanished already.

    The router stops forwarding to their addresses and their neighbours stop
    resolving them before they go; then their links are deleted (so nothing
    the killed processes send leaves), then their processes and namespaces.
    """
    gone = list(hosts)
    apply_firewall(topology)
    _silence(topology, topology.hosts())
    existing = _netns_names()
    for host in gone:
        if host.netns not in existing:
            continue
        # Deleting one end of a veth deletes its peer in the router as well.
        for device in ("eth0", "eth1") if host.wan_ip else ("eth0",):
            _run(["ip", "-n", host.netns, "link", "del", device], check=False)
        _delete_netns(host.netns)
    log.info("hosts vanished: %s", ",".join(f"{h.datacenter}/{h.name}" for h in gone))


def replace_gateways(topology: Topology, datacenter: str) -> Topology:
    """``datacenter``'s gateways vanish and as many new ones are created (new names and
    addresses, see :meth:`Topology.replace_gateways`); returns the new topology.

    The firewall follows: a secondary's servers may reach the new primary
    gateways; the old addresses are a black hole.
    """
    replaced = topology.replace_gateways(datacenter)
    vanish_hosts(replaced, topology.gateways(datacenter))
    add_hosts(replaced, replaced.gateways(datacenter))
    _silence(replaced, replaced.gateways(datacenter))
    log.info(
        "gateways replaced: datacenter=%s old=%s new=%s",
        datacenter,
        ",".join(h.name for h in topology.gateways(datacenter)),
        ",".join(h.name for h in replaced.gateways(datacenter)),
    )
    return replaced


def remove_datacenter(topology: Topology, datacenter: str) -> Topology:
    """Every host of ``datacenter`` vanishes; returns the topology without it."""
    smaller = topology.without(datacenter)
    vanish_hosts(smaller, [h for h in topology.hosts() if h.datacenter == datacenter])
    log.info("datacenter removed: datacenter=%s", datacenter)
    return smaller
