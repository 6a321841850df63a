"""The pruning core driven with an explicit ``now``: no event loop, no sleeps."""

from __future__ import annotations

import pytest

from wanfed_fsm import FederationState
from wanfed_replication import (
    Inventory,
    Prune,
    Pruned,
    PruneFailed,
    PruningCore,
    TakeInventory,
)


def states(*datacenters: str) -> list[FederationState]:
    return [FederationState(datacenter=datacenter) for datacenter in datacenters]


def test_passes_come_one_interval_apart_starting_one_interval_in() -> None:
    core = PruningCore(primary="dc1", now=100.0, interval=3600.0)
    assert core.next_deadline() == 3700.0
    assert core.handle_timer(3699.0) == []
    assert core.handle_timer(3700.0) == [TakeInventory()]
    assert core.next_deadline() is None  # waiting on the inventory
    inventory = Inventory(states=states("dc1", "dc2", "dc3"), known=frozenset({"dc1", "DC3"}))
    assert core.feed(inventory, 3701.0) == [Prune(datacenter="dc2")]
    assert core.feed(Pruned(datacenter="dc2"), 3702.0) == []
    assert core.last_pruned == ["dc2"]
    assert core.next_deadline() == 3702.0 + 3600.0
    assert core.handle_timer(7301.0) == []


def test_stale_datacenters_are_pruned_one_at_a_time_never_the_primary() -> None:
    core = PruningCore(primary="dc1", now=0.0, interval=60.0)
    core.handle_timer(60.0)
    inventory = Inventory(states=states("dc1", "dc4", "dc2"), known=frozenset())
    assert core.feed(inventory, 60.0) == [Prune(datacenter="dc2")]
    assert core.feed(Pruned(datacenter="dc2"), 60.0) == [Prune(datacenter="dc4")]
    assert core.feed(Pruned(datacenter="dc4"), 60.0) == []
    assert core.last_pruned == ["dc2", "dc4"]


def test_a_failed_prune_abandons_the_pass_until_the_next_interval() -> None:
    core = PruningCore(primary="dc1", now=0.0, interval=60.0)
    core.handle_timer(60.0)
    inventory = Inventory(states=states("dc2", "dc3"), known=frozenset({"dc1"}))
    assert core.feed(inventory, 60.0) == [Prune(datacenter="dc2")]
    assert core.feed(PruneFailed(error="not the leader"), 61.0) == []
    assert core.last_pruned == []
    assert core.next_deadline() == 121.0
    assert core.handle_timer(121.0) == [TakeInventory()]
    # The registry learned dc3 again meanwhile: only dc2 goes.
    inventory = Inventory(states=states("dc2", "dc3"), known=frozenset({"dc3"}))
    assert core.feed(inventory, 121.0) == [Prune(datacenter="dc2")]


def test_start_pass_and_validation() -> None:
    core = PruningCore(primary="dc1", now=0.0, interval=60.0)
    assert core.start_pass(5.0) == [TakeInventory()]
    with pytest.raises(RuntimeError, match="still in progress"):
        core.start_pass(5.0)
    with pytest.raises(ValueError, match="Pruned unexpected while surveying"):
        core.feed(Pruned(datacenter="dc2"), 5.0)
    assert core.feed(Inventory(states=[], known=frozenset()), 5.0) == []
    assert core.next_deadline() == 65.0
    with pytest.raises(ValueError, match="interval"):
        PruningCore(primary="dc1", now=0.0, interval=0)
    with pytest.raises(ValueError, match="names the datacenter"):
        Prune(datacenter="")
