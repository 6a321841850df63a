"""The gateway locator's decisions, replayed with an explicit clock.

The first group reproduces the reference fixture table (dc1 primary, dc2
secondary, a leader running replication) on a locator built without the
start-up synthetic success, which is how the original behaviour was defined;
the later groups cover the fixed behaviour that wanfed runs by default.
"""

from __future__ import annotations

import random

import pytest

from wanfed_fsm import (
    CheckServiceNode,
    FederationState,
    HealthCheck,
    Node,
    Service,
    ServiceAddress,
)
from wanfed_gateway_locator import GatewayLocator, merge_sorted_unique

DC1 = ["1.2.3.4:5555", "4.3.2.1:9999"]
DC2 = ["5.6.7.8:5555", "8.7.6.5:9999"]
FALLBACK = ["7.7.7.7:7777", "8.8.8.8:8888"]


def gateway(
    dc: str,
    name: str,
    address: str,
    *,
    opted_in: bool = True,
    status: str = "passing",
    wan: str | None = None,
) -> CheckServiceNode:
    host, port = address.rsplit(":", 1)
    wan_host, wan_port = (wan or address).rsplit(":", 1)
    meta = {"consul-wan-federation": "1"} if opted_in else {}
    return CheckServiceNode(
        node=Node(node=name, address=host, datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            id="mesh-gateway",
            service="mesh-gateway",
            address=host,
            port=int(port),
            meta=meta,
            tagged_addresses={
                "lan": ServiceAddress(address=host, port=int(port)),
                "wan": ServiceAddress(address=wan_host, port=int(wan_port)),
            },
        ),
        checks=[HealthCheck(node=name, check_id="gw-listening", status=status)],  # type: ignore[arg-type]
    )


def fixture_states() -> list[FederationState]:
    return [
        FederationState(
            datacenter="dc1",
            mesh_gateways=[gateway("dc1", f"gw{i}", a) for i, a in enumerate(DC1)],
            create_index=1,
            modify_index=1,
        ),
        FederationState(
            datacenter="dc2",
            mesh_gateways=[gateway("dc2", f"gw{i}", a) for i, a in enumerate(DC2)],
            create_index=2,
            modify_index=2,
        ),
    ]


def original(dc: str, *, probe_local_path: bool = True) -> GatewayLocator:
    """A leader's locator with the original (no synthetic success) start."""
    locator = GatewayLocator(
        datacenter=dc,
        primary_datacenter="dc1",
        now=0.0,
        rng=random.Random(7),
        assume_healthy_at_start=False,
        probe_local_path=probe_local_path,
    )
    locator._use_replication_signal = True  # a leader running replication
    return locator


# --- the reference fixture table ------------------------------------------------


def test_primary_without_data() -> None:
    locator = original("dc1")
    locator.update_from_states([])
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc1") == []
    assert locator.list_gateways("dc2") == []


def test_secondary_without_data() -> None:
    locator = original("dc2")
    locator.update_from_states([])
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc1") == []
    assert locator.list_gateways("dc2") == []


def test_secondary_with_fallback_only() -> None:
    locator = original("dc2")
    locator.update_from_states([])
    locator.refresh_fallback_addresses(reversed(FALLBACK))
    assert locator.list_gateways("dc1") == FALLBACK
    assert locator.fallback_addresses() == FALLBACK


def test_primary_with_data() -> None:
    locator = original("dc1")
    locator.update_from_states(fixture_states())
    assert locator.list_gateways("dc1") == DC1
    assert locator._local == DC1
    assert locator.list_gateways("dc2") == DC1  # any non-primary DC leaves through local


def test_secondary_with_data_no_replication() -> None:
    locator = original("dc2")
    locator.update_from_states(fixture_states())
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc2") == DC2
    assert locator.list_gateways("dc1") == DC1


def test_secondary_with_data_and_fallback_no_replication() -> None:
    locator = original("dc2")
    locator.update_from_states(fixture_states())
    locator.refresh_fallback_addresses(FALLBACK)
    assert locator.list_gateways("dc1") == sorted(DC1 + FALLBACK)


def _secondary_with_everything(*, probe_local_path: bool = True) -> GatewayLocator:
    locator = original("dc2", probe_local_path=probe_local_path)
    locator.update_from_states(fixture_states())
    locator.refresh_fallback_addresses(FALLBACK)
    return locator


