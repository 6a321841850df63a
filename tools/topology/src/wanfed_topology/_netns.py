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
fails fast instead of hanging on a timeout. That rejection is enforcement
answering at once, not a fault: the faults a test injects (``_faults.py``) are
silent, and addresses of hosts that vanished are dropped, never rejected.

Ownership: a topology whose prefix came from :func:`default_prefix` carries
the id of the process that built it. A run killed before its teardown leaves
namespaces and processes behind; :func:`reap_stale` (called by :func:`build`)
removes those of dead owners only, never those of a live run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from ._plan import OWNED_PREFIX, WAN_GATEWAY, Host, Topology, owner_pid, wan_port

__all__ = [
    "PREFIX_ENV",
    "Leftovers",
    "NetnsError",
    "add_hosts",
    "apply_firewall",
    "build",
    "check_prerequisites",
    "leftovers",
    "nft_ruleset",
    "reap_stale",
    "teardown",
]

PREFIX_ENV: Final = "WANFED_TOPOLOGY_PREFIX"
"""Set in the environment of every process started in a topology's namespaces,
so its processes can be found even if one left its namespace or was re-parented."""

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
    ]
    if gone := sorted({a for h in topology.vanished for a in (h.lan_ip, h.wan_ip) if a}):
        # Before the replies rule: a connection that was open to a vanished host
        # must go as silent as a new one (no reset, no unreachable from the router).
        lines.append(f"    ip daddr {{ {', '.join(gone)} }} drop")
    lines.append("    ct state established,related accept")
    if primary_wan:
        targets = ", ".join(primary_wan)
        for dc in topology.datacenters:
            if dc.name != primary and dc.name not in topology.removed:
                lan = topology.lan_network(dc.name)
                lines.append(f"    ip saddr {lan} ip daddr {{ {targets} }} accept")
    # Enforcement, not a fault: a path the rule forbids is refused at once, so a
    # test that breaks "only through gateways" fails fast (test_enforcement.py).
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


def _bridge(router: str, name: str, address: str) -> None:
    _run(["ip", "-n", router, "link", "add", name, "type", "bridge"])
    _run(["ip", "-n", router, "addr", "add", address, "dev", name])
    _run(["ip", "-n", router, "link", "set", name, "up"])


def _add_host(router: str, host: Host) -> None:
    _add_netns(host.netns)
    tag = f"{host.dc_index}{host.name}"
    _veth(router, f"v{tag}", host, "eth0", f"br{host.dc_index}")
    _run(["ip", "-n", host.netns, "addr", "add", f"{host.lan_ip}/24", "dev", "eth0"])
    _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
    if host.wan_ip is not None:
        _veth(router, wan_port(host), host, "eth1", "brw")
        _run(["ip", "-n", host.netns, "addr", "add", f"{host.wan_ip}/24", "dev", "eth1"])
        _run(["ip", "-n", host.netns, "link", "set", "eth1", "up"])
        _run(["ip", "-n", host.netns, "route", "add", "default", "via", WAN_GATEWAY])
    else:
        _run(["ip", "-n", host.netns, "route", "add", "default", "via", host.router_lan_ip])


def build(topology: Topology) -> None:
    """Create everything; on any failure, remove what was created and re-raise.

    First removes the leftovers of dead runs (:func:`reap_stale`), so a run
    that follows a killed one starts clean.
    """
    check_prerequisites()
    reap_stale()
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
            _bridge(router, f"br{d}", f"198.18.{d}.1/24")
        _bridge(router, "brw", f"{WAN_GATEWAY}/24")
        for host in topology.hosts():
            _add_host(router, host)
        _run(["ip", "netns", "exec", router, "nft", "-f", "-"], stdin=nft_ruleset(topology))
    except BaseException:
        teardown(topology)
        raise
    log.info(
        "topology up: prefix=%s namespaces=%d seconds=%.2f",
        topology.prefix,
        len(topology.hosts()) + 1,
        time.monotonic() - started,
    )


def apply_firewall(topology: Topology) -> None:
    """Replace the router's forward rules with ``topology``'s, in one transaction."""
    ruleset = "table inet wanfed\ndelete table inet wanfed\n" + nft_ruleset(topology)
    _run(["ip", "netns", "exec", topology.router_netns, "nft", "-f", "-"], stdin=ruleset)


def add_hosts(topology: Topology, hosts: Iterable[Host]) -> None:
    """Create ``hosts`` (of ``topology``, which is already built) and wire them in."""
    for host in hosts:
        _add_host(topology.router_netns, host)


def _netns_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def _netns_names() -> set[str]:
    # ``ip netns list`` prints "name (id: N)" for namespaces with an id.
    if shutil.which("ip") is None:  # no iproute2: nothing can have been built here
        return set()
    out = _run(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _delete_netns(name: str) -> None:
    # A namespace that still holds processes only loses its name: kill them first.
    _kill(_netns_pids(name))
    _run(["ip", "netns", "del", name], check=False)


def _tagged_processes(prefix: str) -> list[int]:
    """Live processes started by a Supervisor for the topology ``prefix``."""
    wanted = f"{PREFIX_ENV}={prefix}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _prefix_of(netns: str) -> str:
    return netns.split("-", 1)[0]


def teardown(topology: Topology) -> None:
    """Kill whatever still runs inside, then delete every namespace of the topology.

    Every namespace named with the topology's prefix goes, including hosts a
    test replaced or removed on the way; so do processes tagged with it.
    """
    for name in _netns_names():
        if _prefix_of(name) == topology.prefix and name != topology.router_netns:
            _delete_netns(name)
    if topology.router_netns in _netns_names():
        _delete_netns(topology.router_netns)
    _kill(_tagged_processes(topology.prefix))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Remove namespaces and processes of topologies whose owner process is dead.

    Only prefixes made by :func:`default_prefix` (``wf<pid>``) are considered;
    a live owner's topology is never touched. Returns the namespaces removed.
    """
    if os.geteuid() != 0:  # cannot have built any, cannot remove any
        return []
    names = _netns_names()
    prefixes = {_prefix_of(name) for name in names if OWNED_PREFIX.match(_prefix_of(name))}
    dead = {p for p in prefixes if (pid := owner_pid(p)) is not None and not _alive(pid)}
    removed = sorted(name for name in names if _prefix_of(name) in dead)
    for name in removed:
        if not name.endswith("-rt"):
            _delete_netns(name)
    for name in removed:
        if name.endswith("-rt"):
            _delete_netns(name)
    for prefix in dead:
        _kill(_tagged_processes(prefix))
    if removed:
        log.warning(
            "removed leftovers of dead runs: prefixes=%s namespaces=%d; building goes on",
            ",".join(sorted(dead)),
            len(removed),
        )
    return removed


class Leftovers(msgspec.Struct, frozen=True, kw_only=True):
    """What a topology prefix still holds after it should have been torn down."""

    namespaces: list[str]
    pids: list[int]

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.pids)


def leftovers(prefix: str) -> Leftovers:
    """Namespaces named with ``prefix`` and live processes tagged with it."""
    namespaces = sorted(name for name in _netns_names() if _prefix_of(name) == prefix)
    pids = set(_tagged_processes(prefix))
    for name in namespaces:
        pids.update(_netns_pids(name))
    return Leftovers(namespaces=namespaces, pids=sorted(pids))
