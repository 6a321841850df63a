"""Property tests: RPC envelopes and bodies nested arbitrarily deep are the peer's error.

msgspec decodes nesting by recursion and gives up with :class:`RecursionError`
at the interpreter's limit (about a thousand levels, a few kilobytes of
input). That must surface as an :class:`EnvelopeError` (or a
:class:`ProtocolViolation` from the connection cores), like any other
garbage, never as an exception that kills a connection's task.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_proto import (
    EnvelopeError,
    ProtocolViolation,
    RequestReceived,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    decode_request,
    decode_response,
    encode_frame,
)
from wanfed_proto._rpc_asyncio import decode_body

# One level of nesting each: an array of one, a map of one (key "k"), an array16 of one.
_LEVELS = [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"]
_LEAVES = [b"\xc0", b"\x01", b"\xa1x", b"\x90", b"\x80"]


@st.composite
def nested_msgpack(draw: st.DrawFn, min_depth: int = 0) -> bytes:
    """One msgpack value nested ``depth`` levels, mixing arrays and maps."""
    depth = draw(st.integers(min_value=min_depth, max_value=5000))
    kinds = draw(st.lists(st.sampled_from(_LEVELS), min_size=1, max_size=4))
    return b"".join(kinds[i % len(kinds)] for i in range(depth)) + draw(st.sampled_from(_LEAVES))


def request_with_body(seq: int, body: bytes) -> bytes:
    """A request envelope (a map) whose Body is ``body``, bytes as they come."""
    return b"\x83\xa3Seq" + bytes([seq]) + b"\xa6Method\xa1M\xa4Body" + body


def response_with_body(seq: int, body: bytes) -> bytes:
    return b"\x82\xa3Seq" + bytes([seq]) + b"\xa4Body" + body


DEEP = b"\x91" * 100_000 + b"\xc0"


@pytest.mark.parametrize("decode", [decode_request, decode_response])
def test_deep_envelopes_are_envelope_errors(decode: Any) -> None:
    for data in (DEEP, request_with_body(1, DEEP), response_with_body(1, DEEP)):
        with pytest.raises(EnvelopeError, match=r"^malformed rpc"):
            decode(data)


def test_a_deep_body_is_an_envelope_error_naming_the_method() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_body(msgspec.Raw(DEEP), Any, "Catalog.Register", "invalid request body")
    assert str(caught.value) == "rpc Catalog.Register: invalid request body: nested too deeply"


@settings(max_examples=60)
@given(nested_msgpack(), st.sampled_from([Any, dict[str, Any], list[Any], int]))
def test_bodies_of_any_depth_decode_or_raise_envelope_errors(body: bytes, tp: Any) -> None:
    message = ""
    try:
        decode_body(msgspec.Raw(body), tp, "M", "invalid request body")
    except EnvelopeError as error:
        message = str(error)
    assert not message or message.startswith("rpc M: invalid request body: ")


@settings(max_examples=60)
@given(nested_msgpack(), st.booleans())
def test_server_core_survives_requests_of_any_depth(body: bytes, as_envelope: bool) -> None:
    """The Body field is Raw, so the server core hands it on undecoded; a deep
    envelope itself is a violation that closes the connection, never a raise."""
    server = RpcServerConnection(max_frame=1 << 20)
    payload = body if as_envelope else request_with_body(7, body)
    events = server.receive_data(encode_frame(payload, max_size=1 << 20))
    assert len(events) == 1
    event = events[0]
    if isinstance(event, ProtocolViolation):
        assert str(event.error).startswith("malformed rpc request")
        assert server.closed
    else:
        assert isinstance(event, RequestReceived)
        assert bytes(event.request.Body) == body


@settings(max_examples=60)
@given(nested_msgpack(min_depth=1))
def test_client_core_survives_responses_of_any_depth(body: bytes) -> None:
    client = RpcClientConnection(max_frame=1 << 20)
    seq, _ = client.send_request("M")
    events = client.receive_data(encode_frame(response_with_body(seq, body), max_size=1 << 20))
    assert events
    last = events[-1]
    if isinstance(last, ProtocolViolation):
        assert str(last.error).startswith("malformed rpc response")
    else:
        assert isinstance(last, ResponseReceived)
        assert bytes(last.body) == body
