"""Property tests of every decoder of untrusted bytes in wanfed_proto.

For any input: only :class:`wanfed_proto.ProtoError` subclasses escape, every
call returns (a deadline catches a hang), nothing is buffered beyond the cap,
and what can be encoded decodes back exactly.
"""

from __future__ import annotations

import itertools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_proto import (
    HEADER_SIZE,
    NATIVE_TLS,
    NEED_MORE,
    ClientHello,
    ClientHelloParser,
    FrameDecoder,
    FrameTooLargeError,
    HelloError,
    HelloTooLargeError,
    InvalidNameError,
    MalformedHelloError,
    RpcType,
    ServerName,
    UnknownRpcTypeError,
    classify,
    encode_frame,
    parse_client_hello,
    parse_server_sni,
    server_sni,
    split_node_name,
    wan_member_name,
)

# How random and how patient a run is comes from the hypothesis profile (conftest.py).
PROPERTY = settings(max_examples=150)


def _python_hello() -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["wanfed/rpc-multi", "wanfed/raft"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="s1.server.dc1.consul")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise AssertionError("a client handshake cannot finish without a server")


REAL_HELLO = _python_hello()
REAL_MESSAGE = REAL_HELLO[5:]  # one record: the handshake message after its header
EXPECTED = parse_client_hello(REAL_HELLO)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    if not data:
        return [data]
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def as_records(message: bytes, sizes: list[int]) -> bytes:
    out = bytearray()
    pos = 0
    for size in [*sizes, len(message)]:
        if pos >= len(message):
            break
        chunk = message[pos : pos + max(1, size)]
        out += b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        pos += len(chunk)
    return bytes(out)


cut_lists = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)

# --- classify ---------------------------------------------------------------------


@PROPERTY
@given(st.integers(min_value=0, max_value=255))
def test_classify_every_byte(byte: int) -> None:
    result = classify(byte)
    if byte <= 9:
        assert result == RpcType(byte)
    else:
        assert result is NATIVE_TLS


@PROPERTY
@given(st.integers())
def test_classify_any_integer(value: int) -> None:
    try:
        classify(value)
    except UnknownRpcTypeError:
        assert not 0 <= value <= 255


# --- frames -----------------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=2048), cut_lists, st.integers(min_value=0, max_value=300))
def test_frame_decoder_on_arbitrary_bytes(data: bytes, cuts: list[int], max_size: int) -> None:
    decoder = FrameDecoder(max_size=max_size)
    frames: list[bytes] = []
    try:
        for chunk in split(data, cuts):
            decoder.feed(chunk)
            frames += decoder.frames()
            # Whatever is left is one incomplete frame within the cap.
            assert decoder.buffered < HEADER_SIZE + max_size
    except FrameTooLargeError as exc:
        failure: FrameTooLargeError | None = exc
    else:
        failure = None
    if failure is not None:
        assert failure.size > max_size
        return
    for frame in frames:
        assert len(frame) <= max_size
    # Every byte is accounted for: returned frames plus what is still buffered.
    assert sum(HEADER_SIZE + len(f) for f in frames) + decoder.buffered == len(data)


@PROPERTY
@given(st.lists(st.binary(max_size=600), max_size=12), cut_lists)
def test_frames_round_trip_exactly(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p, max_size=600) for p in payloads)
    decoder = FrameDecoder(max_size=600)
    got: list[bytes] = []
    for chunk in split(stream, cuts):
        decoder.feed(chunk)
        got += decoder.frames()
    assert got == payloads
    assert decoder.buffered == 0


@PROPERTY
@given(st.integers(min_value=0, max_value=(1 << 32) - 1), st.integers(min_value=0, max_value=1024))
def test_frame_cap_is_enforced_from_the_header_alone(size: int, max_size: int) -> None:
    decoder = FrameDecoder(max_size=max_size)
    header = size.to_bytes(HEADER_SIZE, "big")
    if size > max_size:
        with pytest.raises(FrameTooLargeError):
            decoder.feed(header)
    else:
        decoder.feed(header)
        assert decoder.next_frame() == (b"" if size == 0 else None)
    assert decoder.buffered <= HEADER_SIZE


# --- ClientHello ----------------------------------------------------------------------------


def feed_all(parser: ClientHelloParser, chunks: list[bytes]) -> ClientHello | None:
    """Feed until the hello is complete; None when the bytes ran out first."""
    for chunk in chunks:
        result = parser.feed(chunk)
        if isinstance(result, ClientHello):
            return result
        assert result is NEED_MORE
        assert parser.buffered <= parser.max_size
    return None


tls_looking = st.one_of(
    st.binary(max_size=1024),
    # Past the first-byte check, so the record and handshake layers see garbage too.
    st.binary(max_size=1024).map(lambda rest: b"\x16\x03\x01" + rest),
    st.binary(max_size=1024).map(lambda rest: b"\x16\x03\x03\x00\x40\x01\x00\x00" + rest),
)


@PROPERTY
@given(tls_looking, cut_lists, st.integers(min_value=9, max_value=600))
def test_hello_parser_on_arbitrary_bytes(data: bytes, cuts: list[int], max_size: int) -> None:
    parser = ClientHelloParser(max_size=max_size)
    try:
        feed_all(parser, split(data, cuts))
    except HelloError:
        assert parser.buffered == 0


