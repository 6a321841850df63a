"""Which servers answer for a datacenter: the ``Router`` seam.

Cross-datacenter RPC asks the router for a datacenter's servers. The answer
distinguishes the two failures an operator must tell apart: a datacenter
nobody has heard of (``No path to datacenter``) and one that is known but has
no server to talk to right now (``Remote DC has no server currently
reachable``). WAN gossip fills a router later; :class:`StaticRouter` is the
fixed-table implementation used until then and in tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol

import msgspec

from wanfed_agent.rpc import DC_NOT_AVAILABLE
from wanfed_proto import RemoteError

__all__ = [
    "NO_PATH_TO_DATACENTER",
    "NO_SERVER_REACHABLE",
    "NoPathToDatacenterError",
    "RemoteServer",
    "Router",
    "StaticRouter",
]

NO_PATH_TO_DATACENTER: Final = "No path to datacenter"
NO_SERVER_REACHABLE: Final = DC_NOT_AVAILABLE


class NoPathToDatacenterError(RemoteError):
    """The router knows no server of that datacenter: nothing was dialled.

    Typed so that callers judging a path (federation-state replication) can
    tell "no path was tried" from a dial that failed, without reading text.
    """

    def __init__(self) -> None:
        super().__init__(NO_PATH_TO_DATACENTER)


class RemoteServer(msgspec.Struct, frozen=True, kw_only=True):
    """A server of another datacenter: its node name (for the SNI) and where to dial."""

    node: str
    datacenter: str
    address: str
    """``host:port`` of its RPC port: dialled when the route is direct; through
    gateways the route names the server by SNI and this is not used."""


class Router(Protocol):
    """What cross-datacenter forwarding needs from whoever knows the WAN."""

    def datacenters(self) -> list[str]:
        """Every datacenter known, the local one included, sorted."""
        ...

    def servers(self, datacenter: str) -> Sequence[RemoteServer] | None:
        """Servers to try in order; ``None`` when the datacenter is unknown."""
        ...

    def notify_failed(self, server: RemoteServer) -> None:
        """``server`` could not be reached: try another one first next time."""
        ...


class StaticRouter:
    """A fixed datacenter → servers table; a failed server moves to the back."""

    def __init__(
        self, local_datacenter: str, table: Mapping[str, Sequence[RemoteServer]] | None = None
    ) -> None:
        self._local = local_datacenter
        self._table: dict[str, list[RemoteServer]] = {
            dc.lower(): list(servers) for dc, servers in (table or {}).items()
        }

    def set_servers(self, datacenter: str, servers: Sequence[RemoteServer]) -> None:
        self._table[datacenter.lower()] = list(servers)

    def datacenters(self) -> list[str]:
        return sorted({self._local.lower(), *self._table})

    def servers(self, datacenter: str) -> Sequence[RemoteServer] | None:
        servers = self._table.get(datacenter.lower())
        return None if servers is None else list(servers)

    def notify_failed(self, server: RemoteServer) -> None:
        servers = self._table.get(server.datacenter.lower())
        if servers is not None and server in servers:
            servers.remove(server)
            servers.append(server)
