"""``wanfed federation routes`` output: the path choice, and the probe while direct."""

from __future__ import annotations

import random

from wanfed_fsm import CheckServiceNode, FederationState, Node, Service, ServiceAddress
from wanfed_gateway_locator import GatewayLocator
from wanfed_server.commands.federation import format_routes


def state(dc: str, address: str) -> FederationState:
    host, port = address.rsplit(":", 1)
    return FederationState(
        datacenter=dc,
        mesh_gateways=[
            CheckServiceNode(
                node=Node(node=f"{dc}-gw", address=host, datacenter=dc),
                service=Service(
                    kind="mesh-gateway",
                    service="mesh-gateway",
                    address=host,
                    port=int(port),
                    meta={"consul-wan-federation": "1"},
                    tagged_addresses={"wan": ServiceAddress(address=host, port=int(port))},
                ),
            )
        ],
    )


def leader() -> GatewayLocator:
    locator = GatewayLocator(
        datacenter="dc2", primary_datacenter="dc1", now=0.0, rng=random.Random(1)
    )
    locator.update_from_states([state("dc1", "198.19.0.11:8443"), state("dc2", "10.0.2.21:8443")])
    locator.set_use_replication_signal(True, 0.0)
    return locator


def test_local_path_prints_no_probe_line() -> None:
    shown = format_routes(leader().status(1.0))
    assert "Primary-bound traffic: local gateways first" in shown
    assert "Local path:" not in shown
    assert "dc1: local-gateways\n  why: the last replication round succeeded" in shown


def test_direct_leader_shows_why_and_how_its_probes_fare() -> None:
    locator = leader()
    for t in (1.0, 2.0, 3.0):
        locator.record_replication_result("no route to host", t)
    shown = format_routes(locator.status(4.0))
    assert "Primary-bound traffic: the primary's gateways directly" in shown
    assert "Local path: probing local gateways, no probe yet" in shown
    locator.record_replication_result(None, 5.0)
    locator.record_local_probe_result("via 10.0.2.21:8443: connection reset", 8.0)
    shown = format_routes(locator.status(10.0))
    assert (
        "Local path: probing local gateways, last probe 2s ago, 1 failed "
        "(last error: via 10.0.2.21:8443: connection reset)"
    ) in shown
    assert "dc1: primary-gateways\n  why: direct since 7s ago after 3 consecutive" in shown
    assert "  - 198.19.0.11:8443 (replicated)" in shown
