"""asyncio adapters around the RPC multiplexer: a client and a serve loop.

Both are ``asyncio.Protocol`` objects attached to a :class:`Connection`
(streams measured several times slower on this path). They only move bytes
between the transport and the sans-I/O cores in ``_rpc`` and turn the cores'
events into futures (client) or handler runs (server). Two things keep a small
call cheap: frames written in one loop iteration leave in one write, and a
handler's first step runs inline, so only a handler that actually waits costs
a task (its context variables then live in the protocol's context, as with
an eager task factory). The server does not enforce ``Deadline``; handlers
that block (blocking queries) read it from :attr:`RpcCall.deadline`.

Errors a caller of :meth:`RpcClient.call` can see, and what they mean:

* :class:`RemoteError`: the server answered with an error (the handler raised,
  or no handler serves the method: ``rpc: can't find method <Method>``);
* :class:`TransportError`: the connection failed; the outcome is unknown;
* :class:`RpcTimeoutError` (a :class:`TimeoutError`): the caller's timeout
  passed; the connection stays open and a late answer is dropped;
* :class:`EnvelopeError`: the answer arrived but its body does not decode
  into the requested type.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, TypeVar, cast, overload

import msgspec

from ._connection import Connection, ConnectionInfo
from ._errors import EnvelopeError, ProtoError, RemoteError
from ._frames import DEFAULT_MAX_FRAME
from ._rpc import (
    NIL_BODY,
    CallFailed,
    ProtocolViolation,
    RemoteErrorReceived,
    Request,
    RequestReceived,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    RpcTimeoutError,
    unknown_method_error,
)

__all__ = ["RpcCall", "RpcClient", "RpcHandler", "serve_rpc"]

logger = logging.getLogger("wanfed_proto.rpc")

T = TypeVar("T")

_ENCODER = msgspec.msgpack.Encoder()


@functools.lru_cache(maxsize=256)
def _decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp)


def _decode_body(body: msgspec.Raw, tp: Any, method: str, what: str) -> Any:
    try:
        return _decoder(tp).decode(body)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"rpc {method}: {what}: {exc}") from None


def _encode_body(value: object) -> msgspec.Raw:
    if isinstance(value, msgspec.Raw):
        return value
    if value is None:
        return NIL_BODY
    return msgspec.Raw(_ENCODER.encode(value))


class RpcCall(msgspec.Struct, frozen=True):
    """One request as a handler sees it: the envelope plus who sent it."""

    request: Request
    peer: ConnectionInfo

    @property
    def method(self) -> str:
        return self.request.Method

    @property
    def seq(self) -> int:
        return self.request.Seq

    @property
    def body(self) -> msgspec.Raw:
        """The msgpack body, undecoded."""
        return self.request.Body

    @property
    def token(self) -> str:
        return self.request.Token

    @property
    def deadline(self) -> float:
        """Unix seconds after which the caller stops waiting; 0 = none given."""
        return self.request.Deadline

    @property
    def trace(self) -> str:
        """W3C ``traceparent`` of the caller, or empty."""
        return self.request.Trace

    def decode(self, tp: type[T]) -> T:
        """The body as ``tp``; a mismatch becomes the caller's remote error."""
        result: T = _decode_body(self.request.Body, tp, self.request.Method, "invalid request body")
        return result


RpcHandler = Callable[[RpcCall], Awaitable[object]]
"""Returns the response body (any msgspec-encodable value or ``msgspec.Raw``)."""


