"""The ClientHello parser, on real hellos (Python's ssl, openssl s_client) and built ones."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from wanfed_proto import (
    DEFAULT_MAX_HELLO,
    NATIVE_TLS,
    NEED_MORE,
    ClientHello,
    ClientHelloParser,
    HelloError,
    HelloTooLargeError,
    MalformedHelloError,
    NotTLSError,
    RpcType,
    classify,
    parse_client_hello,
)

OPENSSL = "/usr/bin/openssl"

# --- producing real hellos ------------------------------------------------------


def python_hello(
    server_hostname: str | None = "pri.server.primary.consul",
    alpn: Sequence[str] | None = ("wanfed/rpc-multi",),
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    """The first flight of a real ``ssl`` client: exactly its ClientHello records."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum_version
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def openssl_hello(*args: str) -> bytes:
    """What ``openssl s_client`` sends first, captured by a listener that never answers."""
    if not os.access(OPENSSL, os.X_OK):
        pytest.fail(f"{OPENSSL} is required to capture real ClientHellos and was not found")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                parser = ClientHelloParser()
                result = parser.feed(conn.recv(65536))
                while not isinstance(result, ClientHello):
                    chunk = conn.recv(65536)
                    assert chunk, "openssl closed before sending a whole ClientHello"
                    result = parser.feed(chunk)
                return result.raw
        finally:
            process.kill()
            process.wait(timeout=10)


# --- building hellos by hand ----------------------------------------------------------


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + u16(len(data)) + data


