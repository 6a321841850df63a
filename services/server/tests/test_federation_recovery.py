"""Federation heals itself: the scenarios the reference's issues are about.

Real servers, real ``MeshGateway`` data planes and real mTLS on loopback,
one 127.w.n.x network per datacenter (fixture ``make_federation``).

* #7339: every primary gateway is replaced while a secondary is down; only
  the discovery source is updated. The secondary, restarted from its data dir
  (so it holds stale federation states), recovers with no other step.
* #9341: a follower of a secondary reaches the primary through its own
  datacenter's gateways; only the leader acts on the replication signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wanfed_agent.rpc import KeepaliveSettings
from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest
from wanfed_proto import RemoteError
from wanfed_server.runtime import Server
from wanfed_server.runtime._wanfed import FederationOptions

if TYPE_CHECKING:
    from .conftest import Federation  # type: ignore[import-not-found]

    MakeFederation = Callable[..., Awaitable[Federation]]


async def eventually(
    condition: Callable[[], bool],
    within: float,
    what: str,
    show: Callable[[], object] | None = None,
) -> None:
    """``show`` describes the state when the condition never held: a timeout alone
    says what was expected, not what the federation was doing instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            seen = "" if show is None else f"; last seen: {show()}"
            raise AssertionError(f"not within {within:.0f} s: {what}{seen}")
        await asyncio.sleep(0.05)


async def eventually_async(
    condition: Callable[[], Awaitable[bool]], within: float, what: str
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.1)


def wan_alive(server: Server) -> set[str]:
    return {m.name for m in server.members(wan=True) if m.status == 1}


def primary_gateways_in_store(server: Server) -> list[str]:
    with server.store.read() as txn:
        states = {s.datacenter: s for s in txn.federation_states()[1]}
    state = states.get("dc1")
    if state is None:
        return []
    return sorted(f"{g.service.address}:{g.service.port}" for g in state.mesh_gateways)


def route_to(server: Server, datacenter: str) -> tuple[str, list[str]]:
    status = server.federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == datacenter)
    return route.path, [c.address for c in route.candidates]


async def rpc_ok(server: Server, datacenter: str) -> bool:
    try:
        await server.rpc(
            "Catalog.ListNodes", DCSpecificRequest(datacenter=datacenter), IndexedNodes
        )
    except Exception:
        return False
    return True


async def test_every_primary_gateway_replaced_while_a_secondary_is_down(
    make_federation: MakeFederation,
) -> None:
    # Replication's production long-poll (300 s): the restarted leader must not
    # wait for the primary in its WAN pool before its rounds count as failed.
    fed = await make_federation(
        {"dc1": 1, "dc2": 1}, replication_wait=FederationOptions().replication_wait
    )
    dc1, dc2 = fed["dc1"], fed["dc2"]
    await eventually(
        lambda: wan_alive(dc2.require_server()) == {"s1.dc1", "s1.dc2"}, 20, "dc2 joined dc1"
    )
    old = dc1.gateway_address
    await eventually(
        lambda: primary_gateways_in_store(dc2.require_server()) == [old],
        20,
        "dc2 replicated dc1's gateway",
    )

    await eventually(
        lambda: route_to(dc2.require_server(), "dc1") == ("local-gateways", [dc2.gateway_address]),
        20,
        "dc2's leader on its local gateways (both states replicated)",
    )
    await fed.stop_server("dc2", "s1")
    await fed.replace_gateway("dc1", new_address=True)
    new = dc1.gateway_address
    assert new.split(":")[0] != old.split(":")[0]
    fed.publish_primary_gateways()  # the operator updates the discovery source only
    primary = dc1.require_server()
    await eventually(
        lambda: primary_gateways_in_store(primary) == [new], 20, "dc1's own state names the new"
    )

    server = await fed.start_server("dc2", "s1")
    await server.wait_ready()
    # Stale federation states, restored from the data dir.
    await eventually(lambda: primary_gateways_in_store(server) == [old], 10, "states restored")
    fed.start_feeder("dc2", server)

    # No other step: discovery, the locator and replication heal dc2 by themselves.
    await eventually(lambda: "s1.dc1" in wan_alive(server), 30, "dc2 sees s1.dc1 alive again")
    await eventually(
        lambda: primary_gateways_in_store(server) == [new], 30, "dc2 replicated the new gateway"
    )
    await eventually_async(lambda: rpc_ok(server, "dc1"), 30, "?dc=dc1 from dc2 answers")

    # ...and the leader ends on its local gateway, whose route to dc1 came from the
    # replicated state: dc2 -> dc2-gw -> the new dc1 gateway -> dc1's server.
    async def local_path_works() -> bool:
        on_local = route_to(server, "dc1") == ("local-gateways", [dc2.gateway_address])
        return on_local and await rpc_ok(server, "dc1")

    await eventually_async(local_path_works, 30, "dc2's leader back on a working local path")
    assert dc2.gateway is not None
    route = dc2.gateway.routes.lookup("s1.server.dc1.consul")
    assert route is not None
    assert [f"{u.host}:{u.port}" for u in route.upstreams] == [new]
    status = server.federation_status()
    assert status is not None
    assert status.replication.use_replication_signal
    assert status.dial_primary_through_local_gateways
    assert "s1.dc1" in wan_alive(server)


