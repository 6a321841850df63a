"""A topology as data, and the address plan that turns it into hosts.

Every host is its own network namespace. Each datacenter is one bridge
(its LAN, ``198.18.<dc>.0/24``) inside a router namespace; gateways also sit
on a shared WAN bridge (``198.19.0.0/24``). Addresses come from
198.18.0.0/15, which exists only inside these namespaces, so nothing here is
reachable from, or reaches, any real network.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Final, Literal

import msgspec

__all__ = [
    "WAN_GATEWAY",
    "WAN_NETWORK",
    "DatacenterSpec",
    "Host",
    "Topology",
    "default_prefix",
    "wan_port",
]

WAN_NETWORK: Final = "198.19.0.0/24"
WAN_GATEWAY: Final = "198.19.0.1"
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,11}$")
OWNED_PREFIX: Final = re.compile(r"^wf(?P<pid>[0-9]+)$")
"""Prefixes made by :func:`default_prefix`: ``wf`` and the id of the owning process."""


def wan_port(host: Host) -> str:
    """The router-side end of a gateway's WAN veth: its port on the WAN bridge."""
    return f"w{host.dc_index}{host.name}"


def default_prefix() -> str:
    """``wf<pid>``: unique among live processes (so parallel runs and xdist workers never
    share a namespace name), and it names its owner, so a later run can tell the
    leftovers of a dead run from the namespaces of a live one."""
    return f"wf{os.getpid()}"


def owner_pid(prefix: str) -> int | None:
    """The process that owns ``prefix`` (made by :func:`default_prefix`), else ``None``."""
    match = OWNED_PREFIX.match(prefix)
    return int(match["pid"]) if match else None


class DatacenterSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    servers: int = 1
    gateways: int = 1
    outsiders: int = 0
    """Hosts on this datacenter's LAN that run neither a server nor a gateway: a
    machine of the same network that an attacker controls (``o1``, ``o2``...)."""
    first_gateway: int = 1
    """Gateways are ``gw<first_gateway>``, ``gw<first_gateway + 1>``...; a replacement
    set starts after the old one, so it gets new names and new addresses."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_-]+", self.name):
            raise ValueError(f"datacenter name {self.name!r} must match [a-z0-9_-]+")
        if not 1 <= self.servers <= 9 or not 0 <= self.gateways <= 9:
            raise ValueError("a datacenter has 1-9 servers and 0-9 gateways")
        if not 0 <= self.outsiders <= 9:
            raise ValueError(f"{self.name} has 0-9 outsiders, got {self.outsiders}")
        if self.first_gateway < 1 or self.first_gateway + self.gateways - 1 > 9:
            raise ValueError(
                f"gateway numbers of {self.name} run from 1 to 9 (the address plan has "
                f"room for nine), got gw{self.first_gateway}..."
                f"gw{self.first_gateway + self.gateways - 1}"
            )


class Host(msgspec.Struct, frozen=True, kw_only=True):
    """One namespace: a server, a gateway or an outsider of one datacenter's network."""

    role: Literal["server", "gateway", "outsider"]
    name: str
    """Node name: ``s1``, ``gw1``, ``o1``..."""
    datacenter: str
    dc_index: int
    netns: str
    lan_ip: str
    wan_ip: str | None = None

    @property
    def router_lan_ip(self) -> str:
        return f"198.18.{self.dc_index}.1"


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """Datacenters (the first is the primary unless ``primary`` says otherwise)."""

    datacenters: list[DatacenterSpec]
    primary: str = ""
    prefix: str = msgspec.field(default_factory=default_prefix)
    removed: list[str] = msgspec.field(default_factory=list)
    """Datacenters taken away after the build: no hosts, no firewall rule; the
    others keep their numbers (and so their addresses)."""
    vanished: list[Host] = msgspec.field(default_factory=list)
    """Hosts that left without a word (replaced gateways, a removed datacenter's
    hosts): their addresses are a black hole, never answered, never refused."""

    def __post_init__(self) -> None:
        if not self.datacenters or len(self.datacenters) > 9:
            raise ValueError("a topology has 1-9 datacenters")
        names = [dc.name for dc in self.datacenters]
        if len(set(names)) != len(names):
            raise ValueError(f"datacenter names repeat: {names}")
        if self.primary and self.primary not in names:
            raise ValueError(f"primary {self.primary!r} is not one of {names}")
        if not _PREFIX.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must be 1-12 lowercase letters/digits")
        if unknown := set(self.removed) - set(names):
            raise ValueError(f"removed datacenters {sorted(unknown)} are not among {names}")
        if reused := _addresses(self.vanished) & _addresses(self.hosts()):
            raise ValueError(f"addresses {sorted(reused)} belong to a vanished and a current host")

    @property
    def primary_datacenter(self) -> str:
        return self.primary or self.datacenters[0].name

    @property
    def router_netns(self) -> str:
        return f"{self.prefix}-rt"

    def hosts(self) -> list[Host]:
        hosts: list[Host] = []
        for d, dc in enumerate(self.datacenters, start=1):
            if dc.name in self.removed:
                continue
            for i in range(1, dc.servers + 1):
                hosts.append(
                    Host(
                        role="server",
                        name=f"s{i}",
                        datacenter=dc.name,
                        dc_index=d,
                        netns=f"{self.prefix}-{d}s{i}",
                        lan_ip=f"198.18.{d}.{10 + i}",
                    )
                )
            for j in range(dc.first_gateway, dc.first_gateway + dc.gateways):
                hosts.append(
                    Host(
                        role="gateway",
                        name=f"gw{j}",
                        datacenter=dc.name,
                        dc_index=d,
                        netns=f"{self.prefix}-{d}g{j}",
                        lan_ip=f"198.18.{d}.{20 + j}",
                        wan_ip=f"198.19.0.{d * 10 + j}",
                    )
                )
            for k in range(1, dc.outsiders + 1):
                hosts.append(
                    Host(
                        role="outsider",
                        name=f"o{k}",
                        datacenter=dc.name,
                        dc_index=d,
                        netns=f"{self.prefix}-{d}o{k}",
                        lan_ip=f"198.18.{d}.{30 + k}",
                    )
                )
        return hosts

    def replace_gateways(self, datacenter: str) -> Topology:
        """The same topology with ``datacenter``'s gateways replaced by as many new ones.

        The new gateways are numbered after the old ones, so every name,
        namespace and address (LAN and WAN) is new: what an operator sees when
        the old gateway machines are gone for good.
        """
        if datacenter not in [dc.name for dc in self.datacenters]:
            raise KeyError(f"no datacenter {datacenter}")
        specs = [
            msgspec.structs.replace(dc, first_gateway=dc.first_gateway + dc.gateways)
            if dc.name == datacenter
            else dc
            for dc in self.datacenters
        ]
        vanished = [*self.vanished, *self.gateways(datacenter)]
        return msgspec.structs.replace(self, datacenters=specs, vanished=vanished)

    def without(self, datacenter: str) -> Topology:
        """The same topology after ``datacenter`` is removed entirely (not the primary)."""
        if datacenter == self.primary_datacenter:
            raise ValueError(f"{datacenter} is the primary datacenter; it cannot be removed")
        if datacenter not in [dc.name for dc in self.datacenters]:
            raise KeyError(f"no datacenter {datacenter}")
        gone = [h for h in self.hosts() if h.datacenter == datacenter]
        return msgspec.structs.replace(
            self, removed=[*self.removed, datacenter], vanished=[*self.vanished, *gone]
        )

    def servers(self, datacenter: str | None = None) -> list[Host]:
        return [
            h
            for h in self.hosts()
            if h.role == "server" and (datacenter is None or h.datacenter == datacenter)
        ]

    def gateways(self, datacenter: str | None = None) -> list[Host]:
        return [
            h
            for h in self.hosts()
            if h.role == "gateway" and (datacenter is None or h.datacenter == datacenter)
        ]

    def outsiders(self, datacenter: str | None = None) -> list[Host]:
        return [
            h
            for h in self.hosts()
            if h.role == "outsider" and (datacenter is None or h.datacenter == datacenter)
        ]

    def host(self, datacenter: str, name: str) -> Host:
        for host in self.hosts():
            if host.datacenter == datacenter and host.name == name:
                return host
        raise KeyError(f"no host {name} in {datacenter}")

    def lan_network(self, datacenter: str) -> str:
        index = next(i for i, dc in enumerate(self.datacenters, 1) if dc.name == datacenter)
        return str(ipaddress.ip_network(f"198.18.{index}.0/24"))


def _addresses(hosts: list[Host]) -> set[str]:
    return {a for h in hosts for a in (h.lan_ip, h.wan_ip) if a is not None}