def sni_extension(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(bytes([kind]) + u16(len(name)) + name for kind, name in names)
    return extension(0, u16(len(entries)) + entries)


def alpn_extension(*protocols: bytes) -> bytes:
    entries = b"".join(bytes([len(p)]) + p for p in protocols)
    return extension(16, u16(len(entries)) + entries)


def versions_extension(*versions: int) -> bytes:
    data = b"".join(u16(v) for v in versions)
    return extension(43, bytes([len(data)]) + data)


def hello_body(
    extensions: bytes | None = b"",
    *,
    legacy_version: int = 0x0303,
    session_id: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
) -> bytes:
    body = (
        u16(legacy_version)
        + b"\x22" * 32
        + bytes([len(session_id)])
        + session_id
        + u16(len(suites))
        + suites
        + bytes([len(compression)])
        + compression
    )
    if extensions is not None:
        body += u16(len(extensions)) + extensions
    return body


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def record(payload: bytes, content_type: int = 22, version: int = 0x0301) -> bytes:
    return bytes([content_type]) + u16(version) + u16(len(payload)) + payload


def records(message: bytes, sizes: Sequence[int], version: int = 0x0301) -> bytes:
    """``message`` fragmented into records of the given sizes (the rest in a last one)."""
    out = bytearray()
    pos = 0
    for size in sizes:
        if pos >= len(message):
            break
        out += record(message[pos : pos + size], version=version)
        pos += size
    if pos < len(message):
        out += record(message[pos:], version=version)
    return bytes(out)


def built_hello(*extensions: bytes, **kwargs: object) -> bytes:
    return record(handshake(hello_body(b"".join(extensions), **kwargs)))  # type: ignore[arg-type]


def handshake_of(raw: bytes) -> bytes:
    """The handshake message inside a single-record hello."""
    assert raw[0] == 22
    length = int.from_bytes(raw[3:5], "big")
    assert len(raw) == 5 + length, "expected exactly one record"
    return raw[5:]


def feed_in_chunks(parser: ClientHelloParser, data: bytes, sizes: Iterator[int]) -> ClientHello:
    pos = 0
    while True:
        size = next(sizes)
        result = parser.feed(data[pos : pos + size])
        pos += size
        if isinstance(result, ClientHello):
            return result
        assert result is NEED_MORE
        assert pos < len(data), "ran out of bytes before the hello completed"


def cycle(*sizes: int) -> Iterator[int]:
    while True:
        yield from sizes


# --- real hellos ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_hello() -> bytes:
    return python_hello(alpn=("wanfed/rpc-multi", "wanfed/raft", "h2"))


def test_python_ssl_hello(real_hello: bytes) -> None:
    hello = parse_client_hello(real_hello)
    assert hello.server_name == "pri.server.primary.consul"
    assert hello.alpn_protocols == ("wanfed/rpc-multi", "wanfed/raft", "h2")
    assert 0x0304 in hello.supported_versions
    assert hello.offers_tls13
    assert hello.legacy_version == 0x0303
    assert hello.record_version in (0x0301, 0x0303)
    assert hello.raw == real_hello
    assert hello.hello_length == len(real_hello)


def test_real_hello_sniffs_as_native_tls(real_hello: bytes) -> None:
    # The RPC port's one-byte peek and the gateway's parser agree on real TLS.
    assert classify(real_hello[0]) is NATIVE_TLS


@pytest.mark.parametrize("rpc_type", range(10))
def test_type_byte_streams_sniff_as_their_type_and_are_not_tls(rpc_type: int) -> None:
    data = bytes([rpc_type]) + b"hello"
    assert classify(data[0]) == RpcType(rpc_type)
    with pytest.raises(NotTLSError):
        ClientHelloParser().feed(data)


def test_python_ssl_hello_name_is_lower_cased() -> None:
    hello = parse_client_hello(python_hello(server_hostname="Pri.Server.DC1.Consul"))
    assert hello.server_name == "pri.server.dc1.consul"


def test_python_ssl_hello_without_sni_or_alpn() -> None:
    hello = parse_client_hello(python_hello(server_hostname=None, alpn=None))
    assert hello.server_name is None
    assert hello.alpn_protocols == ()
    assert hello.offers_tls13


def test_python_ssl_tls12_only_hello_does_not_offer_tls13() -> None:
    hello = parse_client_hello(python_hello(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert 0x0304 not in hello.supported_versions
    assert not hello.offers_tls13
    assert hello.server_name == "pri.server.primary.consul"


def test_python_ssl_idna_host_name_arrives_as_a_labels() -> None:
    hello = parse_client_hello(python_hello(server_hostname="bücher.example"))
    assert hello.server_name == "xn--bcher-kva.example"


def test_openssl_s_client_hello() -> None:
    raw = openssl_hello(
        "-servername", "s1.server.dc2.consul", "-alpn", "wanfed/rpc-multi,wanfed/wan-gossip/packet"
    )
    hello = parse_client_hello(raw)
    assert hello.server_name == "s1.server.dc2.consul"
    assert hello.alpn_protocols == ("wanfed/rpc-multi", "wanfed/wan-gossip/packet")
    assert 0x0304 in hello.supported_versions


def test_openssl_s_client_tls12_hello() -> None:
    raw = openssl_hello("-tls1_2", "-servername", "server.dc1.consul", "-alpn", "wanfed/raft")
    hello = parse_client_hello(raw)
    assert hello.server_name == "server.dc1.consul"
    assert hello.alpn_protocols == ("wanfed/raft",)
    assert not hello.offers_tls13


def test_openssl_s_client_tls13_only_hello_fragmented() -> None:
    raw = openssl_hello("-tls1_3", "-servername", "server.dc1.consul", "-alpn", "wanfed/raft")
    message = handshake_of(raw)
    fragmented = records(message, [1, 3, 40, 200])
    expected = parse_client_hello(raw)
    hello = feed_in_chunks(ClientHelloParser(), fragmented, cycle(7, 1, 64))
    assert hello.supported_versions == (0x0304,)
    assert (hello.server_name, hello.alpn_protocols) == (
        expected.server_name,
        expected.alpn_protocols,
    )
    assert hello.raw == fragmented


def test_real_hello_split_at_every_byte_boundary(real_hello: bytes) -> None:
    expected = parse_client_hello(real_hello)
    for cut in range(1, len(real_hello)):
        parser = ClientHelloParser()
        assert parser.feed(real_hello[:cut]) is NEED_MORE
        assert parser.feed(real_hello[cut:]) == expected, cut


def test_real_hello_fed_one_byte_at_a_time(real_hello: bytes) -> None:
    parser = ClientHelloParser()
    hello = feed_in_chunks(parser, real_hello, cycle(1))
    assert hello == parse_client_hello(real_hello)


@pytest.mark.parametrize(
    "sizes",
    [[1], [4], [5], [100], [1, 1, 1, 1], [3, 1, 300], [50] * 20],
    ids=lambda sizes: "-".join(map(str, sizes)),
)
def test_real_hello_fragmented_into_records(real_hello: bytes, sizes: list[int]) -> None:
    expected = parse_client_hello(real_hello)
    fragmented = records(handshake_of(real_hello), sizes)
    for chunks in (cycle(len(fragmented)), cycle(1), cycle(3, 17, 5)):
        hello = feed_in_chunks(ClientHelloParser(), fragmented, chunks)
        assert hello.server_name == expected.server_name
        assert hello.alpn_protocols == expected.alpn_protocols
        assert hello.supported_versions == expected.supported_versions
        assert hello.raw == fragmented
        assert hello.hello_length == len(fragmented)


def test_hello_fragmented_into_one_byte_records(real_hello: bytes) -> None:
    message = handshake_of(real_hello)
    fragmented = records(message, [1] * len(message))
    hello = parse_client_hello(fragmented, max_size=len(fragmented))
    assert hello.server_name == "pri.server.primary.consul"
    # Record headers count against the cap too.
    with pytest.raises(HelloTooLargeError):
        parse_client_hello(fragmented, max_size=len(fragmented) - 1)


def test_raw_keeps_bytes_that_followed_the_hello(real_hello: bytes) -> None:
    parser = ClientHelloParser()
    hello = parser.feed(real_hello + b"early data")
    assert isinstance(hello, ClientHello)
    assert hello.raw == real_hello + b"early data"
    assert hello.hello_length == len(real_hello)


def _pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
    if data := source.read():
        sink.write(data)


def test_replayed_raw_bytes_complete_a_real_mutual_tls_handshake(pki: dict[str, Path]) -> None:
    # What a gateway does: read the hello, route on it, replay every byte read.
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki["server"], pki["server_key"])
    server_context.load_verify_locations(pki["ca"])
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.set_alpn_protocols(["wanfed/raft", "wanfed/rpc-multi"])
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_cert_chain(pki["client"], pki["client_key"])
    client_context.load_verify_locations(pki["ca"])
    client_context.set_alpn_protocols(["wanfed/rpc-multi"])

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="s1.server.dc1.consul")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    first_flight = c_out.read()
    hello = feed_in_chunks(ClientHelloParser(), first_flight, cycle(3, 100))
    assert hello.server_name == "s1.server.dc1.consul"
    assert hello.alpn_protocols == ("wanfed/rpc-multi",)

    s_in.write(hello.raw)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("server", server), ("client", client)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        _pump(s_out, c_in)
        _pump(c_out, s_in)
        if all(done.values()):
            break
    assert done == {"client": True, "server": True}
    assert server.selected_alpn_protocol() == "wanfed/rpc-multi"
    assert server.getpeercert() is not None
    client.write(b"ping")
    _pump(c_out, s_in)
    assert server.read(4) == b"ping"


def test_feeding_a_complete_parser_is_a_programming_error(real_hello: bytes) -> None:
    parser = ClientHelloParser()
    assert isinstance(parser.feed(real_hello), ClientHello)
    with pytest.raises(RuntimeError, match="already complete"):
        parser.feed(b"more")


# --- not TLS --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"\x00hello",
        b"\x04",
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert record
        b"\x80\x2e\x01\x00\x02",  # SSLv2-compatible hello
        b"\x16\x02",  # bad record version major
        b"\x16\x03\x05\x00\x10",  # record version minor beyond TLS 1.3
        b"\x16\x00\x00\x00\x00",
    ],
)
def test_not_tls(data: bytes) -> None:
    with pytest.raises(NotTLSError):
        ClientHelloParser().feed(data)


