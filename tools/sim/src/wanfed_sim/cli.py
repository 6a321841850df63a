"""``wanfed-sim`` / ``nox -s sim``: run many seeded fault schedules, or replay one.

``--seeds N`` runs seeds ``--first-seed`` .. ``+N-1`` over ``--jobs`` processes
and prints schedules per second, virtual seconds per wall second and the
convergence times; ``--seed S`` replays one seed and prints its trace digest
(and, with ``--trace``, its trace). A violation prints the seed and the end
of the trace, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from ._invariants import LIVENESS_BOUND, SimulationViolation
from ._run import RunResult, run_schedule
from ._scale import measure_scale
from ._world import SimConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wanfed-sim", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000, help="schedules to run (default 1000)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, help="replay exactly this one seed")
    parser.add_argument("--trace", action="store_true", help="with --seed: print the trace")
    parser.add_argument("--datacenters", type=int, default=5)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0, help="virtual minutes of faults")
    parser.add_argument(
        "--liveness-bound",
        type=float,
        default=LIVENESS_BOUND,
        help=f"virtual seconds after healing to converge (default {LIVENESS_BOUND:.0f})",
    )
    parser.add_argument(
        "--no-gossip", action="store_true", help="leave the SWIM membership cores out (faster)"
    )
    parser.add_argument(
        "--scale",
        metavar="N,N,...",
        help="instead of fault schedules: gateway changes in healthy federations of N "
        "datacenters (no gossip); prints propagation times and the primary's work",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    return parser


def _one(args: tuple[int, SimConfig]) -> RunResult | SimulationViolation:
    seed, config = args
    try:
        return run_schedule(seed, config)
    except SimulationViolation as violation:
        return violation


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        config = SimConfig(
            datacenters=options.datacenters,
            servers=options.servers,
            gateways=options.gateways,
            minutes=options.minutes,
            liveness_bound=options.liveness_bound,
            gossip=not options.no_gossip,
        )
    except ValueError as exc:
        print(f"wanfed-sim: {exc}", file=sys.stderr)
        return 2
    if options.scale:
        return _scale(options.scale, config, seed=options.first_seed)
    if options.seed is not None:
        return _replay(options.seed, config, show_trace=options.trace)
    if options.seeds < 1 or options.jobs < 1:
        print("wanfed-sim: --seeds and --jobs must be >= 1", file=sys.stderr)
        return 2
    seeds = range(options.first_seed, options.first_seed + options.seeds)
    started = time.perf_counter()
    work = [(seed, config) for seed in seeds]
    if options.jobs == 1:
        outcomes = [_one(item) for item in work]
    else:
        with ProcessPoolExecutor(options.jobs) as pool:
            outcomes = list(pool.map(_one, work, chunksize=8))
    wall = time.perf_counter() - started
    return _summary(config, outcomes, wall, options.jobs)


def _scale(sizes: str, config: SimConfig, *, seed: int) -> int:
    try:
        counts = [int(size) for size in sizes.split(",")]
        configs = [dataclasses.replace(config, datacenters=count, gossip=False) for count in counts]
    except ValueError as exc:
        print(f"wanfed-sim: --scale wants datacenter counts like 10,30,100: {exc}", file=sys.stderr)
        return 2
    print(
        f"gateway changes every 60 s, {config.minutes:g} virtual minutes, "
        f"{config.servers} servers x {config.gateways} gateways per datacenter"
    )
    print(
        "  DCs  changes  missed  listed everywhere p50/p99"
        "   primary answers, bytes per secondary-minute"
    )
    for scale_config in configs:
        started = time.perf_counter()
        result = measure_scale(scale_config, seed)
        wall = time.perf_counter() - started
        print(
            f"  {result.datacenters:>3}  {result.changes:>7}  {result.missed:>6}  "
            f"{result.propagation_p50:>8.1f} s / {result.propagation_p99:>6.1f} s   "
            f"{result.answers_per_secondary_minute:>10.2f}, "
            f"{result.bytes_per_secondary_minute:>12,.0f}   ({wall:.1f} s wall)"
        )
    return 0


def _replay(seed: int, config: SimConfig, *, show_trace: bool) -> int:
    try:
        result = run_schedule(seed, config)
    except SimulationViolation as violation:
        print(violation)
        return 1
    print(
        f"seed {seed}: ok, {result.virtual_seconds:.0f} virtual s, {result.events} events, "
        f"converged {result.converged_after:.0f} s after healing, trace digest {result.digest}"
    )
    print(f"faults: {result.faults}; dials to the primary: {result.dials}")
    if show_trace:
        from ._run import trace_of

        print("\n".join(trace_of(seed, config)))
    return 0


def _summary(
    config: SimConfig,
    outcomes: list[RunResult | SimulationViolation],
    wall: float,
    jobs: int,
) -> int:
    results = [o for o in outcomes if isinstance(o, RunResult)]
    violations = [o for o in outcomes if isinstance(o, SimulationViolation)]
    virtual = sum(r.virtual_seconds for r in results)
    print(
        f"{len(outcomes)} schedules of {config.datacenters} datacenters x {config.servers} "
        f"servers x {config.gateways} gateways, {config.minutes:g} virtual minutes of faults "
        f"each, on {jobs} process(es): {wall:.1f} s wall"
    )
    print(
        f"  {len(outcomes) / wall:.2f} schedules/s, "
        f"{virtual / wall:,.0f} virtual seconds per wall second, "
        f"{sum(r.events for r in results) / wall:,.0f} events/s"
    )
    if results:
        converged = sorted(r.converged_after for r in results)
        p99 = converged[min(len(converged) - 1, int(len(converged) * 0.99))]
        slowest = sorted(results, key=lambda r: -r.converged_after)[:3]
        print(
            f"  convergence after healing: p50 {statistics.median(converged):.0f} s, "
            f"p99 {p99:.0f} s, max {converged[-1]:.0f} s; slowest seeds "
            + ", ".join(f"{r.seed} ({r.converged_after:.0f} s)" for r in slowest)
        )
        local = sum(r.dials["local"] for r in results)
        direct = sum(r.dials["direct"] for r in results)
        print(f"  dials to the primary: {local} through local gateways, {direct} direct")
    if violations:
        print(f"{len(violations)} violation(s), seeds {[v.seed for v in violations][:20]}")
        print(violations[0])
        return 1
    print("  every invariant held")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
