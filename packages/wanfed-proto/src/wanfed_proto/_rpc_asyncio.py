"""asyncio adapters around the RPC multiplexer: a client and a serve loop.

Both are ``asyncio.Protocol`` objects attached to a :class:`Connection`
(streams measured several times slower on this path). They only move bytes
between the transport and the sans-I/O cores in ``_rpc`` and turn the cores'
events into futures (client) or handler tasks (server).

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
from collections.abc import Awaitable, Callable, Mapping
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


def _decode_body(body: msgspec.Raw, tp: Any, what: str) -> Any:
    try:
        return _decoder(tp).decode(body)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"{what}: {exc}") from None


def _encode_body(value: object) -> msgspec.Raw:
    if isinstance(value, msgspec.Raw):
        return value
    if value is None:
        return NIL_BODY
    return msgspec.Raw(_ENCODER.encode(value))


class RpcCall(msgspec.Struct, frozen=True, kw_only=True):
    """One request as a handler sees it."""

    method: str
    seq: int
    body: msgspec.Raw
    token: str
    deadline: float
    """Unix seconds after which the caller stops waiting; 0 = none given."""
    trace: str
    peer: ConnectionInfo

    def decode(self, tp: type[T]) -> T:
        """The body as ``tp``; a mismatch becomes the caller's remote error."""
        result: T = _decode_body(self.body, tp, f"rpc {self.method}: invalid request body")
        return result


RpcHandler = Callable[[RpcCall], Awaitable[object]]
"""Returns the response body (any msgspec-encodable value or ``msgspec.Raw``)."""


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, max_frame: int) -> None:
        self.core = RpcClientConnection(max_frame)
        self.calls: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        calls = self.calls
        for event in self.core.receive_data(data):
            kind = type(event)
            if kind is ResponseReceived:
                assert isinstance(event, ResponseReceived)
                future = calls.get(event.seq)
                if future is not None and not future.done():
                    future.set_result(event.body)
            elif kind is RemoteErrorReceived:
                assert isinstance(event, RemoteErrorReceived)
                self._fail(event.seq, RemoteError(event.message))
            elif kind is CallFailed:
                assert isinstance(event, CallFailed)
                self._fail(event.seq, event.error)
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
        assert transport is not None
        transport.write(data)
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
        if type is Any:
            return _decode_body(raw, Any, f"rpc {method}: undecodable response body")
        return _decode_body(raw, type, f"rpc {method}: unexpected response body")

    async def close(self) -> None:
        """Close the connection; calls still pending fail with TransportError."""
        self._connection.close()
        await self._connection.wait_closed()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _ServerProtocol(asyncio.Protocol):
    def __init__(
        self, info: ConnectionInfo, handlers: Mapping[str, RpcHandler], max_frame: int
    ) -> None:
        self.core = RpcServerConnection(max_frame)
        self.info = info
        self.handlers = handlers
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        for event in self.core.receive_data(data):
            if isinstance(event, RequestReceived):
                request = event.request
                handler = self.handlers.get(request.Method)
                if handler is None:
                    transport.write(
                        self.core.send_error(request.Seq, unknown_method_error(request.Method))
                    )
                    continue
                call = RpcCall(
                    method=request.Method,
                    seq=request.Seq,
                    body=request.Body,
                    token=request.Token,
                    deadline=request.Deadline,
                    trace=request.Trace,
                    peer=self.info,
                )
                task = self.loop.create_task(self._run(handler, call))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            else:
                logger.warning(
                    "rpc client %s broke the protocol: %s; closing the connection",
                    self.info.peer_text,
                    event.error,
                    extra={"peer": self.info.peer_text},
                )
                transport.abort()

    async def _run(self, handler: RpcHandler, call: RpcCall) -> None:
        try:
            result = await handler(call)
            if self.core.closed:
                return
        except ProtoError as exc:
            reply = self.core.send_error(call.seq, str(exc) or type(exc).__name__)
        except Exception as exc:
            logger.exception(
                "rpc handler %s failed; returning the error to %s",
                call.method,
                self.info.peer_text,
                extra={"method": call.method, "peer": self.info.peer_text},
            )
            reply = self.core.send_error(call.seq, str(exc) or type(exc).__name__)
        else:
            try:
                body = _encode_body(result)
            except (TypeError, msgspec.EncodeError) as exc:
                reply = self.core.send_error(call.seq, f"rpc {call.method}: cannot encode: {exc}")
            else:
                reply = self.core.send_response(call.seq, body)
        if self.core.closed:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(reply)

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
