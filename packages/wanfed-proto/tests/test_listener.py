"""The sniffing RPC port, ALPN dialing and packet streams, with real clients.

Clients run in threads with blocking stdlib sockets (or as ``openssl
s_client``) so that they share no code with the server under test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from wanfed_proto import (
    Alpn,
    AlpnNotServedError,
    Connection,
    FrameTooLargeError,
    RpcPortServer,
    RpcType,
    TLSConfigError,
    TransportError,
    client_context,
    dial_alpn,
    dial_plain,
    error_text,
    parse_address,
    read_packet,
    serve_rpc_port,
    server_context,
    write_packet,
)
from wanfed_proto._connection import _Forwarder  # the buffering seam, tested directly

DEADLINE = 0.5
"""Handshake deadline used by these tests; a stalled client is closed by it."""
CLIENT_PATIENCE = 30.0
"""How long a test client waits to be closed: a deadline, never a measurement (a
silent client that is closed at all was closed by the server's own deadline)."""
SNI = "server.dc1.consul"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
LISTENER_LOG = "wanfed_proto.listener"


async def greet(connection: Connection) -> None:
    """Tells the client what the server learned about it, then closes."""
    info = connection.info
    subject = dict(x[0] for x in info.peer_cert["subject"]) if info.peer_cert else {}
    _, writer = connection.open_streams()
    kind = info.rpc_type.name if info.rpc_type is not None else info.alpn
    writer.write(f"{kind} sni={info.sni} cn={subject.get('commonName')}\n".encode())
    await writer.drain()


async def packet_echo(connection: Connection) -> None:
    """Echoes each gossip packet back until the peer closes."""
    reader, writer = connection.open_streams()
    while (packet := await read_packet(reader, idle_timeout=5.0)) is not None:
        await write_packet(writer, packet[::-1])


@pytest.fixture
async def port(pki: dict[str, Path]) -> AsyncIterator[RpcPortServer]:
    server = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={RpcType.CONSUL: greet},
        alpn_handlers={Alpn.RPC_MULTI: greet, Alpn.WAN_GOSSIP_PACKET: packet_echo},
        ssl_context=server_context(pki["ca"], pki["server"], pki["server_key"]),
        handshake_timeout=DEADLINE,
    )
    yield server
    await server.close()


