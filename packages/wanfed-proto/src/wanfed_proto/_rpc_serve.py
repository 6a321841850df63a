"""Serving RPC calls on a connection: one handler run per request.

A handler's first step runs inline as soon as its request is decoded, so only
a handler that actually waits costs a task; its context variables then live
in the protocol's context, as with an eager task factory. A handler's
exception becomes that call's remote error and never closes the connection.

Deadlines: a request carries the absolute unix time after which its caller
stops waiting (``Deadline``, 0 for none). Work nobody waits for is not done:
a request that arrives after its deadline is answered with an error without
running, and a handler still waiting at its deadline is cancelled and
answered with an error (the caller has gone; the answer only keeps both
sides' bookkeeping straight). :data:`DEADLINE_SLACK` absorbs small clock
differences between the two hosts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Final, TypeVar, cast

import msgspec

from ._connection import Connection, ConnectionInfo
from ._envelope import Request, unknown_method_error
from ._errors import ProtoError, RemoteError, error_text
from ._frames import DEFAULT_MAX_FRAME
from ._rpc import ProtocolViolation, RequestReceived, RpcServerConnection
from ._rpc_asyncio import WriteBatcher, decode_body, encode_body

__all__ = [
    "DEADLINE_SLACK",
    "DEFAULT_MAX_IN_FLIGHT",
    "RpcCall",
    "RpcHandler",
    "deadline_passed_error",
    "serve_rpc",
]

DEFAULT_MAX_IN_FLIGHT: Final = 256
"""Handlers one connection may run at once (blocking queries count while they wait)."""

DEADLINE_SLACK: Final = 1.0
"""Seconds past a request's deadline before the serving side stops its work: the
deadline was computed on the caller's clock, which may run a little ahead."""


def deadline_passed_error(method: str) -> str:
    """The error text of a call stopped at (or refused after) its caller's deadline."""
    return f"rpc {method}: the caller's deadline passed; the call was not completed"


logger = logging.getLogger("wanfed_proto.rpc")

T = TypeVar("T")


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
        result: T = decode_body(self.request.Body, tp, self.request.Method, "invalid request body")
        return result


RpcHandler = Callable[[RpcCall], Awaitable[object]]
"""Returns the response body (any msgspec-encodable value or ``msgspec.Raw``)."""


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
    """Runs at most ``max_in_flight`` handlers; later requests wait in order.

    While requests wait, or while the peer does not read our answers, the
    transport stops reading, so a flood of calls turns into TCP backpressure
    instead of unbounded tasks and memory.
    """

    def __init__(
        self,
        info: ConnectionInfo,
        handlers: Mapping[str, RpcHandler],
        max_frame: int,
        max_in_flight: int,
    ) -> None:
        self.core = RpcServerConnection(max_frame)
        self.info = info
        self.handlers = handlers
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.out = WriteBatcher()
        self.loop = asyncio.get_running_loop()
        self.max_in_flight = max_in_flight
        self.running = 0
        self.waiting: collections.deque[tuple[RpcHandler, RpcCall]] = collections.deque()
        self._draining = False
        self._paused_for_writes = False
        self._paused_for_load = False

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
                call = RpcCall(request, self.info)
                if self.running < self.max_in_flight and not self.waiting:
                    self.running += 1
                    self._start(handler, call)
                else:
                    self.waiting.append((handler, call))
                    self._set_paused(load=True)
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
        deadline = call.request.Deadline
        if deadline and time.time() > deadline + DEADLINE_SLACK:
            logger.debug(
                "rpc request arrived after its deadline; answering without running it",
                extra={"method": call.method, "peer": self.info.peer_text},
            )
            self._reply_error(call, RemoteError(deadline_passed_error(call.method)))
            return
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
        deadline = call.request.Deadline
        limit = asyncio.timeout(
            max(deadline + DEADLINE_SLACK - time.time(), 0.0) if deadline else None
        )
        try:
            async with limit:
                result = await awaitable
        except TimeoutError as exc:
            if not limit.expired():
                self._reply_error(call, exc)
                return
            logger.debug(
                "rpc handler stopped at its caller's deadline",
                extra={"method": call.method, "peer": self.info.peer_text},
            )
            self._reply_error(call, RemoteError(deadline_passed_error(call.method)))
        except Exception as exc:
            self._reply_error(call, exc)
        else:
            self._reply_value(call, result)

    def _reply_value(self, call: RpcCall, result: object) -> None:
        if self.core.closed:
            return
        try:
            body = encode_body(result)
        except (TypeError, msgspec.EncodeError) as exc:
            reply = self.core.send_error(call.seq, f"rpc {call.method}: cannot encode: {exc}")
        else:
            reply = self.core.send_response(call.seq, body)
        self.out.write(reply)
        self._finished()

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
        self.out.write(self.core.send_error(call.seq, error_text(exc)))
        self._finished()

    def _finished(self) -> None:
        """One handler answered: start waiting requests up to the limit.

        A loop, not recursion: a waiting handler that answers at once calls
        back in here while the loop is still running.
        """
        self.running -= 1
        if self._draining or not self.waiting:
            return
        self._draining = True
        try:
            while self.waiting and self.running < self.max_in_flight:
                handler, call = self.waiting.popleft()
                self.running += 1
                self._start(handler, call)
        finally:
            self._draining = False
        if not self.waiting:
            self._set_paused(load=False)

    def _set_paused(self, *, load: bool | None = None, writes: bool | None = None) -> None:
        if load is not None:
            self._paused_for_load = load
        if writes is not None:
            self._paused_for_writes = writes
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._paused_for_load or self._paused_for_writes:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def pause_writing(self) -> None:
        self._set_paused(writes=True)  # stop taking work until the peer reads

    def resume_writing(self) -> None:
        self._set_paused(writes=False)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connection_lost()
        self.waiting.clear()
        for task in list(self.tasks):
            task.cancel()


async def serve_rpc(
    connection: Connection,
    handlers: Mapping[str, RpcHandler],
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> None:
    """Answer calls on ``connection`` until it closes.

    Calls on one connection run concurrently, up to ``max_in_flight`` at a
    time (later ones wait in arrival order); a handler's exception becomes
    that call's remote error and never closes the connection. Returns once
    the connection is closed, with every handler still running cancelled.
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    protocol = _ServerProtocol(connection.info, handlers, max_frame, max_in_flight)
    # A parked handler (a blocking query) keeps the connection from counting as idle.
    connection.report_busy(lambda: protocol.running > 0 or bool(protocol.waiting))
    connection.attach(protocol)
    try:
        await connection.wait_closed()
    finally:
        tasks = list(protocol.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
