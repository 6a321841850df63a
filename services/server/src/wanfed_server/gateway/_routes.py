"""The mesh gateway's route table: watched state in, SNI → upstreams out.

Theory of operation: the gateway's watchers (the local servers' own server
directory, ``ListMeshGateways`` and the per-DC service dump of mesh gateways)
each hand their latest answer to :func:`build_route_table`, which is pure — it
reads no clock, does no I/O and keeps no state — and returns a frozen
:class:`RouteTable`. The data plane swaps the whole table at once, so a new
connection always sees one consistent picture and an in-flight one keeps the
upstream it already has.

Only server names are routed; everything else has no route, so the gateway
is never an open relay:

* ``<node>.server.<local dc>.<domain>`` → that local server (exact names only:
  a node the server directory does not list gets nothing);
* ``server.<local dc>.<domain>`` → any local server the directory calls alive;
* ``<anything>.server.<remote dc>.<domain>`` and ``server.<remote dc>.<domain>``
  → the remote DC's opted-in, non-critical mesh gateways at their WAN
  addresses. For each remote DC the source (federation states or the service
  dump) with the larger maximum service ``ModifyIndex`` wins, ties going to the
  service dump: the dump of a remote DC can go stale when that DC is
  unreachable, while federation states keep being replicated, so the newer
  one must win (Consul #11522).

Where local names go is decided by :class:`DirectoryServer` entries only: the
servers' own directory of the datacenter (learned from the servers' mutually
authenticated hellos and Raft membership, served by
``/v1/internal/server-directory``). The catalog's ``consul`` service is not an
input at all: anyone who can write the catalog could add a row there naming
any address, and the gateway would become a relay to it. Remote names go to
mesh gateways from the catalog and the federation states: until ACLs exist a
false ``mesh-gateway`` registration can be chosen as a path into its DC and
black-hole that traffic, but every connection is mutual TLS end to end with
server certificates, so it cannot read it or impersonate a server (the
server README, "Trust: where routes come from").
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec

from wanfed_fsm import (
    CheckServiceNode,
    format_host_port,
    gateway_wan_address,
    is_wan_federation_gateway,
)
from wanfed_proto import InvalidNameError, normalize_domain, server_sni, validate_datacenter

__all__ = [
    "CONSUL_SERVICE",
    "DirectoryServer",
    "Route",
    "RouteInputError",
    "RouteInputs",
    "RouteTable",
    "Upstream",
    "build_route_table",
    "render_route_table",
]

CONSUL_SERVICE: Final = "consul"
"""The service name every server registers itself under (never a route source)."""

LOCAL_ANY_LABEL: Final = "local-any"

_NODE_LABEL: Final = re.compile(r"[a-z0-9_-]{1,63}")
"""What a node label of a server name may be (as ``wanfed_proto`` builds them)."""


class RouteInputError(ValueError):
    """Watched state that cannot describe this gateway's datacenter."""


class Upstream(msgspec.Struct, frozen=True, order=True):
    """One place a routed connection may go. ``host`` may be a DNS name."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("upstream host must not be empty")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"upstream port {self.port} is outside 1..65535")

    @property
    def is_hostname(self) -> bool:
        """True for DNS names, which are resolved each time a connection is made."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


class DirectoryServer(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """One server of the datacenter as the servers' own directory lists it.

    The JSON shape of ``/v1/internal/server-directory``: ``Address``/``Port``
    is the server's RPC address, ``Alive`` whether it answered its peers'
    hellos recently and is a Raft voter.
    """

    node: str
    datacenter: str
    address: str
    port: int
    alive: bool

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("directory server has an empty node name")
        if not self.address:
            raise ValueError(f"directory server {self.node!r} has no address")
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"directory server {self.node!r} port {self.port} is outside 1..65535")


class Route(msgspec.Struct, frozen=True):
    """Where connections for one name go; ``label`` keys the counters."""

    label: str
    upstreams: tuple[Upstream, ...]

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError(f"route {self.label!r} has no upstream")


class RouteInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the gateway watches, as the watchers last saw it."""

    local_dc: str
    domain: str = "consul"
    server_directory: Sequence[DirectoryServer] = ()
    """The local servers; never catalog rows (see the module text)."""
    fed_state_gateways: Mapping[str, Sequence[CheckServiceNode]] = msgspec.field(
        default_factory=dict
    )
    gateway_groups: Mapping[str, Sequence[CheckServiceNode]] = msgspec.field(default_factory=dict)


class RouteTable(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable SNI routing table.

    ``exact`` maps full server names; ``remote_suffixes`` maps
    ``server.<dc>.<domain>`` of each remote DC, and also answers
    ``<node>.server.<dc>.<domain>`` for any node, since the remote gateway
    (not this one) knows that DC's servers.
    """

    local_dc: str
    domain: str
    exact: dict[str, Route] = msgspec.field(default_factory=dict)
    remote_suffixes: dict[str, Route] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # lookup() lower-cases the SNI, so a key in any other spelling could
        # never match: refuse to build such a table.
        for name in (*self.exact, *self.remote_suffixes):
            if not name.isascii() or name != name.lower() or not name:
                raise ValueError(f"route name {name!r} must be non-empty lower-case ASCII")

    def lookup(self, sni: str) -> Route | None:
        """The route for a ClientHello's server name, or ``None`` to refuse it."""
        if not sni.isascii():
            # str.lower() folds some non-ASCII letters into ASCII ones
            # (KELVIN SIGN becomes "k"): a look-alike must not route.
            return None
        name = sni.lower()
        route = self.exact.get(name)
        if route is not None:
            return route
        node, dot, suffix = name.partition(".")
        if not dot:
            return None
        route = self.remote_suffixes.get(suffix)
        if route is None or _NODE_LABEL.fullmatch(node) is None:
            return None
        return route

    def labels(self) -> list[str]:
        """Every counter label this table can produce, sorted."""
        return sorted({r.label for r in (*self.exact.values(), *self.remote_suffixes.values())})


