"""The fault schedule: what goes wrong, when, and for how long; then healing.

Faults arrive at random times (exponential gaps) during the fault phase,
drawn from the scheduler's generator only, so the schedule is part of the
seed. Temporary faults (link faults, partitions, dead gateways, killed
servers) undo themselves after a random duration, and overlap freely.
Changes (gateway replacements, discovery answers, leader changes) stay.
:meth:`FaultInjector.heal` ends every fault at once and points discovery at
the primary's live gateways: the start of the liveness phase.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Final

from ._datacenter import Gateway
from ._network import ROLES, FaultKind, LinkFault, Role
from ._world import World

__all__ = ["FAULT_KINDS", "FaultInjector"]

MEAN_GAP: Final = 15.0
"""Mean virtual seconds between two injected faults."""
DURATION: Final = (5.0, 120.0)
ROLLING_STEP: Final = 20.0

FAULT_KINDS: Final = (
    "link",
    "partition",
    "local-cut",
    "gateway-death",
    "gateway-rolling-replace",
    "gateway-replace-all",
    "discovery",
    "server-kill",
    "leader-change",
    "clock-jump",
)


class FaultInjector:
    """Injects random faults into a world and removes them all when asked."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rng = world.scheduler.rng
        self.injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._undo: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._end = 0.0

    def plan(self, start: float, end: float) -> None:
        """Inject faults from ``start`` until ``end``."""
        self._end = end
        self.world.scheduler.at(start, self._next)

    def _next(self) -> None:
        scheduler = self.world.scheduler
        if scheduler.now >= self._end:
            return
        kind = FAULT_KINDS[self.rng.randrange(len(FAULT_KINDS))]
        self.injected[kind] += 1
        getattr(self, "_" + kind.replace("-", "_"))()
        scheduler.after(self.rng.expovariate(1.0 / MEAN_GAP), self._next)

    def _temporary(self, undo: Callable[[], None]) -> None:
        key = next(self._ids)
        self._undo[key] = undo

        def expire() -> None:
            action = self._undo.pop(key, None)
            if action is not None:
                action()

        self.world.scheduler.after(self.rng.uniform(*DURATION), expire)

    def _add_link_faults(self, faults: list[LinkFault]) -> None:
        network = self.world.network
        network.faults.extend(faults)
        for fault in faults:
            self.world.note(f"fault: {fault.describe()}")

        def remove() -> None:
            for fault in faults:
                if fault in network.faults:
                    network.faults.remove(fault)
                    self.world.note(f"healed: {fault.describe()}")

        self._temporary(remove)

    def _pick_datacenter(self) -> str:
        names = self.world.names
        return names[self.rng.randrange(len(names))]

    # -- the kinds -------------------------------------------------------------

    def _link(self) -> None:
        names = self.world.names
        if len(names) < 2:
            return
        source, target = self.rng.sample(names, 2)
        kinds: tuple[FaultKind, ...] = ("blackhole", "reset", "degraded")
        kind = kinds[self.rng.randrange(3)]
        roles: list[frozenset[Role]] = [ROLES, frozenset(("gateway",)), frozenset(("server",))]
        source_roles = roles[self.rng.randrange(3)]
        delay = self.rng.uniform(0.05, 2.0) if kind == "degraded" else 0.0
        loss = self.rng.uniform(0.0, 0.5) if kind == "degraded" else 0.0
        fault = LinkFault(
            kind, frozenset((source,)), frozenset((target,)), source_roles, ROLES, delay, loss
        )
        faults = [fault]
        if self.rng.random() < 0.5:  # both ways
            faults.append(
                LinkFault(
                    kind,
                    frozenset((target,)),
                    frozenset((source,)),
                    ROLES,
                    source_roles,
                    delay,
                    loss,
                )
            )
        self._add_link_faults(faults)

    def _partition(self) -> None:
        names = self.world.names
        if len(names) < 2:
            return
        size = self.rng.randrange(1, len(names))
        side = frozenset(self.rng.sample(names, size))
        rest = frozenset(names) - side
        faults = [LinkFault("blackhole", side, rest)]
        if self.rng.random() < 0.6:
            faults.append(LinkFault("blackhole", rest, side))  # symmetric
        self._add_link_faults(faults)

    def _local_cut(self) -> None:
        """A datacenter's servers cannot reach their own gateways (silently)."""
        name = frozenset((self._pick_datacenter(),))
        fault = LinkFault("blackhole", name, name, frozenset(("server",)), frozenset(("gateway",)))
        self._add_link_faults([fault])

    def _gateway_death(self) -> None:
        datacenter = self.world.datacenters[self._pick_datacenter()]
        alive = [g for g in datacenter.gateways if not g.retired and g.host.up]
        if not alive:
            return
        gateway = alive[self.rng.randrange(len(alive))]
        vanish = self.rng.random() < 0.5
        self.world.kill_gateway(gateway, vanish=vanish)
        self.world.note(f"fault: {gateway.name} {'vanished' if vanish else 'died'}")

        def revive() -> None:
            self.world.revive_gateway(gateway)
            self.world.note(f"healed: {gateway.name} back")

        self._temporary(revive)

    def _gateway_rolling_replace(self) -> None:
        name = self._pick_datacenter()
        old = [g for g in self.world.datacenters[name].gateways if not g.retired]
        self.world.note(f"change: rolling replacement of {name}'s gateways")
        for step, gateway in enumerate(old):

            def replace(gateway: Gateway = gateway) -> None:
                if self.world.scheduler.now >= self._end or gateway.retired:
                    return  # healed meanwhile, or already replaced by another change
                new = self.world.add_gateway(name)
                self.world.retire_gateway(gateway)
                self.world.note(f"change: {gateway.name} replaced by {new.name}")

            self.world.scheduler.after(step * ROLLING_STEP, replace)

    def _gateway_replace_all(self) -> None:
        name = self._pick_datacenter()
        old = [g for g in self.world.datacenters[name].gateways if not g.retired]
        new = [self.world.add_gateway(name) for _ in old]
        for gateway in old:
            self.world.retire_gateway(gateway)
        self.world.note(f"change: {name}'s gateways all replaced by {[g.name for g in new]}")

    def _discovery(self) -> None:
        primary = self.world.datacenters[self.world.primary]
        every = [g.wan for g in primary.gateways]
        choice = self.rng.randrange(3)
        if choice == 0:
            answer = [g.wan for g in primary.gateways if not g.retired]
        elif choice == 1:
            answer = self.rng.sample(every, self.rng.randrange(1, len(every) + 1))
        else:
            answer = []
        self.world.set_discovery(answer)

    def _server_kill(self) -> None:
        candidates = [s for s in self.world.servers.values() if s.host.up]
        if not candidates:
            return
        server = candidates[self.rng.randrange(len(candidates))]
        self.world.kill_server(server, vanish=self.rng.random() < 0.5)
        self._temporary(lambda: self.world.restart_server(server))

    def _leader_change(self) -> None:
        name = self._pick_datacenter()
        self.world.note(f"change: {name}'s leader steps down")
        self.world.step_down(name)

    def _clock_jump(self) -> None:
        """A datacenter's wall clock jumps (an NTP step, a VM resumed): it stays off."""
        name = self._pick_datacenter()
        jump = self.rng.uniform(-7200.0, 7200.0)
        offsets = self.world.clock_offsets
        offsets[name] = offsets.get(name, 0.0) + jump
        self.world.note(f"change: {name}'s wall clock jumps {jump:+.0f} s")

    # -- healing -------------------------------------------------------------------

    def heal(self) -> None:
        """Remove every fault now; the liveness phase starts."""
        self._end = 0.0
        undo, self._undo = self._undo, {}
        for key in sorted(undo):
            undo[key]()
        self.world.network.faults.clear()
        for datacenter in self.world.datacenters.values():
            for gateway in datacenter.gateways:
                self.world.revive_gateway(gateway)
        for server in self.world.servers.values():
            self.world.restart_server(server)
        primary = self.world.datacenters[self.world.primary]
        self.world.set_discovery([g.wan for g in primary.gateways if not g.retired])
        self.world.note("heal: every fault removed")
