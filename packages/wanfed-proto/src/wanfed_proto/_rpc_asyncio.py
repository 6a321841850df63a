"""The asyncio RPC client, and the pieces it shares with the serving side.

Client and server are ``asyncio.Protocol`` objects attached to a
:class:`Connection` (streams measured several times slower on this path).
They only move bytes between the transport and the sans-I/O cores in ``_rpc``
and turn the cores' events into futures (here) or handler runs
(``_rpc_serve``). Frames written in one loop iteration leave in one write,
which with many calls in flight is most of the saving. The timeout of a call
travels as an absolute ``Deadline``; the serving side refuses a request whose
deadline already passed and stops a handler still running at it (nobody waits
for its answer any more).

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
import math
import time
from typing import Any, TypeVar, cast, overload

import msgspec

from ._connection import Connection
from ._envelope import DECODE_ERRORS, NIL_BODY, decode_failure
from ._errors import EnvelopeError, ProtoError, RemoteError, TransportError
from ._frames import DEFAULT_MAX_FRAME
from ._rpc import (
    CallFailed,
    ProtocolViolation,
    RemoteErrorReceived,
    ResponseReceived,
    RpcClientConnection,
    RpcTimeoutError,
)

__all__ = ["RpcClient"]

logger = logging.getLogger("wanfed_proto.rpc")

T = TypeVar("T")

_ENCODER = msgspec.msgpack.Encoder()

_TIMER_SLACK = 0.001
"""Seconds early a call may be timed out: the loop may run a timer that early."""


@functools.lru_cache(maxsize=256)
def _decoder(tp: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(tp)


_ANY_DECODER = msgspec.msgpack.Decoder()


def decode_body(body: msgspec.Raw, tp: Any, method: str, what: str) -> Any:
    """``body`` as ``tp``, or an :class:`EnvelopeError` naming the method."""
    try:
        return (_ANY_DECODER if tp is Any else _decoder(tp)).decode(body)
    except DECODE_ERRORS as exc:
        raise EnvelopeError(f"rpc {method}: {what}: {decode_failure(exc)}") from None


def encode_body(value: object) -> msgspec.Raw:
    """Any msgspec-encodable value as a msgpack body; ``Raw`` passes through."""
    if isinstance(value, msgspec.Raw):
        return value
    if value is None:
        return NIL_BODY
    return msgspec.Raw(_ENCODER.encode(value))


class WriteBatcher:
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
        self.loop = asyncio.get_running_loop()
        self.calls: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self.transport: asyncio.Transport | None = None
        self.out = WriteBatcher()
        self.writable = asyncio.Event()
        self.writable.set()
        self.deadlines: dict[int, tuple[float, str, float]] = {}
        """Per pending call with a timeout: (loop time it expires, method, timeout)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = self.out.transport = cast(asyncio.Transport, transport)

    def watch(self, seq: int, method: str, timeout: float) -> None:
        """Fail call ``seq`` with :class:`RpcTimeoutError` once ``timeout`` passed.

        One timer per connection, armed at the earliest deadline pending:
        calls made with the same timeout expire in the order they were made,
        so a new call almost never needs a timer of its own (a timer per call,
        or ``asyncio.timeout``, was a large share of a small call's cost).
        """
        at = self.loop.time() + timeout
        self.deadlines[seq] = (at, method, timeout)
        if at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time() + _TIMER_SLACK
        next_at = math.inf
        for seq, (at, method, timeout) in list(self.deadlines.items()):
            if at <= now:
                del self.deadlines[seq]
                self._fail(seq, RpcTimeoutError(f"rpc {method} timed out after {timeout:g}s"))
            elif at < next_at:
                next_at = at
        if next_at != math.inf:
            self._timer_at = next_at
            self._timer = self.loop.call_at(next_at, self._expire)

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf


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

    @property
    def in_flight(self) -> int:
        """Calls sent and not yet answered, failed or given up."""
        return len(self._protocol.calls)

    def abort(self, reason: str) -> None:
        """Close at once; every call in flight fails with ``TransportError(reason)``.

        For a connection its owner declared dead (a keepalive that went
        unanswered): the calls learn why instead of a bare "connection lost".
        """
        protocol = self._protocol
        for event in protocol.core.connection_lost(reason):
            protocol._fail(event.seq, event.error)
        self._connection.abort()

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
            raise TransportError(f"rpc {method}: the connection is closing")
        deadline = time.time() + timeout if timeout is not None else 0.0
        seq, data = protocol.core.send_request(
            method, encode_body(body), token=token, deadline=deadline, trace=trace
        )
        future: asyncio.Future[msgspec.Raw] = protocol.loop.create_future()
        protocol.calls[seq] = future
        protocol.out.write(data)
        if timeout is not None:
            protocol.watch(seq, method, timeout)
        try:
            raw = await future
        except (RpcTimeoutError, asyncio.CancelledError):
            protocol.core.cancel(seq)
            raise
        finally:
            del protocol.calls[seq]
            if timeout is not None:
                protocol.deadlines.pop(seq, None)
        return decode_body(raw, type, method, "unexpected response body")

    async def close_when_idle(self, grace: float | None = None) -> None:
        """Close once the calls in flight now have finished, or ``grace`` seconds passed.

        For retiring a connection that should no longer take new calls (its
        owner stopped handing it out). Calls still pending when the grace ends
        fail with :class:`TransportError`; without a grace none is cut.
        """
        pending = [future for future in self._protocol.calls.values() if not future.done()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        if any(not future.done() for future in pending):
            # A graceful close would first wait for the peer (a TLS shutdown, 30 s
            # on a path gone silent) with these calls still pending.
            self.abort(f"rpc connection retired; calls still pending after {grace:g}s cut")
            await self._connection.wait_closed()
            return
        await self.close()

    async def close(self) -> None:
        """Close the connection; calls still pending fail with TransportError."""
        self._connection.close()
        await self._connection.wait_closed()

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
