"""A secondary finds its way back to the primary on its own.

Real servers, real ``MeshGateway`` data planes and real mTLS on loopback
(fixture ``make_federation``; the secondary's ``primary_gateways`` is one
``provider=file`` entry).

* Restarted while its discovery provider answers nothing: the stored
  federation states name its local gateway, so it rejoins the WAN through
  it at once (anti-entropy works again), and it takes the provider's answer
  when one comes, without another restart.
* Started afresh (no stored state) while its discovery provider answers
  nothing: once the provider answers, the WAN join runs at once (the new
  fallback address nudges it), not a whole ``retry_interval_wan`` later.
* The WAN pool of its leader lists no live primary server (they all failed
  in gossip) while its local path works: replication asks any primary server
  through that path instead of counting a round that dialled nothing, and
  the leader stays on its local gateways.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import pytest

from wanfed_server.runtime import Server
from wanfed_server.runtime._router import RemoteServer

if TYPE_CHECKING:
    from .conftest import Federation  # type: ignore[import-not-found]

    MakeFederation = Callable[..., Awaitable[Federation]]


async def eventually(
    condition: Callable[[], bool], within: float, what: str, show: Callable[[], object]
) -> None:
    """Wait for loops that converge; say what was seen instead when they never do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}; last seen: {show()}")
        await asyncio.sleep(0.05)


def wan_alive(server: Server) -> set[str]:
    return {m.name for m in server.members(wan=True) if m.status == 1}


def gateways_in_store(server: Server, datacenter: str) -> list[str]:
    with server.store.read() as txn:
        states = {s.datacenter: s for s in txn.federation_states()[1]}
    state = states.get(datacenter)
    if state is None:
        return []
    return sorted(f"{g.service.address}:{g.service.port}" for g in state.mesh_gateways)


def route_to(server: Server, datacenter: str) -> tuple[str, list[str]]:
    status = server.federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == datacenter)
    return route.path, [c.address for c in route.candidates]


async def federated(federation: Federation) -> None:
    servers = [federation["dc1"].require_server(), federation["dc2"].require_server()]
    await eventually(
        lambda: all(len(gateways_in_store(s, dc)) == 1 for s in servers for dc in ("dc1", "dc2")),
        30,
        "both datacenters hold both federation states",
        lambda: {
            s.datacenter: (gateways_in_store(s, "dc1"), gateways_in_store(s, "dc2"))
            for s in servers
        },
    )


async def test_a_secondary_restarted_while_discovery_finds_nothing_rejoins_the_wan(
    make_federation: MakeFederation,
) -> None:
    federation = await make_federation({"dc1": 1, "dc2": 1})
    await federated(federation)
    dc1, dc2 = federation["dc1"], federation["dc2"]
    await federation.stop_server("dc2", "s1")
    federation.listing.write_text("")  # the provider answers nothing for now
    server = await federation.start_server("dc2", "s1")
    federation.start_feeder("dc2", server)
    await eventually(
        lambda: "s1.dc1" in wan_alive(server),
        30,
        "the restarted secondary is back in the WAN pool with the primary",
        lambda: (sorted(wan_alive(server)), route_to(server, "dc1")),
    )
    # Anti-entropy, which waits for the primary in the WAN pool, works again:
    # dc2's gateway moves and the primary learns its new address.
    await federation.replace_gateway("dc2", new_address=True)
    primary = dc1.require_server()
    await eventually(
        lambda: gateways_in_store(primary, "dc2") == [dc2.gateway_address],
        30,
        "the primary holds dc2's new gateway",
        lambda: gateways_in_store(primary, "dc2"),
    )
    # The provider answers at last: the running secondary takes the answer.
    federation.publish_primary_gateways()
    federation_of_dc2 = server.federation
    assert federation_of_dc2 is not None
    await eventually(
        lambda: federation_of_dc2.locator.fallback_addresses() == [dc1.gateway_address],
        30,
        "the restarted secondary knows the primary's gateway from discovery",
        federation_of_dc2.locator.fallback_addresses,
    )


async def test_a_fresh_secondary_joins_as_soon_as_discovery_answers(
    make_federation: MakeFederation,
) -> None:
    federation = await make_federation({"dc1": 1, "dc2": 1})
    await federated(federation)
    dc1, dc2 = federation["dc1"], federation["dc2"]
    await federation.stop_server("dc2", "s1")
    federation.listing.write_text("")  # the provider answers nothing for now
    config = dc2.configs["s1"]
    assert config.data_dir is not None
    shutil.rmtree(config.data_dir)  # a fresh server: no stored federation state
    # Production join pacing: a try that had nothing to dial is not retried for 30 s.
    dc2.configs["s1"] = msgspec.structs.replace(config, retry_interval_wan=30.0)
    federation.options = msgspec.structs.replace(federation.options, wan_join_interval=0.0)
    server = await federation.start_server("dc2", "s1")
    federation.start_feeder("dc2", server)
    fed = server.federation
    assert fed is not None
    await eventually(
        lambda: fed.locator.populated,
        30,
        "the fresh secondary's locator read its (empty) store",
        server.federation_status,
    )
    assert not fed.route_to_primary_known()
    federation.publish_primary_gateways()
    # Discovery asks every second; the join follows its answer at once.
    await eventually(
        lambda: "s1.dc1" in wan_alive(server),
        15,
        "the fresh secondary joined the primary soon after discovery answered",
        lambda: (sorted(wan_alive(server)), route_to(server, "dc1")),
    )
    await federation.register_gateway("dc2")
    await eventually(
        lambda: gateways_in_store(server, "dc1") == [dc1.gateway_address],
        30,
        "the fresh secondary replicated the primary's state",
        lambda: gateways_in_store(server, "dc1"),
    )


async def test_a_primary_failed_in_gossip_keeps_the_leader_on_its_working_local_path(
    make_federation: MakeFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    federation = await make_federation({"dc1": 1, "dc2": 1})
    await federated(federation)
    dc2 = federation["dc2"]
    server = dc2.require_server()
    assert route_to(server, "dc1") == ("local-gateways", [dc2.gateway_address])
    pool = server.wan_pool
    assert pool is not None
    listed = pool.servers

    def no_live_primary_server(datacenter: str) -> Sequence[RemoteServer] | None:
        servers = listed(datacenter)
        # Every primary server failed in gossip: the datacenter is known, none is alive.
        return [] if datacenter == "dc1" and servers is not None else servers

    status = server.federation_status
    before = status()
    assert before is not None
    monkeypatch.setattr(pool, "servers", no_live_primary_server)
    gateway = dc2.gateway
    assert gateway is not None

    def connections_through_local_gateway() -> int:
        route = gateway.stats().routes.get("remote:dc1")
        return 0 if route is None else int(route.connections)

    dialled = connections_through_local_gateway()

    def successes() -> int:
        now = status()
        assert now is not None
        return int(now.replication.consecutive_successes)

    # Rounds end every second (a 1 s long-poll); several more succeed, each
    # asking any primary server through dc2's own gateway.
    start = successes()
    await eventually(
        lambda: successes() >= start + 4,
        30,
        "replication keeps succeeding while gossip lists no live primary server",
        status,
    )
    after = status()
    assert after is not None
    assert after.replication.consecutive_failures == 0
    assert route_to(server, "dc1") == ("local-gateways", [dc2.gateway_address])
    # The rounds dialled any primary server through dc2's own gateway.
    assert connections_through_local_gateway() > dialled
