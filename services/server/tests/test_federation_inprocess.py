"""WAN federation via mesh gateways, in one process on loopback.

Three datacenters, one server and one gateway each, every process on its own
127.x address, one 127.w.n.x network per datacenter (fixture
``make_federation``). The gateways are the real data plane
(``MeshGateway``); what feeds their route tables here is a small loop over a
running server's store, standing in for the ``wanfed gateway`` watchers. The
secondaries know only ``primary_gateways`` (a file provider).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from wanfed_fsm import (
    DCSpecificRequest,
    FederationState,
    FederationStateRequest,
    IndexedNodes,
    IndexedServices,
)
from wanfed_proto import RemoteError
from wanfed_server.runtime import Server

if TYPE_CHECKING:
    from .conftest import Federation  # type: ignore[import-not-found]

    MakeFederation = Callable[..., Awaitable[Federation]]


@pytest.fixture
async def federation(make_federation: MakeFederation, request: pytest.FixtureRequest) -> Federation:
    # Pruning runs hourly; only the pruning test shortens it, so that a DC
    # stopped on purpose elsewhere is not forgotten mid-test.
    prune_interval = 0.5 if request.node.get_closest_marker("fast_pruning") else 3600.0
    return await make_federation({"dc1": 1, "dc2": 1, "dc3": 1}, prune_interval=prune_interval)


async def eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition that several independent loops converge to."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


def wan_alive(server: Server) -> set[str]:
    return {m.name for m in server.members(wan=True) if m.status == 1}


def federation_states(server: Server) -> dict[str, int]:
    with server.store.read() as txn:
        return {s.datacenter: len(s.mesh_gateways) for s in txn.federation_states()[1]}


async def test_secondaries_bootstrap_from_primary_gateways_alone(
    federation: Federation,
) -> None:
    servers = [dc.require_server() for dc in federation.dcs.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(
        lambda: all(wan_alive(s) == everyone for s in servers), 30, "one WAN pool of 3"
    )
    expected = {"dc1": 1, "dc2": 1, "dc3": 1}
    await eventually(
        lambda: all(federation_states(s) == expected for s in servers),
        30,
        "every DC holds every federation state",
    )
    # Cross-DC RPC, secondary to secondary: dc2 -> dc2-gw -> dc3-gw -> dc3's server.
    dc2, dc3 = federation["dc2"], federation["dc3"]
    reply = await dc2.require_server().rpc(
        "Catalog.ListServices", DCSpecificRequest(datacenter="dc3"), IndexedServices
    )
    assert "mesh-gateway" in reply.services
    assert dc2.gateway is not None
    assert dc3.gateway is not None
    assert dc2.gateway.stats().routes["remote:dc3"].connections >= 1
    assert dc3.gateway.stats().routes["local-server:s1"].connections >= 1
    # In steady state a secondary's leader reaches the primary through its own gateway.
    status = dc2.require_server().federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == "dc1")
    assert route.path == "local-gateways"
    assert route.candidates[0].address == dc2.gateway_address
    # ...and the bytes say so: dc2's gateway forwards to dc1's, which hands them to s1.
    dc1 = federation["dc1"]
    assert dc1.gateway is not None
    await dc2.require_server().rpc(
        "Catalog.ListNodes", DCSpecificRequest(datacenter="dc1"), IndexedNodes
    )
    assert dc2.gateway.stats().routes["remote:dc1"].bytes_to_upstream > 0
    assert dc1.gateway.stats().routes["local-server:s1"].bytes_to_upstream > 0


async def test_unknown_datacenter_is_no_path(federation: Federation) -> None:
    with pytest.raises(Exception, match="No path to datacenter"):
        await (
            federation["dc2"]
            .require_server()
            .rpc("Catalog.ListServices", DCSpecificRequest(datacenter="dc9"), IndexedServices)
        )


async def converged(federation: Federation) -> None:
    servers = [dc.require_server() for dc in federation.dcs.values()]
    expected = {"dc1": 1, "dc2": 1, "dc3": 1}
    await eventually(
        lambda: all(federation_states(s) == expected for s in servers),
        30,
        "every DC holds every federation state",
    )


def route_to(server: Server, datacenter: str) -> tuple[str, list[str]]:
    status = server.federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == datacenter)
    return route.path, [c.address for c in route.candidates]


async def test_lost_local_gateway_sends_the_leader_to_the_primary_gateways_and_back(
    federation: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    await converged(federation)
    dc2 = federation["dc2"]
    server = dc2.require_server()
    assert route_to(server, "dc1") == ("local-gateways", [dc2.gateway_address])
    caplog.set_level("INFO", logger="wanfed.gateway_locator")
    assert dc2.gateway is not None
    await dc2.gateway.close()  # drops every connection through it, refuses new ones

    def switched() -> bool:
        return any(
            "will dial the primary datacenter through its mesh gateways" in r.getMessage()
            for r in caplog.records
        )

    await eventually(switched, 30, "dc2's leader dials the primary's gateways directly")
    record = next(r for r in caplog.records if "through its mesh gateways" in r.getMessage())
    assert "3 consecutive replication failures" in record.__dict__["reason"]
    # While the local gateway is down, replication keeps working over the direct path:
    # a federation state written in the primary reaches dc2.
    primary = federation["dc1"].require_server()
    marker = FederationState(datacenter="dc9")
    apply = FederationStateRequest(datacenter="dc1", op="upsert", state=marker)
    await primary.rpc("FederationState.Apply", apply, bool)
    await eventually(
        lambda: "dc9" in federation_states(server), 30, "dc2 replicated dc9 over the direct path"
    )
    assert route_to(server, "dc1")[0] == "primary-gateways", "replicated, but not direct"
    delete = FederationStateRequest(datacenter="dc1", op="delete", state=marker)
    await primary.rpc("FederationState.Apply", delete, bool)
    await eventually(
        lambda: "dc9" not in federation_states(server), 30, "dc2 replicated dc9's deletion"
    )
    caplog.clear()
    await federation.replace_gateway("dc2", new_address=False)  # back on the same address

    def back_to_local() -> bool:
        path, candidates = route_to(server, "dc1")
        status = server.federation_status()
        assert status is not None
        return (
            path == "local-gateways"
            and candidates == [dc2.gateway_address]
            and status.replication.consecutive_failures == 0
        )

    await eventually(back_to_local, 30, "dc2's leader back on its local gateway")


async def test_a_replaced_secondary_gateway_is_learnt_by_the_primary_gateway(
    federation: Federation,
) -> None:
    await converged(federation)
    dc1, dc2 = federation["dc1"], federation["dc2"]
    old = dc2.gateway_address
    await federation.replace_gateway("dc2", new_address=True)
    new = dc2.gateway_address
    assert new != old
    # The old node keeps its name but now points at the new listener...

    def primary_gateway_routes_to_new() -> bool:
        assert dc1.gateway is not None
        route = dc1.gateway.routes.lookup("s1.server.dc2.consul")
        return route is not None and [f"{u.host}:{u.port}" for u in route.upstreams] == [new]

    # ...and the primary's gateway follows through the federation state alone.
    await eventually(primary_gateway_routes_to_new, 30, "dc1's gateway routes dc2 to the new one")
    # While no dc2 gateway listened, dc1's gossip may have declared s1.dc2 failed
    # (then "no server reachable" until it refutes): ask until the path answers.
    server1 = dc1.require_server()
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            reply = await server1.rpc(
                "Catalog.ListServices", DCSpecificRequest(datacenter="dc2"), IndexedServices
            )
            break
        except RemoteError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("dc1 -> dc2 still fails after 30 s") from exc
            await asyncio.sleep(0.1)
    assert "mesh-gateway" in reply.services


@pytest.mark.fast_pruning
async def test_a_departed_datacenter_is_pruned(federation: Federation) -> None:
    await converged(federation)
    dc1 = federation["dc1"]
    primary = dc1.require_server()
    await eventually(lambda: "s1.dc3" in wan_alive(primary), 30, "s1.dc3 alive in dc1's pool")
    await federation.stop_server("dc3", "s1")  # leaves the WAN pool gracefully

    def s1_dc3_left() -> bool:
        status = {m.name: m.status for m in primary.members(wan=True)}.get("s1.dc3")
        return status in (3, None)  # left, or already forgotten after leaving

    await eventually(s1_dc3_left, 30, "dc1 saw s1.dc3 leave (not fail)")
    await eventually(
        lambda: "dc3" not in federation_states(dc1.require_server()),
        30,
        "dc3's federation state pruned in the primary",
    )
    await eventually(
        lambda: "dc3" not in federation_states(federation["dc2"].require_server()),
        30,
        "the deletion replicated to dc2",
    )


@pytest.mark.fast_pruning
async def test_a_datacenter_whose_servers_failed_is_not_pruned(federation: Federation) -> None:
    """Failed is not gone: a datacenter behind a partition keeps its federation
    state, also once gossip has forgotten its dead server (it is reaped only
    after ``reconnect_timeout``)."""
    await converged(federation)
    primary = federation["dc1"].require_server()
    await eventually(lambda: "s1.dc3" in wan_alive(primary), 30, "s1.dc3 alive in dc1's pool")
    await federation.stop_server("dc3", "s1", leave=False)  # as if cut off: no goodbye

    def status_of_s1_dc3() -> int | None:
        return {m.name: m.status for m in primary.members(wan=True)}.get("s1.dc3")

    async def one_pruning_round() -> None:
        """A canary record of a datacenter nobody knows: the round that deletes it
        also judged every other record, from the same read."""
        canary = FederationState(datacenter="dc-canary")
        upsert = FederationStateRequest(datacenter="dc1", op="upsert", state=canary)
        await primary.rpc("FederationState.Apply", upsert, bool)
        await eventually(
            lambda: "dc-canary" not in federation_states(primary), 30, "a pruning round ran"
        )

    await eventually(lambda: status_of_s1_dc3() == 4, 30, "s1.dc3 failed in dc1's pool")
    await one_pruning_round()
    assert "dc3" in federation_states(primary), "a failed datacenter was pruned"
    await eventually(lambda: status_of_s1_dc3() is None, 60, "gossip forgot the dead s1.dc3")
    await one_pruning_round()
    assert "dc3" in federation_states(primary), "a failed, not yet reaped datacenter was pruned"


async def test_a_server_that_vanishes_is_seen_failed_everywhere(
    federation: Federation,
) -> None:
    await converged(federation)
    servers = [dc.require_server() for dc in federation.dcs.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(lambda: all(wan_alive(s) == everyone for s in servers), 30, "WAN pool of 3")
    await federation.stop_server("dc3", "s1", leave=False)  # as if killed: no goodbye

    seen_failed: set[str] = set()

    def failed_everywhere() -> bool:
        # Failed members are reaped after a while; what matters is that each DC saw it fail.
        for dc in ("dc1", "dc2"):
            statuses = {m.name: m.status for m in federation[dc].require_server().members(wan=True)}
            assert statuses.get("s1.dc3") != 3, "a vanished server must not look like it left"
            if statuses.get("s1.dc3") == 4:
                seen_failed.add(dc)
        return seen_failed == {"dc1", "dc2"}

    await eventually(failed_everywhere, 30, "s1.dc3 failed (status 4) in dc1 and dc2")


async def test_a_stopped_server_is_seen_left_not_failed(
    federation: Federation,
) -> None:
    await converged(federation)
    servers = [dc.require_server() for dc in federation.dcs.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(lambda: all(wan_alive(s) == everyone for s in servers), 30, "WAN pool of 3")
    await federation.stop_server("dc3", "s1")  # graceful: announces its departure
    seen_left: set[str] = set()

    def left_everywhere() -> bool:
        for dc in ("dc1", "dc2"):
            statuses = {m.name: m.status for m in federation[dc].require_server().members(wan=True)}
            if statuses.get("s1.dc3") == 3:
                seen_left.add(dc)
        return seen_left == {"dc1", "dc2"}

    await eventually(left_everywhere, 30, "everyone sees s1.dc3 left (status 3), not failed")