class _WriteBatcher:
    """Joins the frames written during one loop iteration into one write.

    With many calls in flight, answers (and requests) are produced by many
    tasks in the same iteration; one TLS record and one syscall for all of
    them instead of one each is most of the cost of a small call.
    """

    __slots__ = ("_chunks", "_loop", "transport")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self.flush)
        self._chunks.append(data)

    def flush(self) -> None:
        chunks, self._chunks = self._chunks, []
        transport = self.transport
        if chunks and transport is not None and not transport.is_closing():
            transport.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, max_frame: int) -> None:
        self.core = RpcClientConnection(max_frame)
        self.calls: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self.transport: asyncio.Transport | None = None
        self.out = _WriteBatcher()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = self.out.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        calls = self.calls
        for event in self.core.receive_data(data):
            # Exact type checks: cheaper than isinstance on every answer.
            kind = type(event)
            if kind is ResponseReceived:
                answer = cast(ResponseReceived, event)
                future = calls.get(answer.seq)
                if future is not None and not future.done():
                    future.set_result(answer.body)
            elif kind is RemoteErrorReceived:
                remote = cast(RemoteErrorReceived, event)
                self._fail(remote.seq, RemoteError(remote.message))
            elif kind is CallFailed:
                failed = cast(CallFailed, event)
                self._fail(failed.seq, failed.error)
            elif isinstance(event, ProtocolViolation):
                logger.warning(
                    "rpc server broke the protocol: %s; closing the connection", event.error
                )
                if self.transport is not None:
                    self.transport.abort()

    def _fail(self, seq: int, error: ProtoError) -> None:
        future = self.calls.get(seq)
        if future is not None and not future.done():
            future.set_exception(error)

    def eof_received(self) -> bool | None:
        return None  # the server hung up: close, failing what is pending

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"rpc connection lost: {exc}" if exc else "rpc connection closed"
        for event in self.core.connection_lost(reason):
            self._fail(event.seq, event.error)
        self.writable.set()


class RpcClient:
    """Many concurrent calls over one connection (from ``dial_alpn`` or plain).

    Creating the client takes the connection over; close the client to close it.
    """

    def __init__(self, connection: Connection, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._connection = connection
        self._protocol = _ClientProtocol(max_frame)
        connection.attach(self._protocol)

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def is_closed(self) -> bool:
        return self._protocol.core.closed or self._connection.is_closed

    @overload
    async def call(
        self,
        method: str,
        body: object = ...,
        *,
        type: type[T],
        timeout: float | None = ...,  # noqa: ASYNC109 (also sent as the deadline)
        token: str = ...,
        trace: str = ...,
    ) -> T: ...

    @overload
    async def call(
        self,
        method: str,
        body: object = ...,
        *,
        timeout: float | None = ...,  # noqa: ASYNC109 (also sent as the deadline)
        token: str = ...,
        trace: str = ...,
    ) -> Any: ...

    async def call(
        self,
        method: str,
        body: object = None,
        *,
        type: Any = Any,
        timeout: float | None = None,  # noqa: ASYNC109 (also sent as the deadline)
        token: str = "",
        trace: str = "",
    ) -> Any:
        """Send ``method(body)`` and wait for its answer, decoded as ``type``.

        ``timeout`` also travels to the server as an absolute deadline.
        """
        protocol = self._protocol
        if not protocol.writable.is_set():
            await protocol.writable.wait()
        transport = protocol.transport
        if transport is None or transport.is_closing():
            protocol.connection_lost(None)
        deadline = time.time() + timeout if timeout is not None else 0.0
        seq, data = protocol.core.send_request(
            method, _encode_body(body), token=token, deadline=deadline, trace=trace
        )
        future: asyncio.Future[msgspec.Raw] = asyncio.get_running_loop().create_future()
        protocol.calls[seq] = future
        protocol.out.write(data)
        try:
            if timeout is None:
                raw = await future
            else:
                async with asyncio.timeout(timeout):
                    raw = await future
        except TimeoutError:
            protocol.core.cancel(seq)
            raise RpcTimeoutError(f"rpc {method} timed out after {timeout:g}s") from None
        except asyncio.CancelledError:
            protocol.core.cancel(seq)
            raise
        finally:
            del protocol.calls[seq]
        return _decode_body(raw, type, method, "unexpected response body")

    async def close(self) -> None:
        """Close the connection; calls still pending fail with TransportError."""
        self._connection.close()
        await self._connection.wait_closed()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _Resuspend:
    """Hands a future a coroutine suspended on back to the task now driving it."""

    __slots__ = ("suspended_on",)

    def __init__(self, suspended_on: object) -> None:
        self.suspended_on = suspended_on

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.suspended_on)


