"""Opening connections to another server's RPC port, directly or via a gateway.

Through a gateway the protocol cannot be announced with a type byte (the
gateway forwards TLS it cannot read), so the dialer offers exactly one ALPN id
and insists the server selected it: a server that negotiated nothing would
otherwise be spoken to in a protocol it never agreed to.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Final

from ._connection import Connection, _Forwarder, describe_transport
from ._errors import AlpnNotServedError, TransportError, error_text
from ._tls import check_dial_context
from ._types import RpcType

__all__ = ["DEFAULT_DIAL_TIMEOUT", "Address", "dial_alpn", "dial_plain", "parse_address"]

DEFAULT_DIAL_TIMEOUT: Final = 10.0
"""Seconds for TCP connect plus TLS handshake (Consul's pool dial timeout)."""

Address = tuple[str, int] | str


def parse_address(address: Address) -> tuple[str, int]:
    """``(host, port)`` from a tuple or ``host:port`` / ``[v6]:port`` text."""
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    return (host.strip("[]"), int(port))


def _tune(transport: asyncio.BaseTransport) -> None:
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def dial_alpn(
    address: Address,
    sni: str,
    alpn: str,
    context: ssl.SSLContext,
    timeout: float = DEFAULT_DIAL_TIMEOUT,  # noqa: ASYNC109 (part of the dial contract)
) -> Connection:
    """TLS to ``address`` with SNI ``sni``, verified for that name, speaking ``alpn``.

    ``context`` must offer ``alpn`` (build it with ``client_context(alpn=[alpn])``).
    Raises :class:`AlpnNotServedError` when the server selected another
    protocol or none, and :class:`TransportError` for every other failure
    (refused, timed out, certificate rejected), with the cause chained.
    Under TLS 1.3 the server judges *our* certificate after the client side
    finished, so a server that refuses it shows up as a closed connection at
    the first read, not as an error here.
    """
    check_dial_context(context)
    alpn = str(alpn)  # an Alpn member compares equal but reads badly in errors
    if not sni:
        raise ValueError("dialing via ALPN needs a server name (SNI)")
    if not alpn:
        raise ValueError("dialing via ALPN needs a protocol id")
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    try:
        forwarder = _Forwarder()
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: forwarder,
                host,
                port,
                ssl=context,
                server_hostname=sni,
                ssl_handshake_timeout=timeout + 1.0,
            )
    except TimeoutError:
        raise TransportError(
            f"dial {host}:{port} (SNI {sni}, ALPN {alpn}) timed out after {timeout:g}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(
            f"dial {host}:{port}: certificate of SNI {sni} rejected: {exc.verify_message}"
        ) from exc
    except (OSError, EOFError) as exc:
        raise TransportError(
            f"dial {host}:{port} (SNI {sni}, ALPN {alpn}) failed: {_cause(exc)}"
        ) from exc
    _tune(transport)
    info = describe_transport(transport, sni=sni)
    if info.alpn != alpn:
        transport.abort()
        raise AlpnNotServedError(
            f"server {host}:{port} (SNI {sni}) did not select ALPN {alpn!r}; selected {info.alpn!r}"
        )
    return Connection(transport, forwarder, info)


async def dial_plain(
    address: Address,
    rpc_type: RpcType,
    timeout: float = DEFAULT_DIAL_TIMEOUT,  # noqa: ASYNC109 (part of the dial contract)
) -> Connection:
    """Plain TCP to ``address``, announcing ``rpc_type`` with its type byte.

    For same-DC peers and tests; never crosses a gateway.
    """
    host, port = parse_address(address)
    loop = asyncio.get_running_loop()
    forwarder = _Forwarder()
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: forwarder, host, port)
    except TimeoutError:
        raise TransportError(f"dial {host}:{port} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise TransportError(f"dial {host}:{port} failed: {_cause(exc)}") from exc
    _tune(transport)
    transport.write(bytes([int(rpc_type)]))
    return Connection(transport, forwarder, describe_transport(transport, rpc_type=rpc_type))


def _cause(exc: BaseException) -> str:
    """A peer closing during the handshake is a bare ``ConnectionResetError()``:
    a mesh gateway does that when it has no route for the SNI or cannot reach
    any upstream, so say it in words."""
    if not str(exc) and isinstance(exc, ConnectionResetError | EOFError):
        return f"connection closed by the peer during the TLS handshake ({type(exc).__name__})"
    return error_text(exc)
