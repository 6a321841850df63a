"""The route-keyed RPC pool: path epochs, idleness, and the deadline of every call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from wanfed_agent.rpc import (
    DEFAULT_CALL_TIMEOUT,
    PlainDialer,
    Route,
    RouteTable,
    RpcPool,
    Target,
    blocking_call_timeout,
    call_servers,
)
from wanfed_fsm import DCSpecificRequest
from wanfed_proto import (
    Connection,
    RpcCall,
    RpcHandler,
    RpcPortServer,
    RpcType,
    TransportError,
    dial_plain,
    serve_rpc,
    serve_rpc_port,
)

GUARD = 10.0


async def ping(call: RpcCall) -> bool:
    return True


class Paths:
    """A path source whose path to dc2 the test moves by hand."""

    def __init__(self) -> None:
        self.path = "local-gateways"
        self.epoch = 0

    def path_to(self, datacenter: str) -> tuple[str, int]:
        return self.path, self.epoch

    def change(self, path: str) -> None:
        self.path = path
        self.epoch += 1


class LoopbackDialer:
    """Dials one plain server for every route, as if through that route's gateway;
    the first dial waits for ``go`` when ``gated``, as a slow gateway would."""

    def __init__(self, address: str, *, gated: bool = False) -> None:
        self.address = address
        self.go = asyncio.Event()
        if not gated:
            self.go.set()
        self.started = asyncio.Event()
        self.routes: list[Route] = []
        self.connections: list[Connection] = []

    async def dial(self, route: Route) -> Connection:
        connection = await dial_plain(self.address, RpcType.MULTIPLEX_V2, 5.0)
        self.routes.append(route)
        self.connections.append(connection)
        if len(self.connections) == 1:
            self.started.set()
            await self.go.wait()
        return connection


async def plain_rpc_server(
    handlers: dict[str, RpcHandler], *, idle_timeout: float | None = None
) -> tuple[RpcPortServer, list[Connection]]:
    """A plain multiplexed RPC port on loopback answering ``handlers``; the
    connections it served are listed."""
    served: list[Connection] = []

    async def rpc(connection: Connection) -> None:
        served.append(connection)
        await serve_rpc(connection, handlers)

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
        idle_timeout=idle_timeout,
    )
    return port, served


def address_of(port: RpcPortServer) -> str:
    host, number = port.address
    return f"{host}:{number}"


async def test_a_call_on_a_new_epoch_dials_the_new_path_and_retires_the_old() -> None:
    """A long call in flight on the old path gets the grace, then fails as a
    transport failure; new calls go the new way at once."""
    release = asyncio.Event()

    async def wait(call: RpcCall) -> bool:
        await release.wait()
        return True

    server, _ = await plain_rpc_server({"Status.Ping": ping, "Slow.Wait": wait})
    paths = Paths()
    dialer = LoopbackDialer(address_of(server))
    pool = RpcPool(dialer, RouteTable("dc1", paths), retire_grace=0.05, keepalive=None)
    try:
        assert await pool.call("s2", "dc2", "198.18.2.10:8300", "Status.Ping", None, bool)
        long_poll = asyncio.create_task(pool.call("s2", "dc2", "", "Slow.Wait", None, bool))
        assert await pool.call("s2", "dc2", "", "Status.Ping", None, bool)
        assert len(dialer.routes) == 1, "one connection per route, whatever the address"
        paths.change("primary-gateways")
        assert await pool.call("s2", "dc2", "", "Status.Ping", None, bool)
        assert [(r.path, r.epoch) for r in dialer.routes] == [
            ("local-gateways", 0),
            ("primary-gateways", 1),
        ]
        with pytest.raises(TransportError):
            await asyncio.wait_for(long_poll, GUARD)
        assert pool.connections() == [dialer.routes[1]]
        release.set()
        assert await pool.call("s2", "dc2", "", "Slow.Wait", None, bool) is True
        assert len(dialer.routes) == 2
    finally:
        await pool.close()
        await server.close()


async def test_a_dial_in_flight_when_the_path_changes_is_made_again() -> None:
    server, _ = await plain_rpc_server({"Status.Ping": ping})
    paths = Paths()
    dialer = LoopbackDialer(address_of(server), gated=True)
    pool = RpcPool(dialer, RouteTable("dc1", paths), keepalive=None)
    try:
        call = asyncio.create_task(pool.call("s2", "dc2", "", "Status.Ping", None, bool))
        await dialer.started.wait()
        paths.change("primary-gateways")  # the locator switched paths meanwhile
        dialer.go.set()
        assert await asyncio.wait_for(call, GUARD) is True
        assert [route.epoch for route in dialer.routes] == [0, 1]
        old_path, new_path = dialer.connections
        await asyncio.wait_for(old_path.wait_closed(), GUARD)
        # The connection kept for later calls is the one dialled after the switch.
        assert await pool.call("s2", "dc2", "", "Status.Ping", None, bool) is True
        assert len(dialer.connections) == 2
        assert not new_path.is_closed
    finally:
        await pool.close()
        await server.close()


async def test_every_call_carries_a_deadline_and_a_blocking_one_waits_longer() -> None:
    deadlines: list[float] = []

    async def note(call: RpcCall) -> bool:
        deadlines.append(call.deadline)
        return True

    server, _ = await plain_rpc_server({"Note": note})
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), keepalive=None)
    address = address_of(server)
    try:
        before = time.time()
        assert await pool.call("s1", "dc1", address, "Note", None, bool)
        blocking = DCSpecificRequest(min_query_index=5, max_query_time=120.0)
        assert await pool.call("s1", "dc1", address, "Note", blocking, bool)
        after = time.time()
        ordinary, long_poll = deadlines
        assert before + DEFAULT_CALL_TIMEOUT <= ordinary <= after + DEFAULT_CALL_TIMEOUT
        wait = blocking_call_timeout(120.0)
        assert wait >= 120.0 + 120.0 / 16
        assert before + wait <= long_poll <= after + wait
    finally:
        await pool.close()
        await server.close()


def test_blocking_timeouts_follow_the_servers_wait_rules() -> None:
    assert blocking_call_timeout(0.0, margin=0.0) == 300.0 + 300.0 / 16  # the default wait
    assert blocking_call_timeout(3600.0, margin=0.0) == 600.0 + 600.0 / 16  # capped
    assert blocking_call_timeout(16.0, margin=2.0) == 16.0 + 1.0 + 2.0
    with pytest.raises(ValueError, match="margin"):
        blocking_call_timeout(1.0, margin=-1.0)


async def test_a_connection_the_server_closed_as_idle_is_dialled_again() -> None:
    server, served = await plain_rpc_server({"Status.Ping": ping}, idle_timeout=0.2)
    address = address_of(server)
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), keepalive=None)
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        (first,) = served
        await asyncio.wait_for(first.wait_closed(), GUARD)  # the server's idle close
        assert server.stats.idle_closed == 1
        (route,) = pool.connections()
        pooled = pool._pooled[route].client
        await asyncio.wait_for(pooled.connection.wait_closed(), GUARD)
        # The caller never sees the close: the next call simply dials again.
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(served) == 2
    finally:
        await pool.close()
        await server.close()


async def test_the_pool_retires_a_connection_idle_for_max_idle_before_reusing_it() -> None:
    server, served = await plain_rpc_server({"Status.Ping": ping})
    address = address_of(server)
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), max_idle=60.0, keepalive=None)
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(served) == 1  # reused while fresh
        (route,) = pool.connections()
        pool._pooled[route].idle_since -= 61.0  # as if its last call ended 61 s ago
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(served) == 2
        assert pool.idle_retired == 1
        await asyncio.wait_for(served[0].wait_closed(), GUARD)
    finally:
        await pool.close()
        await server.close()


async def test_a_connection_with_a_call_in_flight_is_never_retired_as_idle() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def park(call: RpcCall) -> bool:
        started.set()
        await release.wait()
        return True

    server, _ = await plain_rpc_server({"Status.Ping": ping, "Park": park})
    address = address_of(server)
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), max_idle=60.0, keepalive=None)
    try:
        parked = asyncio.create_task(pool.call("s1", "dc1", address, "Park", None, bool))
        await started.wait()  # the call is in flight on the pooled connection
        (route,) = pool.connections()
        pool._pooled[route].idle_since -= 61.0
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert pool.idle_retired == 0
        release.set()
        assert await asyncio.wait_for(parked, GUARD) is True
    finally:
        await pool.close()
        await server.close()


def test_routes_are_direct_here_and_follow_the_path_source_elsewhere() -> None:
    paths = Paths()
    table = RouteTable("DC1", paths)
    here = table.route("dc1", "S1", "127.0.0.1:8300")
    assert (here.path, here.node, here.address, here.epoch) == ("direct", "s1", "127.0.0.1:8300", 0)
    there = table.route("dc2", None, "198.18.2.10:8300")
    assert (there.path, there.address, there.epoch) == ("local-gateways", None, 0)
    paths.change("primary-gateways")
    assert table.route("dc2", None, "").epoch == 1
    # Without a path source (federation off) every server is dialled at its address.
    assert RouteTable("dc1").route("dc2", "s2", "198.18.2.10:8300").path == "direct"
    with pytest.raises(ValueError, match="needs an address"):
        table.route("dc1", "s1", None)
    with pytest.raises(ValueError, match="gateway address"):
        table.pinned("dc2", "")
    with pytest.raises(ValueError, match="epoch"):
        Route(datacenter="dc2", node=None, path="local-gateways", address=None, epoch=-1)


async def test_a_read_cut_by_a_path_change_is_asked_again_along_the_new_path() -> None:
    """The pool retires the old path's connection; ``call_servers`` sees the cut
    as a path change (not a broken path) and asks again, unseen by its caller."""
    arrived: list[int] = []
    second = asyncio.Event()
    release = asyncio.Event()

    async def wait(call: RpcCall) -> bool:
        arrived.append(call.seq)
        if len(arrived) == 2:
            second.set()
        await release.wait()
        return True

    server, _ = await plain_rpc_server({"Status.Ping": ping, "Slow.Wait": wait})
    paths = Paths()
    dialer = LoopbackDialer(address_of(server))
    pool = RpcPool(dialer, RouteTable("dc1", paths), retire_grace=0.05, keepalive=None)
    servers = [Target(node="s2", address="198.18.2.10:8300")]
    try:
        read = asyncio.create_task(
            call_servers(pool, "dc2", servers, "Slow.Wait", None, bool, read=True)
        )
        await asyncio.wait_for(_until(lambda: len(arrived) == 1), GUARD)
        paths.change("primary-gateways")
        assert await pool.call("s2", "dc2", "", "Status.Ping", None, bool)  # retires the old
        await asyncio.wait_for(second.wait(), GUARD)
        release.set()
        assert await asyncio.wait_for(read, GUARD) is True
        assert [route.path for route in dialer.routes] == ["local-gateways", "primary-gateways"]
    finally:
        await pool.close()
        await server.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 (a handler's side effect, no event to wait on)
        await asyncio.sleep(0.01)
