"""What a running federation says about itself, asked from inside its namespaces.

The scenario tests wait on these answers (with :func:`wait_until`): each
returns ``True`` when the condition holds and otherwise what it saw, so a
deadline that passes says why.
"""

from __future__ import annotations

from ._plan import Host, Topology
from ._probe import http_json, wait_until, wanfed_cli

__all__ = [
    "alive_wan_members",
    "answers",
    "converged",
    "federation_state_names",
    "leader_of",
]


def alive_wan_members(host: Host) -> set[str]:
    """WAN gossip members ``host`` sees alive (``<node>.<datacenter>``)."""
    out = wanfed_cli(host, "members", "-wan")
    return {line.split()[0] for line in out.splitlines()[1:] if " alive " in line}


def answers(host: Host, path: str) -> object:
    """``True`` when ``host``'s API answers ``path`` with 200, else the answer."""
    answer = http_json(host, path)
    return answer.get("status") == 200 or answer


def federation_state_names(host: Host) -> set[str] | str:
    """Datacenters of the federation states ``host`` stores (a stale, local read)."""
    answer = http_json(host, "/v1/internal/federation-states?stale")
    if answer.get("status") != 200:
        return f"no answer: {answer}"
    return {state["Datacenter"] for state in answer["body"]}


def leader_of(topology: Topology, datacenter: str) -> Host:
    """The server that ``datacenter``'s first server names as its leader."""
    asked = topology.servers(datacenter)[0]
    answer = http_json(asked, "/v1/status/leader")
    address = str(answer.get("body", "")).rsplit(":", 1)[0]
    leaders = [h for h in topology.servers(datacenter) if h.lan_ip == address]
    if len(leaders) != 1:
        raise AssertionError(f"no single leader of {datacenter}: {answer}")
    return leaders[0]


def converged(topology: Topology, timeout: float = 150) -> None:
    """Every server sees every server alive on the WAN, and each secondary reaches the primary."""
    everyone = {f"{h.name}.{h.datacenter}" for h in topology.servers()}
    for dc in topology.datacenters:
        if dc.name in topology.removed:
            continue
        host = topology.servers(dc.name)[0]

        def all_alive(host: Host = host) -> object:
            alive = alive_wan_members(host)
            return alive == everyone or f"{len(alive & everyone)} of {len(everyone)} alive"

        wait_until(f"{dc.name} sees all {len(everyone)} servers alive", timeout, all_alive)
    primary = topology.primary_datacenter
    for dc in topology.datacenters:
        if dc.name != primary and dc.name not in topology.removed:
            host = topology.servers(dc.name)[0]

            def reaches_primary(host: Host = host) -> object:
                return answers(host, f"/v1/catalog/nodes?dc={primary}")

            wait_until(f"{dc.name} answers ?dc={primary}", 60, reaches_primary)