def bytes_up(fed: Federation, dc: str, route: str) -> int:
    gateway = fed[dc].gateway
    assert gateway is not None
    stats = gateway.stats().routes.get(route)
    return 0 if stats is None else stats.bytes_to_upstream


async def test_a_follower_reaches_the_primary_through_its_local_gateways(
    make_federation: MakeFederation,
) -> None:
    fed = await make_federation({"dc1": 1, "dc2": 3})
    dc2 = fed["dc2"]
    servers = list(dc2.servers.values())
    everyone = {"s1.dc1", "s1.dc2", "s2.dc2", "s3.dc2"}
    await eventually(
        lambda: all(wan_alive(s) == everyone for s in servers), 30, "one WAN pool of 4"
    )
    local = ("local-gateways", [dc2.gateway_address])
    await eventually(
        lambda: all(route_to(s, "dc1") == local for s in servers),
        30,
        "every dc2 server routes dc1-bound traffic through dc2's gateway",
    )

    def signal(server: Server) -> bool:
        status = server.federation_status()
        assert status is not None
        return status.replication.use_replication_signal

    # Exactly the leader runs replication and listens to its outcome (an ex-leader
    # of the first election may take a moment to stop its routines).
    await eventually(
        lambda: [s for s in servers if signal(s)] == [s for s in servers if s.is_leader()] != [],
        30,
        "only the leader uses the replication signal",
    )
    leader = dc2.leader()
    assert leader is not None
    follower = next(s for s in servers if s is not leader)

    # A write to dc1 sent by the follower: its bytes cross dc2's gateway, then dc1's.
    payload = "x" * 200_000
    before = bytes_up(fed, "dc2", "remote:dc1"), bytes_up(fed, "dc1", "local-server:s1")
    register = RegisterRequest(
        datacenter="dc1",
        node=Node(node="from-follower", address="127.0.1.9", meta={"blob": payload}),
    )

    async def registered() -> bool:
        # Retried: on a loaded machine a WAN probe may time out and leave the
        # follower's pool without a live dc1 server for a moment.
        try:
            return bool(await follower.rpc("Catalog.Register", register, bool))
        except RemoteError:
            return False

    await eventually_async(registered, 30, "the follower's write reaches dc1")
    after = bytes_up(fed, "dc2", "remote:dc1"), bytes_up(fed, "dc1", "local-server:s1")
    assert after[0] - before[0] >= len(payload), "the follower's request did not cross dc2-gw"
    assert after[1] - before[1] >= len(payload), "...nor dc1-gw"

    # Only the leader acts on the replication signal: with dc2's gateway gone its
    # replication fails and it dials dc1's gateways directly; the followers, which
    # run no replication, keep trusting their local gateways. Leadership may move
    # meanwhile (elections on a loaded machine): whoever leads is judged, and an
    # ex-leader returns to its local gateways with its failures forgotten.
    assert dc2.gateway is not None
    gateway_address = dc2.gateway_address
    await dc2.gateway.close()

    def on_local_trusting(server: Server) -> bool:
        status = server.federation_status()
        assert status is not None
        return (
            status.dial_primary_through_local_gateways
            and status.replication.consecutive_failures == 0
            and route_to(server, "dc1") == ("local-gateways", [gateway_address])
        )

    def leader_direct_followers_local() -> bool:
        leader = dc2.leader()
        if leader is None or route_to(leader, "dc1")[0] != "primary-gateways":
            return False
        return all(on_local_trusting(s) for s in servers if s is not leader)

    def who_goes_where() -> dict[str, object]:
        return {
            f"{s.node_name}{' (leader)' if s.is_leader() else ''}": route_to(s, "dc1")
            for s in servers
        }

    await eventually(
        leader_direct_followers_local,
        30,
        "dc2's leader goes direct, its followers stay on the local gateway",
        who_goes_where,
    )

    # The gateway comes back on its address: the leader's successes over the direct
    # path do not bring it home, a probe of the local path through it does.
    await fed.replace_gateway("dc2", new_address=False)
    await eventually(
        lambda: all(route_to(s, "dc1") == local for s in servers),
        30,
        "the leader back on dc2's gateway",
        who_goes_where,
    )
    reply = await follower.rpc(
        "Catalog.ListNodes", DCSpecificRequest(datacenter="dc1"), IndexedNodes
    )
    assert "from-follower" in {n.node for n in reply.nodes}


