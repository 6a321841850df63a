"""Property tests of the RPC envelope decoders: untrusted bytes, exact round trips."""

from __future__ import annotations

import contextlib

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_proto import (
    ProtocolViolation,
    ProtoError,
    RemoteErrorReceived,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
bodies = msgpack_values.map(lambda v: msgspec.Raw(msgspec.msgpack.encode(v)))
seqs = st.integers(min_value=0, max_value=2**63 - 1)

requests = st.builds(
    Request,
    Seq=seqs,
    Method=st.text(min_size=1, max_size=256),
    Body=bodies,
    Token=st.text(max_size=40),
    Deadline=st.floats(allow_nan=False),
    Trace=st.text(max_size=60),
)
responses = st.builds(Response, Seq=seqs, Error=st.text(max_size=100), Body=bodies)


@given(st.binary(max_size=512))
def test_decode_request_raises_only_proto_errors(data: bytes) -> None:
    with contextlib.suppress(ProtoError):
        decode_request(data)


@given(st.binary(max_size=512))
def test_decode_response_raises_only_proto_errors(data: bytes) -> None:
    with contextlib.suppress(ProtoError):
        decode_response(data)


@given(msgpack_values)
def test_any_msgpack_value_decodes_or_raises_proto_errors(value: object) -> None:
    data = msgspec.msgpack.encode(value)
    for decode in (decode_request, decode_response):
        with contextlib.suppress(ProtoError):
            decode(data)


@given(requests)
def test_request_round_trip_is_exact(request: Request) -> None:
    assert decode_request(encode_request(request)) == request


@given(responses)
def test_response_round_trip_is_exact(response: Response) -> None:
    assert decode_response(encode_response(response)) == response


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_cores_never_raise_on_arbitrary_streams(chunks: list[bytes]) -> None:
    client = RpcClientConnection(max_frame=256)
    server = RpcServerConnection(max_frame=256)
    client.send_request("M")
    for chunk in chunks:
        client_events = client.receive_data(chunk)
        server_events = server.receive_data(chunk)
        for events in (client_events, server_events):
            violations = [e for e in events if isinstance(e, ProtocolViolation)]
            assert len(violations) <= 1
            assert not violations or events[-1] is violations[0]


@settings(max_examples=50)
@given(st.lists(requests, min_size=1, max_size=6), st.data())
def test_requests_survive_any_split_and_answers_match(
    sent: list[Request], data: st.DataObject
) -> None:
    client = RpcClientConnection()
    server = RpcServerConnection()
    stream = b""
    expected = []
    for request in sent:
        seq, frame = client.send_request(
            request.Method,
            request.Body,
            token=request.Token,
            deadline=request.Deadline,
            trace=request.Trace,
        )
        stream += frame
        expected.append(msgspec.structs.replace(request, Seq=seq))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += server.receive_data(stream[start:end])
    assert [e.request for e in received if isinstance(e, RequestReceived)] == expected
    answers = b""
    for index, request in enumerate(reversed(expected)):
        if index % 2:
            answers += server.send_error(request.Seq, "failed")
        else:
            answers += server.send_response(request.Seq, request.Body)
    events = client.receive_data(answers)
    assert len(events) == len(expected)
    for index, (event, request) in enumerate(zip(events, reversed(expected), strict=True)):
        if index % 2:
            assert event == RemoteErrorReceived(request.Seq, "failed")
        else:
            assert event == ResponseReceived(request.Seq, request.Body)
    assert client.pending == frozenset()
