"""The mesh gateway's per-client connection cap, its refusal log and its flags.

Clients name their own source address inside 127.0.0.0/8; admission is read
from the gateway's counters, a refusal from the client's side (closed at
once). Every wait has a guard, so a hang fails instead of timing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wanfed_server.cli import build_parser
from wanfed_server.commands.gateway import settings_from_args
from wanfed_server.gateway import GatewayConfig, MeshGateway, RouteInputs, build_route_table

POLL = 0.005
"""Seconds between two looks at a counter that has no event to wait on."""
GUARD = 10.0
GATEWAY_LOG = "wanfed.gateway"

StartGateway = Callable[..., Awaitable[MeshGateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    started: list[MeshGateway] = []

    async def start(**config: int | float) -> MeshGateway:
        table = build_route_table(RouteInputs(local_dc="dc1"))
        gateway = MeshGateway(table, GatewayConfig(hello_timeout=60.0, **config))  # type: ignore[arg-type]
        await gateway.start("127.0.0.1", 0)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate`` holds; the guard turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(POLL)


async def connect_from(
    source: str, gateway: MeshGateway
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*gateway.address, local_addr=(source, 0))


async def hung_up(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(GUARD):
        try:
            return await reader.read() == b""
        except ConnectionError:
            return True


async def test_a_client_over_its_cap_is_refused_and_others_are_not(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(max_connections=10, max_connections_per_client=2)
    held = [await connect_from("127.0.0.2", gateway) for _ in range(2)]
    await eventually(lambda: gateway.active_connections == 2, "two admitted")
    reader, writer = await connect_from("127.0.0.2", gateway)
    assert await hung_up(reader)
    writer.close()
    assert gateway.stats().rejected["too-many-from-client"] == 1
    other = await connect_from("127.0.0.3", gateway)
    await eventually(lambda: gateway.active_connections == 3, "another client admitted")
    held[0][1].close()
    await eventually(lambda: gateway.active_connections == 2, "one released")
    again = await connect_from("127.0.0.2", gateway)
    await eventually(lambda: gateway.active_connections == 3, "room again")
    assert gateway.stats().rejected["too-many-from-client"] == 1
    for _, w in [*held[1:], other, again]:
        w.close()


async def test_the_per_client_cap_never_exceeds_the_total(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(max_connections=1)  # per-client default is larger
    _, first = await connect_from("127.0.0.2", gateway)
    await eventually(lambda: gateway.active_connections == 1, "one admitted")
    reader, writer = await connect_from("127.0.0.3", gateway)
    assert await hung_up(reader)
    assert gateway.stats().rejected["too-many-connections"] == 1
    for w in (first, writer):
        w.close()


async def test_refusals_are_logged_once_per_interval_with_a_count(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=GATEWAY_LOG)
    gateway = await start_gateway(max_connections=10, max_connections_per_client=1)
    _, holder = await connect_from("127.0.0.2", gateway)
    await eventually(lambda: gateway.active_connections == 1, "one admitted")
    for _ in range(12):
        reader, writer = await connect_from("127.0.0.2", gateway)
        assert await hung_up(reader)
        writer.close()
    await eventually(
        lambda: gateway.stats().rejected.get("too-many-from-client", 0) == 12, "twelve refused"
    )
    lines = [r for r in caplog.records if r.name == GATEWAY_LOG and "refused" in r.msg]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].__dict__["client"] == "127.0.0.2"
    assert lines[0].__dict__["max"] == 1
    with contextlib.suppress(ConnectionError):
        holder.close()


def test_the_per_client_flag_reaches_the_data_plane() -> None:
    args = build_parser().parse_args(["gateway", "-max-connections-per-client", "7"])
    assert settings_from_args(args).gateway.max_connections_per_client == 7
    defaults = settings_from_args(build_parser().parse_args(["gateway"]))
    assert defaults.gateway.max_connections_per_client == 1000


def test_a_per_client_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_connections_per_client must be at least 1"):
        GatewayConfig(max_connections_per_client=0)
