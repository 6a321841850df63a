"""The sans-I/O RPC multiplexer, driven through an in-memory client/server pair."""

from __future__ import annotations

import msgspec
import pytest

from wanfed_proto import (
    NIL_BODY,
    CallFailed,
    EnvelopeError,
    FrameTooLargeError,
    ProtocolViolation,
    RemoteErrorReceived,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    RpcClientConnection,
    RpcServerConnection,
    TransportError,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
    unknown_method_error,
)


def raw(value: object) -> msgspec.Raw:
    return msgspec.Raw(msgspec.msgpack.encode(value))


def requests_of(events: list[RequestReceived | ProtocolViolation]) -> list[Request]:
    out = []
    for event in events:
        assert isinstance(event, RequestReceived), event
        out.append(event.request)
    return out


class Pair:
    """A client and a server core; bytes move only when the test says so."""

    def __init__(self, max_frame: int = 1024 * 1024) -> None:
        self.client = RpcClientConnection(max_frame)
        self.server = RpcServerConnection(max_frame)

    def call(self, method: str, body: object = None, **kw: str | float) -> tuple[int, Request]:
        seq, data = self.client.send_request(method, raw(body), **kw)  # type: ignore[arg-type]
        (request,) = requests_of(self.server.receive_data(data))
        return seq, request


def test_request_and_response_round_trip_with_every_field() -> None:
    pair = Pair()
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seq, request = pair.call(
        "Catalog.ListNodes", {"Dc": "dc2"}, token="t", deadline=5.5, trace=trace
    )
    assert request == Request(
        Seq=seq,
        Method="Catalog.ListNodes",
        Body=raw({"Dc": "dc2"}),
        Token="t",
        Deadline=5.5,
        Trace=trace,
    )
    events = pair.client.receive_data(pair.server.send_response(seq, raw([1, 2])))
    assert events == [ResponseReceived(seq, raw([1, 2]))]
    assert pair.client.pending == frozenset()
    assert pair.server.in_flight == frozenset()


def test_sequence_ids_are_distinct_and_increasing() -> None:
    client = RpcClientConnection()
    seqs = [client.send_request("M")[0] for _ in range(5)]
    assert seqs == sorted(set(seqs))
    assert client.pending == frozenset(seqs)


def test_responses_in_any_order_match_their_requests() -> None:
    pair = Pair()
    first, _ = pair.call("A", "a")
    second, _ = pair.call("B", "b")
    data = pair.server.send_response(second, raw("B")) + pair.server.send_response(first, raw("A"))
    assert pair.client.receive_data(data) == [
        ResponseReceived(second, raw("B")),
        ResponseReceived(first, raw("A")),
    ]


def test_bytes_may_arrive_one_at_a_time() -> None:
    pair = Pair()
    seq, data = pair.client.send_request("Slow.Link", raw("x" * 300))
    events = []
    for i in range(len(data)):
        events += pair.server.receive_data(data[i : i + 1])
    assert requests_of(events)[0].Body == raw("x" * 300)
    answer = pair.server.send_response(seq)
    got = []
    for i in range(len(answer)):
        got += pair.client.receive_data(answer[i : i + 1])
    assert got == [ResponseReceived(seq, NIL_BODY)]


def test_remote_error_is_its_own_event() -> None:
    pair = Pair()
    seq, _ = pair.call("Nope.Nothing")
    data = pair.server.send_error(seq, unknown_method_error("Nope.Nothing"))
    assert pair.client.receive_data(data) == [
        RemoteErrorReceived(seq, "rpc: can't find method Nope.Nothing")
    ]
    assert not pair.client.closed


def test_empty_error_text_still_reads_as_an_error() -> None:
    pair = Pair()
    seq, _ = pair.call("M")
    (event,) = pair.client.receive_data(pair.server.send_error(seq, ""))
    assert isinstance(event, RemoteErrorReceived)
    assert event.message


def test_cancelled_call_drops_its_late_response() -> None:
    pair = Pair()
    seq, _ = pair.call("Slow")
    other, _ = pair.call("Fast")
    pair.client.cancel(seq)
    data = pair.server.send_response(seq, raw("late")) + pair.server.send_response(other)
    assert pair.client.receive_data(data) == [ResponseReceived(other, NIL_BODY)]


def test_response_for_an_id_never_sent_is_ignored() -> None:
    client = RpcClientConnection()
    data = encode_frame(encode_response(Response(Seq=99, Body=raw(1))))
    assert client.receive_data(data) == []
    assert not client.closed