async def _continue(coro: Coroutine[Any, Any, object], suspended_on: object) -> object:
    """Finish a coroutine whose first step ran outside any task.

    The task running this wrapper waits on the same future the coroutine
    yielded, then resumes it; cancellation is thrown into it unchanged.
    """
    while True:
        try:
            sent = await _Resuspend(suspended_on)
        except BaseException as exc:  # cancellation included: the handler decides
            try:
                suspended_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            suspended_on = coro.send(sent)
        except StopIteration as done:
            return done.value


class _ServerProtocol(asyncio.Protocol):
    def __init__(
        self, info: ConnectionInfo, handlers: Mapping[str, RpcHandler], max_frame: int
    ) -> None:
        self.core = RpcServerConnection(max_frame)
        self.info = info
        self.handlers = handlers
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.out = _WriteBatcher()
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = self.out.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        for event in self.core.receive_data(data):
            if type(event) is RequestReceived:
                request = event.request
                handler = self.handlers.get(request.Method)
                if handler is None:
                    self.out.write(
                        self.core.send_error(request.Seq, unknown_method_error(request.Method))
                    )
                    continue
                self._start(handler, RpcCall(request, self.info))
            elif isinstance(event, ProtocolViolation):
                logger.warning(
                    "rpc client %s broke the protocol: %s; closing the connection",
                    self.info.peer_text,
                    event.error,
                    extra={"peer": self.info.peer_text},
                )
                transport.abort()

    def _start(self, handler: RpcHandler, call: RpcCall) -> None:
        """Run the handler's first step now; only a handler that waits gets a task.

        Most handlers answer from memory without suspending, and a task per
        call would cost as much as the rest of the call together.
        """
        try:
            awaitable = handler(call)
            if not isinstance(awaitable, types.CoroutineType):
                self._spawn(call, awaitable)
                return
            try:
                suspended_on = awaitable.send(None)
            except StopIteration as done:
                self._reply_value(call, done.value)
                return
            self._spawn(call, _continue(awaitable, suspended_on))
        except Exception as exc:
            self._reply_error(call, exc)
        except asyncio.CancelledError:
            # Raised by the handler itself, not by us: answer instead of
            # letting it escape into the transport's callback.
            self._reply_error(call, RemoteError(f"rpc {call.method}: handler was cancelled"))

    def _spawn(self, call: RpcCall, awaitable: Awaitable[object]) -> None:
        task = self.loop.create_task(self._finish(call, awaitable))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _finish(self, call: RpcCall, awaitable: Awaitable[object]) -> None:
        try:
            result = await awaitable
        except Exception as exc:
            self._reply_error(call, exc)
        else:
            self._reply_value(call, result)

    def _reply_value(self, call: RpcCall, result: object) -> None:
        if self.core.closed:
            return
        try:
            body = _encode_body(result)
        except (TypeError, msgspec.EncodeError) as exc:
            reply = self.core.send_error(call.seq, f"rpc {call.method}: cannot encode: {exc}")
        else:
            reply = self.core.send_response(call.seq, body)
        self.out.write(reply)

    def _reply_error(self, call: RpcCall, exc: Exception) -> None:
        if not isinstance(exc, ProtoError):
            logger.exception(
                "rpc handler %s failed; returning the error to %s",
                call.method,
                self.info.peer_text,
                exc_info=exc,
                extra={"method": call.method, "peer": self.info.peer_text},
            )
        if self.core.closed:
            return
        self.out.write(self.core.send_error(call.seq, str(exc) or type(exc).__name__))

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()  # stop taking work until the peer reads

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connection_lost()
        for task in list(self.tasks):
            task.cancel()


async def serve_rpc(
    connection: Connection,
    handlers: Mapping[str, RpcHandler],
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> None:
    """Answer calls on ``connection`` until it closes.

    Each request runs as its own task, so calls on one connection proceed
    concurrently; a handler's exception becomes that call's remote error and
    never closes the connection. Returns once the connection is closed, with
    every handler still running cancelled.
    """
    protocol = _ServerProtocol(connection.info, handlers, max_frame)
    connection.attach(protocol)
    try:
        await connection.wait_closed()
    finally:
        tasks = list(protocol.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