def test_not_tls_is_known_from_the_first_byte() -> None:
    with pytest.raises(NotTLSError, match="first byte 0x47 is not a TLS handshake record"):
        ClientHelloParser().feed(b"G")


def test_bad_record_version_is_known_from_the_second_byte() -> None:
    parser = ClientHelloParser()
    assert parser.feed(b"\x16") is NEED_MORE
    with pytest.raises(NotTLSError, match="major byte 1 is not 3"):
        parser.feed(b"\x01")


def test_errors_are_sticky_and_drop_buffered_bytes() -> None:
    parser = ClientHelloParser()
    assert parser.feed(b"\x16\x03") is NEED_MORE
    assert parser.buffered == 2
    with pytest.raises(NotTLSError) as first:
        parser.feed(b"\x09")
    assert parser.buffered == 0
    with pytest.raises(NotTLSError) as second:
        parser.feed(built_hello())
    assert second.value is first.value


# --- too large -----------------------------------------------------------------------------


def test_handshake_length_over_the_cap_is_rejected_from_its_header() -> None:
    parser = ClientHelloParser()
    # A record of 100 bytes whose handshake header claims a 64 KiB hello.
    data = b"\x16\x03\x01\x00\x64" + b"\x01\x01\x00\x00"
    assert parser.feed(data[:8]) is NEED_MORE
    with pytest.raises(HelloTooLargeError, match="the limit is 16384"):
        parser.feed(data[8:])
    assert parser.buffered == 0