def test_undecodable_response_fails_every_pending_call_then_violates() -> None:
    pair = Pair()
    a, _ = pair.call("A")
    b, _ = pair.call("B")
    good = pair.server.send_response(a)
    events = pair.client.receive_data(good + encode_frame(b"\xc1"))
    assert events[0] == ResponseReceived(a, NIL_BODY)
    failed, violation = events[1:]
    assert isinstance(failed, CallFailed)
    assert failed.seq == b
    assert isinstance(failed.error, TransportError)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, EnvelopeError)
    assert pair.client.closed
    with pytest.raises(TransportError, match="closed"):
        pair.client.send_request("C")
    assert pair.client.receive_data(pair.server.send_response(b)) == []


def test_oversized_response_frame_is_a_violation_before_its_payload() -> None:
    client = RpcClientConnection(max_frame=100)
    seq, _ = client.send_request("M")
    events = client.receive_data((101).to_bytes(4, "big"))
    failed = events[0]
    assert isinstance(failed, CallFailed)
    assert failed.seq == seq
    violation = events[-1]
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error.__cause__, FrameTooLargeError)


def test_oversized_request_is_refused_locally() -> None:
    client = RpcClientConnection(max_frame=64)
    with pytest.raises(FrameTooLargeError):
        client.send_request("M", raw("x" * 100))
    assert client.pending == frozenset()


def test_connection_lost_fails_pending_in_send_order_once() -> None:
    client = RpcClientConnection()
    seqs = [client.send_request("M")[0] for _ in range(3)]
    failed = client.connection_lost("peer reset")
    assert [f.seq for f in failed] == seqs
    assert all(str(f.error) == "peer reset" for f in failed)
    assert client.connection_lost() == []


def test_server_rejects_a_sequence_id_reused_while_in_flight() -> None:
    server = RpcServerConnection()
    data = encode_frame(encode_request(Request(Seq=1, Method="M")))
    assert requests_of(server.receive_data(data))[0].Seq == 1
    (violation,) = server.receive_data(data)
    assert isinstance(violation, ProtocolViolation)
    assert "reuses sequence id 1" in str(violation.error)
    assert server.closed


def test_server_accepts_a_sequence_id_again_once_answered() -> None:
    server = RpcServerConnection()
    data = encode_frame(encode_request(Request(Seq=1, Method="M")))
    server.receive_data(data)
    server.send_response(1)
    assert requests_of(server.receive_data(data))[0].Seq == 1


def test_server_answers_each_request_at_most_once() -> None:
    server = RpcServerConnection()
    server.receive_data(encode_frame(encode_request(Request(Seq=3, Method="M"))))
    server.send_response(3)
    with pytest.raises(ValueError, match="not awaiting an answer"):
        server.send_error(3, "again")
    with pytest.raises(ValueError, match="not awaiting an answer"):
        server.send_response(4)


def test_server_turns_a_too_large_result_into_an_error() -> None:
    pair = Pair(max_frame=200)
    seq, _ = pair.call("Big")
    (event,) = pair.client.receive_data(pair.server.send_response(seq, raw("x" * 500)))
    assert isinstance(event, RemoteErrorReceived)
    assert "too large" in event.message


def test_undecodable_request_is_a_violation() -> None:
    server = RpcServerConnection()
    (event,) = server.receive_data(encode_frame(b"\x81\xa3Seq\xa1x"))
    assert isinstance(event, ProtocolViolation)
    assert server.receive_data(b"more") == []


def test_wire_uses_camel_case_field_names_and_omits_defaults() -> None:
    payload = encode_request(Request(Seq=7, Method="Status.Ping"))
    assert msgspec.msgpack.decode(payload) == {"Seq": 7, "Method": "Status.Ping"}
    full = encode_response(Response(Seq=7, Error="boom", Body=raw(1)))
    assert msgspec.msgpack.decode(full) == {"Seq": 7, "Error": "boom", "Body": 1}


@pytest.mark.parametrize(
    ("envelope", "why"),
    [
        ({"Seq": 1, "Method": ""}, "Method"),
        ({"Seq": -1, "Method": "M"}, "Seq"),
        ({"Method": "M"}, "Seq"),
        ({"Seq": 1, "Method": "M", "Token": 5}, "Token"),
        ({"Seq": 1, "Method": "M", "Deadline": "soon"}, "Deadline"),
        ([1, "M"], "object"),
    ],
)
def test_invalid_requests_say_what_is_wrong(envelope: object, why: str) -> None:
    with pytest.raises(EnvelopeError, match=why):
        decode_request(msgspec.msgpack.encode(envelope))


def test_invalid_responses_are_envelope_errors() -> None:
    with pytest.raises(EnvelopeError, match="malformed rpc response"):
        decode_response(msgspec.msgpack.encode({"Seq": "x"}))


def test_empty_method_is_refused_locally() -> None:
    with pytest.raises(ValueError, match="method"):
        RpcClientConnection().send_request("")
