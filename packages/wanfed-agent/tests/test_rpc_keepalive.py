"""Keepalive of pooled connections: the clock-free core, and a silent peer end to end."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from wanfed_agent.rpc import (
    Keepalive,
    KeepaliveAction,
    KeepaliveSettings,
    PlainDialer,
    RouteTable,
    RpcPool,
)
from wanfed_proto import Connection, RpcCall, RpcType, TransportError, serve_rpc, serve_rpc_port

GUARD = 10.0
FAST = KeepaliveSettings(interval=0.05, dead_after=0.3)

WAIT, PING, DEAD = KeepaliveAction.WAIT, KeepaliveAction.PING, KeepaliveAction.DEAD


def test_a_silent_connection_is_pinged_every_interval_then_declared_dead() -> None:
    core = Keepalive(KeepaliveSettings(interval=10.0, dead_after=30.0), now=0.0)
    assert core.poll(0, 5.0) == (WAIT, 10.0)
    assert core.poll(0, 10.0) == (PING, 20.0)
    assert core.poll(0, 15.0) == (WAIT, 20.0)  # the ping is out: wait for it
    assert core.poll(0, 20.0) == (PING, 30.0)
    assert core.poll(0, 29.9) == (WAIT, 30.0)
    assert core.poll(0, 30.0) == (DEAD, math.inf)


def test_bytes_received_are_proof_of_life() -> None:
    core = Keepalive(KeepaliveSettings(interval=10.0, dead_after=30.0), now=0.0)
    assert core.poll(0, 10.0)[0] is PING
    assert core.poll(17, 12.0) == (WAIT, 22.0)  # the answer: silence starts again
    assert core.silence_started == 12.0
    assert core.poll(17, 41.9)[0] is PING
    assert core.poll(17, 42.0)[0] is DEAD
    busy = Keepalive(KeepaliveSettings(interval=10.0, dead_after=30.0), now=0.0)
    for second in range(1, 100):
        assert busy.poll(second, float(second))[0] is WAIT  # a busy connection is never pinged


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="must exceed its interval"):
        KeepaliveSettings(interval=30.0, dead_after=30.0)
    with pytest.raises(ValueError, match="positive"):
        KeepaliveSettings(interval=0.0, dead_after=1.0)


class Silent(asyncio.Protocol):
    """Accepts and never answers a byte (and never resets): a path that died silently."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.transports: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.received.set()


@pytest.fixture
async def silent_peer() -> AsyncIterator[tuple[Silent, str]]:
    peer = Silent()
    server = await asyncio.get_running_loop().create_server(lambda: peer, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    yield peer, f"{host}:{port}"
    for transport in peer.transports:
        transport.close()
    server.close()
    await server.wait_closed()


async def test_calls_on_a_connection_gone_silent_fail_promptly(
    silent_peer: tuple[Silent, str],
) -> None:
    """Without keepalive this call waits out its whole deadline (minutes for a
    long-poll) and nothing learns that the path is dead."""
    peer, address = silent_peer
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), keepalive=FAST)
    try:
        call = asyncio.create_task(
            pool.call("s1", "dc1", address, "FederationState.List", None, bool, timeout=3600)
        )
        await asyncio.wait_for(peer.received.wait(), GUARD)
        with pytest.raises(TransportError, match="keepalive"):
            await asyncio.wait_for(call, GUARD)
        assert pool.keepalive_deaths == 1
        assert pool.connections() == []
    finally:
        await pool.close()


async def test_a_long_call_on_a_live_connection_is_kept_alive_by_pings() -> None:
    """A peer that answers pings keeps a connection whose only call stays silent
    much longer than ``dead_after``."""
    pings = 0
    enough = asyncio.Event()
    release = asyncio.Event()

    async def ping(call: RpcCall) -> bool:
        nonlocal pings
        pings += 1
        if pings * FAST.interval > 2 * FAST.dead_after:
            enough.set()
        return True

    async def park(call: RpcCall) -> bool:
        await release.wait()
        return True

    async def rpc(connection: object) -> None:
        await serve_rpc(connection, {"Status.Ping": ping, "Park": park})  # type: ignore[arg-type]

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), keepalive=FAST)
    address = f"{port.address[0]}:{port.address[1]}"
    try:
        parked = asyncio.create_task(pool.call("s1", "dc1", address, "Park", None, bool))
        await asyncio.wait_for(enough.wait(), GUARD)
        assert not parked.done()
        release.set()
        assert await asyncio.wait_for(parked, GUARD) is True
        assert pool.keepalive_deaths == 0
    finally:
        await pool.close()
        await port.close()


async def test_an_unused_connection_is_let_go_after_max_idle_despite_its_pings() -> None:
    served: list[Connection] = []

    async def ping(call: RpcCall) -> bool:
        return True

    async def rpc(connection: Connection) -> None:
        served.append(connection)
        await serve_rpc(connection, {"Status.Ping": ping})

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )
    pool = RpcPool(PlainDialer(), RouteTable("dc1"), keepalive=FAST, max_idle=4 * FAST.interval)
    address = f"{port.address[0]}:{port.address[1]}"
    try:
        assert await pool.call("s1", "dc1", address, "Status.Ping", None, bool) is True
        (first,) = served
        await asyncio.wait_for(first.wait_closed(), GUARD)
        assert pool.connections() == []
        assert pool.idle_retired == 1
        assert pool.keepalive_deaths == 0
    finally:
        await pool.close()
        await port.close()