def test_one_success_uses_local_gateways() -> None:
    locator = _secondary_with_everything()
    locator.record_replication_result(None, 10.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


def test_success_then_two_failures_still_local() -> None:
    locator = _secondary_with_everything()
    locator.record_replication_result(None, 10.0)
    locator.record_replication_result("boom", 11.0)
    locator.record_replication_result("boom", 12.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


def test_success_then_three_failures_goes_direct() -> None:
    locator = _secondary_with_everything()
    locator.record_replication_result(None, 10.0)
    for t in (11.0, 12.0, 13.0):
        locator.record_replication_result("boom", t)
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc1") == sorted(DC1 + FALLBACK)


def test_three_failures_then_success_goes_back_to_local_in_reference_mode() -> None:
    """The table's row as the reference has it ("3 failures then success: true;
    local list"), with the local-path probe turned off."""
    locator = _secondary_with_everything(probe_local_path=False)
    for t in (11.0, 12.0, 13.0):
        locator.record_replication_result("boom", t)
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.next_local_probe_at() is None  # no probing: a success is the way back
    locator.record_replication_result(None, 14.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


def test_three_failures_then_success_stays_direct_until_a_local_probe_works() -> None:
    """The one row wanfed changes on purpose.

    The reference goes back to the local list on this success ("3 failures
    then success: true; local list"). But that success was dialled directly,
    so it says nothing about the local path: wanfed stays direct and goes back
    only when a probe of the local path succeeds (the table's outcome, one
    probe later).
    """
    locator = _secondary_with_everything()
    for t in (11.0, 12.0, 13.0):
        locator.record_replication_result("boom", t)
    assert locator.dial_primary_through_local_gateway() is False
    locator.record_replication_result(None, 14.0)
    assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc1") == sorted(DC1 + FALLBACK)
    locator.record_local_probe_result(None, 18.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


# --- the fixed behaviour (wanfed's default) ---------------------------------------


def fixed(dc: str) -> GatewayLocator:
    return GatewayLocator(datacenter=dc, primary_datacenter="dc1", now=0.0, rng=random.Random(3))


@pytest.mark.parametrize(("dc", "remote"), [("dc1", "dc2"), ("dc2", "dc1")])
def test_lists_empty_until_populated(dc: str, remote: str) -> None:
    locator = fixed(dc)
    locator.refresh_fallback_addresses(FALLBACK)
    assert not locator.populated
    assert locator.list_gateways(remote) == []
    assert locator.pick_gateway(remote) == ""
    routes = {r.datacenter: r for r in locator.status(1.0).routes}
    if remote in routes:  # a secondary always lists the primary; a primary knows no DC yet
        assert routes[remote].reason.startswith("local state not initialized")
    assert routes[dc].path == "same-datacenter"


def test_secondary_defaults_to_local_gateways_from_construction() -> None:
    locator = fixed("dc2")
    assert locator.dial_primary_through_local_gateway() is True
    locator.update_from_states(fixture_states())
    assert locator.list_gateways("dc1") == DC2


def test_follower_always_trusts_local_gateways() -> None:
    locator = fixed("dc2")
    locator.update_from_states(fixture_states())
    for t in range(1, 6):
        locator.record_replication_result("boom", float(t), from_replication=False)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


def test_a_follower_trusts_local_gateways_before_any_replication_result() -> None:
    """A follower runs no replication: with nothing to judge the path by, it
    neither starts direct nor goes direct on failures reported to it."""
    locator = GatewayLocator(
        datacenter="dc2",
        primary_datacenter="dc1",
        now=0.0,
        rng=random.Random(7),
        assume_healthy_at_start=False,
    )
    locator.update_from_states(fixture_states())
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2
    for t in range(1, 6):
        locator.record_replication_result("boom", float(t), from_replication=False)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2


def test_leader_flips_after_three_failures_and_back_after_a_working_probe() -> None:
    locator = fixed("dc2")
    locator.update_from_states(fixture_states())
    locator.refresh_fallback_addresses(FALLBACK)
    locator.set_use_replication_signal(True, 1.0)
    assert locator.dial_primary_through_local_gateway() is True
    for t in (2.0, 3.0):
        locator.record_replication_result("dial tcp: refused", t)
    assert locator.dial_primary_through_local_gateway() is True
    locator.record_replication_result("dial tcp: refused", 4.0)
    assert locator.dial_primary_through_local_gateway() is False
    status = locator.status(10.0)
    route = next(r for r in status.routes if r.datacenter == "dc1")
    assert route.path == "primary-gateways"
    assert {c.source for c in route.candidates} == {"replicated", "fallback"}
    assert "3 consecutive replication failures" in route.reason
    assert status.replication.last_failure_age == pytest.approx(6.0)
    locator.record_replication_result(None, 11.0)  # dialled directly: proves nothing local
    assert locator.dial_primary_through_local_gateway() is False
    locator.record_local_probe_result(None, 11.5)
    assert locator.dial_primary_through_local_gateway() is True
    # Leadership lost: back to trusting local gateways whatever happens.
    locator.set_use_replication_signal(False, 12.0)
    for t in (13.0, 14.0, 15.0):
        locator.record_replication_result("boom", t, from_replication=False)
    assert locator.dial_primary_through_local_gateway() is True


def test_no_local_gateway_means_direct_even_when_choice_is_local() -> None:
    locator = fixed("dc2")
    states = [fixture_states()[0]]  # dc2 has no record yet
    locator.update_from_states(states)
    locator.refresh_fallback_addresses(FALLBACK)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == sorted(DC1 + FALLBACK)


def test_primary_is_never_reached_through_local_gateways() -> None:
    locator = fixed("dc1")
    locator.update_from_states(fixture_states())
    assert locator.dial_primary_through_local_gateway() is False
    locator.record_replication_result(None, 1.0)
    assert locator.dial_primary_through_local_gateway() is False


def test_only_opted_in_gateways_without_critical_checks_count() -> None:
    states = [
        FederationState(
            datacenter="dc1",
            mesh_gateways=[
                gateway("dc1", "a", "1.1.1.1:443"),
                gateway("dc1", "b", "2.2.2.2:443", opted_in=False),
                gateway("dc1", "c", "3.3.3.3:443", status="critical"),
                gateway("dc1", "d", "4.4.4.4:443", status="warning"),
            ],
        )
    ]
    locator = fixed("dc1")
    locator.update_from_states(states)
    assert locator.list_gateways("dc1") == ["1.1.1.1:443", "4.4.4.4:443"]


def test_primary_list_uses_wan_addresses_and_local_list_lan_addresses() -> None:
    states = [
        FederationState(
            datacenter="dc1",
            mesh_gateways=[gateway("dc1", "a", "10.0.0.1:8443", wan="198.18.0.1:443")],
        ),
        FederationState(
            datacenter="dc2",
            mesh_gateways=[gateway("dc2", "b", "10.0.1.1:8443", wan="gw.dc2.example:443")],
        ),
    ]
    primary = fixed("dc1")
    primary.update_from_states(states)
    assert primary.list_gateways("dc2") == ["10.0.0.1:8443"]
    secondary = fixed("dc2")
    secondary.update_from_states(states)
    secondary.set_use_replication_signal(True, 0.0)
    for t in (1.0, 2.0, 3.0):
        secondary.record_replication_result("boom", t)
    assert secondary.list_gateways("dc1") == ["198.18.0.1:443"]
    assert secondary._local == ["10.0.1.1:8443"]


def test_ipv6_addresses_are_bracketed() -> None:
    states = [FederationState(datacenter="dc1", mesh_gateways=[gateway("dc1", "a", "::1:443")])]
    locator = fixed("dc1")
    locator.update_from_states(states)
    assert locator.list_gateways("dc1") == ["[::1]:443"]


def test_ready_only_from_replicated_data() -> None:
    locator = fixed("dc2")
    locator.update_from_states([])
    locator.refresh_fallback_addresses(FALLBACK)
    assert not locator.primary_gateways_ready
    locator.update_from_states(fixture_states())
    assert locator.primary_gateways_ready


def test_supports_federation_states_latches_on_non_empty_results() -> None:
    locator = fixed("dc2")
    locator.update_from_states([])
    assert not locator.supports_federation_states
    locator.update_from_states(fixture_states())
    locator.update_from_states([])
    assert locator.supports_federation_states


def test_pick_is_uniform_over_candidates() -> None:
    locator = fixed("dc2")
    locator.update_from_states(fixture_states())
    picks = {locator.pick_gateway("dc3") for _ in range(200)}
    assert picks == set(DC2)


def test_change_of_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    locator = fixed("dc2")
    locator.update_from_states(fixture_states())
    locator.set_use_replication_signal(True, 0.0)
    caplog.set_level("INFO", logger="wanfed.gateway_locator")
    caplog.clear()
    for t in range(1, 8):
        locator.record_replication_result("boom", float(t))
    direct = [r for r in caplog.records if "through its mesh gateways" in r.getMessage()]
    assert len(direct) == 1
    locator.record_replication_result(None, 9.0)
    locator.record_local_probe_result("refused", 14.0)
    locator.record_local_probe_result(None, 19.0)
    locator.record_local_probe_result(None, 24.0)  # stale: no longer probing
    locator.record_replication_result(None, 25.0)
    local = [r for r in caplog.records if "using our local mesh gateways" in r.getMessage()]
    assert len(local) == 1
    assert len([r for r in caplog.records if "through its mesh gateways" in r.getMessage()]) == 1


# --- direct mode: probing the local path (wanfed's improvement) ------------------------


def _direct_leader(interval: float = 5.0) -> GatewayLocator:
    locator = GatewayLocator(
        datacenter="dc2",
        primary_datacenter="dc1",
        now=0.0,
        rng=random.Random(3),
        local_probe_interval=interval,
    )
    locator.update_from_states(fixture_states())
    locator.refresh_fallback_addresses(FALLBACK)
    locator.set_use_replication_signal(True, 0.0)
    for t in (1.0, 2.0, 3.0):
        locator.record_replication_result("no route to host", t)
    assert locator.dial_primary_through_local_gateway() is False
    return locator


def test_no_probe_is_due_on_the_local_path_or_for_followers() -> None:
    locator = fixed("dc2")
    locator.update_from_states(fixture_states())
    assert locator.next_local_probe_at() is None
    locator.set_use_replication_signal(True, 0.0)
    assert locator.next_local_probe_at() is None
    for t in (1.0, 2.0, 3.0):
        locator.record_replication_result("boom", t, from_replication=False)
    assert locator.next_local_probe_at() is not None  # the leader went direct
    locator.set_use_replication_signal(False, 4.0)  # leadership lost
    assert locator.next_local_probe_at() is None
    assert locator.dial_primary_through_local_gateway() is True


def test_direct_leader_keeps_direct_while_successes_come_over_the_direct_path() -> None:
    locator = _direct_leader()
    for t in (8.0, 9.0, 10.0, 11.0):
        locator.record_replication_result(None, t)
        assert locator.dial_primary_through_local_gateway() is False
    assert locator.list_gateways("dc1") == sorted(DC1 + FALLBACK)
    route = next(r for r in locator.status(12.0).routes if r.datacenter == "dc1")
    assert route.path == "primary-gateways"
    assert route.reason.startswith("direct since 9s ago after 3 consecutive replication failures")
    assert "replication works directly; probing local gateways (no probe yet)" in route.reason


def test_probes_are_due_every_interval_after_going_direct() -> None:
    locator = _direct_leader(interval=5.0)
    assert locator.next_local_probe_at() == 8.0
    locator.record_local_probe_result("dial 5.6.7.8:5555: no route to host", 8.5)
    assert locator.next_local_probe_at() == 13.5
    locator.record_local_probe_result("dial 8.7.6.5:9999: timed out", 13.6)
    assert locator.next_local_probe_at() == pytest.approx(18.6)
    assert locator.dial_primary_through_local_gateway() is False
    status = locator.status(20.0)
    assert status.local_probe is not None
    assert status.local_probe.attempts == 2
    assert status.local_probe.consecutive_failures == 2
    assert status.local_probe.last_attempt_age == pytest.approx(6.4)
    assert status.local_probe.last_error == "dial 8.7.6.5:9999: timed out"
    route = next(r for r in status.routes if r.datacenter == "dc1")
    assert route.reason.endswith(
        "probing local gateways (2 probe(s) failed, last 6s ago: dial 8.7.6.5:9999: timed out)"
    )


def test_a_working_probe_switches_back_and_needs_three_new_failures_to_leave() -> None:
    locator = _direct_leader()
    locator.record_local_probe_result(None, 8.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.list_gateways("dc1") == DC2
    status = locator.status(9.0)
    assert status.local_probe is None
    assert status.replication.consecutive_failures == 0
    assert locator.next_local_probe_at() is None
    for t in (10.0, 11.0):
        locator.record_replication_result("boom", t)
    assert locator.dial_primary_through_local_gateway() is True
    locator.record_replication_result("boom", 12.0)
    assert locator.dial_primary_through_local_gateway() is False


def test_failures_while_direct_keep_the_reason_of_the_failures() -> None:
    locator = _direct_leader()
    locator.record_replication_result("still down", 8.0)
    route = next(r for r in locator.status(9.0).routes if r.datacenter == "dc1")
    assert "4 consecutive replication failures since the last success" in route.reason
    assert "(last error: still down)" in route.reason


def test_a_failure_after_a_direct_success_is_reported_as_such() -> None:
    locator = _direct_leader()
    locator.record_replication_result(None, 8.0)
    locator.record_replication_result("reset by peer", 9.0)
    route = next(r for r in locator.status(10.0).routes if r.datacenter == "dc1")
    assert "1 replication failure(s) since the last success (last error: reset by peer)" in (
        route.reason
    )
    assert locator.dial_primary_through_local_gateway() is False


def test_a_stale_probe_result_after_a_new_term_is_ignored() -> None:
    locator = _direct_leader()
    locator.set_use_replication_signal(False, 5.0)
    locator.set_use_replication_signal(True, 6.0)
    locator.record_local_probe_result("late failure", 7.0)
    assert locator.dial_primary_through_local_gateway() is True
    assert locator.status(8.0).local_probe is None


def test_pick_local_gateway_for_probes() -> None:
    locator = _direct_leader()
    assert {locator.pick_local_gateway() for _ in range(50)} == set(DC2)
    empty = fixed("dc2")
    empty.update_from_states([fixture_states()[0]])
    assert empty.pick_local_gateway() == ""


def test_the_path_epoch_moves_on_every_change_of_candidate_kind() -> None:
    """Bootstrap (no local gateway yet: direct) to local, the leader's switches, and back."""
    locator = fixed("dc2")
    paths: list[str] = []
    epoch = 0

    def note() -> None:
        nonlocal epoch
        path, now = locator.path_to("dc1")
        if now != epoch:
            assert now == epoch + 1, "an epoch moves by one per change"
            epoch = now
            paths.append(path)

    locator.refresh_fallback_addresses(FALLBACK)
    note()
    assert paths == []  # not populated: nothing is handed out
    locator.update_from_states([])
    note()
    assert paths == []  # an empty first read changes no list: nothing to retire yet
    locator.update_from_states([fixture_states()[0]])
    note()
    assert paths == ["primary-gateways"]  # replicated + fallback: direct
    locator.update_from_states(fixture_states())
    note()
    assert paths == ["primary-gateways", "local-gateways"]  # local gateways appeared
    locator.set_use_replication_signal(True, 0.0)
    for t in (1.0, 2.0, 3.0):
        locator.record_replication_result("boom", t)
    note()
    assert paths[-1] == "primary-gateways"
    locator.record_replication_result(None, 4.0)
    note()
    assert paths[-1] == "primary-gateways"
    locator.record_local_probe_result(None, 9.0)
    note()
    assert paths == [
        "primary-gateways",
        "local-gateways",
        "primary-gateways",
        "local-gateways",
    ]
    locator.update_from_states([fixture_states()[0]])  # local gateways gone again
    note()
    assert paths[-1] == "primary-gateways"
    # Other datacenters' paths never change after the first read: epoch 0.
    assert locator.path_to("dc3") == ("local-gateways", 0)


@pytest.mark.parametrize(
    ("left", "right", "merged"),
    [
        ([], [], []),
        (["a"], [], ["a"]),
        ([], ["a"], ["a"]),
        (["a", "c"], ["b", "d"], ["a", "b", "c", "d"]),
        (["a", "b"], ["b", "c"], ["a", "b", "c"]),
        (["a", "a"], ["a"], ["a", "a"]),
        (["b"], ["a", "a"], ["a", "a", "b"]),
    ],
)
def test_merge_sorted_unique(left: list[str], right: list[str], merged: list[str]) -> None:
    assert merge_sorted_unique(left, right) == merged
