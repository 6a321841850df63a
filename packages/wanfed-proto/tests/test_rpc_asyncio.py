"""RpcClient and serve_rpc over real loopback connections (TLS+ALPN and plain)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from wanfed_proto import (
    Alpn,
    Connection,
    EnvelopeError,
    RemoteError,
    RpcCall,
    RpcClient,
    RpcHandler,
    RpcPortServer,
    RpcTimeoutError,
    RpcType,
    TransportError,
    _rpc_serve,
    client_context,
    dial_alpn,
    dial_plain,
    encode_frame,
    serve_rpc,
    serve_rpc_port,
    server_context,
)


class Sum(msgspec.Struct, frozen=True):
    Values: list[int]


class Total(msgspec.Struct, frozen=True):
    Total: int


class Handlers:
    """A handler table whose slow method waits on an event the test controls."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.seen: list[RpcCall] = []

    def table(self) -> dict[str, RpcHandler]:
        return {
            "Math.Sum": self.sum,
            "Test.Echo": self.echo,
            "Test.Fail": self.fail,
            "Test.Slow": self.slow,
            "Test.Peer": self.peer,
            "Test.Yield": self.yields,
            "Test.LateFail": self.late_fail,
            "Test.Future": self.future,
        }

    async def yields(self, call: RpcCall) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        return call.decode(int) + 1

    async def late_fail(self, call: RpcCall) -> None:
        await asyncio.sleep(0)
        raise RemoteError("failed after waiting")

    def future(self, call: RpcCall) -> asyncio.Future[object]:
        """A plain awaitable, not a coroutine."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, "from a future")
        return future

    async def sum(self, call: RpcCall) -> Total:
        request = call.decode(Sum)
        return Total(sum(request.Values))

    async def echo(self, call: RpcCall) -> msgspec.Raw:
        self.seen.append(call)
        return call.body

    async def fail(self, call: RpcCall) -> None:
        raise ValueError("permission denied")

    async def slow(self, call: RpcCall) -> str:
        self.slow_started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return "done"

    async def peer(self, call: RpcCall) -> dict[str, object]:
        return {"sni": call.peer.sni, "alpn": call.peer.alpn, "type": call.peer.rpc_type}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
async def server(pki: dict[str, Path], handlers: Handlers) -> AsyncIterator[RpcPortServer]:
    table = handlers.table()

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, table)

    context = server_context(pki["ca"], pki["server"], pki["server_key"])
    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={Alpn.RPC_MULTI: rpc},
        ssl_context=context,
        handshake_timeout=2.0,
    )
    yield port
    await port.close()


@pytest.fixture
async def server_handlers_port(
    handlers: Handlers,
) -> AsyncIterator[tuple[RpcPortServer, dict[str, RpcHandler]]]:
    """A plain-only port whose handler table the test may extend."""
    table = handlers.table()

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, table)

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )
    yield port, table
    await port.close()


@pytest.fixture
async def client(pki: dict[str, Path], server: RpcPortServer) -> AsyncIterator[RpcClient]:
    context = client_context(pki["ca"], pki["client"], pki["client_key"], [Alpn.RPC_MULTI])
    connection = await dial_alpn(server.address, "server.dc1.consul", Alpn.RPC_MULTI, context)
    rpc = RpcClient(connection)
    yield rpc
    await rpc.close()


async def test_call_decodes_into_the_requested_type(client: RpcClient) -> None:
    assert await client.call("Math.Sum", Sum([1, 2, 3]), type=Total) == Total(6)


async def test_call_without_type_returns_plain_msgpack_values(client: RpcClient) -> None:
    assert await client.call("Test.Echo", {"a": [1, "x"]}) == {"a": [1, "x"]}
    assert await client.call("Test.Echo") is None


async def test_token_trace_and_deadline_reach_the_handler(
    client: RpcClient, handlers: Handlers
) -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.call("Test.Echo", 1, token="secret", trace=trace, timeout=30.0)
    (seen,) = handlers.seen
    assert (seen.token, seen.trace) == ("secret", trace)
    assert seen.deadline > 0


async def test_handler_sees_sni_and_alpn_of_the_connection(client: RpcClient) -> None:
    peer = await client.call("Test.Peer")
    assert peer == {"sni": "server.dc1.consul", "alpn": "wanfed/rpc-multi", "type": None}


async def test_handlers_that_suspend_or_return_futures_are_awaited(client: RpcClient) -> None:
    assert await client.call("Test.Yield", 41) == 42
    assert await client.call("Test.Future") == "from a future"
    with pytest.raises(RemoteError, match=r"^failed after waiting$"):
        await client.call("Test.LateFail")
    results = await asyncio.gather(*(client.call("Test.Yield", i) for i in range(50)))
    assert results == [i + 1 for i in range(50)]


async def test_unknown_method_is_a_remote_error_and_the_connection_survives(
    client: RpcClient,
) -> None:
    with pytest.raises(RemoteError, match=r"^rpc: can't find method Nope\.Nothing$"):
        await client.call("Nope.Nothing")
    assert await client.call("Math.Sum", Sum([2]), type=Total) == Total(2)


async def test_handler_exception_is_a_remote_error(
    client: RpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="wanfed_proto.rpc"),
        pytest.raises(RemoteError, match="permission denied") as info,
    ):
        await client.call("Test.Fail")
    assert not isinstance(info.value, TransportError)
    (record,) = [r for r in caplog.records if r.name == "wanfed_proto.rpc"]
    assert "Test.Fail" in record.getMessage()
    assert record.exc_info is not None
    assert await client.call("Test.Echo", 5) == 5


async def test_body_not_matching_the_handlers_type_is_a_remote_error(client: RpcClient) -> None:
    with pytest.raises(RemoteError, match="invalid request body"):
        await client.call("Math.Sum", {"Values": "not a list"})


async def test_response_not_matching_the_callers_type_is_an_envelope_error(
    client: RpcClient,
) -> None:
    with pytest.raises(EnvelopeError, match="unexpected response body"):
        await client.call("Test.Echo", "text", type=Total)
    assert await client.call("Test.Echo", 1) == 1


async def test_many_concurrent_calls_share_one_connection(client: RpcClient) -> None:
    results = await asyncio.gather(
        *(client.call("Math.Sum", Sum([i, i]), type=Total) for i in range(200))
    )
    assert results == [Total(2 * i) for i in range(200)]


async def test_slow_call_does_not_block_fast_ones(client: RpcClient, handlers: Handlers) -> None:
    slow = asyncio.ensure_future(client.call("Test.Slow"))
    await handlers.slow_started.wait()
    assert await client.call("Test.Echo", "fast") == "fast"
    handlers.release.set()
    assert await slow == "done"


async def test_timeout_is_distinct_and_the_late_answer_is_dropped(
    client: RpcClient, handlers: Handlers
) -> None:
    with pytest.raises(RpcTimeoutError) as info:
        await client.call("Test.Slow", timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert not isinstance(info.value, RemoteError | TransportError)
    handlers.release.set()
    # The late "done" must not be mistaken for the next call's answer.
    assert await client.call("Test.Echo", "next") == "next"


async def test_cancelled_call_leaves_the_connection_usable(
    client: RpcClient, handlers: Handlers
) -> None:
    task = asyncio.ensure_future(client.call("Test.Slow"))
    await handlers.slow_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    handlers.release.set()
    assert await client.call("Test.Echo", 7) == 7


async def test_connection_loss_fails_pending_calls_with_transport_error(
    client: RpcClient, handlers: Handlers, server: RpcPortServer
) -> None:
    pending = asyncio.ensure_future(client.call("Test.Slow"))
    await handlers.slow_started.wait()
    await server.close()
    with pytest.raises(TransportError):
        await pending
    await handlers.slow_cancelled.wait()  # the server side cancelled the handler
    with pytest.raises(TransportError):
        await client.call("Test.Echo", 1)


async def test_plain_type_byte_connection_reaches_the_same_handlers(
    server: RpcPortServer,
) -> None:
    connection = await dial_plain(server.address, RpcType.MULTIPLEX_V2)
    async with RpcClient(connection) as rpc:
        assert await rpc.call("Math.Sum", Sum([4, 5]), type=Total) == Total(9)
        assert (await rpc.call("Test.Peer"))["type"] == RpcType.MULTIPLEX_V2


async def test_garbage_from_the_server_fails_pending_calls(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A server that answers with an undecodable envelope is a protocol violation."""

    async def broken(connection: Connection) -> None:
        reader, writer = connection.open_streams()
        await reader.readexactly(4)
        writer.write(encode_frame(b"\xc1 not msgpack"))
        await writer.drain()
        await reader.read()

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: broken},
        alpn_handlers={},
        ssl_context=None,
    )
    try:
        rpc = RpcClient(await dial_plain(port.address, RpcType.MULTIPLEX_V2))
        with (
            caplog.at_level(logging.WARNING, logger="wanfed_proto.rpc"),
            pytest.raises(TransportError, match="protocol violation"),
        ):
            await rpc.call("Test.Echo", 1)
        await rpc.connection.wait_closed()
        assert rpc.is_closed
        assert any("broke the protocol" in r.getMessage() for r in caplog.records)
    finally:
        await port.close()


