"""The RPC pool and the servers' idle timeout: a closed idle connection costs no call."""

from __future__ import annotations

import asyncio

from wanfed_proto import Connection, RpcCall, RpcPortServer, RpcType, serve_rpc, serve_rpc_port
from wanfed_server.runtime import PlainDialer, RpcPool

GUARD = 10.0


async def ping(call: RpcCall) -> bool:
    return True


class CountingPort:
    """A plain RPC port that counts the connections its handler served."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.port: RpcPortServer | None = None

    async def start(self, idle_timeout: float | None) -> str:
        async def rpc(connection: Connection) -> None:
            self.connections.append(connection)
            await serve_rpc(connection, {"Status.Ping": ping})

        self.port = await serve_rpc_port(
            "127.0.0.1",
            0,
            plain_handlers={RpcType.MULTIPLEX_V2: rpc},
            alpn_handlers={},
            ssl_context=None,
            idle_timeout=idle_timeout,
        )
        host, port = self.port.address
        return f"{host}:{port}"


async def test_a_connection_the_server_closed_as_idle_is_dialled_again() -> None:
    server = CountingPort()
    address = await server.start(idle_timeout=0.2)
    pool = RpcPool(PlainDialer())
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        (first,) = server.connections
        await asyncio.wait_for(first.wait_closed(), GUARD)  # the server's idle close
        assert server.port is not None
        assert server.port.stats.idle_closed == 1
        pooled = pool._clients[("dc1", "s1", address)]
        await asyncio.wait_for(pooled.connection.wait_closed(), GUARD)
        # The caller never sees the close: the next call simply dials again.
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(server.connections) == 2
    finally:
        await pool.close()
        assert server.port is not None
        await server.port.close()


async def test_the_pool_retires_a_connection_idle_for_max_idle_before_reusing_it() -> None:
    server = CountingPort()
    address = await server.start(idle_timeout=None)
    pool = RpcPool(PlainDialer(), max_idle=60.0)
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(server.connections) == 1  # reused while fresh
        client = pool._clients[("dc1", "s1", address)]
        pool._use[client][1] -= 61.0  # as if its last call ended 61 s ago
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert len(server.connections) == 2
        assert pool.idle_retired == 1
        await asyncio.wait_for(server.connections[0].wait_closed(), GUARD)
    finally:
        await pool.close()
        assert server.port is not None
        await server.port.close()


async def test_a_connection_with_a_call_in_flight_is_never_retired_as_idle() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def park(call: RpcCall) -> bool:
        started.set()
        await release.wait()
        return True

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, {"Status.Ping": ping, "Park": park})

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )
    address = f"{port.address[0]}:{port.address[1]}"
    pool = RpcPool(PlainDialer(), max_idle=60.0)
    try:
        parked = asyncio.create_task(pool.call("s1", "dc1", address, "Park", None, bool))
        await started.wait()  # the call is in flight on the pooled connection
        client = pool._clients[("dc1", "s1", address)]
        pool._use[client][1] -= 61.0
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert pool.idle_retired == 0
        release.set()
        assert await asyncio.wait_for(parked, GUARD) is True
    finally:
        await pool.close()
        await port.close()
