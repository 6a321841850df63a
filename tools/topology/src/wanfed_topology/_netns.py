"""Building and tearing down the namespaces, bridges, veths and firewall.

The router namespace holds one bridge per datacenter LAN and one WAN bridge
for the gateways' WAN addresses, and forwards between them through an
nftables ``forward`` chain whose policy is drop. It accepts only:

* replies of accepted connections;
* a secondary's server → a primary gateway's WAN address (the bootstrap and
  fallback path);

Gateways meet each other on the WAN bridge (layer 2, never forwarded), and
hosts of one datacenter meet on their LAN bridge. Everything else — a server
reaching another datacenter's server or gateway LAN, a gateway reaching a
remote LAN — is rejected (TCP reset, ICMP admin-prohibited), so a violation
fails fast instead of hanging on a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

from ._plan import WAN_GATEWAY, Host, Topology

__all__ = ["NetnsError", "build", "check_prerequisites", "nft_ruleset", "teardown"]

log = logging.getLogger("wanfed.topology")


class NetnsError(RuntimeError):
    """The host cannot build namespaces, or a command that builds them failed."""


def check_prerequisites() -> None:
    """One clear message when this machine cannot host a topology."""
    if os.geteuid() != 0:
        raise NetnsError(
            "network-namespace topologies need root (ip netns, veth, nftables); "
            "run as root, e.g. in CI or with sudo"
        )
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise NetnsError(
            f"missing {', '.join(missing)}: install the Debian packages iproute2 and nftables "
            "(nox -s integration installs them)"
        )


def _run(args: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def nft_ruleset(topology: Topology) -> str:
    primary = topology.primary_datacenter
    primary_wan = sorted(h.wan_ip for h in topology.gateways(primary) if h.wan_ip)
    lines = [
        "table inet wanfed {",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
    ]
    if primary_wan:
        targets = ", ".join(primary_wan)
        for dc in topology.datacenters:
            if dc.name != primary:
                lan = topology.lan_network(dc.name)
                lines.append(f"    ip saddr {lan} ip daddr {{ {targets} }} accept")
    lines += [
        "    meta l4proto tcp counter reject with tcp reset",
        "    counter reject with icmpx type admin-prohibited",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _add_netns(name: str) -> None:
    _run(["ip", "netns", "add", name])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])


def _veth(router: str, router_end: str, host: Host, host_end: str, bridge: str) -> None:
    _run(
        [
            "ip", "-n", router, "link", "add", router_end, "type", "veth",
            "peer", "name", host_end, "netns", host.netns,
        ]
    )  # fmt: skip
    _run(["ip", "-n", router, "link", "set", router_end, "master", bridge, "up"])


def build(topology: Topology) -> None:
    """Create everything; on any failure, remove what was created and re-raise."""
    check_prerequisites()
    router = topology.router_netns
    started = time.monotonic()
    try:
        _add_netns(router)
        _run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # br_netfilter would push bridged (same-LAN) frames through the forward
        # chain too; the setting is per namespace, so only the router's changes.
        _run(
            ["ip", "netns", "exec", router, "sysctl", "-qw",
             "net.bridge.bridge-nf-call-iptables=0"],
            check=False,
        )  # fmt: skip
        for d, _dc in enumerate(topology.datacenters, start=1):
            _run(["ip", "-n", router, "link", "add", f"br{d}", "type", "bridge"])
            _run(["ip", "-n", router, "addr", "add", f"198.18.{d}.1/24", "dev", f"br{d}"])
            _run(["ip", "-n", router, "link", "set", f"br{d}", "up"])
        _run(["ip", "-n", router, "link", "add", "brw", "type", "bridge"])
        _run(["ip", "-n", router, "addr", "add", f"{WAN_GATEWAY}/24", "dev", "brw"])
        _run(["ip", "-n", router, "link", "set", "brw", "up"])
        for host in topology.hosts():
            _add_netns(host.netns)
            tag = f"{host.dc_index}{host.name}"
            _veth(router, f"v{tag}", host, "eth0", f"br{host.dc_index}")
            _run(["ip", "-n", host.netns, "addr", "add", f"{host.lan_ip}/24", "dev", "eth0"])
            _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
            if host.wan_ip is not None:
                _veth(router, f"w{tag}", host, "eth1", "brw")
                _run(["ip", "-n", host.netns, "addr", "add", f"{host.wan_ip}/24", "dev", "eth1"])
                _run(["ip", "-n", host.netns, "link", "set", "eth1", "up"])
                _run(["ip", "-n", host.netns, "route", "add", "default", "via", WAN_GATEWAY])
            else:
                _run(["ip", "-n", host.netns, "route", "add", "default", "via", host.router_lan_ip])
        _run(["ip", "netns", "exec", router, "nft", "-f", "-"], stdin=nft_ruleset(topology))
    except BaseException:
        teardown(topology)
        raise
    log.info(
        "topology up: %d namespaces in %.2f s",
        len(topology.hosts()) + 1,
        time.monotonic() - started,
    )


def _netns_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def teardown(topology: Topology) -> None:
    """Kill whatever still runs inside, then delete every namespace of the topology."""
    existing = set(_run(["ip", "netns", "list"], check=False).split())
    names = [h.netns for h in topology.hosts()] + [topology.router_netns]
    for name in names:
        if name not in existing:
            continue
        for pid in _netns_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _run(["ip", "netns", "del", name], check=False)