@PROPERTY
@given(st.binary(max_size=700), cut_lists)
def test_hello_parser_on_arbitrary_handshake_bodies(body: bytes, cuts: list[int]) -> None:
    # A correct record and handshake header around arbitrary bytes, so the
    # body parser sees every kind of garbage: a result or "malformed", nothing else.
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    data = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    try:
        hello = feed_all(ClientHelloParser(), split(data, cuts))
    except MalformedHelloError:
        return
    assert hello is not None
    assert hello.raw == data


@PROPERTY
@given(
    st.integers(min_value=0, max_value=len(REAL_HELLO) - 1),
    st.integers(min_value=0, max_value=255),
    cut_lists,
)
def test_hello_parser_on_mutated_real_hellos(position: int, value: int, cuts: list[int]) -> None:
    data = bytearray(REAL_HELLO)
    data[position] = value
    try:
        hello = feed_all(ClientHelloParser(), split(bytes(data), cuts))
    except HelloError:
        return
    if hello is not None:
        assert hello.raw == bytes(data)


@PROPERTY
@given(st.integers(min_value=0, max_value=len(REAL_HELLO)), cut_lists)
def test_truncated_real_hello_needs_more_and_never_errs(length: int, cuts: list[int]) -> None:
    chunks = split(REAL_HELLO[:length], cuts)
    hello = feed_all(ClientHelloParser(), chunks)
    assert (hello is None) == (length < len(REAL_HELLO))


@PROPERTY
@given(st.lists(st.integers(min_value=1, max_value=600), max_size=20), cut_lists)
def test_real_hello_survives_any_fragmentation(sizes: list[int], cuts: list[int]) -> None:
    data = as_records(REAL_MESSAGE, sizes)
    hello = feed_all(ClientHelloParser(max_size=len(data)), split(data, cuts))
    assert hello is not None
    assert hello.server_name == EXPECTED.server_name
    assert hello.alpn_protocols == EXPECTED.alpn_protocols
    assert hello.supported_versions == EXPECTED.supported_versions
    assert hello.raw == data
    assert hello.hello_length == len(data)


@PROPERTY
@given(st.integers(min_value=9, max_value=len(REAL_HELLO) - 1), cut_lists)
def test_real_hello_over_a_smaller_cap_is_too_large(max_size: int, cuts: list[int]) -> None:
    parser = ClientHelloParser(max_size=max_size)
    with pytest.raises(HelloTooLargeError):
        feed_all(parser, split(REAL_HELLO, cuts))
    assert parser.buffered == 0


def hello_with_host_name(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    sni = len(entry).to_bytes(2, "big") + entry
    extensions = b"\x00\x00" + len(sni).to_bytes(2, "big") + sni
    body = (
        b"\x03\x03"
        + b"\x00" * 32
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message


host_names = st.one_of(
    st.binary(min_size=1, max_size=80),
    st.text(min_size=1, max_size=40).map(str.encode),
    st.binary(max_size=30).map(lambda rest: b"xn--" + rest),
    st.text(max_size=20).map(lambda rest: ("xn--" + rest).encode()),
    st.lists(st.text(max_size=70), min_size=1, max_size=4).map(lambda ls: ".".join(ls).encode()),
)


@PROPERTY
@given(host_names)
def test_any_host_name_is_parsed_or_malformed(name: bytes) -> None:
    # The IDNA codecs raise a zoo of errors on odd input; only ours may escape.
    try:
        hello = parse_client_hello(hello_with_host_name(name))
    except MalformedHelloError:
        return
    assert hello.server_name is not None
    assert hello.server_name.isascii()
    assert hello.server_name == hello.server_name.lower()
    if name.isascii():
        assert hello.server_name == name.decode("ascii").lower()


# --- names ----------------------------------------------------------------------------------

labels = st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)


@PROPERTY
@given(st.text(max_size=80), domains)
def test_parse_server_sni_on_arbitrary_text(name: str, domain: str) -> None:
    try:
        parsed = parse_server_sni(name, domain)
    except InvalidNameError:
        return
    # Whatever parses is a canonical server name of that domain.
    assert server_sni(parsed.datacenter, domain, parsed.node) == name.lower()


@PROPERTY
@given(st.binary(max_size=80))
def test_parse_server_sni_on_hello_style_names(raw: bytes) -> None:
    # Names as the hello parser hands them over: ASCII decoded from bytes.
    name = raw.decode("latin-1")
    try:
        parsed = parse_server_sni(name, "consul")
    except InvalidNameError:
        return
    assert name.isascii()
    assert server_sni(parsed.datacenter, "consul", parsed.node) == name.lower()


@PROPERTY
@given(labels, st.one_of(st.none(), labels), domains, st.booleans())
def test_server_sni_round_trips(dc: str, node: str | None, domain: str, upper: bool) -> None:
    name = server_sni(dc, domain, node)
    if upper:
        name = name.upper()
    assert parse_server_sni(name, domain) == ServerName(datacenter=dc, node=node)


@PROPERTY
@given(st.text(max_size=40))
def test_split_node_name_on_arbitrary_text(name: str) -> None:
    if name.count(".") != 1:
        with pytest.raises(InvalidNameError) as caught:
            split_node_name(name)
        assert str(caught.value) == f"node name does not encode a datacenter: {name}"
        return
    node, dc = split_node_name(name)
    assert f"{node}.{dc}" == name


@PROPERTY
@given(st.text(min_size=1, max_size=20).filter(lambda n: "." not in n and "/" not in n), labels)
def test_wan_member_name_round_trips(node: str, dc: str) -> None:
    assert split_node_name(wan_member_name(node, dc)) == (node, dc)