def _max_modify_index(nodes: Sequence[CheckServiceNode]) -> int:
    return max((csn.service.modify_index for csn in nodes), default=0)


def _pick_gateway_source(
    fed_state: Sequence[CheckServiceNode] | None, dump: Sequence[CheckServiceNode] | None
) -> Sequence[CheckServiceNode]:
    if fed_state is None:
        return dump or ()
    if dump is None:
        return fed_state
    if _max_modify_index(fed_state) > _max_modify_index(dump):
        return fed_state
    return dump


def _wan_upstreams(gateways: Iterable[CheckServiceNode]) -> tuple[Upstream, ...]:
    found: set[Upstream] = set()
    for gateway in gateways:
        if not is_wan_federation_gateway(gateway.service) or gateway.has_critical_check():
            continue
        host, port = gateway_wan_address(gateway)
        if host and port:
            found.add(Upstream(host, port))
    return tuple(sorted(found))


def _check_directory(local_dc: str, servers: Sequence[DirectoryServer]) -> None:
    # The directory endpoint lists this DC's servers only; anything else means
    # a miswired watcher (or another DC's server answered), and routing on it
    # would send "local" traffic to the wrong place.
    for entry in servers:
        if entry.datacenter.lower() != local_dc:
            raise RouteInputError(
                f"local server {entry.node!r} is in datacenter {entry.datacenter!r}, "
                f"not {local_dc!r}"
            )


def build_route_table(inputs: RouteInputs) -> RouteTable:
    """Compute the table for the gateway of ``inputs.local_dc``.

    Raises :class:`RouteInputError` when the inputs contradict themselves
    (an invalid datacenter or domain, a directory entry of another DC).
    Servers or datacenters whose names cannot form a server SNI are left out:
    nothing could ask for them.
    """
    try:
        domain = normalize_domain(inputs.domain)
        local_dc = validate_datacenter(inputs.local_dc.lower())
    except InvalidNameError as exc:
        raise RouteInputError(str(exc)) from None
    _check_directory(local_dc, inputs.server_directory)
    exact = _local_routes(local_dc, domain, inputs.server_directory)
    remote_suffixes = _remote_routes(local_dc, domain, inputs)
    exact.update(remote_suffixes)
    return RouteTable(
        local_dc=local_dc, domain=domain, exact=exact, remote_suffixes=remote_suffixes
    )


def _local_routes(
    local_dc: str, domain: str, servers: Sequence[DirectoryServer]
) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    healthy: set[Upstream] = set()
    per_node: dict[str, set[Upstream]] = {}
    for entry in servers:
        upstream = Upstream(entry.address, entry.port)
        # The caller named this server; whether it can serve is its own call,
        # so the per-node name routes to it whether it looks alive or not.
        per_node.setdefault(entry.node, set()).add(upstream)
        if entry.alive:
            healthy.add(upstream)
    for node, upstreams in per_node.items():
        try:
            name = server_sni(local_dc, domain, node)
        except InvalidNameError:
            continue
        routes[name] = Route(f"local-server:{node}", tuple(sorted(upstreams)))
    if healthy:
        routes[server_sni(local_dc, domain)] = Route(LOCAL_ANY_LABEL, tuple(sorted(healthy)))
    return routes


def _remote_routes(local_dc: str, domain: str, inputs: RouteInputs) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    fed_by_dc = {dc.lower(): nodes for dc, nodes in inputs.fed_state_gateways.items()}
    dump_by_dc = {dc.lower(): nodes for dc, nodes in inputs.gateway_groups.items()}
    for dc in sorted((fed_by_dc.keys() | dump_by_dc.keys()) - {local_dc}):
        try:
            name = server_sni(dc, domain)
        except InvalidNameError:
            continue
        upstreams = _wan_upstreams(_pick_gateway_source(fed_by_dc.get(dc), dump_by_dc.get(dc)))
        if upstreams:
            routes[name] = Route(f"remote:{dc}", upstreams)
    return routes


def render_route_table(table: RouteTable) -> str:
    """A stable, human-readable JSON text of the table (golden files, status page)."""
    routes: dict[str, dict[str, object]] = {}
    for name, route in table.exact.items():
        routes[name] = _render_route(route)
    for suffix, route in table.remote_suffixes.items():
        routes[f"*.{suffix}"] = _render_route(route)
    document = {"local_dc": table.local_dc, "domain": table.domain, "routes": routes}
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _render_route(route: Route) -> dict[str, object]:
    return {
        "label": route.label,
        "upstreams": [
            {"address": str(u), "hostname": u.is_hostname} for u in sorted(route.upstreams)
        ],
    }
