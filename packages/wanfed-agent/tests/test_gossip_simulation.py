"""SWIM behaviour of the membership core, run deterministically in memory."""

from __future__ import annotations

import math

from wanfed_sim import SimulatedNetwork

from wanfed_agent.gossip import (
    MemberEventKind,
    MemberState,
    encode_tags,
    fast_profile,
    suspicion_timeout,
    tcp_pings_allowed_within,
    wan_profile,
)


def _pool(size: int, *, seed: int = 1, loss: float = 0.0) -> SimulatedNetwork:
    net = SimulatedNetwork(seed=seed, loss=loss)
    net.add_fast_pool(size)
    net.join_all()
    return net


def test_fifty_members_converge_quickly() -> None:
    net = _pool(50)
    assert net.run_until(30.0, net.converged)
    # Gossip spreads epidemically: a few probe intervals, not one per member.
    assert net.now < 5.0


def test_members_see_each_others_tags() -> None:
    net = SimulatedNetwork(seed=2)
    a = net.add(
        fast_profile("a.dc1", "127.0.0.1", 8302, meta=encode_tags({"dc": "dc1", "role": "consul"}))
    )
    net.add(
        fast_profile("b.dc2", "127.0.0.2", 8302, meta=encode_tags({"dc": "dc2", "build": "0.1"}))
    )
    net.join("b.dc2", "a.dc1")
    assert net.run_until(5.0, net.converged)
    seen = net.members["b.dc2"].member("a.dc1")
    assert seen is not None
    assert seen.tags == {"dc": "dc1", "role": "consul"}
    other = a.member("b.dc2")
    assert other is not None
    assert other.tags == {"dc": "dc2", "build": "0.1"}
    assert other.protocol == (1, 5, 2)


def test_silent_member_is_declared_dead_within_the_suspicion_bound() -> None:
    net = _pool(50, seed=7)
    assert net.run_until(30.0, net.converged)
    victim = "node13"
    silenced_at = net.now
    net.silence(victim)
    config = net.members["node0"].config
    minimum = suspicion_timeout(config.suspicion_mult, 50, config.probe_interval)
    maximum = config.suspicion_max_timeout_mult * minimum
    # A member is probed by somebody within a few intervals; then the
    # suspicion runs at most ``maximum``; then the death needs to spread.
    bound = 10 * config.probe_interval + maximum + 1.0
    observers = [name for name in net.members if name != victim]
    net.run_until(
        silenced_at + bound,
        lambda: all(net.view(o, victim) is MemberState.DEAD for o in observers),
    )
    for observer in observers:
        assert net.view(observer, victim) is MemberState.DEAD, observer
        failed_at = net.first_event(observer, victim, MemberEventKind.FAILED)
        assert failed_at is not None
        # Never before a probe timed out and the minimum suspicion ran out.
        assert failed_at - silenced_at >= config.probe_timeout + minimum
        assert failed_at - silenced_at <= bound
    assert net.converged(observers)


def test_ten_percent_packet_loss_kills_nobody_in_ten_minutes() -> None:
    # Five datacenters of ten: TCP fallback pings only reach the own
    # datacenter, so most probes rely on UDP-like packets alone.
    net = SimulatedNetwork(seed=3, loss=0.10)
    for i in range(50):
        dc = f"dc{i % 5}"
        net.add(
            wan_profile(f"n{i}.{dc}", f"127.0.0.{i + 1}", 8302),
            tcp_ping_allowed=tcp_pings_allowed_within(dc),
        )
    net.join_all()
    assert net.run_until(60.0, net.converged)
    start = net.now
    net.run_until(start + 600.0)
    failures = [
        (observer, event.member.name)
        for observer, events in net.events.items()
        for _, event in events
        if event.kind is MemberEventKind.FAILED
    ]
    assert failures == []
    assert net.converged()


def test_partition_heals_after_reconnection() -> None:
    net = _pool(20, seed=5)
    assert net.run_until(30.0, net.converged)
    left = [f"node{i}" for i in range(10)]
    right = [f"node{i}" for i in range(10, 20)]
    net.partition(left, right)
    net.run_for(60.0)
    # Each side has given up on the other (and, after a while, forgotten it).
    assert net.view("node0", "node15") in (MemberState.DEAD, None)
    assert net.view("node15", "node0") in (MemberState.DEAD, None)
    assert net.converged(left)
    assert net.converged(right)
    net.heal()
    # Dead members are neither probed nor pushed to: the reconnect of failed
    # members brings the halves back, and each member refutes its own death
    # with a higher incarnation.
    config = net.members["node0"].config
    assert net.run_until(net.now + 10 * config.reconnect_interval, net.converged)


def test_graceful_leave_is_seen_as_left_not_failed() -> None:
    net = _pool(10, seed=9)
    assert net.run_until(30.0, net.converged)
    net.leave("node4")
    assert net.run_until(
        net.now + 5.0,
        lambda: all(net.view(o, "node4") is MemberState.LEFT for o in net.members if o != "node4"),
    )
    assert net.run_until(net.now + 5.0, net.members["node4"].leave_propagated)
    for observer in net.members:
        if observer != "node4":
            assert net.first_event(observer, "node4", MemberEventKind.LEAVE) is not None
            assert net.first_event(observer, "node4", MemberEventKind.FAILED) is None


def test_falsely_suspected_member_refutes_with_a_higher_incarnation() -> None:
    net = _pool(5, seed=11)
    assert net.run_until(10.0, net.converged)
    before = net.members["node2"].member("node2")
    assert before is not None
    # Cut node2 off just long enough to be suspected, not killed.
    others = [n for n in net.members if n != "node2"]
    net.partition(others, ["node2"])
    config = net.members["node0"].config
    minimum = suspicion_timeout(config.suspicion_mult, 5, config.probe_interval)
    assert net.run_until(
        net.now + 10.0, lambda: any(net.view(o, "node2") is MemberState.SUSPECT for o in others)
    )
    net.heal()
    net.run_for(minimum * 0.5)
    assert net.run_until(net.now + 10.0, net.converged)
    after = net.members["node0"].member("node2")
    assert after is not None
    assert after.incarnation > before.incarnation
    assert all(net.first_event(o, "node2", MemberEventKind.FAILED) is None for o in others)


def test_messages_per_member_grow_slowly_with_pool_size() -> None:
    per_member = {}
    for size in (10, 40):
        net = _pool(size, seed=size)
        assert net.run_until(30.0, net.converged)
        net.run_for(10.0)
        per_member[size] = sum(net.packets_sent.values()) / size / net.now
    # SWIM's load per member is constant in n plus log-sized piggybacking;
    # quadrupling the pool must not come near quadrupling the rate.
    assert per_member[40] < 2 * per_member[10]
    assert math.isfinite(per_member[40])


def test_updated_tags_reach_every_member() -> None:
    net = _pool(8, seed=13)
    assert net.run_until(30.0, net.converged)
    net.update_meta("node3", encode_tags({"dc": "dc1", "build": "2"}))
    assert net.run_until(
        net.now + 5.0,
        lambda: all(
            (seen := net.members[o].member("node3")) is not None
            and seen.tags == {"dc": "dc1", "build": "2"}
            for o in net.members
        ),
    )
    assert all(
        net.first_event(o, "node3", MemberEventKind.UPDATE) is not None
        for o in net.members
        if o != "node3"
    )
