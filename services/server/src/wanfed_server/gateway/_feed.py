"""Where the gateway's watchers hand in what they saw.

Each watcher (the servers' own server directory, ``ListMeshGateways``, one
service dump per remote DC) calls one ``set_*`` method with its latest
answer. The feed keeps the last answer of every watch, rebuilds the route
table with :func:`build_route_table`, and returns the new table only when it
differs, so the caller swaps the data plane's table exactly when routing
changes. No I/O and no clock: the watcher loop around it stays trivial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from wanfed_fsm import CheckServiceNode

from ._routes import DirectoryServer, RouteInputs, RouteTable, build_route_table

__all__ = ["RouteFeed"]


class RouteFeed:
    """The latest state of every watch, and the route table it implies."""

    def __init__(self, local_dc: str, domain: str = "consul") -> None:
        self._inputs = RouteInputs(local_dc=local_dc, domain=domain)
        self._table = build_route_table(self._inputs)

    @property
    def table(self) -> RouteTable:
        return self._table

    @property
    def inputs(self) -> RouteInputs:
        return self._inputs

    def set_server_directory(self, servers: Sequence[DirectoryServer]) -> RouteTable | None:
        """The local servers' own directory (``/v1/internal/server-directory``).

        Raises :class:`RouteInputError` (keeping the previous state) when an
        entry belongs to another DC.
        """
        return self._update(server_directory=tuple(servers))

    def set_fed_state_gateways(
        self, by_dc: Mapping[str, Sequence[CheckServiceNode]]
    ) -> RouteTable | None:
        """The ``ListMeshGateways`` answer: every DC's gateways from federation states."""
        return self._update(fed_state_gateways={dc: tuple(g) for dc, g in by_dc.items()})

    def set_gateway_group(self, dc: str, gateways: Sequence[CheckServiceNode]) -> RouteTable | None:
        """The service dump of mesh gateways in remote ``dc``."""
        groups = dict(self._inputs.gateway_groups)
        groups[dc] = tuple(gateways)
        return self._update(gateway_groups=groups)

    def drop_gateway_group(self, dc: str) -> RouteTable | None:
        """Forget ``dc``'s service dump (the DC left the datacenter list)."""
        if dc not in self._inputs.gateway_groups:
            return None
        groups = dict(self._inputs.gateway_groups)
        del groups[dc]
        return self._update(gateway_groups=groups)

    def _update(self, **changes: object) -> RouteTable | None:
        inputs = msgspec.structs.replace(self._inputs, **changes)
        table = build_route_table(inputs)  # raises before any state changes
        self._inputs = inputs
        if table == self._table:
            return None
        self._table = table
        return table
