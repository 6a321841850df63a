"""The RPC pool's retirement: pooled connections follow the current path."""

from __future__ import annotations

import asyncio

import pytest

from wanfed_proto import (
    Connection,
    RpcCall,
    RpcHandler,
    RpcPortServer,
    RpcType,
    dial_plain,
    serve_rpc,
    serve_rpc_port,
)
from wanfed_server.runtime import PlainDialer, RpcPool
from wanfed_server.runtime._pool import PathChangedError


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


async def ping(call: RpcCall) -> bool:
    return True


async def plain_rpc_server(handlers: dict[str, RpcHandler]) -> RpcPortServer:
    """A plain multiplexed RPC port on loopback answering ``handlers``."""

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, handlers)

    return await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )


async def test_a_dial_in_flight_when_the_path_changes_is_made_again() -> None:
    server = await plain_rpc_server({"Status.Ping": ping})
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


async def test_a_call_outliving_the_retire_grace_fails_as_a_path_change() -> None:
    """A blocking query sent along the old path must not hold it for minutes;
    its caller learns the path changed (and may ask again)."""
    release = asyncio.Event()

    async def wait(call: RpcCall) -> bool:
        await release.wait()
        return True

    server = await plain_rpc_server({"Status.Ping": ping, "Slow.Wait": wait})
    host, port = server.address
    pool = RpcPool(PlainDialer(), retire_grace=0.05)
    address = f"{host}:{port}"
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        long_poll = asyncio.create_task(pool.call("s1", "dc1", address, "Slow.Wait", None, bool))
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        assert pool.retire_datacenter("dc1") == 1
        with pytest.raises(PathChangedError, match="the path to dc dc1 changed"):
            await asyncio.wait_for(long_poll, 5)
        # The next call dials the current path and is served.
        release.set()
        assert await pool.call("s1", "dc1", address, "Slow.Wait", None, bool) is True
    finally:
        await pool.close()
        await server.close()
