"""The HTTP API's connection caps, header deadline and keep-alive idle timeout.

Clients name their own source address inside 127.0.0.0/8, so one process can
be several clients. Nothing is timed: each wait has a generous guard that
turns a hang into a failure, and "refused" or "cut" is read from what the
client receives and from the listener's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import pytest

from wanfed_server.http import HttpApi, HttpLimits

if TYPE_CHECKING:
    from conftest import FakeServer

POLL = 0.005
"""Seconds between two looks at a counter that has no event to wait on."""
GUARD = 10.0
LIMITS_LOG = "wanfed_server.http.limits"
PARTIAL_REQUEST = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n"


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait until ``predicate`` holds; the guard turns a hang into a failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GUARD
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(POLL)


async def connect_from(
    source: str, api: HttpApi, first: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port, local_addr=(source, 0))
    if first:
        writer.write(first)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    return reader, writer


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends before it hangs up (guarded)."""
    async with asyncio.timeout(GUARD):
        try:
            return await reader.read()
        except ConnectionError:
            return b""


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response with a ``Content-Length`` body, the connection left open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), GUARD)


@pytest.fixture
async def start_api(
    fake_server: FakeServer,
) -> AsyncIterator[Callable[..., Awaitable[HttpApi]]]:
    started: list[HttpApi] = []

    async def start(**limits: float) -> HttpApi:
        api = HttpApi(
            fake_server.dispatcher,
            fake_server.view,
            fake_server.agent,
            "127.0.0.1",
            0,
            HttpLimits(**limits),  # type: ignore[arg-type]
        )
        await api.start()
        started.append(api)
        return api

    yield start
    for api in started:
        await api.stop()


async def leader(api: HttpApi) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GUARD)) as session,
        session.get(f"http://127.0.0.1:{api.port}/v1/status/leader") as response,
    ):
        await response.read()
        return response.status


async def test_a_client_over_its_cap_gets_429_and_others_are_served(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    api = await start_api(max_conns_per_client=3, max_conns=10)
    held = [await connect_from("127.0.0.2", api) for _ in range(3)]
    await eventually(lambda: api.stats().open_connections == 3, "three admitted")
    reader, writer = await connect_from("127.0.0.2", api)
    answer = await read_until_closed(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer
    assert b"Too many connections from your address" in answer
    assert api.stats().refused_per_client == 1
    assert await leader(api) == 200  # 127.0.0.1 is another client
    held[0][1].close()
    await eventually(lambda: api.stats().open_connections == 2, "one released")
    again_reader, again = await connect_from(
        "127.0.0.2", api, b"GET /v1/status/leader HTTP/1.0\r\n\r\n"
    )
    assert (await read_until_closed(again_reader)).startswith(b"HTTP/1.0 200")
    again.close()
    for _, w in held[1:]:
        w.close()


async def test_the_total_cap_refuses_every_client(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    api = await start_api(max_conns_per_client=1, max_conns=2)
    held = [await connect_from(f"127.0.0.{n}", api) for n in (2, 3)]
    await eventually(lambda: api.stats().open_connections == 2, "two admitted")
    reader, writer = await connect_from("127.0.0.4", api)
    answer = await read_until_closed(reader)
    writer.close()
    assert b"429" in answer.split(b"\r\n")[0]
    assert b"Too many connections to this agent" in answer
    assert api.stats().refused_total == 1
    for _, w in held:
        w.close()


async def test_refusals_are_logged_once_per_interval_with_a_count(
    start_api: Callable[..., Awaitable[HttpApi]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LIMITS_LOG)
    api = await start_api(max_conns_per_client=1, max_conns=10)
    _, holder = await connect_from("127.0.0.2", api)
    await eventually(lambda: api.stats().open_connections == 1, "one admitted")
    for _ in range(15):
        reader, writer = await connect_from("127.0.0.2", api)
        await read_until_closed(reader)
        writer.close()
    assert api.stats().refused_per_client == 15
    lines = [r for r in caplog.records if r.name == LIMITS_LOG and "refused" in r.msg]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].__dict__["client"] == "127.0.0.2"
    assert lines[0].__dict__["max"] == 1
    holder.close()


async def test_slowloris_headers_are_cut_at_the_header_deadline(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    """One header byte at a time never completes a request: the header deadline
    (not the much longer keep-alive timeout) closes the connection."""
    api = await start_api(read_header_timeout=0.3, idle_timeout=3600.0)
    reader, writer = await connect_from("127.0.0.2", api, PARTIAL_REQUEST)

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.02)  # the attacker's pace, not a wait of the test

    attacker = asyncio.create_task(dribble())
    try:
        assert await read_until_closed(reader) == b""
    finally:
        attacker.cancel()
        writer.close()
    assert api.stats().header_timeouts == 1
    await eventually(lambda: api.stats().open_connections == 0, "released")
    assert await leader(api) == 200


async def test_slowloris_on_a_keep_alive_connection_is_cut_too(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    """After one honest request, the next request's headers get the same deadline."""
    api = await start_api(read_header_timeout=0.3, idle_timeout=3600.0)
    reader, writer = await connect_from("127.0.0.2", api, PARTIAL_REQUEST + b"\r\n")
    await read_response(reader)
    writer.write(PARTIAL_REQUEST)
    await writer.drain()
    assert await read_until_closed(reader) == b""
    writer.close()
    assert api.stats().header_timeouts == 1


async def test_a_completed_request_disarms_the_header_deadline(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    """A parked request (a blocking query) is not a slow header."""
    api = await start_api(read_header_timeout=0.2, idle_timeout=3600.0)
    reader, writer = await connect_from("127.0.0.2", api, PARTIAL_REQUEST + b"\r\n")
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
    # A second connection cut by its header deadline proves the deadline has
    # passed for the first one too; the first one is still open.
    slow_reader, slow = await connect_from("127.0.0.3", api, PARTIAL_REQUEST)
    assert await read_until_closed(slow_reader) == b""
    slow.close()
    assert api.stats().header_timeouts == 1
    writer.write(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert (await read_until_closed(reader)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(
    start_api: Callable[..., Awaitable[HttpApi]],
) -> None:
    api = await start_api(idle_timeout=0.2)
    reader, writer = await connect_from("127.0.0.2", api, PARTIAL_REQUEST + b"\r\n")
    answer = await read_until_closed(reader)  # served, then closed when idle
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert api.stats().header_timeouts == 0
    # A connection that never sends anything is closed the same way.
    silent_reader, silent = await connect_from("127.0.0.2", api)
    assert await read_until_closed(silent_reader) == b""
    silent.close()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"read_header_timeout": 0}, "must be positive"),
        ({"idle_timeout": -1}, "must be positive"),
        ({"max_conns": -1}, "must not be negative"),
    ],
)
def test_bad_limits_are_refused(limits: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpLimits(**limits)  # type: ignore[arg-type]