def test_record_promising_more_than_the_cap_is_rejected_from_its_header() -> None:
    parser = ClientHelloParser(max_size=1000)
    with pytest.raises(HelloTooLargeError):
        parser.feed(b"\x16\x03\x01\x03\xe4")  # 996 payload bytes + 5 header > 1000


def test_hello_of_exactly_the_cap_is_accepted() -> None:
    data = built_hello(sni_extension((0, b"server.dc1.consul")))
    assert parse_client_hello(data, max_size=len(data)).server_name == "server.dc1.consul"
    with pytest.raises(HelloTooLargeError):
        parse_client_hello(data, max_size=len(data) - 1)


def test_cap_counts_the_header_of_the_record_still_to_come() -> None:
    # The first record holds part of the hello: the rest needs another header.
    message = handshake(hello_body(sni_extension((0, b"server.dc1.consul"))))
    data = records(message, [10])
    assert parse_client_hello(data, max_size=len(data)).server_name == "server.dc1.consul"
    parser = ClientHelloParser(max_size=len(data) - 1)
    with pytest.raises(HelloTooLargeError):
        parser.feed(data[:15])  # the first record plus the handshake header


def test_parser_never_holds_more_than_the_cap_while_waiting() -> None:
    message = handshake(hello_body(b"\x00\x15\x03\x00" + b"\x00" * 0x300))  # padding
    data = records(message, [400])
    parser = ClientHelloParser(max_size=len(data))
    for index in range(len(data) - 1):
        assert parser.feed(data[index : index + 1]) is NEED_MORE
        assert parser.buffered <= parser.max_size


def test_default_cap() -> None:
    assert DEFAULT_MAX_HELLO == 16384
    assert ClientHelloParser().max_size == 16384


def test_tiny_cap_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 9"):
        ClientHelloParser(max_size=8)


# --- malformed ------------------------------------------------------------------------------


def good_body(*extensions: bytes) -> bytes:
    return hello_body(b"".join(extensions))


MALFORMED: dict[str, bytes] = {
    "server hello": record(handshake(good_body(), msg_type=2)),
    "empty record": record(b"") + built_hello(),
    "record over 2^14": b"\x16\x03\x01\x40\x01" + b"\x01",
    "interleaved alert": (
        records(handshake(good_body()), [10])[:15] + record(b"\x02\x28", content_type=21)
    ),
    "interleaved change cipher spec": (
        records(handshake(good_body()), [10])[:15] + record(b"\x01", content_type=20)
    ),
    "bad version in a later record": (
        records(handshake(good_body()), [10])[:15] + b"\x16\x02\x01\x00\x01"
    ),
    "bytes after the hello in its record": record(handshake(good_body()) + b"\x00"),
    "bytes after the hello in a later record": (
        records(handshake(good_body()) + b"\x00\x00", [20])
    ),
    "body shorter than fixed fields": record(handshake(b"\x03\x03" + b"\x00" * 20)),
    "session id over 32": record(handshake(hello_body(session_id=b"\x00" * 33))),
    "session id overruns": record(handshake(b"\x03\x03" + b"\x00" * 32 + b"\x20" + b"\x00" * 5)),
    "odd cipher suites": record(handshake(hello_body(suites=b"\x13\x01\x13"))),
    "no cipher suites": record(handshake(hello_body(suites=b""))),
    "cipher suites overrun": record(handshake(hello_body(None)[:67] + b"\x7f\xff\x13\x01")),
    "no compression methods": record(handshake(hello_body(compression=b""))),
    "missing compression methods": record(handshake(hello_body(None)[:-2])),
    "compression overruns": record(handshake(hello_body(None)[:-2] + b"\x05\x00")),
    "extensions length truncated": record(handshake(hello_body(None) + b"\x00")),
    "extensions overrun": record(handshake(hello_body(None) + b"\x00\x10\x00\x00")),
    "stray bytes after extensions": record(handshake(hello_body(b"") + b"\x00")),
    "extension header truncated": record(handshake(hello_body(b"\x00\x10\x00"))),
    "extension overruns": record(handshake(hello_body(b"\x00\x10\x00\x09\x00"))),
    "duplicate extension": built_hello(extension(23, b""), extension(23, b"")),
    "duplicate sni": built_hello(sni_extension((0, b"a.consul")), sni_extension((0, b"b.consul"))),
    "empty sni extension": built_hello(extension(0, b"")),
    "empty sni list": built_hello(extension(0, b"\x00\x00")),
    "sni list overruns": built_hello(extension(0, b"\x00\x09\x00\x00\x01a")),
    "sni list shorter than extension": built_hello(extension(0, b"\x00\x02\x00\x00\x01a")),
    "sni name overruns": built_hello(extension(0, b"\x00\x04\x00\x00\x09a")),
    "sni entry truncated": built_hello(extension(0, b"\x00\x02\x00\x00")),
    "empty host name": built_hello(sni_extension((0, b""))),
    "two host names": built_hello(sni_extension((0, b"a.consul"), (0, b"b.consul"))),
    "host name with NUL": built_hello(sni_extension((0, b"server.dc1.consul\x00.evil"))),
    "host name with space": built_hello(sni_extension((0, b"server dc1"))),
    "host name invalid utf-8": built_hello(sni_extension((0, b"\xff\xfe.consul"))),
    "host name bad punycode": built_hello(sni_extension((0, b"xn--a-.consul"))),
    "host name utf-8 not idna": built_hello(sni_extension((0, "a\u2028b".encode()))),
    "empty alpn list": built_hello(extension(16, b"\x00\x00")),
    "alpn list overruns": built_hello(extension(16, b"\x00\x05\x02h2")),
    "alpn list shorter than extension": built_hello(extension(16, b"\x00\x01\x02h2")),
    "alpn empty protocol": built_hello(alpn_extension(b"h2", b"")),
    "alpn name overruns": built_hello(extension(16, b"\x00\x03\x05h2")),
    "alpn truncated": built_hello(extension(16, b"\x00")),
    "empty supported_versions": built_hello(extension(43, b"")),
    "odd supported_versions": built_hello(extension(43, b"\x03\x03\x04\x03")),
    "zero supported_versions": built_hello(extension(43, b"\x00")),
    "supported_versions mismatch": built_hello(extension(43, b"\x04\x03\x04")),
}