async def test_every_primary_gateway_replaced_under_a_running_secondary(
    make_federation: MakeFederation,
) -> None:
    fed = await make_federation({"dc1": 1, "dc2": 1})
    dc1, dc2 = fed["dc1"], fed["dc2"]
    server = dc2.require_server()
    local = ("local-gateways", [dc2.gateway_address])
    await eventually(lambda: route_to(server, "dc1") == local, 20, "dc2 on its local gateway")
    federation = server.federation
    assert federation is not None
    old = dc1.gateway_address
    assert federation.locator.fallback_addresses() == [old]

    await fed.replace_gateway("dc1", new_address=True)
    new = dc1.gateway_address
    fed.publish_primary_gateways()

    # Replicated and discovered addresses are both stale: the leader's direct path
    # keeps failing, so discovery runs again and finds the new gateway.
    await eventually(lambda: federation.locator.fallback_addresses() == [new], 30, "rediscovered")
    await eventually(
        lambda: primary_gateways_in_store(server) == [new], 30, "dc2 replicated the new gateway"
    )

    async def local_path_works() -> bool:
        return route_to(server, "dc1") == local and await rpc_ok(server, "dc1")

    await eventually_async(local_path_works, 30, "dc2's leader back on a working local path")
    await eventually(lambda: "s1.dc1" in wan_alive(server), 30, "s1.dc1 alive in dc2's pool")


