"""Routes: which way a call to a server goes, as the key of its pooled connection.

A :class:`Route` names the destination (datacenter, and a node or "any
server"), the path the connection takes (``direct`` to the server's own
address, or through ``local-gateways`` / ``primary-gateways``), where a
direct or pinned dial goes, and the *epoch* of that path: a number the path
source moves whenever the path to that datacenter changes. Connections are
pooled per route, so once the epoch moves, new calls resolve a route no
connection has yet and dial along the new path; connections of older epochs
are retired by the pool.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

__all__ = [
    "DIRECT",
    "GatewayPicker",
    "PathSource",
    "Route",
    "RouteTable",
]

DIRECT: Final = "direct"
"""The path of a connection dialled straight to the server's own address."""

_MADE_LIMIT: Final = 4096
"""Routes remembered at most; beyond that the memory starts afresh."""

LOCAL_GATEWAYS: Final = "local-gateways"
"""The path through this datacenter's own gateways (the gateway locator's name)."""


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """Where one pooled connection goes and along which path; hashable, a pool key."""

    datacenter: str
    """Lower case, like every name in a route (routes compare as pool keys)."""
    node: str | None
    """The server's node name; ``None`` for any server of the datacenter."""
    path: str
    """``direct``, or the gateway locator's path (``local-gateways``, ``primary-gateways``,
    ``none`` while no gateway is known)."""
    address: str | None
    """Where the dial goes: the server itself on the direct path, or one pinned
    gateway (a probe); ``None`` through gateways, picked among the candidates
    at dial time."""
    epoch: int = 0
    """Moves whenever the path to ``datacenter`` changes; old epochs retire."""

    def __post_init__(self) -> None:
        if not self.datacenter:
            raise ValueError("a route needs a datacenter")
        if self.path == DIRECT and not self.address:
            raise ValueError("a direct route needs the server's address")
        if self.epoch < 0:
            raise ValueError(f"a route's epoch cannot be negative, got {self.epoch}")

    @property
    def text(self) -> str:
        """For logs: ``node.datacenter via path[@address] epoch N``."""
        via = self.path if self.address is None else f"{self.path}@{self.address}"
        return f"{self.node or '*'}.{self.datacenter} via {via} epoch {self.epoch}"


class PathSource(Protocol):
    """How this server reaches another datacenter now (the gateway locator)."""

    def path_to(self, datacenter: str) -> tuple[str, int]:
        """The path's name and its epoch, which moves whenever the path changes."""
        ...


class GatewayPicker(Protocol):
    """A gateway on the path to ``datacenter``; ``""`` when none is known."""

    def pick_gateway(self, datacenter: str) -> str: ...


class RouteTable:
    """Resolves calls to routes: direct in this datacenter, else as the path source says.

    Without a path source (WAN federation via mesh gateways is off) every
    server is dialled directly at its own address.
    """

    def __init__(self, datacenter: str, paths: PathSource | None = None) -> None:
        self._datacenter = datacenter.lower()
        self._paths = paths
        self._made: dict[tuple[str, str | None, str | None, str, int], Route] = {}
        """Routes made so far: every call resolves one, and most resolve the same."""

    @property
    def through_gateways(self) -> bool:
        return self._paths is not None

    def route(self, datacenter: str, node: str | None, address: str | None) -> Route:
        """The route of a call to ``node`` (``None``: any) of ``datacenter`` at ``address``.

        ``address`` is the server's advertised address; through gateways it is
        not dialled (the gateways route on the name) and not part of the key.
        """
        datacenter = datacenter.lower()
        node = node.lower() if node else None
        if self._paths is None or datacenter == self._datacenter:
            if not address:
                raise ValueError(f"a direct call to {node or '*'}.{datacenter} needs an address")
            path, epoch = DIRECT, 0
        else:
            path, epoch = self._paths.path_to(datacenter)
            address = None
        key = (datacenter, node, address, path, epoch)
        route = self._made.get(key)
        if route is None:
            if len(self._made) >= _MADE_LIMIT:
                self._made.clear()  # old epochs and departed servers: start afresh
            route = Route(datacenter=datacenter, node=node, path=path, address=address, epoch=epoch)
            self._made[key] = route
        return route

    def epoch(self, datacenter: str) -> int:
        """The epoch of the path to ``datacenter`` now (0 on a direct path)."""
        datacenter = datacenter.lower()
        if self._paths is None or datacenter == self._datacenter:
            return 0
        return self._paths.path_to(datacenter)[1]

    @staticmethod
    def pinned(datacenter: str, gateway: str) -> Route:
        """Any server of ``datacenter`` through exactly ``gateway``, one of this
        datacenter's own (a probe of the local path, whatever the path in use)."""
        if not gateway:
            raise ValueError("a pinned route needs a gateway address")
        return Route(datacenter=datacenter.lower(), node=None, path=LOCAL_GATEWAYS, address=gateway)