async def test_garbage_from_a_client_closes_its_connection(
    server: RpcPortServer, caplog: pytest.LogCaptureFixture
) -> None:
    connection = await dial_plain(server.address, RpcType.MULTIPLEX_V2)
    reader, writer = connection.open_streams()
    with caplog.at_level(logging.WARNING, logger="wanfed_proto.rpc"):
        writer.write(encode_frame(b"\x93\x01\x02\x03"))  # an array, not a request map
        assert await reader.read() == b""
    writer.close()
    assert [r for r in caplog.records if "broke the protocol" in r.getMessage()]


async def test_oversized_request_frame_closes_the_connection(server: RpcPortServer) -> None:
    connection = await dial_plain(server.address, RpcType.MULTIPLEX_V2)
    reader, writer = connection.open_streams()
    writer.write((64 * 1024 * 1024).to_bytes(4, "big"))
    assert await reader.read() == b""
    writer.close()


async def test_handler_raising_cancelled_error_answers_instead_of_breaking(
    server_handlers_port: tuple[RpcPortServer, dict[str, RpcHandler]],
) -> None:
    port, table = server_handlers_port

    async def cancels(call: RpcCall) -> None:
        raise asyncio.CancelledError

    table["Test.Cancels"] = cancels
    async with RpcClient(await dial_plain(port.address, RpcType.MULTIPLEX_V2)) as rpc:
        with pytest.raises(RemoteError, match="handler was cancelled"):
            await rpc.call("Test.Cancels")
        assert await rpc.call("Test.Echo", 3) == 3


