"""The anti-entropy core driven with an explicit ``now``: no event loop, no sleeps."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
import pytest

from wanfed_fsm import (
    CheckServiceNode,
    FederationState,
    HealthCheck,
    HealthStatus,
    Node,
    RetryPolicy,
    Service,
)
from wanfed_replication import (
    AntiEntropyAction,
    AntiEntropyCore,
    ReadView,
    StateWritten,
    SyncFailed,
    ViewRead,
    WriteState,
)

WALL = datetime(2026, 1, 1, tzinfo=UTC)


def gateway(name: str, status: HealthStatus = "passing") -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=name, address="198.18.0.1", datacenter="dc2"),
        service=Service(kind="mesh-gateway", id="mesh-gateway", service="mesh-gateway", port=443),
        checks=[HealthCheck(node=name, check_id="mesh-gateway", status=status)],
    )


def view(index: int, stored: FederationState | None, gateways: list[CheckServiceNode]) -> ViewRead:
    return ViewRead(index=index, stored=stored, gateways=gateways, wall=WALL)


def core_at(now: float = 0.0, interval: float = 5.0) -> AntiEntropyCore:
    return AntiEntropyCore(
        datacenter="dc2", now=now, sync_interval=interval, policy=RetryPolicy(rate=100, burst=100)
    )


def written(core: AntiEntropyCore, action: AntiEntropyAction, now: float) -> FederationState:
    """``action`` is a write; it lands at ``now``. The record as it is stored now."""
    assert isinstance(action, WriteState)
    assert core.feed(StateWritten(), now) == []
    return action.state


def test_a_check_writes_a_missing_record_then_blocks_above_its_index() -> None:
    core = core_at()
    assert core.handle_timer(0.0) == [ReadView(min_index=0)]
    (write,) = core.feed(view(5, None, [gateway("gw1")]), 0.0)
    assert isinstance(write, WriteState)
    assert write.state.updated_at == WALL  # the view's wall-clock time, not a clock read
    record = written(core, write, 0.0)
    assert (core.syncs, core.wrote_last, core.index) == (1, True, 5)
    assert core.handle_timer(0.0) == [ReadView(min_index=5)]
    # Nothing changed (our own write woke the watch): no write, wait above the new index.
    assert core.feed(view(6, record, [gateway("gw1")]), 0.0) == []
    assert (core.syncs, core.wrote_last) == (1, False)
    assert core.handle_timer(0.0) == [ReadView(min_index=6)]


def test_a_change_within_the_interval_waits_it_out_and_reads_again() -> None:
    core = core_at(interval=5.0)
    core.handle_timer(10.0)
    (write,) = core.feed(view(1, None, [gateway("gw1")]), 10.0)
    record = written(core, write, 10.0)  # synced at t=10
    core.handle_timer(11.0)
    assert core.feed(view(2, record, [gateway("gw1", "critical")]), 11.0) == []
    assert core.debouncing
    assert core.next_deadline() == 15.0
    assert core.handle_timer(14.9) == []
    # The interval is over: read what is current now (index 0: no blocking).
    assert core.handle_timer(15.0) == [ReadView(min_index=0)]
    # The check flapped back: nothing to write.
    assert core.feed(view(3, record, [gateway("gw1")]), 15.0) == []
    assert core.syncs == 1
    # A lasting change after the interval is written at once.
    core.handle_timer(20.0)
    (write,) = core.feed(view(4, record, [gateway("gw1", "critical")]), 20.0)
    assert isinstance(write, WriteState)


def test_a_flapping_gateway_costs_at_most_one_write_per_interval() -> None:
    core = core_at(interval=5.0)
    stored: FederationState | None = None
    writes: list[float] = []
    now, index = 0.0, 0
    while now < 60.0:
        actions = core.handle_timer(now)
        if actions:
            index += 1
            status: HealthStatus = "critical" if int(now) % 2 else "passing"
            gateways = [gateway("gw1", status), gateway("gw2")]  # gw2 keeps a path open
            actions = core.feed(view(index, stored, gateways), now)
        for action in actions:
            assert isinstance(action, WriteState)
            stored = written(core, action, now)
            writes.append(now)
        now += 0.5
    assert len(writes) >= 10
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(writes))


def test_the_first_usable_gateway_is_written_without_waiting_out_the_interval() -> None:
    core = core_at(interval=3600.0)
    core.handle_timer(0.0)
    (write,) = core.feed(view(1, None, [gateway("old", "critical")]), 0.0)
    record = written(core, write, 0.0)
    core.handle_timer(1.0)
    (write,) = core.feed(view(2, record, [gateway("old", "critical"), gateway("new")]), 1.0)
    assert isinstance(write, WriteState)  # no other datacenter can reach us until it lands


def test_failures_back_off_and_checks_are_rate_limited() -> None:
    core = AntiEntropyCore(
        datacenter="dc2", now=0.0, policy=RetryPolicy(rate=0.5, burst=2, backoff_cap=8.0)
    )
    assert core.handle_timer(0.0) == [ReadView(min_index=0)]
    assert core.feed(SyncFailed(error="primary unreachable"), 0.0) == []
    assert core.next_deadline() == 2.0  # RetryPolicy.backoff(1)
    assert core.handle_timer(2.0) == [ReadView(min_index=0)]
    assert core.feed(SyncFailed(error="primary unreachable"), 2.0) == []
    assert core.next_deadline() == 6.0  # backoff(2)
    assert core.handle_timer(6.0) == [ReadView(min_index=0)]  # the bucket refilled
    (write,) = core.feed(view(1, None, []), 6.0)
    assert isinstance(write, WriteState)
    assert core.feed(SyncFailed(error="leadership lost"), 6.0) == []
    assert core.failures == 3
    assert core.next_deadline() == 14.0
    assert core.handle_timer(14.0) == [ReadView(min_index=0)]
    (write,) = core.feed(view(2, None, []), 14.0)
    record = written(core, write, 14.0)
    assert core.failures == 0
    # Two checks back to back spend the burst; the third waits for a token (rate 0.5/s).
    assert core.handle_timer(14.0) == [ReadView(min_index=2)]
    core.feed(view(3, record, []), 14.0)
    assert core.handle_timer(14.0) == []
    assert core.next_deadline() == pytest.approx(16.0)


def test_views_are_validated_and_events_must_fit_the_phase() -> None:
    with pytest.raises(ValueError, match="time zone"):
        ViewRead(index=1, stored=None, gateways=[], wall=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="never negative"):
        ViewRead(index=-1, stored=None, gateways=[], wall=WALL)
    with pytest.raises(ValueError, match="sync_interval"):
        AntiEntropyCore(datacenter="dc2", now=0.0, sync_interval=-1)
    core = core_at()
    with pytest.raises(ValueError, match="StateWritten unexpected while waiting"):
        core.feed(StateWritten(), 0.0)
    core.start_check(0.0)
    with pytest.raises(RuntimeError, match="still in progress"):
        core.start_check(0.0)
    assert msgspec.structs.asdict(ReadView(min_index=3)) == {"min_index": 3}
