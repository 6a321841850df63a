"""How the federation's cost and speed grow with the number of datacenters.

No faults here: a healthy federation of ``datacenters`` × servers × gateways
forms from empty stores, then every :data:`CHANGE_EVERY` virtual seconds one
random secondary replaces one of its gateways. For each change the
simulator measures the virtual time until every datacenter's store lists the
new gateway; over the whole run, the primary's work per secondary: the
federation-state calls its servers answered (replication long polls and
anti-entropy writes) and the bytes of their payloads, per virtual minute.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Final

from ._run import WARMUP, quiet_logging
from ._scheduler import Scheduler
from ._world import SimConfig, World

__all__ = ["ScaleResult", "measure_scale"]

CHANGE_EVERY: Final = 60.0
POLL: Final = 0.5
"""Virtual seconds between two looks at the stores (the resolution of the times)."""


@dataclass(frozen=True)
class ScaleResult:
    datacenters: int
    changes: int
    missed: int
    """Changes not listed everywhere before the next one (left out of the times)."""
    propagation_p50: float
    propagation_p99: float
    answers_per_secondary_minute: float
    bytes_per_secondary_minute: float


def measure_scale(config: SimConfig, seed: int = 0) -> ScaleResult:
    """Run ``config.minutes`` of gateway changes in a healthy federation and measure."""
    scheduler = Scheduler(seed)
    world = World(config, scheduler)
    times: list[float] = []
    changes = 0
    with quiet_logging():
        world.start()
        scheduler.run_until(WARMUP * 4)
        before = dict(world.primary_side.work)
        started = scheduler.now
        end = started + config.minutes * 60.0
        secondaries = world.names[1:]
        while scheduler.now + CHANGE_EVERY <= end and secondaries:
            name = secondaries[scheduler.rng.randrange(len(secondaries))]
            datacenter = world.datacenters[name]
            old = next(g for g in datacenter.gateways if not g.retired)
            new = world.add_gateway(name)
            world.retire_gateway(old)
            changed_at = scheduler.now
            changes += 1
            deadline = changed_at + CHANGE_EVERY
            seen = False
            while scheduler.now < deadline:
                scheduler.run_until(scheduler.now + POLL)
                if not seen and _everyone_lists(world, name, new.name):
                    times.append(scheduler.now - changed_at)
                    seen = True
            scheduler.run_until(deadline)
        elapsed = (scheduler.now - started) / 60.0
    secondaries_count = max(1, len(world.names) - 1)
    answers = world.primary_side.work["answers"] - before["answers"]
    size = world.primary_side.work["bytes"] - before["bytes"]
    ordered = sorted(times)
    return ScaleResult(
        datacenters=config.datacenters,
        changes=changes,
        missed=changes - len(ordered),
        propagation_p50=statistics.median(ordered) if ordered else float("nan"),
        propagation_p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        if ordered
        else float("nan"),
        answers_per_secondary_minute=answers / secondaries_count / elapsed,
        bytes_per_secondary_minute=size / secondaries_count / elapsed,
    )


def _everyone_lists(world: World, datacenter: str, gateway: str) -> bool:
    key = datacenter.lower()
    for other in world.datacenters.values():
        state = other.states.get(key)
        if state is None or all(g.node.node != gateway for g in state.mesh_gateways):
            return False
    return True