# What each malformed hello must be rejected for: the first violation, not any error.
REASONS: dict[str, str] = {
    "server hello": "first handshake message has type 2, not ClientHello",
    "empty record": "empty handshake record",
    "record over 2^14": r"record length 16385 exceeds 2\^14",
    "interleaved alert": "record of content type 21 interleaved",
    "interleaved change cipher spec": "record of content type 20 interleaved",
    "bad version in a later record": "record version major byte 2 is not 3",
    "bytes after the hello in its record": "carry 1 bytes after the ClientHello",
    "bytes after the hello in a later record": "carry 2 bytes after the ClientHello",
    "body shorter than fixed fields": "shorter than its fixed fields",
    "session id over 32": "session id length 33 exceeds 32",
    "session id overruns": "session id overruns",
    "odd cipher suites": "cipher_suites length 3 is not a positive even",
    "no cipher suites": "cipher_suites length 0 is not a positive even",
    "cipher suites overrun": "cipher_suites length 32767 overruns",
    "no compression methods": "compression_methods is empty",
    "missing compression methods": "truncated before compression_methods",
    "compression overruns": "compression_methods overruns",
    "extensions length truncated": "extensions length truncated",
    "extensions overrun": "extensions length 16 overruns",
    "stray bytes after extensions": "1 stray bytes after the extensions block",
    "extension header truncated": "extension header truncated",
    "extension overruns": "extension 16 length 9 overruns",
    "duplicate extension": "extension 23 appears twice",
    "duplicate sni": "extension 0 appears twice",
    "empty sni extension": "server_name extension is empty",
    "empty sni list": "server_name list is empty",
    "sni list overruns": "server_name list length 9 overruns",
    "sni list shorter than extension": "server_name list length does not match",
    "sni name overruns": "server name length 9 overruns",
    "sni entry truncated": "server name length truncated",
    "empty host name": "host name is empty",
    "two host names": "carries two host names",
    "host name with NUL": "contains control characters",
    "host name with space": "contains control characters",
    "host name invalid utf-8": "neither ASCII nor a valid UTF-8 IDNA name",
    "host name bad punycode": "'xn--a-.consul' is not valid IDNA",
    "host name utf-8 not idna": "neither ASCII nor a valid UTF-8 IDNA name",
    "empty alpn list": "ALPN list is empty",
    "alpn list overruns": "ALPN list length 5 overruns",
    "alpn list shorter than extension": "ALPN list length does not match",
    "alpn empty protocol": "empty protocol name",
    "alpn name overruns": "ALPN protocol name overruns",
    "alpn truncated": "ALPN list length truncated",
    "empty supported_versions": "supported_versions extension is empty",
    "odd supported_versions": "supported_versions length 3 is not a positive even",
    "zero supported_versions": "supported_versions length 0 is not a positive even",
    "supported_versions mismatch": "supported_versions length does not match",
}


