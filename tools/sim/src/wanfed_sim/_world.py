"""The simulated federation: N datacenters × M servers × G gateways on one clock.

The world owns the hosts, the datacenters' stores and catalogs, the RPC layer
and the discovery answer (``primary_gateways``). It carries out what faults
ask (kill, restart, replace, elect), serves the primary's side of the calls
the cores make, and checks the safety invariants at each decision. Servers
also make *other* cross-datacenter calls now and then (what clients forward),
so followers dial too and their path choice is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from wanfed_fsm import FederationState

from ._datacenter import CHECK_TTL, DEREGISTER_AFTER, Datacenter, Gateway
from ._gossip import GossipPool
from ._invariants import LIVENESS_BOUND, SimulationViolation
from ._network import Host, Network
from ._primary_side import PrimarySide, ping_handler
from ._rpc import RpcLayer
from ._scheduler import Scheduler
from ._server import SimServer
from ._timing import EPOCH, RPC_SLACK

__all__ = ["SimConfig", "World"]

ELECTION_DELAY: Final = (1.0, 5.0)
CLIENT_CALL_INTERVAL: Final = 20.0
"""Mean seconds between two forwarded cross-datacenter calls of one server."""


@dataclass(frozen=True)
class SimConfig:
    """The shape of one run."""

    datacenters: int = 5
    servers: int = 3
    gateways: int = 2
    minutes: float = 10.0
    """Virtual minutes of faults; healing and the liveness phase come after."""
    gossip: bool = True
    """Run every server's SWIM membership core (the WAN pool); the pruner asks it."""
    liveness_bound: float = LIVENESS_BOUND
    """Virtual seconds after healing by which the federation must have converged."""

    def __post_init__(self) -> None:
        if not 1 <= self.datacenters <= 250:
            raise ValueError(f"datacenters must be within 1..250, got {self.datacenters}")
        if not 1 <= self.servers <= 250 or not 1 <= self.gateways <= 200:
            raise ValueError("servers must be within 1..250 and gateways within 1..200")
        if self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")