def _read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def tls_client(
    address: tuple[str, int], context: ssl.SSLContext, sni: str
) -> tuple[str | None, bytes]:
    """A blocking stdlib TLS client: the negotiated ALPN and all it received."""
    with (
        socket.create_connection(address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        return tls.selected_alpn_protocol(), _read_all(tls)


def time_until_closed(
    address: tuple[str, int],
    payload: bytes = b"",
    context: ssl.SSLContext | None = None,
    sni: str = SNI,
) -> float:
    """Seconds from connect until the server closes on us; ``inf`` if it never does
    within ``CLIENT_PATIENCE``."""
    start = time.monotonic()
    with socket.create_connection(address, timeout=CLIENT_PATIENCE) as raw:
        if payload:
            raw.sendall(payload)
        try:
            if context is None:
                _read_all(raw)
            else:
                with context.wrap_socket(raw, server_hostname=sni) as tls:
                    _read_all(tls)
        except TimeoutError:
            return float("inf")
        except (ssl.SSLError, ConnectionError):
            pass
    return time.monotonic() - start


async def wait_for_rejection(
    caplog: pytest.LogCaptureFixture, server: RpcPortServer, reason: str
) -> logging.LogRecord:
    """The one log record about a rejected connection, checked after close."""
    for _ in range(200):
        records = [r for r in caplog.records if r.name == LISTENER_LOG and "rejected" in r.msg]
        if records:
            break
        await asyncio.sleep(0.01)
    await server.close()  # nothing else may be logged afterwards either
    records = [r for r in caplog.records if r.name == LISTENER_LOG and "rejected" in r.msg]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert message.startswith("rejected connection from 127.0.0.1:"), message
    assert reason in message, message
    return records[0]


def client_ctx(pki: dict[str, Path], alpn: str = Alpn.RPC_MULTI) -> ssl.SSLContext:
    return client_context(pki["ca"], pki["client"], pki["client_key"], [alpn])


async def test_stdlib_tls_client_reaches_the_alpn_handler(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    alpn, data = await asyncio.to_thread(tls_client, port.address, client_ctx(pki), SNI)
    assert alpn == "wanfed/rpc-multi"
    assert data == b"wanfed/rpc-multi sni=server.dc1.consul cn=server.dc2.consul\n"


async def test_openssl_s_client_reaches_the_alpn_handler(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    host, number = port.address
    process = await asyncio.create_subprocess_exec(
        OPENSSL,
        "s_client",
        "-connect",
        f"{host}:{number}",
        "-servername",
        SNI,
        "-alpn",
        "wanfed/rpc-multi",
        "-CAfile",
        str(pki["ca"]),
        "-cert",
        str(pki["client"]),
        "-key",
        str(pki["client_key"]),
        "-verify_return_error",
        "-verify_hostname",
        SNI,
        "-ign_eof",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(10):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert "ALPN protocol: wanfed/rpc-multi" in text, text
    assert "Verify return code: 0 (ok)" in text, text
    assert "wanfed/rpc-multi sni=server.dc1.consul cn=server.dc2.consul" in text, text


async def test_plain_type_byte_client_reaches_its_handler_on_the_same_port(
    port: RpcPortServer,
) -> None:
    def plain() -> bytes:
        with socket.create_connection(port.address, timeout=5) as sock:
            sock.sendall(bytes([RpcType.CONSUL]))
            return _read_all(sock)

    assert await asyncio.to_thread(plain) == b"CONSUL sni=None cn=None\n"


async def test_dial_alpn_verifies_the_negotiated_protocol(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    connection = await dial_alpn(port.address, SNI, Alpn.RPC_MULTI, client_ctx(pki))
    assert connection.info.alpn == "wanfed/rpc-multi"
    assert connection.info.sni == SNI
    reader, writer = connection.open_streams()
    assert await reader.read() == b"wanfed/rpc-multi sni=server.dc1.consul cn=server.dc2.consul\n"
    writer.close()
    await connection.wait_closed()


async def test_dial_alpn_refuses_a_server_that_selects_nothing(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    # The context offers "x"; the server knows no such id, selects none.
    with pytest.raises(AlpnNotServedError, match="did not select ALPN 'wanfed/rpc-multi'"):
        await dial_alpn(port.address, SNI, Alpn.RPC_MULTI, client_ctx(pki, "x"))


async def test_dial_alpn_checks_the_server_name(port: RpcPortServer, pki: dict[str, Path]) -> None:
    with pytest.raises(TransportError, match=r"certificate of SNI server\.dc9\.consul rejected"):
        await dial_alpn(port.address, "server.dc9.consul", Alpn.RPC_MULTI, client_ctx(pki))


async def test_dial_alpn_refuses_a_context_without_hostname_checks(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    context = client_ctx(pki)
    context.check_hostname = False
    with pytest.raises(TLSConfigError, match="check_hostname"):
        await dial_alpn(port.address, SNI, Alpn.RPC_MULTI, context)


async def test_a_peer_closing_in_the_handshake_is_named_in_the_dial_error(
    pki: dict[str, Path],
) -> None:
    """What a gateway without a route does to a client: the error must say so,
    not end in an empty "failed:"."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(16)  # the start of the ClientHello
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        with pytest.raises(TransportError) as caught:
            await dial_alpn(f"{host}:{port}", SNI, Alpn.RPC_MULTI, client_ctx(pki))
    finally:
        server.close()
        await server.wait_closed()
    message = str(caught.value)
    assert message.startswith(f"dial {host}:{port} (SNI {SNI}, ALPN wanfed/rpc-multi) failed: ")
    assert message.rstrip().endswith(")"), message
    assert "closed by the peer during the TLS handshake" in message or "EOF" in message, message


async def test_dial_failure_is_a_transport_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    address = listener.getsockname()
    listener.close()  # nothing listens there now
    with pytest.raises(TransportError, match="failed"):
        await dial_plain(address, RpcType.CONSUL)


async def test_packet_stream_round_trip_over_alpn(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    context = client_ctx(pki, Alpn.WAN_GOSSIP_PACKET)
    connection = await dial_alpn(port.address, SNI, Alpn.WAN_GOSSIP_PACKET, context)
    reader, writer = connection.open_streams()
    for payload in (b"ping", b"x" * 100_000, b"\x00"):
        await write_packet(writer, payload)
        assert await read_packet(reader) == payload[::-1]
    writer.close()
    await connection.wait_closed()


def _no_cert_context(pki: dict[str, Path]) -> ssl.SSLContext:
    return client_context(pki["ca"], None, None, [Alpn.RPC_MULTI])


REJECTIONS: dict[str, tuple[Callable[[tuple[str, int], dict[str, Path]], float], str]] = {
    "garbage": (
        lambda a, p: time_until_closed(a, b"GET / HTTP/1.0\r\n\r\n"),
        "TLS handshake failed",
    ),
    "type byte without handler": (
        lambda a, p: time_until_closed(a, bytes([RpcType.RAFT])),
        "no handler for rpc type 1 (RAFT)",
    ),
    "no ALPN in common": (
        lambda a, p: time_until_closed(a, context=client_ctx(p, "x")),
        "no ALPN protocol negotiated (SNI 'server.dc1.consul')",
    ),
    "ALPN without handler": (
        lambda a, p: time_until_closed(a, context=client_ctx(p, Alpn.RAFT)),
        "unknown ALPN 'wanfed/raft'",
    ),
    "client without certificate": (
        lambda a, p: time_until_closed(a, context=_no_cert_context(p)),
        "TLS handshake failed: PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ),
    "certificate from another CA": (
        lambda a, p: time_until_closed(
            a, context=client_context(p["ca"], p["foreign"], p["foreign_key"], ["x"])
        ),
        "TLS handshake failed: CERTIFICATE_VERIFY_FAILED",
    ),
    "expired certificate": (
        lambda a, p: time_until_closed(
            a, context=client_context(p["ca"], p["expired"], p["expired_key"], ["x"])
        ),
        "TLS handshake failed: CERTIFICATE_VERIFY_FAILED",
    ),
    "sends nothing": (
        lambda a, p: time_until_closed(a),
        f"handshake not completed within {DEADLINE:g}s",
    ),
    "stalls inside the TLS handshake": (
        lambda a, p: time_until_closed(a, b"\x16\x03\x01\x02\x00\x01"),
        f"handshake not completed within {DEADLINE:g}s",
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_bad_clients_are_closed_and_logged_once(
    case: str, port: RpcPortServer, pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    client, reason = REJECTIONS[case]
    caplog.set_level(logging.INFO, logger=LISTENER_LOG)
    elapsed = await asyncio.to_thread(client, port.address, pki)
    assert elapsed != float("inf"), "the server never closed the connection"
    await wait_for_rejection(caplog, port, reason)


async def test_native_tls_is_refused_without_a_context(
    pki: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LISTENER_LOG)
    server = await serve_rpc_port(
        "127.0.0.1", 0, plain_handlers={}, alpn_handlers={}, ssl_context=None
    )
    elapsed = await asyncio.to_thread(time_until_closed, server.address, b"", client_ctx(pki))
    assert elapsed != float("inf"), "the server never closed the connection"
    await wait_for_rejection(caplog, server, "native TLS is not enabled on this port")


async def test_handler_failure_is_logged_and_the_connection_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(connection: Connection) -> None:
        raise RuntimeError("boom")

    server = await serve_rpc_port(
        "127.0.0.1", 0, plain_handlers={RpcType.CONSUL: broken}, alpn_handlers={}, ssl_context=None
    )
    try:
        elapsed = await asyncio.to_thread(time_until_closed, server.address, b"\x00")
        assert elapsed != float("inf"), "the server never closed the connection"
    finally:
        await server.close()
    (record,) = [r for r in caplog.records if r.name == LISTENER_LOG and r.exc_info]
    assert "handler CONSUL failed" in record.getMessage()


async def test_close_drops_open_connections_and_stops_accepting() -> None:
    holding = asyncio.Event()

    async def hold(connection: Connection) -> None:
        holding.set()
        await connection.wait_closed()

    server = await serve_rpc_port(
        "127.0.0.1", 0, plain_handlers={RpcType.CONSUL: hold}, alpn_handlers={}, ssl_context=None
    )
    connection = await dial_plain(server.address, RpcType.CONSUL)
    reader, _ = connection.open_streams()
    await holding.wait()
    await server.close()
    assert await reader.read() == b""
    with pytest.raises(TransportError):
        await dial_plain(server.address, RpcType.CONSUL, timeout=2.0)


async def test_rejected_connections_leak_no_file_descriptors(
    port: RpcPortServer, pki: dict[str, Path]
) -> None:
    fd_dir = "/proc/self/fd"

    def burst() -> None:
        for _ in range(30):
            time_until_closed(port.address, b"\x01")
            time_until_closed(port.address, b"GET /\r\n\r\n")

    await asyncio.to_thread(burst)  # warm-up: lazily created loop resources
    before = len(os.listdir(fd_dir))
    await asyncio.to_thread(burst)
    for _ in range(500):  # until the server's last closes have run
        if len(os.listdir(fd_dir)) <= before:
            break
        await asyncio.sleep(0.01)
    assert len(os.listdir(fd_dir)) <= before


async def test_handshake_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="handshake_timeout"):
        await serve_rpc_port(
            "127.0.0.1",
            0,
            plain_handlers={},
            alpn_handlers={},
            ssl_context=None,
            handshake_timeout=0,
        )


# Packet-stream helpers on in-memory readers: exact and deterministic.


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_read_packet_reads_frames_then_none_at_clean_eof() -> None:
    reader = _reader(b"\x00\x00\x00\x02hi\x00\x00\x00\x00")
    assert await read_packet(reader) == b"hi"
    assert await read_packet(reader) == b""
    assert await read_packet(reader) is None


async def test_read_packet_refuses_oversized_length_before_the_payload() -> None:
    reader = _reader((4 * 1024 * 1024 + 1).to_bytes(4, "big"), eof=False)
    with pytest.raises(FrameTooLargeError, match="frame size 4194305 exceeds threshold of 4194304"):
        await read_packet(reader)


async def test_read_packet_idle_deadline() -> None:
    with pytest.raises(TimeoutError):
        await read_packet(_reader(b"", eof=False), idle_timeout=0.01)


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x00\x00\x00\x05abc"])
async def test_read_packet_eof_inside_a_frame_is_a_transport_error(data: bytes) -> None:
    with pytest.raises(TransportError, match="connection closed"):
        await read_packet(_reader(data))


async def test_write_packet_refuses_what_the_peer_would_refuse() -> None:
    class NoWriter:
        pass

    with pytest.raises(FrameTooLargeError):
        await write_packet(NoWriter(), b"x" * 11, max_size=10)  # type: ignore[arg-type]


async def test_alpn_handlers_require_verified_client_certificates(pki: dict[str, Path]) -> None:
    lax = server_context(pki["ca"], pki["server"], pki["server_key"], require_client_cert=False)
    with pytest.raises(ValueError, match="client certificates"):
        await serve_rpc_port(
            "127.0.0.1",
            0,
            plain_handlers={},
            alpn_handlers={Alpn.RPC_MULTI: greet},
            ssl_context=lax,
        )


async def test_a_connection_is_read_by_one_owner_only(port: RpcPortServer) -> None:
    connection = await dial_plain(port.address, RpcType.CONSUL)
    reader, writer = connection.open_streams()
    with pytest.raises(RuntimeError, match="already attached"):
        connection.open_streams()
    assert await reader.read() == b"CONSUL sni=None cn=None\n"
    writer.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8300", ("127.0.0.1", 8300)), ("[::1]:8443", ("::1", 8443))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":8300", "host:port"])
def test_parse_address_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        parse_address(text)


class _Recorder(asyncio.Protocol):
    def __init__(self, keep_open: bool) -> None:
        self.events: list[object] = []
        self.keep_open = keep_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.closed = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("keep_open", [True, False])
async def test_bytes_and_eof_before_attach_are_replayed_in_order(keep_open: bool) -> None:
    transport = _FakeTransport()
    forwarder = _Forwarder()
    forwarder.connection_made(transport)
    assert not transport.reading  # nobody reads until someone owns the connection
    forwarder.data_received(b"early ")
    forwarder.data_received(b"bytes")
    assert forwarder.eof_received() is True  # plain TCP: stay open for the target
    target = _Recorder(keep_open)
    forwarder.attach(target)
    assert target.events == ["made", b"early ", b"bytes", "eof"]
    assert transport.closed is not keep_open


async def test_loss_before_attach_is_replayed() -> None:
    forwarder = _Forwarder()
    forwarder.connection_made(_FakeTransport())
    forwarder.data_received(b"x")
    error = ConnectionResetError()
    forwarder.connection_lost(error)
    target = _Recorder(keep_open=False)
    forwarder.attach(target)
    assert target.events == ["made", b"x", ("lost", error)]


def test_error_text_is_never_empty() -> None:
    assert error_text(ConnectionResetError()) == "ConnectionResetError"
    assert error_text(TimeoutError()) == "TimeoutError"
    assert error_text(OSError(111, "Connection refused")) == "[Errno 111] Connection refused"
