"""One schedule from seed to verdict: warm up, faults, heal, liveness.

:func:`run_schedule` is a pure function of its seed and configuration: it
builds a world, starts every server, lets the federation bootstrap for
:data:`WARMUP` virtual seconds, injects faults until the fault phase ends,
heals everything and then requires convergence within
:data:`~wanfed_sim._invariants.LIVENESS_BOUND`. Safety invariants raise
:class:`~wanfed_sim._invariants.SimulationViolation` the moment they break.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Final

from ._faults import FaultInjector
from ._invariants import SimulationViolation, convergence_problems
from ._scheduler import Scheduler
from ._world import SimConfig, World

__all__ = ["RunResult", "quiet_logging", "run_schedule", "trace_of"]

WARMUP: Final = 30.0
"""Seconds of bootstrap before the first fault (the federation forms from empty stores)."""
CHECK_EVERY: Final = 5.0
"""Virtual seconds between two convergence checks in the liveness phase."""


@dataclass(frozen=True)
class RunResult:
    seed: int
    virtual_seconds: float
    converged_after: float
    """Virtual seconds from healing to convergence (a multiple of CHECK_EVERY)."""
    events: int
    digest: str
    faults: dict[str, int]
    dials: dict[str, int]
    calls: int


@contextmanager
def quiet_logging() -> Iterator[None]:
    """The cores log every decision; thousands of runs would drown in it (and slow down)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def trace_of(seed: int, config: SimConfig | None = None) -> list[str]:
    """The whole trace of one run (a violation ends it early)."""
    scheduler = Scheduler(seed, trace_lines=None)
    with suppress(SimulationViolation):
        run_schedule(seed, config, scheduler=scheduler)
    return list(scheduler.trace)


def run_schedule(
    seed: int, config: SimConfig | None = None, *, scheduler: Scheduler | None = None
) -> RunResult:
    """Run one random fault schedule; raise ``SimulationViolation`` when an invariant breaks."""
    config = config or SimConfig()
    scheduler = scheduler or Scheduler(seed)
    world = World(config, scheduler)
    faults = FaultInjector(world)
    heal_at = WARMUP + config.minutes * 60.0
    with quiet_logging():
        world.start()
        faults.plan(WARMUP, heal_at)
        scheduler.run_until(heal_at)
        faults.heal()
        now = heal_at
        problems = convergence_problems(world)
        while problems and now < heal_at + config.liveness_bound:
            now += CHECK_EVERY
            scheduler.run_until(now)
            problems = convergence_problems(world)
        if problems:
            shown = "; ".join(problems[:6])
            world.violation(
                f"not converged {config.liveness_bound:.0f} s after healing "
                f"({len(problems)} problem(s)): {shown}"
            )
    return RunResult(
        seed=seed,
        virtual_seconds=now,
        converged_after=now - heal_at,
        events=scheduler.events_run,
        digest=scheduler.digest(),
        faults=dict(faults.injected),
        dials=dict(world.dials),
        calls=world.rpc.calls,
    )