async def test_handlers_per_connection_are_capped_and_the_rest_wait_in_order() -> None:
    gate = asyncio.Event()
    three_running = asyncio.Event()
    running = 0
    most = 0
    order: list[int] = []

    async def gated(call: RpcCall) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        order.append(call.decode(int))
        if running == 3:
            three_running.set()
        await gate.wait()
        running -= 1
        return call.decode(int)

    async def quick(call: RpcCall) -> str:
        return "quick"

    async def rpc(connection: Connection) -> None:
        await serve_rpc(connection, {"Gate": gated, "Quick": quick}, max_in_flight=3)

    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.MULTIPLEX_V2: rpc},
        alpn_handlers={},
        ssl_context=None,
    )
    try:
        async with RpcClient(await dial_plain(port.address, RpcType.MULTIPLEX_V2)) as client:
            calls = [asyncio.ensure_future(client.call("Gate", i)) for i in range(10)]
            quick_call = asyncio.ensure_future(client.call("Quick"))
            await three_running.wait()
            assert not quick_call.done()  # queued behind the gated calls
            gate.set()
            assert await asyncio.gather(*calls) == list(range(10))
            assert await quick_call == "quick"
    finally:
        await port.close()
    assert most == 3
    assert order == list(range(10))


async def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        await serve_rpc(None, {}, max_in_flight=0)  # type: ignore[arg-type]


async def test_a_handler_still_running_at_its_deadline_is_stopped(
    client: RpcClient, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody waits for the answer any more: the serving side stops the work."""
    monkeypatch.setattr(_rpc_serve, "DEADLINE_SLACK", 0.0)
    with pytest.raises(RpcTimeoutError):
        await client.call("Test.Slow", timeout=0.05)
    await asyncio.wait_for(handlers.slow_cancelled.wait(), 10)
    assert await client.call("Test.Echo", "next", timeout=30.0) == "next"


async def test_a_request_arriving_after_its_deadline_is_not_run(
    client: RpcClient, handlers: Handlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rpc_serve, "DEADLINE_SLACK", 0.0)
    with pytest.raises(RpcTimeoutError):
        await client.call("Test.Echo", "late", timeout=-1.0)  # sent, already too late
    assert await client.call("Test.Echo", "next", timeout=30.0) == "next"
    assert [call.decode(str) for call in handlers.seen] == ["next"]


async def test_abort_fails_the_calls_in_flight_with_its_reason(
    client: RpcClient, handlers: Handlers
) -> None:
    pending = asyncio.ensure_future(client.call("Test.Slow"))
    await handlers.slow_started.wait()
    assert client.in_flight == 1
    client.abort("declared dead by its owner")
    with pytest.raises(TransportError, match="declared dead by its owner"):
        await pending
    assert client.is_closed


async def test_calls_with_different_timeouts_each_expire_at_their_own(
    client: RpcClient, handlers: Handlers
) -> None:
    """One timer per connection serves every pending deadline, earliest first."""
    long = asyncio.ensure_future(client.call("Test.Slow", timeout=30.0))
    await handlers.slow_started.wait()
    for _ in range(2):  # the second after the timer went back to the long call
        with pytest.raises(RpcTimeoutError, match=r"after 0\.05s"):
            await client.call("Test.Slow", timeout=0.05)
    assert not long.done()
    handlers.release.set()
    assert await asyncio.wait_for(long, 10) == "done"


async def test_calls_outliving_a_retirement_grace_are_cut_at_once(
    client: RpcClient, handlers: Handlers
) -> None:
    """Cut, not closed gracefully: a graceful TLS close first waits for the peer,
    which on a path gone silent answers nothing for its whole shutdown timeout."""
    pending = asyncio.ensure_future(client.call("Test.Slow"))
    await handlers.slow_started.wait()
    await asyncio.wait_for(client.close_when_idle(0.05), 10)
    with pytest.raises(TransportError, match="retired"):
        await pending
    assert client.is_closed
