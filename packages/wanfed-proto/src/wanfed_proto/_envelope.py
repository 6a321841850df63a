"""The RPC envelope: what one frame of a multiplexed RPC connection holds.

Field names are CamelCase, as Go's net/rpc msgpack codec names them, so the
wire reads like the protocol it mirrors. ``Body`` stays msgpack
(:class:`msgspec.Raw`) so this layer never needs the request and response
types: each handler and each caller decodes the body into its own Struct.
Absent fields take their defaults, so an envelope holds only what is set.

The decoders below face untrusted bytes: a frame is already capped in size by
the frame decoder, and nesting is bounded by the interpreter's recursion
limit, at which msgspec raises :class:`RecursionError`. Both that and
:class:`msgspec.DecodeError` become an :class:`EnvelopeError`, so a body of
``[[[[...`` is the caller's error like any other garbage.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from ._errors import EnvelopeError

__all__ = [
    "NIL_BODY",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "unknown_method_error",
]

NIL_BODY: Final = msgspec.Raw(b"\xc0")
"""A msgpack ``nil``: the body of a call that carries no arguments or result."""

SequenceId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
MethodName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
    """One call, as it travels from client to server."""

    Seq: SequenceId
    Method: MethodName
    Body: msgspec.Raw = NIL_BODY
    Token: str = ""
    Deadline: float = 0.0
    """Absolute unix seconds after which the caller stops waiting; 0 = none."""
    Trace: str = ""
    """W3C ``traceparent`` of the caller's span, or empty."""


class Response(msgspec.Struct, frozen=True, omit_defaults=True):
    """The answer to one :class:`Request`; ``Error`` non-empty means it failed."""

    Seq: SequenceId
    Error: str = ""
    Body: msgspec.Raw = NIL_BODY


DECODE_ERRORS: Final = (msgspec.DecodeError, RecursionError)
"""What msgspec raises on bytes it cannot decode (RecursionError: nested too deeply)."""


def decode_failure(exc: Exception) -> str:
    """Why decoding failed, in words; msgspec's own message where it has one."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


_ENCODER: Final = msgspec.msgpack.Encoder()
_REQUEST_DECODER: Final = msgspec.msgpack.Decoder(Request)
_RESPONSE_DECODER: Final = msgspec.msgpack.Decoder(Response)


def encode_request(request: Request) -> bytes:
    """The envelope bytes of ``request`` (without the frame header)."""
    return _ENCODER.encode(request)


def encode_response(response: Response) -> bytes:
    """The envelope bytes of ``response`` (without the frame header)."""
    return _ENCODER.encode(response)


def decode_request(data: bytes) -> Request:
    """Parse one request envelope; anything malformed is an :class:`EnvelopeError`."""
    try:
        return _REQUEST_DECODER.decode(data)
    except DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed rpc request: {decode_failure(exc)}") from None


def decode_response(data: bytes) -> Response:
    """Parse one response envelope; anything malformed is an :class:`EnvelopeError`."""
    try:
        return _RESPONSE_DECODER.decode(data)
    except DECODE_ERRORS as exc:
        raise EnvelopeError(f"malformed rpc response: {decode_failure(exc)}") from None


def unknown_method_error(method: str) -> str:
    """The error text for a method no handler serves (net/rpc's wording)."""
    return f"rpc: can't find method {method}"
