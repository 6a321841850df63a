"""The simulator runs the real cores, replays a seed exactly, and catches broken cores."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from wanfed_sim import SimConfig, SimulationViolation, run_schedule
from wanfed_sim._run import trace_of
from wanfed_sim._scale import measure_scale

import wanfed_gateway_locator._locator as locator_module
import wanfed_replication._pruning_core as pruning_module
from wanfed_fsm import FederationState
from wanfed_gateway_locator import GatewayLocator
from wanfed_replication import ReplicationAction, ReplicationCore

SMALL = SimConfig(datacenters=5, servers=3, gateways=2, minutes=10)


def _first_violation(seeds: range, config: SimConfig = SMALL) -> SimulationViolation:
    for seed in seeds:
        try:
            run_schedule(seed, config)
        except SimulationViolation as violation:
            return violation
    raise AssertionError(f"no seed in {seeds} broke an invariant")


@pytest.mark.parametrize("seed", range(12))
def test_every_invariant_holds_on_a_small_budget_of_seeds(seed: int) -> None:
    result = run_schedule(seed, SMALL)
    assert result.virtual_seconds >= 30 + 600  # warm-up and ten minutes of faults
    assert sum(result.faults.values()) > 10
    assert result.dials["local"] > 0


def test_the_same_seed_replays_the_same_trace() -> None:
    first = run_schedule(3, SMALL)
    again = run_schedule(3, SMALL)
    assert first == again
    assert trace_of(3, SMALL) == trace_of(3, SMALL)
    assert run_schedule(4, SMALL).digest != first.digest


def test_a_locator_that_lets_followers_go_direct_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = GatewayLocator.dial_primary_through_local_gateway

    def broken(self: GatewayLocator) -> bool:
        if not self.is_primary and not self._use_replication_signal:
            return False  # a follower bypasses its local gateways
        return original(self)

    monkeypatch.setattr(GatewayLocator, "dial_primary_through_local_gateway", broken)
    violation = _first_violation(range(100))
    assert "follower" in violation.problem
    assert f"--seed {violation.seed}" in str(violation)


def test_a_leader_that_goes_direct_after_one_failure_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(locator_module, "FAILURES_BEFORE_DIRECT", 1)
    violation = _first_violation(range(100))
    assert "after only 1 consecutive replication failure" in violation.problem


def test_pruning_a_datacenter_that_exists_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def everything_but_the_primary(
        states: Sequence[FederationState], known: object, primary: str
    ) -> list[str]:
        return [s.datacenter for s in states if s.datacenter != primary]

    monkeypatch.setattr(pruning_module, "stale_datacenters", everything_but_the_primary)
    violation = _first_violation(range(20))
    assert "pruned the federation state" in violation.problem


def test_a_violation_carries_its_seed_and_trace() -> None:
    violation = SimulationViolation(7, "something broke", ["  1.000 a", "  2.000 b"])
    text = str(violation)
    assert "seed 7: something broke" in text
    assert "nox -s sim -- --seed 7" in text
    assert text.endswith("  2.000 b")


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="datacenters"):
        SimConfig(datacenters=0)
    with pytest.raises(ValueError, match="minutes"):
        SimConfig(minutes=0)


def test_a_registry_that_forgets_failed_servers_gets_a_partitioned_datacenter_pruned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seed 214: dc4 is partitioned away (with dc3) when the primary leader's prune pass runs.

    Its servers are dead to gossip and have dropped out of the member list, but
    they are only *failed*: the server's registry keeps their datacenter.
    """
    run_schedule(214, SMALL)  # the real registry keeps dc4
    import wanfed_sim._gossip as gossip_module

    from wanfed_server.runtime._wan import datacenters_kept as original

    def forgetting(members: Any, failed_names: Any, local: str) -> list[str]:
        return original(members, [], local)

    monkeypatch.setattr(gossip_module, "datacenters_kept", forgetting)
    with pytest.raises(SimulationViolation, match="pruned the federation state of dc4"):
        run_schedule(214, SMALL)


def test_the_scale_run_measures_propagation_and_the_primarys_work() -> None:
    result = measure_scale(SimConfig(datacenters=4, gossip=False, minutes=4), seed=1)
    assert result.changes == 4  # one every 60 s of the four minutes
    assert result.changes - result.missed >= 1
    assert 0 < result.propagation_p50 <= result.propagation_p99 < 60
    assert result.answers_per_secondary_minute > 0
    assert result.bytes_per_secondary_minute > 0


def test_a_seed_replays_in_another_process_whatever_its_hash_seed() -> None:
    """String hashing differs per process: nothing may depend on set or hash order."""
    digests = set()
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "wanfed_sim", "--seed", "5"],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        digests.add(done.stdout.split("trace digest ")[1].split()[0])
    assert len(digests) == 1


def test_replication_that_writes_a_stale_answer_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A core that applies its first answer again every other round writes old over new."""
    original = ReplicationCore._fetched
    answers: dict[int, list[tuple[int, Sequence[FederationState]]]] = {}

    def first_answer_again(
        self: ReplicationCore[FederationState], index: int, records: Sequence[FederationState]
    ) -> list[ReplicationAction[FederationState]]:
        seen = answers.setdefault(id(self), [])
        seen.append((index, records))
        if len(seen) % 2 == 0:
            index, records = seen[0]
        return original(self, index, records)

    monkeypatch.setattr(ReplicationCore, "_fetched", first_answer_again)
    violation = _first_violation(range(100))
    assert "over one of index" in violation.problem