async def test_a_cross_dc_blocking_read_in_flight_survives_a_path_change(
    make_federation: MakeFederation,
) -> None:
    """A gateway's route watch is a blocking query forwarded to another
    datacenter: when the path changes it is cut after the retire grace (the old
    path may be the broken one) and asked again along the new path, unseen by
    its caller."""
    fed = await make_federation({"dc1": 1, "dc2": 1})
    dc2 = fed["dc2"]
    server = dc2.require_server()
    local = ("local-gateways", [dc2.gateway_address])
    await eventually(lambda: route_to(server, "dc1") == local, 30, "dc2 settled on its gateway")
    await eventually_async(lambda: rpc_ok(server, "dc1"), 30, "dc2 reaches dc1")
    pool = server._pool
    assert pool is not None
    pool._retire_grace = 0.1
    first = await server.rpc("Catalog.ListNodes", DCSpecificRequest(datacenter="dc1"), IndexedNodes)
    blocking = DCSpecificRequest(datacenter="dc1", min_query_index=first.index, max_query_time=30.0)

    # Count the sends of our read. The pooled connection is open (``first`` used
    # it), so a send puts the call on the wire before its task yields.
    sends: list[object] = []
    send = pool.call_on

    async def counted(*args: Any, **kwargs: Any) -> Any:
        if args[1] == "Catalog.ListNodes" and args[2] == blocking:
            sends.append(args)
        return await send(*args, **kwargs)

    pool.call_on = counted
    query = asyncio.create_task(server.rpc("Catalog.ListNodes", blocking, IndexedNodes))
    await eventually(lambda: len(sends) == 1, 10, "the blocking read is on the wire")
    # The path to the primary changes (its epoch moves); the next call along it
    # retires the connection the read is waiting on.
    federation = server.federation
    assert federation is not None
    federation.locator._primary_epoch += 1
    assert await rpc_ok(server, "dc1")
    await eventually(lambda: len(sends) == 2, 10, "cut after the grace, asked again")
    assert not query.done()
    primary = fed["dc1"].require_server()
    after = RegisterRequest(datacenter="dc1", node=Node(node="after-switch", address="127.0.1.8"))
    await primary.rpc("Catalog.Register", after, bool)
    reply = await asyncio.wait_for(query, 10)
    assert "after-switch" in {n.node for n in reply.nodes}


def silence(gateway: object) -> None:
    """Every connection the gateway carries now goes silent both ways: bytes stay
    in the kernel's buffers, nothing is reset (a gateway instance that vanished,
    a black-holed link). New connections are not affected."""
    for connection in list(gateway._connections):  # type: ignore[attr-defined]
        for transport in (connection._transport, connection._up):
            if transport is not None:
                transport.pause_reading()


async def test_a_replication_long_poll_on_a_path_gone_silent_fails_within_the_keepalive(
    make_federation: MakeFederation,
) -> None:
    """The long-poll waits up to 300 s for the primary; when the path under it dies
    without a reset, keepalive gives the connection up and the failure reaches the
    replicator and the locator at once (without it: after the whole long-poll)."""
    fed = await make_federation({"dc1": 1, "dc2": 1}, replication_wait=300.0)
    dc2 = fed["dc2"]
    server = dc2.require_server()
    federation = server.federation
    assert federation is not None
    local = ("local-gateways", [dc2.gateway_address])
    await eventually(lambda: route_to(server, "dc1") == local, 30, "dc2 settled on its gateway")
    await eventually(lambda: primary_gateways_in_store(server) != [], 30, "dc2 replicated")
    pool = server._pool
    assert pool is not None
    # Connections dialled from now on ping after 0.2 s of silence, dead after 1 s;
    # moving the path's epoch makes the long-poll go again on such a connection.
    pool._keepalive = KeepaliveSettings(interval=0.2, dead_after=1.0)
    pool._retire_grace = 0.1
    federation.locator._primary_epoch += 1
    assert await rpc_ok(server, "dc1")  # the first call on the new epoch retires the old

    def long_poll_on_the_new_epoch() -> bool:
        epoch = federation.locator._primary_epoch
        entries = pool._pooled.values()
        return all(e.route.epoch == epoch for e in entries) and any(e.calls for e in entries)

    await eventually(long_poll_on_the_new_epoch, 10, "the long-poll asked again on the new epoch")
    # Every replication outcome the locator hears from now on (a success right
    # after the failure clears the locator's own record of it).
    service = federation.locator_service
    errors: list[str | None] = []
    report = service.on_replication_result

    def heard(error: str | None, *, from_replication: bool = True) -> None:
        errors.append(error)
        report(error, from_replication=from_replication)

    service.on_replication_result = heard
    deaths = pool.keepalive_deaths
    silence(dc2.gateway)
    await eventually(lambda: pool.keepalive_deaths > deaths, 30, "keepalive gave the path up")
    await eventually(
        lambda: any(error and "keepalive" in error for error in errors),
        30,
        f"the replicator heard of the dead path (heard {errors}; routes {pool.connections()})",
    )
