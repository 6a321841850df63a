"""The RPC port's connection caps and idle timeout, with real loopback sockets.

Every client here names its own source address inside 127.0.0.0/8, so one
test process can play several clients. Nothing is timed: a refusal is seen
as the server hanging up at once (a generous guard turns a hang into a
failure), admission as the port's own counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from wanfed_proto import (
    Connection,
    RpcCall,
    RpcClient,
    RpcPortServer,
    RpcType,
    dial_plain,
    serve_rpc,
    serve_rpc_port,
)

LISTENER_LOG = "wanfed_proto.listener"
POLL = 0.005
"""Seconds between two looks at a counter that has no event to wait on."""
GUARD = 10.0
"""Seconds after which a wait that should end by itself fails the test."""


async def hold(connection: Connection) -> None:
    """Reads until the client hangs up."""
    reader, _ = connection.open_streams()
    await reader.read()


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate`` holds; the guard turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(POLL)


async def connect_from(
    source: str, server: RpcPortServer, first: bytes = bytes([RpcType.CONSUL])
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*server.address, local_addr=(source, 0))
    writer.write(first)
    with contextlib.suppress(ConnectionError):  # a refused one may be reset already
        await writer.drain()
    return reader, writer


async def hung_up(reader: asyncio.StreamReader) -> bool:
    """The server closed (or reset) the connection without sending anything."""
    async with asyncio.timeout(GUARD):
        try:
            return await reader.read(1) == b""
        except ConnectionError:
            return True


@pytest.fixture
async def capped() -> AsyncIterator[RpcPortServer]:
    server = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.CONSUL: hold},
        alpn_handlers={},
        ssl_context=None,
        max_conns_per_client=3,
        max_conns=5,
    )
    yield server
    await server.close()


async def test_a_client_over_its_cap_is_refused_and_others_are_not(
    capped: RpcPortServer,
) -> None:
    held = [await connect_from("127.0.0.2", capped) for _ in range(3)]
    await eventually(lambda: capped.stats.open_connections == 3, "three admitted")
    reader, writer = await connect_from("127.0.0.2", capped)
    assert await hung_up(reader)
    writer.close()
    assert capped.stats.refused_per_client == 1
    other = await connect_from("127.0.0.3", capped)
    await eventually(lambda: capped.stats.open_connections == 4, "another client admitted")
    # Closing one of the first client's connections makes room for it again.
    held[0][1].close()
    await eventually(lambda: capped.stats.open_connections == 3, "the closed one released")
    again = await connect_from("127.0.0.2", capped)
    await eventually(lambda: capped.stats.open_connections == 4, "room again")
    assert capped.stats.refused_per_client == 1
    for _, w in [*held[1:], other, again]:
        w.close()
    await eventually(lambda: capped.stats.open_connections == 0, "all released")


async def test_the_total_cap_refuses_every_client(capped: RpcPortServer) -> None:
    held = [await connect_from(f"127.0.0.{n}", capped) for n in (2, 3, 4, 5, 6)]
    await eventually(lambda: capped.stats.open_connections == 5, "five admitted")
    reader, writer = await connect_from("127.0.0.7", capped)
    assert await hung_up(reader)
    writer.close()
    assert capped.stats.refused_total == 1
    assert capped.stats.refused_per_client == 0
    for _, w in held:
        w.close()


async def test_refusals_are_logged_once_per_interval_with_a_count(
    capped: RpcPortServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LISTENER_LOG)
    held = [await connect_from("127.0.0.2", capped) for _ in range(3)]
    await eventually(lambda: capped.stats.open_connections == 3, "three admitted")
    for _ in range(20):
        reader, writer = await connect_from("127.0.0.2", capped)
        assert await hung_up(reader)
        writer.close()
    await eventually(lambda: capped.stats.refused_per_client == 20, "twenty refused")
    lines = [r for r in caplog.records if r.name == LISTENER_LOG and "refused" in r.msg]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].__dict__["client"] == "127.0.0.2"
    assert lines[0].__dict__["limit"] == "per_client_limit"
    assert lines[0].__dict__["max"] == 3
    for _, w in held:
        w.close()


async def test_a_silent_connection_is_closed_after_the_idle_timeout() -> None:
    server = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.CONSUL: hold},
        alpn_handlers={},
        ssl_context=None,
        idle_timeout=0.2,
    )
    try:
        reader, writer = await connect_from("127.0.0.2", server)
        assert await hung_up(reader)
        writer.close()
        assert server.stats.idle_closed == 1
        await eventually(lambda: server.stats.open_connections == 0, "released")
    finally:
        await server.close()


async def test_a_request_in_flight_is_not_idle() -> None:
    """A blocking query parks its handler; the connection stays open however long."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def park(call: RpcCall) -> bool:
        started.set()
        await release.wait()
        return True

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, {"Park": park})

    server = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc, RpcType.CONSUL: hold},
        alpn_handlers={},
        ssl_context=None,
        idle_timeout=0.2,
    )
    try:
        client = RpcClient(await dial_plain(server.address, RpcType.MULTIPLEX_V2))
        parked = asyncio.create_task(client.call("Park", None, type=bool, timeout=60))
        await started.wait()
        # Two idle connections in a row closed: well over an idle timeout passed
        # (four sweeps) since the parked request was last heard from.
        for _ in range(2):
            reader, writer = await connect_from("127.0.0.2", server)
            assert await hung_up(reader)
            writer.close()
        assert server.stats.idle_closed == 2
        assert not client.is_closed
        release.set()
        assert await asyncio.wait_for(parked, GUARD) is True
        await client.close()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout": 0}, "idle_timeout must be positive"),
        ({"max_conns": -1}, "must not be negative"),
        ({"max_conns_per_client": -5}, "must not be negative"),
    ],
)
async def test_bad_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await serve_rpc_port(
            "127.0.0.1", 0, plain_handlers={}, alpn_handlers={}, ssl_context=None, **kwargs
        )


async def test_a_flood_of_rejected_handshakes_is_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LISTENER_LOG)
    server = await serve_rpc_port(
        "127.0.0.1", 0, plain_handlers={RpcType.CONSUL: hold}, alpn_handlers={}, ssl_context=None
    )
    try:
        for first in [bytes([RpcType.RAFT])] * 10 + [b"\x16\x03\x01"] * 10:
            reader, writer = await connect_from("127.0.0.2", server, first)
            assert await hung_up(reader)
            writer.close()
        await eventually(lambda: server.stats.open_connections == 0, "all released")
    finally:
        await server.close()
    lines = [
        r.getMessage() for r in caplog.records if r.name == LISTENER_LOG and "rejected" in r.msg
    ]
    assert len(lines) == 2, lines
    assert "no handler for rpc type 1 (RAFT)" in lines[0]
    assert "native TLS is not enabled on this port" in lines[1]
