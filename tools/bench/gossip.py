"""Benchmark: SWIM convergence, failure detection and load versus pool size.

Runs the real membership core in the in-memory simulation (virtual clock, 2 ms
latency, fast profile: probe 200 ms, gossip 50 ms) for pools of 10, 50 and 200
members, and prints each measurement beside the bound SWIM/Lifeguard gives for
that size:

* convergence: every member joins through one seed at once; time until
  everyone sees everyone alive and the packets each member sent meanwhile
  (informational: n simultaneous updates are limited by packet size);
* one join spreading: a new member joins a converged pool; time until every
  member sees it, against the time SWIM keeps retransmitting that broadcast
  (``retransmit_mult * ceil(log10(n + 1))`` gossip rounds);
* failure detection: one member goes silent; time until every other member
  declares it dead, against the window [probe timeout + minimum suspicion,
  10 probe intervals + maximum suspicion];
* load: packets each member sends per probe interval in steady state, which
  SWIM keeps constant in n (the ratio column should stay flat).

Times scale linearly with the profile: multiply by 25 for the WAN profile's
5 s probe interval. Run: ``nox -s bench -- gossip`` or
``python tools/bench/gossip.py``.
"""

from __future__ import annotations

import argparse
import math
import time

from _common import Column, Table, ratio
from wanfed_sim import SimulatedNetwork

from wanfed_agent.gossip import MemberState, suspicion_timeout

SIZES = (10, 50, 200)


def measure(size: int, seed: int) -> dict[str, float]:
    net = SimulatedNetwork(seed=seed)
    net.add_fast_pool(size)
    config = net.members["node0"].config
    net.join_all()
    start = net.now
    if not net.run_until(120.0, net.converged, check_every=0.005):
        raise RuntimeError(f"pool of {size} did not converge in 120 simulated seconds")
    converged = net.now - start
    packets_to_converge = sum(net.packets_sent.values()) / size

    # Steady state: packets per member per probe interval.
    net.run_for(2 * config.probe_interval)
    before = sum(net.packets_sent.values())
    window = 10 * config.probe_interval
    net.run_for(window)
    steady = (sum(net.packets_sent.values()) - before) / size / (window / config.probe_interval)

    newcomer = net.add_fast_pool(1, prefix="late")[0].name
    joined_at = net.now
    net.join(newcomer, "node1")
    if not net.run_until(
        joined_at + 60.0,
        lambda: all(net.view(o, newcomer) is MemberState.ALIVE for o in net.members),
        check_every=0.005,
    ):
        raise RuntimeError(f"a join into a pool of {size} did not spread")
    spread = net.now - joined_at

    victim = f"node{size // 2}"
    silenced_at = net.now
    net.silence(victim)
    observers = [n for n in net.members if n != victim]
    minimum = suspicion_timeout(config.suspicion_mult, size, config.probe_interval)
    maximum = config.suspicion_max_timeout_mult * minimum
    upper = 10 * config.probe_interval + maximum
    if not net.run_until(
        silenced_at + 2 * upper,
        lambda: all(net.view(o, victim) is MemberState.DEAD for o in observers),
        check_every=0.01,
    ):
        raise RuntimeError(f"pool of {size} did not detect the silent member")
    detected = net.now - silenced_at
    rounds = config.retransmit_mult * math.ceil(math.log10(size + 1))
    return {
        "converged": converged,
        "spread": spread,
        "spread_bound": rounds * config.gossip_interval,
        "packets_to_converge": packets_to_converge,
        "steady": steady,
        "detected": detected,
        "detect_low": config.probe_timeout + minimum,
        "detect_high": upper,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("gossip (simulated, fast profile: probe 0.2 s, gossip 0.05 s; seconds)")
    table = Table(
        [
            Column("members", 7),
            Column("converge", 8, ".3f"),
            Column("pkts/member", 11, ".1f"),
            Column("1 join", 7, ".3f"),
            Column("bound", 6, ".2f"),
            Column("ratio", 5, ".2f"),
            Column("detect", 6, ".2f"),
            Column("window", 12),
            Column("pkts/member/probe", 17),
            Column("wall", 5, ".1f"),
        ]
    )
    table.print_header()
    baseline_steady = None
    for size in args.sizes:
        started = time.perf_counter()
        r = measure(size, args.seed)
        wall = time.perf_counter() - started
        baseline_steady = baseline_steady or r["steady"]
        table.print_row(
            [
                size,
                r["converged"],
                r["packets_to_converge"],
                r["spread"],
                r["spread_bound"],
                r["spread"] / r["spread_bound"],
                r["detected"],
                f"{r['detect_low']:.2f}-{r['detect_high']:.2f}",
                f"{r['steady']:.2f} (x{ratio(r['steady'], baseline_steady)})",
                wall,
            ]
        )


if __name__ == "__main__":
    main()