def test_every_malformed_case_has_a_reason() -> None:
    assert MALFORMED.keys() == REASONS.keys()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed(case: str) -> None:
    with pytest.raises(MalformedHelloError, match=REASONS[case]):
        parse_client_hello(MALFORMED[case], max_size=65536)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_byte_by_byte(case: str) -> None:
    # The same verdict however the bytes arrive.
    data = MALFORMED[case]
    parser = ClientHelloParser(max_size=65536)
    with pytest.raises(MalformedHelloError, match=REASONS[case]):  # noqa: PT012 - the loop is the point
        for index in range(len(data)):
            parser.feed(data[index : index + 1])
        raise AssertionError("parser still wants more bytes")


def test_truncated_hello_in_one_shot_is_malformed(real_hello: bytes) -> None:
    with pytest.raises(MalformedHelloError, match="truncated after 100 bytes"):
        parse_client_hello(real_hello[:100])


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(MalformedHelloError, match="extension 23 appears twice"):
        parse_client_hello(MALFORMED["duplicate extension"])
    with pytest.raises(MalformedHelloError, match="content type 21 interleaved"):
        parse_client_hello(MALFORMED["interleaved alert"])
    with pytest.raises(MalformedHelloError, match="type 2, not ClientHello"):
        parse_client_hello(MALFORMED["server hello"])


def test_all_hello_errors_share_a_base() -> None:
    for error in (NotTLSError, MalformedHelloError, HelloTooLargeError):
        assert issubclass(error, HelloError)


# --- accepted variations -------------------------------------------------------------------


def test_non_host_name_sni_entries_are_skipped() -> None:
    hello = parse_client_hello(
        built_hello(sni_extension((7, b"\x00\x01"), (0, b"server.dc1.consul"), (9, b"")))
    )
    assert hello.server_name == "server.dc1.consul"


def test_sni_without_host_name_is_no_name() -> None:
    assert parse_client_hello(built_hello(sni_extension((5, b"x")))).server_name is None


def test_hello_without_extensions_block() -> None:
    hello = parse_client_hello(record(handshake(hello_body(None, legacy_version=0x0301))))
    assert hello.server_name is None
    assert hello.alpn_protocols == ()
    assert hello.supported_versions == ()
    assert hello.legacy_version == 0x0301


def test_alpn_bytes_are_kept_losslessly() -> None:
    hello = parse_client_hello(built_hello(alpn_extension(b"\x0a\x0a", b"\xff", b"wanfed/raft")))
    assert hello.alpn_protocols == ("\n\n", "\xff", "wanfed/raft")
    assert [p.encode("latin-1") for p in hello.alpn_protocols] == [b"\n\n", b"\xff", b"wanfed/raft"]


def test_grease_and_unknown_extensions_are_skipped() -> None:
    hello = parse_client_hello(
        built_hello(
            extension(0x0A0A, b""),
            versions_extension(0x7A7A, 0x0304, 0x0303),
            extension(0xFFFF, b"\x00" * 40),
            sni_extension((0, b"S1.server.DC1.consul")),
            alpn_extension(b"wanfed/rpc-multi"),
        )
    )
    assert hello.server_name == "s1.server.dc1.consul"
    assert hello.supported_versions == (0x7A7A, 0x0304, 0x0303)
    assert hello.alpn_protocols == ("wanfed/rpc-multi",)


def test_valid_punycode_host_name_is_kept_as_sent() -> None:
    hello = parse_client_hello(built_hello(sni_extension((0, b"XN--bcher-kva.example"))))
    assert hello.server_name == "xn--bcher-kva.example"


def test_record_version_is_reported() -> None:
    data = records(handshake(good_body()), [], version=0x0303)
    assert parse_client_hello(data).record_version == 0x0303


def test_hello_is_frozen(real_hello: bytes) -> None:
    hello = parse_client_hello(real_hello)
    with pytest.raises(AttributeError):
        hello.server_name = "other"  # type: ignore[misc]
