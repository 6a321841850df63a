"""What must always hold (safety), and what must hold soon after healing (liveness).

Safety is checked at the moment of each decision, by the simulator's own
reading of the inputs, never by asking the core that decided:

* a follower that knows a usable local gateway never dials the primary
  datacenter any other way;
* a leader dials it directly only after :data:`FAILURES_BEFORE_DIRECT`
  consecutive replication failures since its last success, its term began,
  or its last successful probe of the local path;
* replication never writes a record over a copy of a newer primary index;
* pruning never deletes the record of a datacenter that still exists.

Liveness, once every fault is healed: within :data:`LIVENESS_BOUND` every
datacenter has a leader; the primary holds every datacenter's current
gateways (its catalog); every datacenter's store equals the primary's; every
server's candidates for every other datacenter, and every gateway's routes,
name only live gateways.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from wanfed_proto import server_sni
from wanfed_replication import federation_state_to_sync

from ._datacenter import Datacenter

if TYPE_CHECKING:
    from ._world import World

__all__ = [
    "FAILURES_BEFORE_DIRECT",
    "LIVENESS_BOUND",
    "SimulationViolation",
    "convergence_problems",
]

FAILURES_BEFORE_DIRECT: Final = 3

LIVENESS_BOUND: Final = 3600.0
"""Virtual seconds after healing by which the federation must have converged.

Not a tight bound, on purpose: it is what the cores as they are guarantee
with overwhelming odds, and the simulator prints the measured distribution
(p50 260 s, p99 1,145 s, max 2,390 s over seeds 0-999 of 5 × 3 × 2).
Two things stretch the tail. Failures during the faults leave replication
at its 120 s backoff cap (anti-entropy at 256 s) when the faults end. And
a secondary leader that went direct picks uniformly among the primary's
*replicated* gateways and the discovered ones; when every primary gateway
was replaced, the replicated ones are dead until replication succeeds, so
each retry succeeds only with the share of live candidates (one half with
two replaced gateways), and its own datacenter's record, the source of its
local gateways, is just as stale. The tail is geometric, so no bound is
certain; an hour keeps spurious failures rare while a core that never
converges still fails."""


class SimulationViolation(AssertionError):
    """An invariant failed: the message carries the seed and the trace to replay it."""

    def __init__(self, seed: int, problem: str, trace: Iterable[str]) -> None:
        self.seed = seed
        self.problem = problem
        self.trace = list(trace)
        lines = "\n".join(self.trace)
        super().__init__(
            f"seed {seed}: {problem}\n"
            f"replay: nox -s sim -- --seed {seed}\n"
            f"last {len(self.trace)} trace lines:\n{lines}"
        )

    def __reduce__(self) -> tuple[type[SimulationViolation], tuple[int, str, list[str]]]:
        # Runs come back from worker processes pickled.
        return (SimulationViolation, (self.seed, self.problem, self.trace))


def convergence_problems(world: World) -> list[str]:
    """What still keeps the healed federation from having converged (empty: converged)."""
    problems: list[str] = []
    primary = world.datacenters[world.primary]
    wall = world.wall()
    for datacenter in world.datacenters.values():
        if datacenter.leader is None:
            problems.append(f"{datacenter.name} has no leader")
        stored = primary.states.get(datacenter.name.lower())
        if federation_state_to_sync(datacenter.name, stored, datacenter.catalog(), wall):
            problems.append(f"the primary's record of {datacenter.name} differs from its catalog")
        if datacenter is not primary and not _same_states(datacenter, primary):
            problems.append(f"{datacenter.name}'s federation states differ from the primary's")
        for target in world.datacenters:
            if target == datacenter.name:
                continue
            for address in _route_addresses(world, datacenter.name, target):
                if not world.is_live_gateway(address):
                    problems.append(f"{datacenter.name}'s gateways route {target} to {address}")
    if world.gossip is not None:
        problems.extend(world.gossip.converged())
    for server in world.servers.values():
        if server.locator is None:
            problems.append(f"{server.name} is not running")
            continue
        for target in world.datacenters:
            if target == server.datacenter:
                continue
            candidates = server.locator.candidates(target)
            if not candidates:
                problems.append(f"{server.name} knows no gateway towards {target}")
            dead = [a for a in candidates if not world.is_live_gateway(a)]
            if dead:
                problems.append(f"{server.name} may dial dead gateway(s) {dead} towards {target}")
    return problems


def _same_states(datacenter: Datacenter, primary: Datacenter) -> bool:
    mine = datacenter.states
    theirs = primary.states
    if mine.keys() != theirs.keys():
        return False
    return all(mine[key].is_same(theirs[key]) for key in theirs)


def _route_addresses(world: World, at: str, target: str) -> list[str]:
    table = world.datacenters[at].route_table()
    route = table.lookup(server_sni(target, table.domain))
    return [] if route is None else [str(upstream) for upstream in route.upstreams]
