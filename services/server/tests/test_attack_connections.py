"""Attacks on a server's file descriptors: 2,000 idle RPC or slowloris HTTP connections.

Unbounded, about a thousand idle connections used up a server's descriptors
and ``/v1/status/leader`` failed for as long as they were held. Here 2,000
are held from twenty (RPC) or ten (HTTP) loopback addresses, exactly what
the default per-client caps admit; while they are held the API answers and a
catalog write is applied, one connection more from an attacking address is
refused, and once they are gone everything works as before.

Nothing is timed: every request has a generous client timeout, so a server
that hangs fails the test. How fast the server answers meanwhile is measured
by ``nox -s bench -- limits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from wanfed_proto import RpcClient, RpcPortServer, RpcType, dial_plain
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

POLL = 0.005
"""Seconds between two looks at a counter that has no event to wait on."""
GUARD = 30.0
"""Seconds any one request or wait may take before the test fails as hung."""
HELD = 2000
PARTIAL_REQUEST = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nUser-Agent: slow"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(autouse=True)
def enough_descriptors() -> Iterator[None]:
    """Both ends of every held connection live in this process: ~2 x 2,000 + margin."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * HELD + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        message = f"needs an open-files hard limit of {wanted}, have {hard}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the attack tests, raise the hard limit")
        pytest.skip(message)  # a developer machine with a small hard limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate`` holds; the guard turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(POLL)


async def open_many(port: int, sources: list[str], per_source: int, first: bytes) -> list[Streams]:
    """``per_source`` connections from each source address, each sending ``first``."""

    async def one(source: str) -> Streams:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(first)
        await writer.drain()
        return reader, writer

    opened: list[Streams] = []
    async with asyncio.timeout(GUARD * 2):
        for source in sources:
            opened += await asyncio.gather(*(one(source) for _ in range(per_source)))
    return opened


async def close_all(held: list[Streams]) -> None:
    for _, writer in held:
        writer.close()
    for _, writer in held:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def refused(port: int, source: str, first: bytes) -> bytes:
    """What a connection over its client's cap receives before the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(first)
            await writer.drain()
        async with asyncio.timeout(GUARD):
            try:
                return await reader.read()
            except ConnectionError:
                return b""
    finally:
        writer.close()


class Healthy:
    """What a client of the server checks: the leader, a catalog write, an RPC."""

    def __init__(self, server: Server, api: HttpApi) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{api.port}"
        self.writes = 0

    async def check(self) -> None:
        timeout = aiohttp.ClientTimeout(total=GUARD)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{self.base}/v1/status/leader") as response:
                assert response.status == 200
                assert (await response.json()) == self.server.rpc_address
            self.writes += 1
            node = f"web-{self.writes}"
            registration: dict[str, Any] = {
                "Node": node,
                "Address": "127.0.0.9",
                "Service": {"Service": "web", "Port": 8080},
            }
            async with session.put(
                f"{self.base}/v1/catalog/register", json=registration
            ) as response:
                assert response.status == 200, await response.text()
                assert await response.json() is True
            async with session.get(f"{self.base}/v1/catalog/service/web") as response:
                assert response.status == 200
                assert node in [entry["Node"] for entry in await response.json()]
        port = self.server.rpc_bind_address[1]
        connection = await dial_plain(("127.0.0.1", port), RpcType.MULTIPLEX_V2, GUARD)
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=bool, timeout=GUARD) is True


@pytest.fixture
async def target(
    start_dev_server: Callable[..., Awaitable[Server]],
) -> AsyncIterator[Callable[..., Awaitable[tuple[Server, HttpApi, Healthy]]]]:
    apis: list[HttpApi] = []

    async def start(**limits: Any) -> tuple[Server, HttpApi, Healthy]:
        server = await start_dev_server(
            ports={"server": 0, "http": 0}, bind_addr="127.0.0.1", limits=limits
        )
        api = await start_http_api(server)
        apis.append(api)
        healthy = Healthy(server, api)
        await eventually(server.is_leader, "the dev server leads")
        await healthy.check()
        return server, api, healthy

    yield start
    for api in apis:
        await api.close()


def rpc_port(server: Server) -> RpcPortServer:
    port = server._port
    assert port is not None
    return port


async def test_2000_idle_rpc_connections_leave_the_server_healthy(
    target: Callable[..., Awaitable[tuple[Server, HttpApi, Healthy]]],
) -> None:
    server, _, healthy = await target()  # the default caps: 100 per client
    port = rpc_port(server)
    sources = [f"127.0.1.{n}" for n in range(1, 21)]
    held = await open_many(
        port.address[1], sources, HELD // len(sources), bytes([RpcType.MULTIPLEX_V2])
    )
    try:
        await eventually(lambda: port.stats.open_connections >= HELD, "2,000 held")
        await healthy.check()
        # One more from an attacking address is over its cap: closed unread.
        assert await refused(port.address[1], sources[0], bytes([RpcType.MULTIPLEX_V2])) == b""
        assert port.stats.refused_per_client >= 1
        await healthy.check()
    finally:
        await close_all(held)
    await eventually(lambda: port.stats.open_connections == 0, "all released")
    await healthy.check()


async def test_2000_slowloris_http_connections_leave_the_server_healthy(
    target: Callable[..., Awaitable[tuple[Server, HttpApi, Healthy]]],
) -> None:
    # Held through the whole test: the header deadline (tested on its own) would
    # otherwise cut them while the machine is still opening the rest.
    _, api, healthy = await target(http_read_header_timeout="10m")
    sources = [f"127.0.2.{n}" for n in range(1, 11)]
    held = await open_many(api.port, sources, HELD // len(sources), PARTIAL_REQUEST)
    try:
        await eventually(lambda: api.stats().open_connections >= HELD, "2,000 held")
        await healthy.check()
        answer = await refused(api.port, sources[0], PARTIAL_REQUEST)
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests"), answer
        assert api.stats().refused_per_client >= 1
        # The slow clients keep dribbling header bytes; the server keeps answering.
        for _, writer in held:
            writer.write(b"x")
        await healthy.check()
    finally:
        await close_all(held)
    await eventually(lambda: api.stats().open_connections == 0, "all released")
    await healthy.check()


async def test_2000_slowloris_http_connections_are_all_cut_by_the_header_deadline(
    target: Callable[..., Awaitable[tuple[Server, HttpApi, Healthy]]],
) -> None:
    _, api, healthy = await target(http_read_header_timeout="1s")
    sources = [f"127.0.3.{n}" for n in range(1, 11)]
    held = await open_many(api.port, sources, HELD // len(sources), PARTIAL_REQUEST)
    try:
        await eventually(lambda: api.stats().header_timeouts >= HELD, "2,000 cut")
        await eventually(lambda: api.stats().open_connections == 0, "all released")
        await healthy.check()
    finally:
        await close_all(held)


async def test_2000_idle_rpc_connections_are_all_closed_by_the_idle_timeout(
    target: Callable[..., Awaitable[tuple[Server, HttpApi, Healthy]]],
) -> None:
    server, _, healthy = await target(rpc_idle_timeout="1s")
    port = rpc_port(server)
    sources = [f"127.0.4.{n}" for n in range(1, 21)]
    held = await open_many(
        port.address[1], sources, HELD // len(sources), bytes([RpcType.MULTIPLEX_V2])
    )
    try:
        await eventually(lambda: port.stats.idle_closed >= HELD, "2,000 closed as idle")
        await eventually(lambda: port.stats.open_connections == 0, "all released")
        await healthy.check()
    finally:
        await close_all(held)
