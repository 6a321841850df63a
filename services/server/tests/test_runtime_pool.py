"""The RPC pool's retirement: pooled connections follow the current path."""

from __future__ import annotations

import asyncio

from wanfed_proto import (
    Connection,
    RpcCall,
    RpcPortServer,
    RpcType,
    dial_plain,
    serve_rpc,
    serve_rpc_port,
)
from wanfed_server.runtime import RpcPool


class GatedDialer:
    """Plain dials to one server; the first waits for ``go``, as a slow gateway would."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.connections: list[Connection] = []

    async def dial(self, node: str, datacenter: str, address: str) -> Connection:
        connection = await dial_plain(self.address, RpcType.MULTIPLEX_V2, 5.0)
        self.connections.append(connection)
        if len(self.connections) == 1:
            self.started.set()
            await self.go.wait()
        return connection


async def ping_server() -> RpcPortServer:
    async def ping(call: RpcCall) -> bool:
        return True

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, {"Status.Ping": ping})

    return await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )


async def test_a_dial_in_flight_when_the_path_changes_is_made_again() -> None:
    server = await ping_server()
    host, port = server.address
    dialer = GatedDialer(f"{host}:{port}")
    pool = RpcPool(dialer)
    try:
        call = asyncio.create_task(
            pool.call("s1", "dc1", "10.0.0.1:8300", "Status.Ping", None, bool, timeout=5)
        )
        await dialer.started.wait()
        pool.retire_datacenter("dc1")  # the locator switched paths meanwhile
        dialer.go.set()
        assert await call is True
        assert len(dialer.connections) == 2
        old_path, new_path = dialer.connections
        await asyncio.wait_for(old_path.wait_closed(), 5)
        # The connection kept for later calls is the one dialled after the switch.
        assert await pool.call("s1", "dc1", "10.0.0.1:8300", "Status.Ping", None, bool) is True
        assert len(dialer.connections) == 2
        assert not new_path.is_closed
    finally:
        await pool.close()
        await server.close()
