"""The multiplexed RPC connection, one sans-I/O object per side.

Theory of operation: a connection carries length-prefixed frames (see
``_frames``); each frame holds exactly one msgpack envelope. A client sends
:class:`Request` envelopes, each with a sequence id it picked; the server
answers each with one :class:`Response` carrying the same id, in whatever order
its handlers finish. Many calls therefore share one connection, and a slow call
never blocks a fast one.

Failures come in three kinds that callers must be able to tell apart:

* a **remote error**: the request reached a handler (or no handler existed)
  and the server answered with a non-empty ``Error``; the connection is fine;
* a **protocol violation**: a frame too large or an envelope that does not
  decode; the stream is unusable, so the connection must close and every
  pending call fails with :class:`TransportError`;
* a **transport failure**: the connection closed under pending calls.

Neither class below touches sockets or clocks: they take bytes and return
bytes and events. Deadlines travel in the envelope as absolute unix seconds
and are only interpreted by the adapters.
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

import msgspec

from ._envelope import (
    _ENCODER,
    _REQUEST_DECODER,
    _RESPONSE_DECODER,
    DECODE_ERRORS,
    NIL_BODY,
    Request,
    Response,
    decode_failure,
)
from ._errors import EnvelopeError, FrameTooLargeError, ProtoError, TransportError
from ._frames import DEFAULT_MAX_FRAME, HEADER_SIZE, FrameDecoder, encode_frame

__all__ = [
    "CallFailed",
    "ClientEvent",
    "ProtocolViolation",
    "RemoteErrorReceived",
    "RequestReceived",
    "ResponseReceived",
    "RpcClientConnection",
    "RpcServerConnection",
    "RpcTimeoutError",
    "ServerEvent",
]


class RpcTimeoutError(ProtoError, TimeoutError):
    """No response arrived within the caller's timeout.

    Deliberately neither :class:`RemoteError` nor :class:`TransportError`: the
    connection may be healthy and the request may still run remotely. It is a
    :class:`TimeoutError`, so generic timeout handling catches it too.
    """


class ResponseReceived(msgspec.Struct, frozen=True):
    """A pending call succeeded; ``body`` is its msgpack result."""

    seq: int
    body: msgspec.Raw


class RemoteErrorReceived(msgspec.Struct, frozen=True):
    """A pending call failed on the server; the connection stays usable."""

    seq: int
    message: str


class CallFailed(msgspec.Struct, frozen=True):
    """A pending call will never be answered: the connection broke under it."""

    seq: int
    error: TransportError


class ProtocolViolation(msgspec.Struct, frozen=True):
    """The peer broke the framing or envelope rules: close the connection now."""

    error: EnvelopeError


class RequestReceived(msgspec.Struct, frozen=True):
    """A call for the server to run and answer with the same ``seq``."""

    request: Request


ClientEvent: TypeAlias = ResponseReceived | RemoteErrorReceived | CallFailed | ProtocolViolation
ServerEvent: TypeAlias = RequestReceived | ProtocolViolation


def _as_envelope_error(exc: ProtoError) -> EnvelopeError:
    if isinstance(exc, EnvelopeError):
        return exc
    error = EnvelopeError(str(exc))
    error.__cause__ = exc
    return error


_LENGTH: Final = struct.Struct(">I")


def _split_frames(
    decoder: FrameDecoder, data: bytes | bytearray | memoryview, max_frame: int
) -> tuple[list[bytes], FrameTooLargeError | None]:
    """Complete frames in arrival order, and the oversize error that ends them.

    When nothing is buffered (the common case: a read holds whole frames) the
    frames are sliced straight out of ``data``; only a partial tail is copied
    into the incremental decoder.
    """
    frames: list[bytes] = []
    if decoder.buffered or not isinstance(data, bytes):
        try:
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame)
        except FrameTooLargeError as exc:
            return frames, exc
        return frames, None
    total = len(data)
    pos = 0
    while total - pos >= HEADER_SIZE:
        size: int = _LENGTH.unpack_from(data, pos)[0]
        if size > max_frame:
            return frames, FrameTooLargeError(size, max_frame)
        end = pos + HEADER_SIZE + size
        if end > total:
            break
        frames.append(data[pos + HEADER_SIZE : end])
        pos = end
    if pos < total:
        decoder.feed(data[pos:])
    return frames, None


class RpcClientConnection:
    """The caller's side: numbers requests and matches responses to them.

    After a :class:`ProtocolViolation` or :meth:`connection_lost` the object is
    closed: it fails new requests with :class:`TransportError` and ignores
    further bytes.
    """

    __slots__ = ("_closed", "_decoder", "_max_frame", "_next_seq", "_pending")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._next_seq = 1
        self._pending: set[int] = set()
        self._closed: TransportError | None = None

    @property
    def pending(self) -> frozenset[int]:
        """Sequence ids sent and neither answered, failed nor cancelled."""
        return frozenset(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def send_request(
        self,
        method: str,
        body: msgspec.Raw = NIL_BODY,
        *,
        token: str = "",
        deadline: float = 0.0,
        trace: str = "",
    ) -> tuple[int, bytes]:
        """Allocate a sequence id for a call; returns it and the bytes to write.

        ``body`` must already be msgpack (``msgspec.Raw``), so the caller's
        types never reach this layer. Raises :class:`TransportError` once the
        connection is closed and :class:`FrameTooLargeError` for a request the
        peer would refuse anyway.
        """
        if self._closed is not None:
            raise TransportError(f"rpc connection is closed: {self._closed}")
        if not method:
            raise ValueError("rpc method name must not be empty")
        seq = self._next_seq
        envelope = _ENCODER.encode(
            Request(Seq=seq, Method=method, Body=body, Token=token, Deadline=deadline, Trace=trace)
        )
        data = encode_frame(envelope, self._max_frame)
        self._next_seq = seq + 1
        self._pending.add(seq)
        return seq, data

    def cancel(self, seq: int) -> None:
        """Stop waiting for ``seq``: a late response for it is dropped.

        The request may still run on the server; the envelope has no way to
        recall it, just as net/rpc has none.
        """
        self._pending.discard(seq)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ClientEvent]:
        """Feed received bytes; returns what happened to pending calls, in order.

        A :class:`ProtocolViolation` is always the last event and is preceded
        by one :class:`CallFailed` per call that was still pending.
        """
        if self._closed is not None:
            return []
        events: list[ClientEvent] = []
        frames, too_large = _split_frames(self._decoder, data, self._max_frame)
        error: EnvelopeError | None = None
        pending = self._pending
        decode = _RESPONSE_DECODER.decode
        for frame in frames:
            try:
                response = decode(frame)
            except DECODE_ERRORS as exc:
                error = EnvelopeError(f"malformed rpc response: {decode_failure(exc)}")
                break
            seq = response.Seq
            if seq not in pending:
                continue  # cancelled, or an id we never sent: harmless
            pending.discard(seq)
            if response.Error:
                events.append(RemoteErrorReceived(seq, response.Error))
            else:
                events.append(ResponseReceived(seq, response.Body))
        else:
            if too_large is not None:
                error = _as_envelope_error(too_large)
        if error is not None:
            events.extend(self._fail_all(TransportError(f"rpc protocol violation: {error}")))
            events.append(ProtocolViolation(error))
        return events

    def connection_lost(self, reason: str = "connection closed") -> list[CallFailed]:
        """The transport is gone: every pending call fails, in send order."""
        if self._closed is not None:
            return []
        return self._fail_all(TransportError(reason))

    def _fail_all(self, error: TransportError) -> list[CallFailed]:
        self._closed = error
        failed = [CallFailed(seq, error) for seq in sorted(self._pending)]
        self._pending.clear()
        return failed


class RpcServerConnection:
    """The serving side: turns bytes into requests and answers into bytes.

    It tracks which sequence ids are being served so that a peer reusing an id
    still in flight is caught (the two answers would be indistinguishable), and
    so that an answer is sent at most once per request.
    """

    __slots__ = ("_closed", "_decoder", "_in_flight", "_max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._in_flight: set[int] = set()
        self._closed = False

    @property
    def in_flight(self) -> frozenset[int]:
        """Sequence ids received and not yet answered."""
        return frozenset(self._in_flight)

    @property
    def closed(self) -> bool:
        return self._closed

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ServerEvent]:
        """Feed received bytes; returns the requests they completed, in order."""
        if self._closed:
            return []
        events: list[ServerEvent] = []
        frames, too_large = _split_frames(self._decoder, data, self._max_frame)
        error: EnvelopeError | None = None
        in_flight = self._in_flight
        decode = _REQUEST_DECODER.decode
        for frame in frames:
            try:
                request = decode(frame)
            except DECODE_ERRORS as exc:
                error = EnvelopeError(f"malformed rpc request: {decode_failure(exc)}")
                break
            if request.Seq in in_flight:
                error = EnvelopeError(f"rpc request reuses sequence id {request.Seq} in flight")
                break
            in_flight.add(request.Seq)
            events.append(RequestReceived(request))
        else:
            if too_large is not None:
                error = _as_envelope_error(too_large)
        if error is not None:
            self._closed = True
            events.append(ProtocolViolation(error))
        return events

    def send_response(self, seq: int, body: msgspec.Raw = NIL_BODY) -> bytes:
        """The bytes that answer ``seq`` successfully with msgpack ``body``.

        A result too large for one frame is answered with an error instead, so
        the caller learns why rather than waiting for a reply that never comes.
        """
        self._finish(seq)
        try:
            return encode_frame(_ENCODER.encode(Response(Seq=seq, Body=body)), self._max_frame)
        except FrameTooLargeError as exc:
            return self._error_frame(seq, f"rpc response too large: {exc}")

    def send_error(self, seq: int, message: str) -> bytes:
        """The bytes that answer ``seq`` with a remote error."""
        self._finish(seq)
        return self._error_frame(seq, message or "rpc: unknown error")

    def _error_frame(self, seq: int, message: str) -> bytes:
        # Error text is ours or a handler's; cap it so it always fits a frame.
        return encode_frame(_ENCODER.encode(Response(Seq=seq, Error=message[:65536])))

    def _finish(self, seq: int) -> None:
        try:
            self._in_flight.remove(seq)
        except KeyError:
            raise ValueError(f"sequence id {seq} is not awaiting an answer") from None

    def connection_lost(self) -> None:
        """Nothing more can be sent; answers in flight are abandoned."""
        self._closed = True
        self._in_flight.clear()