class World:
    """Every host, store and core of one simulated run."""

    def __init__(self, config: SimConfig, scheduler: Scheduler) -> None:
        self.config = config
        self.scheduler = scheduler
        self.network = Network(scheduler.child_rng())
        self.names = [f"dc{i + 1}" for i in range(config.datacenters)]
        self.primary = self.names[0]
        self.datacenters: dict[str, Datacenter] = {}
        self.servers: dict[str, SimServer] = {}
        self.rpc = RpcLayer(scheduler, self.network, scheduler.child_rng(), self.datacenters)
        self._gateway_serial: dict[str, int] = {}
        self._elections: set[str] = set()
        self.dials = {"local": 0, "direct": 0}
        self.clock_offsets: dict[str, float] = {}
        """Seconds each datacenter's wall clock is off (clock-jump faults)."""
        self.primary_side = PrimarySide(scheduler, self.datacenters, self.primary)
        self.gossip = GossipPool(self) if config.gossip else None
        for number, name in enumerate(self.names, start=1):
            self._build(number, name)
        self.discovery = [g.wan for g in self.datacenters[self.primary].gateways]

    def _build(self, number: int, name: str) -> None:
        hosts = [Host(f"s{i + 1}-{name}", name, "server") for i in range(self.config.servers)]
        datacenter = Datacenter(name, self.scheduler, hosts)
        self.datacenters[name] = datacenter
        for i, host in enumerate(hosts):
            datacenter.addresses[f"10.{number}.0.{i + 1}:8300"] = host
            if self.gossip is not None:
                self.gossip.register(host, f"10.{number}.0.{i + 1}")
            server = SimServer(host, self)
            self.servers[host.name] = server
            datacenter.listeners.append(server.states_changed)
        for _ in range(self.config.gateways):
            self.add_gateway(name)

    # -- building and replacing gateways ------------------------------------

    def add_gateway(self, datacenter: str) -> Gateway:
        serial = self._gateway_serial.get(datacenter, 0) + 1
        self._gateway_serial[datacenter] = serial
        number = self.names.index(datacenter) + 1
        high, low = divmod(serial, 250)
        gateway = Gateway(
            name=f"gw{serial}-{datacenter}",
            host=Host(f"gw{serial}-{datacenter}", datacenter, "gateway"),
            lan=f"10.{number}.{10 + high}.{low + 1}:8443",
            wan=f"100.{number}.{high}.{low + 1}:8443",
        )
        self.datacenters[datacenter].gateways.append(gateway)
        self.datacenters[datacenter].catalog_changed()
        self.rpc.lan[gateway.lan] = gateway
        self.rpc.wan[gateway.wan] = gateway
        return gateway

    def retire_gateway(self, gateway: Gateway) -> None:
        """Replaced: the host vanishes, its check turns critical, its registration is reaped."""
        gateway.retired = True
        self.kill_gateway(gateway, vanish=True)
        datacenter = self.datacenters[gateway.host.datacenter]

        def deregister() -> None:
            gateway.registered = False
            datacenter.catalog_changed()

        self.scheduler.after(DEREGISTER_AFTER, deregister)

    def kill_gateway(self, gateway: Gateway, *, vanish: bool) -> None:
        gateway.host.up = False
        gateway.host.gone = vanish
        datacenter = self.datacenters[gateway.host.datacenter]

        def turn_critical() -> None:
            if not gateway.host.up and gateway.passing and gateway.registered:
                gateway.passing = False
                datacenter.catalog_changed()

        self.scheduler.after(CHECK_TTL, turn_critical)

    def revive_gateway(self, gateway: Gateway) -> None:
        if gateway.retired:
            return
        gateway.host.up = True
        gateway.host.gone = False
        if not gateway.passing:
            gateway.passing = True
            self.datacenters[gateway.host.datacenter].catalog_changed()

    def is_live_gateway(self, address: str) -> bool:
        gateway = self.rpc.lan.get(address) or self.rpc.wan.get(address)
        return gateway is not None and gateway.host.up and not gateway.host.gone

    def set_discovery(self, addresses: list[str]) -> None:
        self.discovery = sorted(addresses)
        self.note(f"discovery answers {self.discovery}")
        for server in self.servers.values():
            server.discovery_changed()

    # -- servers and leadership ----------------------------------------------

    def start(self) -> None:
        seed = self.datacenters[self.primary].servers[0]
        for server in self.servers.values():
            server.start()
            if self.gossip is not None:
                self.gossip.start(server.host, [] if server.host is seed else [seed])
        for name in self.names:
            self.schedule_election(name)
        for server in self.servers.values():
            self._schedule_client_call(server)

    def kill_server(self, server: SimServer, *, vanish: bool) -> None:
        server.host.up = False
        server.host.gone = vanish
        server.stop()
        if self.gossip is not None:
            self.gossip.stop(server.host)
        datacenter = self.datacenters[server.datacenter]
        datacenter.directory_changed()
        self.note(f"{server.name} killed ({'vanished' if vanish else 'process died'})")
        if datacenter.leader == server.name:
            datacenter.leader = None
            self.schedule_election(datacenter.name)

    def restart_server(self, server: SimServer) -> None:
        if server.host.up and not server.host.gone:
            return
        server.host.up = True
        server.host.gone = False
        server.start()
        if self.gossip is not None:
            self.gossip.start(server.host, self._join_list(server.host))
        datacenter = self.datacenters[server.datacenter]
        datacenter.directory_changed()
        self.note(f"{server.name} restarted")
        if datacenter.leader is None:
            self.schedule_election(datacenter.name)

    def _join_list(self, host: Host) -> list[Host]:
        """A retry-join list: one server of each other datacenter."""
        return [
            self.datacenters[name].servers[0] for name in self.names if name != host.datacenter
        ] or [s for s in self.datacenters[host.datacenter].servers if s is not host][:1]

    def step_down(self, name: str) -> None:
        datacenter = self.datacenters[name]
        if datacenter.leader is None:
            return
        self.servers[datacenter.leader].set_leader(False)
        datacenter.leader = None
        self.schedule_election(name)

    def schedule_election(self, name: str) -> None:
        if name in self._elections:
            return
        self._elections.add(name)
        self.scheduler.after(self.scheduler.rng.uniform(*ELECTION_DELAY), lambda: self._elect(name))

    def _elect(self, name: str) -> None:
        self._elections.discard(name)
        datacenter = self.datacenters[name]
        if datacenter.leader is not None:
            return
        candidates = datacenter.servers_up()
        if not candidates:
            return  # a restart schedules the next election
        host = candidates[self.scheduler.rng.randrange(len(candidates))]
        datacenter.leader = host.name
        datacenter.term += 1
        self.servers[host.name].set_leader(True)

    def known_datacenters(self, observer: str) -> list[str]:
        """The WAN pool's datacenters as ``observer`` knows them (all, without gossip)."""
        if self.gossip is None:
            return list(self.names)
        return self.gossip.known_datacenters(observer)

    # -- forwarded client calls (followers dial too) ------------------------------

    def _schedule_client_call(self, server: SimServer) -> None:
        delay = self.scheduler.rng.expovariate(1.0 / CLIENT_CALL_INTERVAL)
        self.scheduler.after(delay, lambda: self._client_call(server))

    def _client_call(self, server: SimServer) -> None:
        self._schedule_client_call(server)
        if server.locator is None or len(self.names) < 2:
            return
        others = [n for n in self.names if n != server.datacenter]
        target = others[self.scheduler.rng.randrange(len(others))]
        address = server.locator.pick(target)
        if not address:
            return
        if target == self.primary:
            self.check_dial(server, address, "forwarded call")
        now = self.scheduler.now
        self.rpc.call(server.host, target, address, now + RPC_SLACK, ping_handler, _ignore)

    # -- safety invariants ----------------------------------------------------------

    def check_dial(self, server: SimServer, address: str, what: str) -> None:
        """A secondary's server dials the primary datacenter through ``address``."""
        local = self.rpc.lan.get(address)
        if local is not None and local.host.datacenter == server.datacenter:
            self.dials["local"] += 1
            return
        self.dials["direct"] += 1
        if not server.knows_local_gateway:
            return  # bootstrap: no usable local gateway is known, direct is the only way
        if not server.leading:
            self.violation(
                f"follower {server.name} bypassed its local gateways ({what} to {address})"
            )
        if not server.direct_allowed:
            self.violation(
                f"leader {server.name} dialled the primary directly ({what} to {address}) after "
                f"only {server.consecutive_failures} consecutive replication failure(s)"
            )

    def check_replicated_write(self, datacenter: Datacenter, record: FederationState) -> None:
        current = datacenter.states.get(record.datacenter.lower())
        if current is not None and current.primary_modify_index > record.modify_index:
            self.violation(
                f"replication in {datacenter.name} wrote {record.datacenter}'s record of primary "
                f"index {record.modify_index} over one of index {current.primary_modify_index}"
            )

    def check_prune(self, name: str) -> None:
        if name in self.names:
            self.violation(f"the primary pruned the federation state of {name}, which exists")

    def violation(self, problem: str) -> None:
        self.note(f"VIOLATION {problem}")
        raise SimulationViolation(self.scheduler.seed, problem, self.scheduler.trace)

    # -- helpers ------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.scheduler.note(text)

    def wall(self, datacenter: str | None = None) -> datetime:
        """The wall-clock time ``datacenter``'s servers read (its clock may have jumped)."""
        offset = self.clock_offsets.get(datacenter, 0.0) if datacenter else 0.0
        return EPOCH + timedelta(seconds=self.scheduler.now + offset)


def _ignore(value: object, error: str | None) -> None:
    return None
