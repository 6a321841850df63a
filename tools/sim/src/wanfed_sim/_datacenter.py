"""One datacenter: its gateways, its catalog, and its store under simulated Raft.

Raft is simulated, not run: each datacenter has *one* store (what every
server of it would read after the log is applied), one index that every
write moves, and at most one leader. Writes land after :data:`APPLY_LATENCY`
and only while their writer still leads. A lost leader is replaced after an
election delay by a random server that is up; a restarted server finds the
store as the datacenter left it.

The catalog holds this datacenter's registered mesh gateways and their one
health check. A gateway that dies turns critical after :data:`CHECK_TTL`; a
replaced one is deregistered after :data:`DEREGISTER_AFTER`. Every change
wakes the blocking reads waiting above the old index.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    WAN_FEDERATION_META_KEY,
    CheckServiceNode,
    FederationState,
    HealthCheck,
    HealthStatus,
    Node,
    Service,
    ServiceAddress,
)
from wanfed_server.gateway._routes import (
    DirectoryServer,
    RouteInputs,
    RouteTable,
    build_route_table,
)

from ._network import Host
from ._scheduler import Scheduler

__all__ = ["APPLY_LATENCY", "CHECK_TTL", "DEREGISTER_AFTER", "Datacenter", "Gateway"]

APPLY_LATENCY: Final = 0.005
CHECK_TTL: Final = 15.0
"""A dead gateway's TTL check turns critical this long after it stopped refreshing."""
DEREGISTER_AFTER: Final = 60.0
"""A replaced gateway's registration is reaped this long after its replacement."""
GATEWAY_PORT: Final = 8443
SERVER_PORT: Final = 8300


@dataclass(eq=False)
class Gateway:
    """One mesh gateway: a host, its two addresses and its catalog registration."""

    name: str
    host: Host
    lan: str
    wan: str
    passing: bool = True
    registered: bool = True
    retired: bool = False
    """Replaced: it will never come back, and its registration is being reaped."""
    _record: CheckServiceNode | None = field(default=None, repr=False)

    def record(self) -> CheckServiceNode:
        """The catalog entry (cached: it only changes with the check status)."""
        status: HealthStatus = "passing" if self.passing else "critical"
        if self._record is None or self._record.checks[0].status != status:
            lan_host = self.lan.rsplit(":", 1)[0]
            wan_host = self.wan.rsplit(":", 1)[0]
            self._record = CheckServiceNode(
                node=Node(node=self.name, address=lan_host, datacenter=self.host.datacenter),
                service=Service(
                    kind=MESH_GATEWAY_KIND,
                    id="mesh-gateway",
                    service="mesh-gateway",
                    address=lan_host,
                    port=GATEWAY_PORT,
                    tagged_addresses={"wan": ServiceAddress(address=wan_host, port=GATEWAY_PORT)},
                    meta={WAN_FEDERATION_META_KEY: "1"},
                ),
                checks=[
                    HealthCheck(
                        node=self.name,
                        check_id="mesh-gateway-ttl",
                        status=status,
                        service_id="mesh-gateway",
                    )
                ],
            )
        return self._record


@dataclass(eq=False)
class _Waiter:
    callback: Callable[[], None]
    done: bool = False


class Datacenter:
    """A datacenter's shared state: store, catalog, leadership, server directory."""

    def __init__(self, name: str, scheduler: Scheduler, servers: list[Host]) -> None:
        self.name = name
        self._scheduler = scheduler
        self.index = 1
        self.states: dict[str, FederationState] = {}
        self.gateways: list[Gateway] = []
        self.servers = servers
        self.leader: str | None = None
        self.term = 0
        self.addresses: dict[str, Host] = {}
        """Server RPC addresses of this datacenter (``host:port``)."""
        self.listeners: list[Callable[[], None]] = []
        """Called (from the queue, not re-entrantly) after each federation-state write."""
        self._waiters: list[_Waiter] = []
        self._tables: dict[tuple[int, int], RouteTable] = {}
        self.directory_version = 0

    # -- the store ---------------------------------------------------------

    def sorted_states(self) -> list[FederationState]:
        return [self.states[key] for key in sorted(self.states)]

    def write_state(self, state: FederationState) -> None:
        """Upsert one record; the store stamps its indexes."""
        self.index += 1
        key = state.datacenter.lower()
        previous = self.states.get(key)
        self.states[key] = msgspec.structs.replace(
            state,
            create_index=previous.create_index if previous is not None else self.index,
            modify_index=self.index,
        )
        self._changed()
        self._states_changed()

    def delete_state(self, key: str) -> None:
        self.index += 1
        self.states.pop(key.lower(), None)
        self._changed()
        self._states_changed()

    def _states_changed(self) -> None:
        for listener in self.listeners:
            self._scheduler.after(0.0, listener)

    # -- the catalog -------------------------------------------------------

    def catalog(self) -> list[CheckServiceNode]:
        """Registered mesh gateways with their checks, as a health dump lists them."""
        return [g.record() for g in sorted(self.gateways, key=lambda g: g.name) if g.registered]

    def catalog_changed(self) -> None:
        self.index += 1
        self._changed()

    def live_gateways(self) -> list[Gateway]:
        return [g for g in self.gateways if g.registered and g.host.up and not g.host.gone]

    # -- blocking reads ----------------------------------------------------

    def watch(self, min_index: int, max_wait: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the index passes ``min_index``, or after ``max_wait``."""
        if self.index > min_index:
            self._scheduler.after(0.0, callback)
            return
        waiter = _Waiter(callback)
        self._waiters.append(waiter)
        self._scheduler.after(max_wait, lambda: self._wake(waiter))

    def _wake(self, waiter: _Waiter) -> None:
        if not waiter.done:
            waiter.done = True
            waiter.callback()

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done:
                self._scheduler.after(0.0, functools.partial(self._wake, waiter))

    # -- leadership --------------------------------------------------------

    def servers_up(self) -> list[Host]:
        return [s for s in self.servers if s.up and not s.gone]

    def directory_changed(self) -> None:
        self.directory_version += 1

    # -- the gateways' route table -----------------------------------------

    def route_table(self) -> RouteTable:
        """The real route table every gateway of this datacenter computes from its watches."""
        key = (self.index, self.directory_version)
        table = self._tables.get(key)
        if table is None:
            directory = [
                DirectoryServer(
                    node=host.name,
                    datacenter=self.name,
                    address=address.rsplit(":", 1)[0],
                    port=SERVER_PORT,
                    alive=host.up and not host.gone,
                )
                for address, host in sorted(self.addresses.items())
            ]
            inputs = RouteInputs(
                local_dc=self.name,
                server_directory=directory,
                fed_state_gateways={
                    state.datacenter: state.mesh_gateways for state in self.sorted_states()
                },
            )
            table = build_route_table(inputs)
            self._tables = {key: table}
        return table
