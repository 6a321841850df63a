"""wanfed_sim: wanfed's real decision cores in a deterministic, seeded, faulty world.

A test-support package (the product never imports it). One seed drives a
whole federation of simulated datacenters on one virtual clock::

    from wanfed_sim import SimConfig, run_schedule

    result = run_schedule(7, SimConfig(datacenters=5, servers=3, gateways=2, minutes=10))
    result.converged_after  # virtual seconds from healing to convergence

A broken invariant raises :class:`SimulationViolation` naming the seed and
the end of the event trace; ``nox -s sim -- --seed 7`` replays it.
:class:`SimulatedNetwork` is the gossip-only pool used by the membership
tests and benchmarks.
"""

from ._gossip_network import SimulatedNetwork
from ._invariants import LIVENESS_BOUND, SimulationViolation, convergence_problems
from ._network import Host, LinkFault, Network
from ._run import RunResult, run_schedule
from ._scheduler import Scheduler
from ._world import SimConfig, World

__all__ = [
    "LIVENESS_BOUND",
    "Host",
    "LinkFault",
    "Network",
    "RunResult",
    "Scheduler",
    "SimConfig",
    "SimulatedNetwork",
    "SimulationViolation",
    "World",
    "convergence_problems",
    "run_schedule",
]
